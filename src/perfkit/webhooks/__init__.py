"""
Webhooks per the Standard Webhooks spec (https://www.standardwebhooks.com).

* :class:`Webhooks`: endpoints (subscribe, disable on 410, enable, rotate secrets) and
  deliveries (one per event and endpoint; attempts signed, through a circuit breaker
  per endpoint, on the retry schedule; a dead-letter state) in two tables
  (``pip install perfkit[webhooks]``);
* :class:`WebhookWorker` attempts them on threads in process (the embedded default);
  :class:`DramatiqWebhooks` in dramatiq workers on RabbitMQ (``perfkit[queue]``);
* :func:`check_url`: where a webhook may go (public addresses only, unless allowed);
* :class:`WebhookSigner`: the ``webhook-id``/``-timestamp``/``-signature`` headers,
  HMAC-SHA256 ``v1`` signatures, one per secret while keys rotate;
* :func:`verify_webhook`: a receiver's check (timestamp tolerance, any secret,
  constant-time), raising :class:`~perfkit.errors.InvalidSignature` (401);
* :data:`RETRY_SCHEDULE`, :func:`retry_delay`, :func:`parse_retry_after`: when to try
  again (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; jittered; a
  receiver's ``Retry-After`` honoured).

Signing, verifying and the schedule need nothing beyond the standard library; the rest
loads httpx (and dramatiq) on first use.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perfkit.errors import InvalidSignature

from ._schedule import RETRY_SCHEDULE, parse_retry_after, retry_delay
from ._signing import DEFAULT_TOLERANCE, WebhookSigner, verify_webhook
from ._store import Delivery, DeliveryStatus, Endpoint, EndpointStatus
from ._targets import Target, check_url

if TYPE_CHECKING:
    from ._runners import DramatiqWebhooks, WebhookWorker
    from ._webhooks import DEFAULT_TIMEOUT, Subscription, Webhooks

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOLERANCE",
    "RETRY_SCHEDULE",
    "Delivery",
    "DeliveryStatus",
    "DramatiqWebhooks",
    "Endpoint",
    "EndpointStatus",
    "InvalidSignature",
    "Subscription",
    "Target",
    "WebhookSigner",
    "WebhookWorker",
    "Webhooks",
    "check_url",
    "parse_retry_after",
    "retry_delay",
    "verify_webhook",
]

_LAZY = {
    "DEFAULT_TIMEOUT": "._webhooks",
    "Subscription": "._webhooks",
    "Webhooks": "._webhooks",
    "WebhookWorker": "._runners",
    "DramatiqWebhooks": "._runners",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value
