"""
:class:`CachedRoute`: which responses the response cache holds, keyed and tagged how.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final

from ._asgi import Scope

__all__ = ["CachedRoute", "Principal"]

Principal = Callable[[Scope], str | None]
"""Who a request is from (e.g. a verified user id), or ``None`` when unknown."""

_CONVERTERS: Final[dict[type, tuple[str, Callable[[str], Any]]]] = {
    str: ("[^/]+", str),
    int: ("[0-9]+", int),
    uuid.UUID: ("[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}", uuid.UUID),
}
_PARAM: Final = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")
_DEFAULT_STATUSES: Final = frozenset({200, 203})


class CachedRoute:
    """
    A route whose ``GET``/``HEAD`` responses :class:`ResponseCache` stores.

    Args:
        path: The route template, as the framework spells it
            (``"/bills/{bill_id}"``): on a hit it is what the timing
            middleware reports as ``http.route``.
        tags: Tags of each stored response: templates formatted with the path
            parameters (``"bill:{bill_id}"``). The same tags the data cache's
            writes invalidate, so ``cache.invalidate_tags("bill:42")`` drops
            the cached record and every cached response built from it. A
            handler adds tags known only once it ran with :func:`tag_response`.
        params: The type of each path parameter (``int``, ``str`` or
            ``uuid.UUID``; default ``str``). A typed parameter matches only
            its own syntax and is formatted into tags canonically, so
            ``/bills/042`` is tagged ``bill:42``, like the write it must see.
        ttl: Seconds a response lives (default: the cache's).
        cache_control: The ``Cache-Control`` sent with the response when the
            app sets none. The default, ``no-cache``, lets clients and CDNs
            store it but revalidate every time (a 304 while it is current),
            which is what keeps them fresh: the server side is invalidated on
            every write, the client side is not.
        vary: Request headers the response depends on; their values are part
            of the key and of the ``Vary`` header.
        principal: For routes whose response depends on who asks: returns
            the requester's identity from the request (a verified token's
            subject, not a raw header), which becomes part of the key.
            Without it, a request carrying ``Authorization`` or ``Cookie`` is
            never served from or stored in the cache.
        statuses: Statuses that may be stored (default 200 and 203).

    .. versionadded:: 0.2.0
    """

    __slots__ = (
        "_converters",
        "_regex",
        "_tag_names",
        "cache_control",
        "path",
        "principal",
        "statuses",
        "tags",
        "ttl",
        "vary",
    )

    def __init__(
        self,
        path: str,
        *,
        tags: Iterable[str] = (),
        params: Mapping[str, type] | None = None,
        ttl: float | None = None,
        cache_control: str | None = None,
        vary: Collection[str] = (),
        principal: Principal | None = None,
        statuses: Collection[int] = _DEFAULT_STATUSES,
    ) -> None:
        if not path.startswith("/"):
            msg = f"a route path starts with '/', not {path!r}"
            raise ValueError(msg)
        if ttl is not None and ttl <= 0:
            msg = f"ttl must be positive, not {ttl}"
            raise ValueError(msg)
        if isinstance(tags, str) or isinstance(vary, str):
            msg = "tags= and vary= take collections of names, not one string"
            raise TypeError(msg)
        self.path = path
        self.tags = tuple(tags)
        self.ttl = ttl
        self.principal = principal
        self.statuses = frozenset(statuses)
        self.vary = tuple(sorted({name.lower().encode("latin-1") for name in vary}))
        default_control = "private, no-cache" if principal is not None else "no-cache"
        self.cache_control = (cache_control or default_control).encode("latin-1")
        self._regex, self._converters = _compile(path, dict(params or {}))
        self._tag_names = _check_tags(self.tags, set(self._converters))

    def __repr__(self) -> str:
        return f"CachedRoute({self.path!r}, tags={list(self.tags)!r})"

    @property
    def static(self) -> bool:
        """Whether the path has no parameters."""
        return not self._converters

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted path parameters if *path* is this route's, else ``None``."""
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        try:
            return {
                name: self._converters[name](value) for name, value in found.groupdict().items()
            }
        except ValueError:
            return None

    def tags_for(self, params: Mapping[str, Any]) -> list[str]:
        """This route's tags for a request with path *params*."""
        if not self._tag_names:
            return list(self.tags)
        return [template.format_map(params) for template in self.tags]


def _compile(
    path: str, params: dict[str, type]
) -> tuple[re.Pattern[str], dict[str, Callable[[str], Any]]]:
    names = _PARAM.findall(path)
    if len(set(names)) != len(names):
        msg = f"a parameter appears twice in {path!r}"
        raise ValueError(msg)
    unknown = set(params) - set(names)
    if unknown:
        msg = f"params= names {sorted(unknown)} that {path!r} does not have"
        raise ValueError(msg)
    converters: dict[str, Callable[[str], Any]] = {}
    pattern, last = [], 0
    for found in _PARAM.finditer(path):
        name = found.group(1)
        kind = params.get(name, str)
        if kind not in _CONVERTERS:
            msg = f"params[{name!r}] must be int, str or uuid.UUID, not {kind!r}"
            raise TypeError(msg)
        regex, convert = _CONVERTERS[kind]
        pattern.append(re.escape(path[last : found.start()]))
        pattern.append(f"(?P<{name}>{regex})")
        converters[name] = convert
        last = found.end()
    if "{" in path[last:] or "}" in path[last:]:
        msg = f"malformed parameter in {path!r}: use {{name}}"
        raise ValueError(msg)
    pattern.append(re.escape(path[last:]))
    return re.compile("".join(pattern)), converters


def _check_tags(tags: tuple[str, ...], names: set[str]) -> bool:
    """Whether any tag template has fields; raises if one names an unknown parameter."""
    fields = False
    for template in tags:
        for _, field, spec, conversion in string.Formatter().parse(template):
            if field is None:
                continue
            if field not in names or spec or conversion:
                allowed = sorted(names)
                msg = f"tag {template!r} may only use the path's parameters {allowed} as {{name}}"
                raise ValueError(msg)
            fields = True
    return fields
