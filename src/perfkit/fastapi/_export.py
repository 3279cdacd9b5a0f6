"""
:class:`ExportResponse`: a listing streamed as NDJSON or CSV, batch by batch.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Iterable, Sequence
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from perfkit.http import (
    CSV_MEDIA_TYPE,
    DEFAULT_STREAM_LIMIT,
    NDJSON_MEDIA_TYPE,
    CSVEncoder,
    SendTimeout,
    StreamLimit,
    acsv_chunks,
    andjson_chunks,
    csv_chunks,
    ndjson_chunks,
)

log = logging.getLogger("perfkit.http")

__all__ = ["EXPORT_FORMATS", "ExportFormat", "ExportResponse"]

ExportFormat: TypeAlias = Literal["ndjson", "csv"]
EXPORT_FORMATS: Final[tuple[ExportFormat, ...]] = ("ndjson", "csv")

Batches: TypeAlias = Iterable[Iterable[Any]] | AsyncIterable[Iterable[Any]]


class ExportResponse(StreamingResponse):
    """
    Stream *batches* (lists of records, as :func:`perfkit.pagination.keyset_batches`
    yields them) as NDJSON or CSV, one body chunk per batch.

    Nothing is held but the batch being sent: memory stays flat whatever
    the export's size. Sync batches are read in the thread pool, one batch
    per step; when the client disconnects, the server stops asking for the
    next batch, so no further query runs. The response carries
    ``Cache-Control: no-store`` and, with *filename*, a
    ``Content-Disposition: attachment``. Compression
    (:class:`perfkit.http.Compression`) compresses it as it streams.

    Each worker sends at most ``limit.concurrent`` exports at once (4 by default): one
    more is refused before it starts, 503 ``overloaded`` with ``Retry-After``; and a
    client that leaves a chunk unread for ``limit.send_timeout`` (30 s) has its
    connection closed, which frees the slot. So clients that open exports and never
    read cost the other requests little (:class:`perfkit.http.StreamLimit`).

    Args:
        batches: Lists of records (dataclasses or dicts), sync or async.
        format: ``"ndjson"`` (one JSON object per line) or ``"csv"``.
        fields: The CSV columns (names, a dataclass, or a
            :class:`~perfkit.http.CSVEncoder`); required for CSV.
        filename: Offer the body as a download of this name (its extension
            is added if missing).
        limit: The per-worker bound it counts against
            (:data:`perfkit.http.DEFAULT_STREAM_LIMIT` unless given; ``None``:
            unbounded).

    Example::

        @app.get("/orders/export")
        def export_orders(format: ExportFormat = "ndjson") -> ExportResponse:
            batches = keyset_batches(engine, select(Order).order_by(Order.id))
            return ExportResponse(batches, format=format, fields=Order, filename="orders")

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        batches: Batches,
        *,
        format: ExportFormat = "ndjson",
        fields: Sequence[str] | type[Any] | CSVEncoder | None = None,
        filename: str | None = None,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
        limit: StreamLimit | None = DEFAULT_STREAM_LIMIT,
    ) -> None:
        self.limit = limit
        body: Any
        if format == "ndjson":
            media_type = NDJSON_MEDIA_TYPE
            body = (
                andjson_chunks(batches)
                if isinstance(batches, AsyncIterable)
                else ndjson_chunks(batches)
            )
        elif format == "csv":
            if fields is None:
                msg = "a CSV export needs fields= (the columns)"
                raise ValueError(msg)
            media_type = CSV_MEDIA_TYPE
            body = (
                acsv_chunks(batches, fields)
                if isinstance(batches, AsyncIterable)
                else csv_chunks(batches, fields)
            )
        else:  # a caller without a type checker
            msg = f"format must be one of {', '.join(EXPORT_FORMATS)}, not {format!r}"  # type: ignore[unreachable]
            raise ValueError(msg)
        extra = {"cache-control": "no-store", **(headers or {})}
        if filename is not None:
            if not filename.endswith(f".{format}"):
                filename = f"{filename}.{format}"
            extra["content-disposition"] = _attachment(filename)
        super().__init__(
            body,
            status_code=status_code,
            headers=extra,
            media_type=media_type,
            background=background,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit
        if limit is None:
            await super().__call__(scope, receive, send)
            return
        limit.acquire()  # Overloaded, before anything is sent: the handlers answer 503
        try:
            await super().__call__(scope, receive, limit.bounded(send))
        except SendTimeout as exc:
            # The response cannot be finished (its last chunk waits in the buffers): end it
            # here, and the server closes the connection.
            log.warning("an export was cut off: %s", exc)
        finally:
            limit.release()


def _attachment(filename: str) -> str:
    # RFC 6266: a plain ASCII fallback, and the exact name in RFC 8187 encoding.
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"
