"""
When to try a webhook delivery again: the Standard Webhooks schedule, jittered, with
Retry-After honoured.
"""

from __future__ import annotations

import email.utils
import random as _random
from collections.abc import Sequence
from typing import Final

__all__ = ["RETRY_SCHEDULE", "parse_retry_after", "retry_delay"]

RETRY_SCHEDULE: Final[tuple[float, ...]] = (
    0,
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    10 * 3600,
)
"""Seconds before each attempt: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (~27.6 h)."""
MAX_RETRY_AFTER: Final = 24 * 3600.0


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """
    Seconds a ``Retry-After`` value asks for: delta-seconds or an HTTP-date (RFC 9110).

    Returns ``None`` when it is missing or unreadable; a date in the past is 0;
    anything past 24 hours is capped there (a receiver cannot park a delivery
    for ever).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; a zone-less date is not one
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def retry_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    schedule: Sequence[float] = RETRY_SCHEDULE,
    jitter: float = 0.1,
    random: _random.Random | None = None,
) -> float | None:
    """
    Seconds to wait before attempt *attempt* (1 is the first), or ``None``: give up.

    Each scheduled delay is spread by up to *jitter* (a fraction, either way)
    so endpoints that failed together are not retried together; a receiver's
    ``Retry-After`` (in seconds, from :func:`parse_retry_after`) wins when it
    asks for longer than the schedule.

    Raises:
        ValueError: *attempt* is below 1 or *jitter* outside 0 to 1.

    .. versionadded:: 0.2.0
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        msg = f"attempt counts from 1, not {attempt!r}"
        raise ValueError(msg)
    if not 0 <= jitter <= 1:
        msg = f"jitter is a fraction from 0 to 1, not {jitter!r}"
        raise ValueError(msg)
    if attempt > len(schedule):
        return None
    base = float(schedule[attempt - 1])
    spread = (random or _random).uniform(-jitter, jitter) * base
    delay = base + spread
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
