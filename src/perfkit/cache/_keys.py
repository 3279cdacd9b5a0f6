"""
Cache keys and tags of a call: how they are named, and the source of the hot path's key step.

Three spellings of ``key=`` exist: ``None`` (the function's qualified name and
its arguments' reprs), a template formatted with the arguments by name, or a
callable. :class:`KeyMaker` computes keys and tags from ``(args, kwargs)``
for every spelling. :func:`key_source` writes the same computation as Python
source over the parameters' own names, which the decorator compiles into a
wrapper with the function's exact signature, so a hit binds no arguments.
"""

from __future__ import annotations

import enum
import inspect
import string
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

__all__ = ["PLAIN", "KeyMaker", "KeySpec", "TagSpec", "key_part", "key_source"]

TagSpec = Sequence[str] | Callable[..., Iterable[str]]
KeySpec = str | Callable[..., str] | None

SELF_NAMES: Final = frozenset({"self", "cls"})

PLAIN: Final[frozenset[type]] = frozenset({int, str, float, bool, type(None)})
"""Types whose ``repr`` is their key part as it is."""


def key_part(value: Any) -> str:
    """The part of a default key that argument *value* contributes."""
    if isinstance(value, enum.Enum):  # before int and str: IntEnum and StrEnum members too
        return f"{type(value).__qualname__}.{value.name}"
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    msg = (
        f"cannot build a cache key from a {type(value).__qualname__}; "
        "pass key= to cached() to name the entry yourself"
    )
    raise TypeError(msg)


class KeyMaker:
    """
    Builds the backend key and tags of one call of *fn* from its arguments.
    """

    __slots__ = (
        "head",
        "names",
        "namespace",
        "prefix",
        "result_tags",
        "signature",
        "skip",
        "spec",
        "tag_spec",
        "variadic",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        key: KeySpec,
        tags: TagSpec,
        result_tags: Callable[[Any], Iterable[str]] | None,
        namespace: str,
    ) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.skip = 1 if params and params[0].name in SELF_NAMES else 0
        self.names = tuple(p.name for p in params)
        self.spec = key
        self.tag_spec = tags
        self.result_tags = result_tags
        self.namespace = namespace  # a string, not the Cache: wrappers must not keep it alive
        self.prefix = f"{fn.__module__}.{fn.__qualname__}"
        self.head = self.namespace_key(self.prefix + "(")
        self.variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
        if key is None and self.variadic:
            msg = f"{self.prefix} takes *args/**kwargs: pass key= to cached()"
            raise TypeError(msg)

    def namespace_key(self, name: str) -> str:
        """The backend key of the cache key *name* (as :meth:`Cache.key`)."""
        return f"{self.namespace}:{name}"

    def namespace_tag(self, name: str) -> str:
        """The backend name of the tag *name* (as :meth:`Cache.tag`)."""
        return f"{self.namespace}#{name}"

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied."""
        if not kwargs and not self.variadic and len(args) == len(self.names):
            return dict(zip(self.names, args, strict=True))
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The backend key of the call ``fn(*args, **kwargs)``."""
        spec = self.spec
        if spec is None:
            values = list(self.arguments(args, kwargs).values())[self.skip :]
            return self.head + ",".join(map(key_part, values)) + ")"
        if isinstance(spec, str):
            return self.namespace_key(spec.format_map(self.arguments(args, kwargs)))
        return self.namespace_key(spec(*args, **kwargs))

    def tags(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> tuple[str, ...]:
        """The backend tags of the entry the call loaded *value* for."""
        spec = self.tag_spec
        names: list[str] = []
        if spec:
            if callable(spec):
                names.extend(spec(*args, **kwargs))
            else:
                mapping = self.arguments(args, kwargs)
                names.extend(tag.format_map(mapping) for tag in spec)
        if self.result_tags is not None and value is not None:
            names.extend(self.result_tags(value))
        return tuple(self.namespace_tag(name) for name in names)


def key_source(keys: KeyMaker, call: str, constants: dict[str, Any]) -> list[str] | None:
    """
    Lines of Python that set ``_pk_key`` from the parameters in scope by name.

    *call* is the source of the arguments as passed on (``"a, b, c=c"``), for
    a callable key. Values the lines refer to are added to *constants*.
    Returns ``None`` when the key cannot be written this way (the caller then
    uses :meth:`KeyMaker.key`).
    """
    spec = keys.spec
    names = keys.names[keys.skip :]
    if spec is None:
        constants["_pk_head"] = keys.head
        constants["_pk_plain"] = PLAIN
        constants["_pk_part"] = key_part
        constants["_pk_type"] = type  # parameters may be named like builtins
        constants["_pk_map"] = map
        if not names:
            return ["_pk_key = _pk_head + ')'"]
        checks = " and ".join(f"_pk_type({name}) in _pk_plain" for name in names)
        fast = "f'{_pk_head}" + ",".join(f"{{{name}!r}}" for name in names) + ")'"
        tuple_ = "(" + "".join(f"{name}, " for name in names) + ")"
        slow = f"_pk_head + ','.join(_pk_map(_pk_part, {tuple_})) + ')'"
        return [f"_pk_key = {fast} if {checks} else {slow}"]
    if callable(spec):
        constants["_pk_keyspec"] = spec
        constants["_pk_nskey"] = keys.namespace_key
        return [f"_pk_key = _pk_nskey(_pk_keyspec({call}))"]
    pieces = _template_pieces(keys.namespace_key(spec), set(keys.names), constants)
    if pieces is None:
        return None
    return ["_pk_key = " + " ".join(pieces)]


def _template_pieces(template: str, names: set[str], constants: dict[str, Any]) -> list[str] | None:
    """``"ns:user:{user_id}"`` as implicitly concatenated literals and f-strings."""
    pieces: list[str] = []
    for index, (literal, field, spec, conversion) in enumerate(string.Formatter().parse(template)):
        if literal:
            pieces.append(repr(literal))
        if field is None:
            continue
        if field not in names:
            return None  # attribute or item access: str.format's rules, not an f-string's
        convert = f"!{conversion}" if conversion else ""
        if spec:
            if "{" in spec:
                return None  # nested fields
            constants[f"_pk_spec{index}"] = spec
            pieces.append(f"f'{{{field}{convert}:{{_pk_spec{index}}}}}'")
        else:
            pieces.append(f"f'{{{field}{convert}}}'")
    return pieces or ["''"]
