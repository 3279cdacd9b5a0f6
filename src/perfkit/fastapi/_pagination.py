"""
Listing routes: ``page``/``limit``/``cursor`` validated once, JSON bodies, and
RFC 8288 ``Link`` headers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import Depends, Query, Request, Response

from perfkit.errors import InvalidInput
from perfkit.pagination import DEFAULT_MAX_LIMIT, MAX_PAGE, CursorPage, Page

__all__ = ["DEFAULT_LIMIT", "Paginated", "Pagination", "cursor_body", "page_body"]

T = TypeVar("T")

DEFAULT_LIMIT: Final = 20
MAX_CURSOR_LENGTH: Final = 4096
_PAGING_PARAMS: Final = frozenset({"page", "cursor"})


def page_body(page: Page[T], *, item: Callable[[T], Any] | None = None) -> dict[str, Any]:
    """
    Return a :class:`~perfkit.pagination.Page` as a JSON body: ``items`` and its metadata.

    Args:
        page: The page.
        item: Turns each item into JSON (``Record.to_dict``); default: as it is.

    The body is ``{"items", "page", "limit", "total", "pages", "has_next", "has_prev"}``.

    .. versionadded:: 0.2.0
    """
    items = page.items if item is None else tuple(item(each) for each in page.items)
    return {
        "items": list(items),
        "page": page.page,
        "limit": page.limit,
        "total": page.total,
        "pages": page.pages,
        "has_next": page.has_next,
        "has_prev": page.has_prev,
    }


def cursor_body(page: CursorPage[T], *, item: Callable[[T], Any] | None = None) -> dict[str, Any]:
    """
    Return a :class:`~perfkit.pagination.CursorPage` as a JSON body: ``items`` and its cursors.

    Args:
        page: The keyset page.
        item: Turns each item into JSON; default: as it is.

    The body is ``{"items", "limit", "next_cursor", "prev_cursor", "has_next", "has_prev"}``.

    .. versionadded:: 0.2.0
    """
    items = page.items if item is None else tuple(item(each) for each in page.items)
    return {
        "items": list(items),
        "limit": page.limit,
        "next_cursor": page.next_cursor,
        "prev_cursor": page.prev_cursor,
        "has_next": page.has_next,
        "has_prev": page.has_prev,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Pagination:
    """
    What a listing request asked for, validated: a page number, or a keyset cursor.

    Declare it on a route with :data:`Paginated` (or
    ``Annotated[Pagination, Depends(Pagination.dependency(max_limit=...))]``):
    the route then takes ``?page=`` (1-based, default 1), ``?limit=`` and
    ``?cursor=`` (an empty ``cursor`` asks for the first keyset page), each
    validated and documented in OpenAPI, and ``page`` with ``cursor`` is
    refused with 422 ``invalid_input``. :meth:`respond` and :meth:`listing`
    return the JSON body and set the ``Link`` header (RFC 8288: ``first``,
    ``prev``, ``next``, ``last``) on the response.

    Attributes:
        mode: ``"cursor"`` when a ``cursor`` was given, else ``"page"``.
        page: The page number asked for (1 in cursor mode).
        limit: Items per page.
        cursor: The keyset cursor to continue after; ``None`` for the first
            keyset page, and in page mode.
        target: The request's path and query, which the ``Link`` references
            are made from (relative references: never from the ``Host`` header).
        response: Where :meth:`respond` sets ``Link`` (FastAPI's response for
            the route); ``None`` sets nothing.

    Example::

        @app.get("/notes")
        def list_notes(paging: Paginated) -> dict[str, Any]:
            return paging.listing(
                lambda page: notes.page(page, paging.limit),
                lambda cursor: notes.after(cursor, paging.limit),
            )

    .. versionadded:: 0.2.0
    """

    mode: Literal["page", "cursor"]
    page: int
    limit: int
    cursor: str | None
    target: str = field(default="", repr=False)
    response: Response | None = field(default=None, repr=False, compare=False)

    @classmethod
    def dependency(
        cls,
        *,
        default_limit: int = DEFAULT_LIMIT,
        max_limit: int = DEFAULT_MAX_LIMIT,
        cursor: bool = True,
    ) -> Callable[..., Pagination]:
        """
        Return a FastAPI dependency that reads a :class:`Pagination` from the query.

        Args:
            default_limit: ``limit`` when none is given.
            max_limit: The largest ``limit`` accepted (larger is a 422).
            cursor: Whether the listing has a keyset mode (a ``cursor`` parameter).

        Example::

            Notes = Annotated[Pagination, Depends(Pagination.dependency(max_limit=50))]

        .. versionadded:: 0.2.0
        """
        if not 1 <= default_limit <= max_limit:
            raise ValueError(
                f"default_limit must be from 1 to max_limit={max_limit}, got {default_limit}"
            )

        def pagination(
            request: Request,
            response: Response,
            page: int | None = None,
            limit: int = default_limit,
            cursor: str | None = None,
        ) -> Pagination:
            target = quote(request.url.path, safe="/:@!$&'()*+,;=%")
            if request.url.query:
                target += "?" + request.url.query
            if cursor is None:
                return cls(
                    mode="page", page=page or 1, limit=limit, cursor=None,
                    target=target, response=response,
                )  # fmt: skip
            if page is not None:
                raise InvalidInput("query", "use either page or cursor, not both")
            return cls(
                mode="cursor", page=1, limit=limit, cursor=cursor or None,
                target=target, response=response,
            )  # fmt: skip

        # FastAPI reads the parameters from the signature: built here, since their
        # bounds are this call's (annotations would name variables it cannot see).
        kind = inspect.Parameter.KEYWORD_ONLY
        params = [
            inspect.Parameter("request", kind, annotation=Request),
            inspect.Parameter("response", kind, annotation=Response),
            inspect.Parameter(
                "page", kind, default=None,
                annotation=Annotated[
                    int | None, Query(ge=1, le=MAX_PAGE, description="1-based page number")
                ],
            ),
            inspect.Parameter(
                "limit", kind, default=default_limit,
                annotation=Annotated[
                    int, Query(ge=1, le=max_limit, description="Items per page")
                ],
            ),
        ]  # fmt: skip
        if cursor:
            params.append(
                inspect.Parameter(
                    "cursor", kind, default=None,
                    annotation=Annotated[
                        str | None,
                        Query(
                            max_length=MAX_CURSOR_LENGTH,
                            description="Keyset cursor from a previous page; empty for the first",
                        ),
                    ],
                )
            )  # fmt: skip
        pagination.__signature__ = inspect.Signature(params, return_annotation=cls)  # type: ignore[attr-defined]
        return pagination

    def listing(
        self,
        by_page: Callable[[int], Page[T]],
        by_cursor: Callable[[str | None], CursorPage[T]] | None = None,
        *,
        item: Callable[[T], Any] | None = None,
    ) -> dict[str, Any]:
        """
        Run the query of the mode asked for and return :meth:`respond`'s body.

        Args:
            by_page: Returns page *n* (``paginate(..., page=n, limit=paging.limit)``).
            by_cursor: Returns the keyset page after a cursor (``None``: the first).
            item: Turns each item into JSON; default: as it is.

        .. versionadded:: 0.2.0
        """
        if self.mode == "page":
            return self.respond(by_page(self.page), item=item)
        if by_cursor is None:
            raise InvalidInput("cursor", "this listing has no cursor mode")
        return self.respond(by_cursor(self.cursor), item=item)

    def respond(
        self, result: Page[T] | CursorPage[T], *, item: Callable[[T], Any] | None = None
    ) -> dict[str, Any]:
        """
        Return *result* as a JSON body (:func:`page_body`, :func:`cursor_body`), and set
        the ``Link`` header on :attr:`response`.

        .. versionadded:: 0.2.0
        """
        link = self.link(result)
        if link and self.response is not None:
            self.response.headers["Link"] = link
        if isinstance(result, Page):
            return page_body(result, item=item)
        return cursor_body(result, item=item)

    def link(self, result: Page[Any] | CursorPage[Any]) -> str:
        """
        Return the ``Link`` header value for *result* (RFC 8288), other query parameters kept.

        Page mode links ``first``, ``prev``, ``next`` and ``last`` (when the total
        is known); cursor mode ``first`` (``cursor=``), ``prev`` and ``next``.

        .. versionadded:: 0.2.0
        """
        links: list[tuple[str, str, str]] = []
        if isinstance(result, Page):
            links.append(("first", "page", "1"))
            if result.has_prev:
                links.append(("prev", "page", str(result.page - 1)))
            if result.has_next:
                links.append(("next", "page", str(result.page + 1)))
            if result.pages:
                links.append(("last", "page", str(result.pages)))
        else:
            links.append(("first", "cursor", ""))
            if result.has_prev and result.prev_cursor:
                links.append(("prev", "cursor", result.prev_cursor))
            if result.has_next and result.next_cursor:
                links.append(("next", "cursor", result.next_cursor))
        path, _, query = self.target.partition("?")
        kept = [
            pair
            for pair in parse_qsl(query, keep_blank_values=True)
            if pair[0] not in _PAGING_PARAMS
        ]
        return ", ".join(
            f'<{path}?{urlencode([*kept, (name, value)])}>; rel="{rel}"'
            for rel, name, value in links
        )


Paginated = Annotated[Pagination, Depends(Pagination.dependency())]
"""A route parameter of this type reads ``page``, ``limit`` (1-100, default 20) and ``cursor``."""
