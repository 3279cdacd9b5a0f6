"""
A transactional outbox: events written in the caller's transaction, relayed to a queue
at least once and in order, and consumed idempotently by their stable ids.

* :class:`Outbox`: the table, and :meth:`~Outbox.add` / :meth:`~Outbox.aadd` that
  write an :class:`Event` on the caller's connection (sync or asyncio, SQLite or
  PostgreSQL): a rollback writes none.
* :class:`Relay`: hands committed events to a :class:`Publisher` and marks them,
  one relay at a time per outbox, resuming without loss after a crash.
* :class:`DramatiqPublisher`: the queue engine, dramatiq on RabbitMQ with publisher
  confirms (``pip install perfkit[queue]``); :class:`InProcessPublisher`: no broker,
  a handler in the relay's process (the embedded default).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._outbox import DEFAULT_TABLE, Event, Outbox
from ._relay import InProcessPublisher, Publisher, Relay

if TYPE_CHECKING:
    from ._dramatiq import DramatiqPublisher

__all__ = [
    "DEFAULT_TABLE",
    "DramatiqPublisher",
    "Event",
    "InProcessPublisher",
    "Outbox",
    "Publisher",
    "Relay",
]


def __getattr__(name: str) -> Any:
    if name == "DramatiqPublisher":
        from ._dramatiq import DramatiqPublisher  # noqa: PLC0415 - perfkit[queue]

        globals()[name] = DramatiqPublisher
        return DramatiqPublisher
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
