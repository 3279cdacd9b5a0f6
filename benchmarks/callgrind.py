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
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXED_HASHES = {**os.environ, "PYTHONHASHSEED": "0"}
_REFS = re.compile(r"refs:\s+([\d,]+)")
_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def count(script: str, *args: str, main_thread: bool = False) -> int:
    """
    Instructions of ``python script *args`` under callgrind (fixed hash seed).

    With *main_thread*, only the main thread's: an app's timer threads (a relay polling
    its outbox, a worker its queue) run at the wall clock's pace while valgrind slows the
    main thread ~50x, so their share of each iteration would be ~50 times too big.
    """
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "callgrind.out"
        threads = ["--separate-threads=yes", f"--callgrind-out-file={dump}"]
        out = subprocess.run(
            ["valgrind", "--tool=callgrind",
             *(threads if main_thread else ["--callgrind-out-file=/dev/null"]),
             sys.executable, script, *args],
            capture_output=True, text=True, check=True, cwd=ROOT, env=FIXED_HASHES,
        ).stderr  # fmt: skip
        if main_thread:
            summary = _SUMMARY.search(Path(f"{dump}-01").read_text())
            if summary is None:
                raise SystemExit(f"callgrind wrote no main-thread count for {script} {args}")
            return int(summary.group(1))
    match = _REFS.search(out)
    if match is None:
        raise SystemExit(f"callgrind printed no count for {script} {args}:\n{out[-2000:]}")
    return int(match.group(1).replace(",", ""))


def per_iteration(
    script: str, variants: list[str], n: int, *, flag: str = "--child", main_thread: bool = False
) -> dict[str, float]:
    """
    Instructions per iteration of each variant: (count at 3n - count at n) / 2n.

    ``python script <flag> VARIANT N`` must run N iterations of VARIANT. The
    children run side by side, one per core: counts do not depend on timing
    (*main_thread*: see :func:`count`).
    """
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        short = {v: pool.submit(count, script, flag, v, str(n), main_thread=main_thread)
                 for v in variants}  # fmt: skip
        long = {v: pool.submit(count, script, flag, v, str(3 * n), main_thread=main_thread)
                for v in variants}  # fmt: skip
        return {v: (long[v].result() - short[v].result()) / (2 * n) for v in variants}
