"""
What ``import perfkit`` costs, against stamina and perfkit's own dependencies, in one run.

Each module is imported in a fresh interpreter, ``python -I -X importtime -c 'import X'``,
and the figure is the cumulative time of the top-level entries that statement produced (one:
``import perfkit.cache`` nests ``perfkit`` inside ``perfkit.cache``), interpreter startup
(``site`` and its imports, found by a run of ``-c pass``) left out. The runs are interleaved so
drift on the host hits every module alike, after one discarded warm-up round (bytecode compiled).

Prints medians in ms and the ratio to stamina (issue 12: ``import perfkit`` at most stamina's).
Usage: ``python benchmarks/import_time.py [--runs N]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Final

MODULES: Final = ("stamina", "perfkit", "perfkit.cache", "cachetools", "sqlalchemy")
BASELINE: Final = "stamina"


def _top_level(stderr: str) -> dict[str, int]:
    """The cumulative µs of each top-level (unindented) entry in ``-X importtime`` output."""
    found: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|")
        if cumulative.strip().isdigit() and not name.startswith("  ", 1):
            found[name.strip()] = int(cumulative)
    return found


def _importtime(code: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", "-c", code],
        check=True,
        capture_output=True,
        text=True,
    )
    return _top_level(done.stderr)


def measure(module: str, startup: set[str]) -> float:
    """The ms one fresh interpreter spends in ``import module``."""
    entries = _importtime(f"import {module}")
    return sum(us for name, us in entries.items() if name not in startup) / 1e3


def run(runs: int) -> str:
    startup = set(_importtime("pass"))
    for module in MODULES:
        measure(module, startup)
    times: dict[str, list[float]] = {module: [] for module in MODULES}
    for _ in range(runs):
        for module in MODULES:
            times[module].append(measure(module, startup))

    median = {module: statistics.median(ms) for module, ms in times.items()}
    lines = [
        f"`python -I -X importtime -c 'import X'`, cumulative ms of the import; median of {runs} "
        f"fresh interpreters per module, interleaved, after a warm-up round; "
        f"Python {sys.version.split()[0]}.",
        "",
        f"| import | median ms | min ms | max ms | / {BASELINE} |",
        "|---|--:|--:|--:|--:|",
    ]
    for module in MODULES:
        lines.append(
            f"| `{module}` | {median[module]:.1f} "
            f"| {min(times[module]):.1f} | {max(times[module]):.1f} "
            f"| {median[module] / median[BASELINE]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Import time of perfkit against stamina.")
    parser.add_argument("--runs", type=int, default=7, metavar="N", help="default %(default)s")
    options = parser.parse_args(argv)
    print(run(options.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
