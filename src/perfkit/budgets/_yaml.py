"""
A small, deterministic YAML writer for the documents this package makes (no PyYAML needed).

Block mappings and sequences; keys plain where they are identifiers; every other string
double-quoted with JSON's escapes, which are a subset of YAML's, so the output reads back
exactly (PromQL's quotes and braces included) in any YAML 1.1 or 1.2 reader.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["to_yaml"]

_PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Words YAML 1.1 reads as booleans or null: quoted even as keys.
_SPECIAL: Final = frozenset(["y", "n", "yes", "no", "on", "off", "true", "false", "null"])


def to_yaml(document: Mapping[str, Any]) -> str:
    """
    *document* (mappings, lists, strings, numbers, booleans) as block-style YAML.

    .. versionadded:: 0.2.0
    """
    if not document:
        return "{}\n"
    lines: list[str] = []
    _mapping(document, 0, lines)
    return "\n".join(lines) + "\n"


def _mapping(mapping: Mapping[str, Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in mapping.items():
        plain = _PLAIN_KEY.fullmatch(key) and key.lower() not in _SPECIAL
        name = key if plain else _scalar(key)
        if _is_block(value):
            lines.append(f"{pad}{name}:")
            _block(value, indent + 2, lines)
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")


def _sequence(items: Sequence[Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for item in items:
        if isinstance(item, Mapping) and item:
            nested: list[str] = []
            _mapping(item, indent + 2, nested)
            nested[0] = f"{pad}- {nested[0][indent + 2 :]}"
            lines.extend(nested)
        elif _is_block(item):
            lines.append(f"{pad}-")
            _block(item, indent + 2, lines)
        else:
            lines.append(f"{pad}- {_scalar(item)}")


def _block(value: Any, indent: int, lines: list[str]) -> None:
    if isinstance(value, Mapping):
        _mapping(value, indent, lines)
    else:
        _sequence(value, indent, lines)


def _is_block(value: Any) -> bool:
    return bool(value) and (
        isinstance(value, Mapping) or (isinstance(value, Sequence) and not isinstance(value, str))
    )


def _scalar(value: Any) -> str:  # noqa: PLR0911
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return json.dumps(value)  # non-ASCII and control characters as \\uXXXX: both read it
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, Sequence):
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:  # 1e-07 is a string to YAML 1.1; 1.0e-07 is a float
        text = f"{mantissa}.0e{exponent}"
    return text
