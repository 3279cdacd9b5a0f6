"""
Pagination for SQLAlchemy 2 ``select()`` statements, sync and async.

* :func:`paginate` / :func:`apaginate`: page and limit, with ``total``,
  ``pages``, ``has_next``, ``has_prev``; the count exact, cached or skipped.
* :func:`paginate_keyset` / :func:`apaginate_keyset`: signed cursors whose
  pages cost the same at any depth.
* :func:`keyset_batches` / :func:`akeyset_batches`: a whole query in keyset
  batches, for streamed exports in constant memory.
"""

from __future__ import annotations

from ._keys import KEYS_TABLE, CursorKeys, SharedCursorKeys, cursor_keys_table
from ._keyset import CursorPage, apaginate_keyset, paginate_keyset
from ._offset import (
    DEFAULT_MAX_LIMIT,
    MAX_PAGE,
    CountStrategy,
    Page,
    apaginate,
    count_tag,
    paginate,
    validate_page,
)
from ._stream import DEFAULT_BATCH_SIZE, akeyset_batches, keyset_batches

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_LIMIT",
    "KEYS_TABLE",
    "MAX_PAGE",
    "CountStrategy",
    "CursorKeys",
    "CursorPage",
    "Page",
    "SharedCursorKeys",
    "akeyset_batches",
    "apaginate",
    "apaginate_keyset",
    "count_tag",
    "cursor_keys_table",
    "keyset_batches",
    "paginate",
    "paginate_keyset",
    "validate_page",
]
