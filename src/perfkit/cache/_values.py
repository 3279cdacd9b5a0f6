"""
No shared mutable values: what an in-process backend hands out.

A value that cannot change (numbers, strings, ``None``, enums, dates, frozen
dataclasses and tuples of such values, ...) is handed out as it is: sharing
it is safe and costs nothing. Any other value is copied when stored and on
every read, so one caller changing the dict it got cannot change what the
next caller gets. Redis hands out a fresh decoded value on every read, so
both backends behave alike.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import uuid
from collections.abc import Callable
from typing import Any, Final

__all__ = ["Copier", "copier_for", "share"]

Copier = Callable[[Any], Any]

_SCALARS: Final[frozenset[type]] = frozenset(
    {
        type(None), bool, int, float, complex, str, bytes, range,
        dt.datetime, dt.date, dt.time, dt.timedelta, dt.timezone,
        decimal.Decimal, fractions.Fraction, uuid.UUID,
    }
)  # fmt: skip
_DEPTH: Final = 32


def _immutable(value: Any, depth: int = 0) -> bool:
    cls = type(value)
    if cls in _SCALARS or isinstance(value, enum.Enum):
        return True
    if depth > _DEPTH:
        return False
    if cls is tuple or cls is frozenset or _is_record_tuple(cls):
        return all(_immutable(item, depth + 1) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            return False
        return all(_immutable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    return False


def _is_record_tuple(cls: type) -> bool:
    """A namedtuple (a tuple subclass without instance attributes) or a SQLAlchemy ``Row``."""
    if issubclass(cls, tuple):
        return cls.__dictoffset__ == 0  # no per-instance __dict__ to change
    return cls.__name__ == "Row" and cls.__module__.startswith("sqlalchemy.")


def _flat_items(items: Any) -> bool:
    return all(type(item) in _SCALARS for item in items)


def copier_for(value: Any) -> Copier | None:
    """
    How to copy *value* so no caller shares it, or ``None`` when it cannot change.

    Flat lists and dicts of scalars get a shallow copy (tens of nanoseconds);
    anything else mutable a deep copy.
    """
    if _immutable(value):
        return None
    cls = type(value)
    if cls is dict and _flat_items(value.values()):
        return dict.copy
    if cls is list and _flat_items(value):
        return list.copy
    return copy.deepcopy


def share(value: Any) -> Any:
    """A value a second caller may have: *value* itself if it cannot change, else a copy."""
    copier = copier_for(value)
    return value if copier is None else copier(value)
