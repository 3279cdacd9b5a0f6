"""
The Python blocks of the docs that say they run: executed in order, their printed output checked.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
RUNNABLE = ["batch.md", "outbox.md", "webhooks.md"]
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _expected_output(code: str) -> list[str]:
    """The ``# ...`` lines right after each print() call: what the doc says it prints."""
    lines = code.splitlines()
    expected = []
    for number, line in enumerate(lines):
        if line.startswith("print(") and number + 1 < len(lines):
            following = lines[number + 1]
            if following.startswith("# "):
                expected.append(following[2:])
    return expected


@pytest.mark.parametrize("name", RUNNABLE)
def test_doc_examples_run_and_print_what_they_say(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every python block of the page runs, in one namespace, in a fresh directory."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{name}"}
    printed = io.StringIO()
    expected: list[str] = []
    for block in _BLOCK.findall((DOCS / name).read_text()):
        expected += _expected_output(block)
        with contextlib.redirect_stdout(printed):
            exec(compile(block, f"docs/{name}", "exec"), namespace)  # our own docs
    engine = namespace.get("engine")
    if engine is not None:
        engine.dispose()  # type: ignore[attr-defined]
    assert expected == printed.getvalue().splitlines()


def test_the_install_page_names_the_ranges_pyproject_declares() -> None:
    """getting-started.md's extras table and base requirements are pyproject.toml's, exactly."""
    import tomllib  # noqa: PLC0415

    project = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())["project"]
    page = (DOCS / "getting-started.md").read_text()
    table = page[page.index("| Extra | Installs |") :].split("\n\n")[0]
    rows = re.findall(r"^\| `([a-z]+)` \| (.*?) \|", table, re.MULTILINE)
    documented = {extra: re.findall(r"`([^`]+)`", cell) for extra, cell in rows}

    assert project["optional-dependencies"] == documented
    base = page[page.index("The base install brings") :].split("\n\n")[0]
    assert sorted(project["dependencies"]) == sorted(
        req for req in re.findall(r"`([^`]+)`", base) if ">=" in req
    )
