"""
Counting instructions with valgrind's callgrind: repeatable where wall-clock time is not.

A count is of a whole fresh Python process; benchmarks run one at *N* and one
at a larger *N* and divide the difference, so start-up and set-up cancel out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXED_HASHES = {**os.environ, "PYTHONHASHSEED": "0"}
_REFS = re.compile(r"refs:\s+([\d,]+)")


def count(script: str, *args: str) -> int:
    """Instructions of ``python script *args`` under callgrind (fixed hash seed)."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, script, *args],
        capture_output=True, text=True, check=True, cwd=ROOT, env=FIXED_HASHES,
    ).stderr  # fmt: skip
    match = _REFS.search(out)
    if match is None:
        raise SystemExit(f"callgrind printed no count for {script} {args}:\n{out[-2000:]}")
    return int(match.group(1).replace(",", ""))


def per_iteration(
    script: str, variants: list[str], n: int, *, flag: str = "--child"
) -> dict[str, float]:
    """
    Instructions per iteration of each variant: (count at 3n - count at n) / 2n.

    ``python script <flag> VARIANT N`` must run N iterations of VARIANT. The
    children run side by side, one per core: counts do not depend on timing.
    """
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        short = {v: pool.submit(count, script, flag, v, str(n)) for v in variants}
        long = {v: pool.submit(count, script, flag, v, str(3 * n)) for v in variants}
        return {v: (long[v].result() - short[v].result()) / (2 * n) for v in variants}
