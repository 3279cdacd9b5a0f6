"""
Streamed exports: batches of records to NDJSON or CSV bytes, one chunk per batch.

The encoding is plain functions on one batch (no I/O); :func:`ndjson_chunks`
and :func:`csv_chunks` drive them over sync iterables, :func:`andjson_chunks`
and :func:`acsv_chunks` over async ones. Feed them
:func:`perfkit.pagination.keyset_batches` and any streaming response
(:class:`perfkit.fastapi.ExportResponse` for FastAPI and Starlette).
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Final

__all__ = [
    "CSV_MEDIA_TYPE",
    "NDJSON_MEDIA_TYPE",
    "CSVEncoder",
    "acsv_chunks",
    "andjson_chunks",
    "csv_chunks",
    "ndjson_batch",
    "ndjson_chunks",
]

NDJSON_MEDIA_TYPE: Final = "application/x-ndjson"
CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"

# A cell a spreadsheet would run as a formula (OWASP "CSV injection").
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _as_mapping(value: Any) -> Any:
    asdict = getattr(value, "_asdict", None)  # SQLAlchemy rows, named tuples
    if asdict is None:
        msg = f"cannot encode {type(value).__name__} as JSON"
        raise TypeError(msg)
    # Keys as plain str: orjson refuses str subclasses (SQLAlchemy's quoted_name) as keys.
    return {str(key): item for key, item in asdict().items()}


def ndjson_batch(batch: Iterable[Any]) -> bytes:
    """
    One batch as NDJSON: each item on its own line, encoded by orjson.

    Items may be dicts, dataclasses (records), SQLAlchemy rows (as their
    mappings), or anything else orjson encodes.
    """
    import orjson  # noqa: PLC0415 - perfkit[http]; loaded when an export runs

    dumps = orjson.dumps
    return b"".join([dumps(item, default=_as_mapping) + b"\n" for item in batch])


def ndjson_chunks(batches: Iterable[Iterable[Any]]) -> Iterator[bytes]:
    """
    Yield each batch of *batches* as one chunk of NDJSON lines.

    Example::

        body = ndjson_chunks(keyset_batches(engine, select(Order).order_by(Order.id)))

    .. versionadded:: 0.2.0
    """
    for batch in batches:
        chunk = ndjson_batch(batch)
        if chunk:
            yield chunk


async def andjson_chunks(batches: AsyncIterable[Iterable[Any]]) -> AsyncIterator[bytes]:
    """
    The asyncio twin of :func:`ndjson_chunks`.

    .. versionadded:: 0.2.0
    """
    async for batch in batches:
        chunk = ndjson_batch(batch)
        if chunk:
            yield chunk


class CSVEncoder:
    """
    Records to CSV rows (RFC 4180, ``\\r\\n`` line ends), the header first.

    Args:
        fields: The columns, in order: attribute names of the records (or keys
            of dict items), or a dataclass whose fields they are.
        header: Whether the first chunk starts with the column names.
        escape_formulas: Prefix ``'`` to text cells that start with ``=``,
            ``+``, ``-``, ``@``, a tab or a carriage return, so a spreadsheet
            shows them instead of running them as formulas (OWASP's advice
            for exports of user-written text). Numbers are never changed.

    Cells: ``None`` is empty; datetimes, dates and times are ISO 8601; enums
    their values; booleans ``true``/``false``.

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_escape", "_fields", "_header")

    def __init__(
        self,
        fields: Sequence[str] | type[Any],
        *,
        header: bool = True,
        escape_formulas: bool = True,
    ) -> None:
        if isinstance(fields, type):
            if not dataclasses.is_dataclass(fields):
                msg = f"fields must be names or a dataclass, not {fields.__name__}"
                raise TypeError(msg)
            fields = [field.name for field in dataclasses.fields(fields)]
        if isinstance(fields, str) or not fields:
            msg = "fields must be a non-empty sequence of names"
            raise ValueError(msg)
        self._fields = tuple(fields)
        self._header = header
        self._escape = escape_formulas

    def header(self) -> bytes:
        """The header row, or nothing if *header* was false."""
        return self._rows([self._fields]) if self._header else b""

    def batch(self, batch: Iterable[Any]) -> bytes:
        """One batch of records as CSV rows."""
        return self._rows([self._row(item) for item in batch])

    @staticmethod
    def _rows(rows: Iterable[Sequence[str]]) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows(rows)
        return out.getvalue().encode("utf-8")

    def _row(self, item: Any) -> list[str]:
        if isinstance(item, Mapping):
            values = [item.get(name) for name in self._fields]
        else:
            values = [getattr(item, name) for name in self._fields]
        return [self._cell(value) for value in values]

    def _cell(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, datetime | date | time):
            return value.isoformat()
        if isinstance(value, str):
            if self._escape and value.startswith(_FORMULA_START):
                return "'" + value
            return value
        return str(value)


def _encoder(fields: Sequence[str] | type[Any] | CSVEncoder) -> CSVEncoder:
    return fields if isinstance(fields, CSVEncoder) else CSVEncoder(fields)


def csv_chunks(
    batches: Iterable[Iterable[Any]], fields: Sequence[str] | type[Any] | CSVEncoder
) -> Iterator[bytes]:
    """
    Yield the header, then each batch of *batches* as one chunk of CSV rows.

    *fields* names the columns, or is a dataclass (its fields), or a
    :class:`CSVEncoder` with other options.

    .. versionadded:: 0.2.0
    """
    encoder = _encoder(fields)
    first = encoder.header()
    if first:
        yield first
    for batch in batches:
        chunk = encoder.batch(batch)
        if chunk:
            yield chunk


async def acsv_chunks(
    batches: AsyncIterable[Iterable[Any]], fields: Sequence[str] | type[Any] | CSVEncoder
) -> AsyncIterator[bytes]:
    """
    The asyncio twin of :func:`csv_chunks`.

    .. versionadded:: 0.2.0
    """
    encoder = _encoder(fields)
    first = encoder.header()
    if first:
        yield first
    async for batch in batches:
        chunk = encoder.batch(batch)
        if chunk:
            yield chunk
