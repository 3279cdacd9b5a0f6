"""
Cached functions and methods keep their signatures for ``mypy --strict``.

tests/typing_cases/cached_calls.py holds correct calls and wrong ones; each
wrong line ends in ``# E: <code>[, <code>...]``. mypy runs once on it, and
the errors it reports must be exactly the marked ones: a wrong call mypy
accepts fails, and so does an error on a correct line.
"""

# ruff: noqa: SIM300 - asserts read `expected == actual` (STYLE.md)

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = Path("tests") / "typing_cases" / "cached_calls.py"

MARKER = re.compile(r"#\s*E:\s*(?P<codes>[\w-]+(?:\s*,\s*[\w-]+)*)\s*$")
ERROR = re.compile(
    r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*?)\s+\[(?P<code>[\w-]+)\]$"
)

Found = dict[tuple[str, int, str], str]

pytestmark = pytest.mark.slow


def marked_errors() -> set[tuple[str, int, str]]:
    """The (path, line, code) of every ``# E:`` marker in the cases file."""
    expected: set[tuple[str, int, str]] = set()
    lines = (ROOT / CASES).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        match = MARKER.search(line)
        if match is not None:
            for code in match["codes"].split(","):
                expected.add((CASES.as_posix(), number, code.strip()))
    return expected


@pytest.fixture(scope="module")
def reported() -> Found:
    """What ``mypy --strict`` reports on the cases file: (path, line, code) to message."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            f"--cache-dir={os.devnull}",
            "--config-file=pyproject.toml",
            "--show-error-codes",
            "--no-error-summary",
            "--no-pretty",
            "--no-color-output",
            "--hide-error-context",
            CASES.as_posix(),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode not in (0, 1):  # 2: mypy itself failed
        pytest.fail(f"mypy failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    found: Found = {}
    for line in result.stdout.splitlines():
        match = ERROR.match(line)
        if match is not None:
            path = Path(match["path"]).as_posix()
            found[path, int(match["line"]), match["code"]] = match["message"]
        elif ": error:" in line:
            pytest.fail(f"unparsed mypy error line: {line}")
    return found


def test_cases_file_has_markers() -> None:
    """The cases file marks wrong calls (a broken marker regex would pass vacuously)."""
    assert len(marked_errors()) > 40


def test_every_marked_call_is_rejected(reported: Found) -> None:
    """Every line marked ``# E: code`` gets that error from mypy."""
    expected = marked_errors()
    missed = sorted(expected - reported.keys())

    assert [] == missed, "mypy accepts these marked lines:\n" + "\n".join(map(str, missed))


def test_no_other_line_is_rejected(reported: Found) -> None:
    """mypy reports no error on a correct (unmarked) call, nor a different code."""
    expected = marked_errors()
    unexpected = sorted(
        f"{k[0]}:{k[1]} [{k[2]}] {m}" for k, m in reported.items() if k not in expected
    )

    assert [] == unexpected, "mypy rejects these unmarked lines:\n" + "\n".join(unexpected)
