"""``python -m perfkit``: the same as the ``perfkit`` command."""

from __future__ import annotations

import sys

from perfkit._cli import main

if __name__ == "__main__":
    sys.exit(main())
