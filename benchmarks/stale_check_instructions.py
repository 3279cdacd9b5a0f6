"""
What perfkit.db's stale-snapshot check costs a read outside cache fills, in instructions.

Each variant is a fresh Python under callgrind reading ``SELECT 1`` through
``with engine.connect()`` *N* and *3N* times on a perfkit SQLite engine, with the
check's ``before_cursor_execute`` hook installed (as ``create_engine`` does) or
removed; the difference over 2N is the count per read.
Usage: ``python benchmarks/stale_check_instructions.py [--reads N]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import callgrind


def _child(variant: str, reads: int) -> None:
    import sqlalchemy as sa  # noqa: PLC0415 - only the child needs it
    from sqlalchemy import event  # noqa: PLC0415

    from perfkit import db  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        engine = db.create_engine(f"sqlite:///{Path(tmp) / 'reads.sqlite3'}")
        if variant == "without":
            event.remove(engine, "before_cursor_execute", db._check_fill_snapshot)
        stmt = sa.text("SELECT 1")
        for _ in range(reads + 1):
            with engine.connect() as conn:
                conn.execute(stmt).scalar()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=1_000)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    counts = callgrind.per_iteration(__file__, ["without", "with"], args.reads)
    added = counts["with"] - counts["without"]
    print("| read (SQLite, `SELECT 1`) | instructions per read |")
    print("|---|--:|")
    print(f"| check removed | {counts['without']:,.0f} |")
    print(f"| check installed (default) | {counts['with']:,.0f} |")
    print(f"| added by the check | {added:,.0f} ({added / counts['without']:.1%}) |")


if __name__ == "__main__":
    sys.exit(main())
