"""
PromQL pieces shared by the rule and dashboard generators: metric names as perfkit's
OpenTelemetry metrics reach Prometheus, label matchers, numbers and ``le`` labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from ._budgets import Budget

__all__ = [
    "BREAKER_STATE",
    "CACHE_OPERATIONS",
    "DB_DURATION",
    "DURATION",
    "braces",
    "le_label",
    "matchers_of",
    "number",
    "quote",
    "route_matchers",
]

DURATION: Final = "http_server_request_duration_seconds"
DB_DURATION: Final = "db_client_operation_duration_seconds"
BREAKER_STATE: Final = "perfkit_breaker_state"
CACHE_OPERATIONS: Final = "perfkit_cache_operations_total"

_SELECTOR: Final = re.compile(r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*')


def le_label(seconds: float) -> str:
    """
    A bucket boundary as OpenTelemetry's Prometheus exporter writes its ``le`` label
    (``0.1``, ``1.0``, ``10.0``: the float's ``repr``); a rule must name the label exactly.

    .. versionadded:: 0.2.0
    """
    return repr(float(seconds))


def route_matchers(budget: Budget) -> list[str]:
    """The matchers of *budget*'s method and route template."""
    return [f"http_request_method={quote(budget.method)}", f"http_route={quote(budget.route)}"]


def matchers_of(selector: str) -> list[str]:
    """``job="api", env!="dev"`` as a list of matchers; ValueError for anything else."""
    if not selector.strip():
        return []
    parts = _split(selector)
    for part in parts:
        if not _SELECTOR.fullmatch(part):
            raise ValueError(f'selector: {part.strip()!r} is not a label matcher such as job="api"')
    return [part.strip() for part in parts]


def _split(selector: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in selector:
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
    parts.append("".join(current))
    return parts


def braces(matchers: Iterable[str]) -> str:
    """``{a="1",b="2"}``, or nothing for no matchers."""
    inside = ",".join(matchers)
    return f"{{{inside}}}" if inside else ""


_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: str) -> str:
    """*text* as a PromQL double-quoted string (backslash, quote and line breaks escaped)."""
    return '"' + "".join(_ESCAPES.get(char, char) for char in text) + '"'


def number(value: float) -> str:
    """``5``, ``0.05``, ``1234.5678``: a number as short as it reads, never rounded."""
    return str(int(value)) if value == int(value) else repr(float(value))
