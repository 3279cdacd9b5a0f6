"""
The methods a path accepts, for the ``Allow`` header of a 405.

Starlette's router hands a request whose path matches but whose method does
not to the *first* such route, and that route's 405 lists only its own
methods: with ``GET /notes/{id}`` and ``PATCH /notes/{id}`` declared apart,
``DELETE /notes/1`` is told ``Allow: GET``. Here the router is asked again,
once per method, which of them it would route.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from starlette.routing import BaseRoute, Host, Match, Mount

from perfkit.http._asgi import Scope

__all__ = ["allowed_methods"]

# Probed on every 405, with every method a route declares.
_STANDARD: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """
    Return the methods the router of *routes* would route *scope*'s path to, in a stable order.

    *scope* may be one the router already changed (inside a mount): the probe
    starts from the application's root path again.
    """
    probe: dict[str, Any] = {
        "type": "http",
        "path": scope["path"],
        "root_path": scope.get("app_root_path", scope.get("root_path", "")),
        "headers": scope.get("headers", []),
        "query_string": scope.get("query_string", b""),
    }
    candidates = dict.fromkeys([*_STANDARD, *sorted(_declared(routes))])
    return [method for method in candidates if _routed(routes, {**probe, "method": method})]


def _routed(routes: Iterable[BaseRoute], scope: dict[str, Any]) -> bool:
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is not Match.FULL:
            continue
        # The first full match gets the request; a mount then routes it on.
        if isinstance(route, Mount | Host):
            inner = route.routes
            return _routed(inner, {**scope, **child_scope}) if inner else True
        return True
    return False


def _declared(routes: Iterable[BaseRoute]) -> set[str]:
    found: set[str] = set()
    for route in routes:
        found.update(getattr(route, "methods", None) or ())
        inner = getattr(route, "routes", None)
        if isinstance(inner, list):
            found |= _declared(inner)
    return found
