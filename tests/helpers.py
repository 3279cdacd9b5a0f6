"""
Small test helpers shared by several test modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """
    Collect the SQL statements *engine* sends, without transaction control.
    """
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def queries(seen: list[str]) -> list[str]:
    """
    The statements in *seen* other than BEGIN/COMMIT/ROLLBACK.
    """
    control = ("BEGIN", "COMMIT", "ROLLBACK")
    return [s for s in seen if not s.lstrip().upper().startswith(control)]


def delete_keys(client: Any, prefix: str) -> None:
    """Delete every Redis key under ``<prefix>:`` (a test's own keys)."""
    names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if names:
        client.delete(*names)
