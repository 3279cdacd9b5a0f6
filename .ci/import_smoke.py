"""Import every module of perfkit (run with ``-W error``): the newest releases' early warning."""

from __future__ import annotations

import importlib
import pkgutil

import perfkit


def _fail(name: str) -> None:
    raise ImportError(f"cannot import {name}")  # walk_packages would skip its submodules


names = sorted(m.name for m in pkgutil.walk_packages(perfkit.__path__, "perfkit.", onerror=_fail))
for name in names:
    importlib.import_module(name)
print(f"import smoke: {len(names) + 1} modules of perfkit {perfkit.__version__} import cleanly")
