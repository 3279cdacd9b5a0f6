"""
Serialising cached values: a small protocol and a safe JSON codec (no pickle).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import json
import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = ["Codec", "JSONCodec"]

_TYPE: Final = "__pk__"


class Codec(Protocol):
    """
    Turns values into bytes for a remote backend and back.

    .. versionadded:: 0.1.0
    """

    def dumps(self, value: Any) -> bytes:
        """Encode *value*."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode what :meth:`dumps` produced."""
        ...


class JSONCodec:
    """
    JSON with tagged extensions for the types data-backed APIs return.

    Handles ``None``, bools, numbers, strings, lists, tuples, dicts with string
    keys, ``datetime``/``date``/``time``, ``Decimal``, ``UUID``, ``bytes`` (base64), enums and
    dataclasses. Enums and dataclasses are rebuilt only if their class is in
    *allowed* (or its module is in *allowed_modules*), so a value written by
    someone else cannot make the reader import or construct arbitrary classes,
    which is exactly the hole pickle has.

    Args:
        allowed: Classes (dataclasses and enums) that may be rebuilt.
        allowed_modules: Modules whose dataclasses and enums may be rebuilt.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_allowed", "_decoder", "_encoder", "_modules")

    def __init__(
        self,
        *,
        allowed: tuple[type, ...] = (),
        allowed_modules: tuple[str, ...] = (),
    ) -> None:
        self._allowed = {_qualified(cls): cls for cls in allowed}
        self._modules = frozenset(allowed_modules)
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
        self._decoder = json.JSONDecoder(object_hook=self._revive)

    def dumps(self, value: Any) -> bytes:
        """
        Encode *value* as UTF-8 JSON.

        Raises:
            TypeError: *value* holds a type this codec cannot encode, or a
                dataclass or enum it would not be allowed to decode.
        """
        return self._encoder.encode(_tag(value, self._check)).encode()

    def _check(self, cls: type) -> None:
        name = _qualified(cls)
        if name not in self._allowed and cls.__module__ not in self._modules:
            msg = f"{name} is not an allowed type for this codec (see allowed=)"
            raise TypeError(msg)

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by :meth:`dumps`."""
        return self._decoder.decode(data.decode())

    def _class(self, name: str) -> type:
        cls = self._allowed.get(name)
        if cls is not None:
            return cls
        module, _, qualname = name.rpartition(":")
        if module not in self._modules:
            msg = f"{name} is not an allowed type for this codec"
            raise TypeError(msg)
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        if not isinstance(found, type):
            msg = f"{name} is not a class"
            raise TypeError(msg)
        return found

    def _revive(self, obj: dict[str, Any]) -> Any:  # noqa: PLR0911 - one branch per tag
        kind = obj.get(_TYPE)
        if kind is None:
            return obj
        value = obj["v"]
        if kind == "dt":
            return dt.datetime.fromisoformat(value)
        if kind == "date":
            return dt.date.fromisoformat(value)
        if kind == "time":
            return dt.time.fromisoformat(value)
        if kind == "dec":
            return decimal.Decimal(value)
        if kind == "uuid":
            return uuid.UUID(value)
        if kind == "b":
            return base64.b64decode(value)
        if kind == "tuple":
            return tuple(value)
        if kind == "dict":
            return dict(value)
        if kind == "enum":
            return self._class(obj["c"])(value)
        if kind == "dc":
            return self._class(obj["c"])(**value)
        msg = f"unknown tag {kind!r} in cached value"
        raise ValueError(msg)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _tag(value: Any, check: Callable[[type], None]) -> Any:  # noqa: PLR0911, PLR0912 - a type each
    if value is None or (
        isinstance(value, bool | int | float | str) and not isinstance(value, enum.Enum)
    ):
        return value
    if isinstance(value, list):
        return [_tag(item, check) for item in value]
    if isinstance(value, tuple):
        return {_TYPE: "tuple", "v": [_tag(item, check) for item in value]}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value) and _TYPE not in value:
            return {key: _tag(item, check) for key, item in value.items()}
        return {_TYPE: "dict", "v": [[_tag(k, check), _tag(v, check)] for k, v in value.items()]}
    if isinstance(value, dt.datetime):
        return {_TYPE: "dt", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TYPE: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TYPE: "time", "v": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {_TYPE: "dec", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {_TYPE: "uuid", "v": str(value)}
    if isinstance(value, bytes):
        return {_TYPE: "b", "v": base64.b64encode(value).decode("ascii")}
    if isinstance(value, enum.Enum):
        check(type(value))
        return {_TYPE: "enum", "c": _qualified(type(value)), "v": _tag(value.value, check)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        check(type(value))
        fields = {f.name: _tag(getattr(value, f.name), check) for f in dataclasses.fields(value)}
        return {_TYPE: "dc", "c": _qualified(type(value)), "v": fields}
    msg = f"JSONCodec cannot encode {type(value).__qualname__}"
    raise TypeError(msg)
