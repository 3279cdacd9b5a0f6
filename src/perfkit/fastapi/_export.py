"""
:class:`ExportResponse`: a listing streamed as NDJSON or CSV, batch by batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Sequence
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from perfkit.http import (
    CSV_MEDIA_TYPE,
    NDJSON_MEDIA_TYPE,
    CSVEncoder,
    acsv_chunks,
    andjson_chunks,
    csv_chunks,
    ndjson_chunks,
)

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

    Args:
        batches: Lists of records (dataclasses or dicts), sync or async.
        format: ``"ndjson"`` (one JSON object per line) or ``"csv"``.
        fields: The CSV columns (names, a dataclass, or a
            :class:`~perfkit.http.CSVEncoder`); required for CSV.
        filename: Offer the body as a download of this name (its extension
            is added if missing).

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
    ) -> None:
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


def _attachment(filename: str) -> str:
    # RFC 6266: a plain ASCII fallback, and the exact name in RFC 8187 encoding.
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"
