"""
The bill-text service: an external HTTP dependency, called through a circuit breaker.

``PERFKIT_TEXT_URL`` points at it (``python -m bill_api.text_service`` runs a
stand-in). Without it, or while the breaker is open, or when a call fails,
the API answers with the bill's stored summary and says so in ``source``.
"""

from __future__ import annotations

from typing import Any

import httpx

from perfkit import CircuitBreaker
from perfkit.reference import BillRecord

__all__ = ["BillText"]


class BillText:
    """
    Fetches a bill's full text, falling back to its summary.

    Args:
        base_url: The text service (``None``: always the summary).
        breaker: Guards the service (default: open after 5 failures or when
            half of 20 calls take over 0.5 s; trial after 15 s).
        timeout: Seconds one request may take.
    """

    def __init__(
        self,
        base_url: str | None,
        *,
        breaker: CircuitBreaker | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.base_url = base_url
        self.breaker = breaker or CircuitBreaker(
            name="bill-text",
            fail_max=5,
            reset_timeout=15,
            slow_call_duration=0.5,
            slow_call_rate=0.5,
            window=20,
            min_calls=10,
            fallback=self.fallback,
        )
        self._client = (
            httpx.Client(base_url=base_url, timeout=timeout) if base_url is not None else None
        )

    def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            self._client.close()

    def fetch(self, bill: BillRecord) -> dict[str, Any]:
        """The bill's text and where it came from (``service``, ``summary`` or ``fallback``)."""
        if self._client is None:
            return {"bill_id": bill.id, "text": bill.summary, "source": "summary"}
        result: dict[str, Any] = self.breaker.call(self._remote, bill)
        return result

    def _remote(self, bill: BillRecord) -> dict[str, Any]:
        assert self._client is not None
        response = self._client.get(f"/bills/{bill.id}/text")
        response.raise_for_status()
        return {"bill_id": bill.id, "text": str(response.json()["text"]), "source": "service"}

    @staticmethod
    def fallback(exc: BaseException, bill: BillRecord) -> dict[str, Any]:
        """The stored summary, marked as a fallback, with why."""
        return {
            "bill_id": bill.id,
            "text": bill.summary,
            "source": "fallback",
            "reason": type(exc).__name__,
        }
