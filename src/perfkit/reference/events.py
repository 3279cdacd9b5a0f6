"""
The events the reference stores write to their outbox (``open_stores(outbox=...)``).

Each is written in the transaction of the write it describes, keyed by the bill it
concerns (so a bill's events are relayed in commit order):

========================  ==============  ===================================================
type                      key             payload
========================  ==============  ===================================================
``vote.cast``             ``bill:<id>``   the vote (``VoteRecord.to_dict()``), by ``cast``
                                          and, per stored vote, ``cast_many``
``bill.status_changed``   ``bill:<id>``   ``{"bill": <the bill after>, "previous_status": s}``,
                                          by ``bills.update`` when the status changes
========================  ==============  ===================================================
"""

from __future__ import annotations

from typing import Any, Final

from .records import VoteRecord

__all__ = ["BILL_STATUS_CHANGED", "TYPES", "VOTE_CAST", "event_key", "vote_payload"]

VOTE_CAST: Final = "vote.cast"
BILL_STATUS_CHANGED: Final = "bill.status_changed"
TYPES: Final = (VOTE_CAST, BILL_STATUS_CHANGED)


def event_key(bill_id: int) -> str:
    """The outbox key of events about bill *bill_id*."""
    return f"bill:{bill_id}"


def vote_payload(vote: VoteRecord) -> dict[str, Any]:
    """``vote.to_dict()``, built directly: it rides along on every cast."""
    return {
        "id": vote.id,
        "bill_id": vote.bill_id,
        "user_id": vote.user_id,
        "choice": vote.choice.value,
        "created_at": vote.created_at.isoformat(),
    }
