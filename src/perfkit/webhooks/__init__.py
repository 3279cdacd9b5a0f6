"""
Webhooks per the Standard Webhooks spec (https://www.standardwebhooks.com), first part:
signing and verification, and the retry schedule. Delivery on the queue comes next.

* :class:`WebhookSigner`: the ``webhook-id``/``-timestamp``/``-signature`` headers,
  HMAC-SHA256 ``v1`` signatures, one per secret while keys rotate;
* :func:`verify_webhook`: a receiver's check (timestamp tolerance, any secret,
  constant-time), raising :class:`~perfkit.errors.InvalidSignature` (401);
* :data:`RETRY_SCHEDULE`, :func:`retry_delay`, :func:`parse_retry_after`: when to try
  again (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; jittered; a
  receiver's ``Retry-After`` honoured).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from perfkit.errors import InvalidSignature

from ._schedule import RETRY_SCHEDULE, parse_retry_after, retry_delay
from ._signing import DEFAULT_TOLERANCE, WebhookSigner, verify_webhook

__all__ = [
    "DEFAULT_TOLERANCE",
    "RETRY_SCHEDULE",
    "InvalidSignature",
    "WebhookSigner",
    "parse_retry_after",
    "retry_delay",
    "verify_webhook",
]
