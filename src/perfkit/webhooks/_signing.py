"""
Standard Webhooks signatures: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

The signed content is ``"{id}.{timestamp}.{body}"``; each signature is ``v1,`` and the
base64 HMAC-SHA256 of it under one secret. During a key rotation a message carries one
signature per secret, space-separated, and a receiver accepts any that matches a secret
it knows. Pure functions: no I/O, the clock passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import Final

from perfkit.errors import InvalidSignature

__all__ = ["DEFAULT_TOLERANCE", "WebhookSigner", "verify_webhook"]

DEFAULT_TOLERANCE: Final = 300
"""Seconds a timestamp may be off the receiver's clock, either way (the spec's 5 minutes)."""
_PREFIX: Final = "whsec_"


def _key(secret: str | bytes) -> bytes:
    """A secret as ``whsec_<base64>`` (the spec's form), plain base64, or raw bytes."""
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.removeprefix(_PREFIX)
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            msg = "a webhook secret is whsec_ and base64, plain base64, or bytes"
            raise ValueError(msg) from None
    if len(key) < 16:
        msg = f"a webhook secret needs at least 16 bytes (128 bits), not {len(key)}"
        raise ValueError(msg)
    return key


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


class WebhookSigner:
    """
    Sign webhook messages with one secret, or several while keys rotate.

    Args:
        secrets: The endpoint's secrets, newest first: ``whsec_`` + base64 (as
            the spec and its libraries write them), plain base64, or bytes;
            at least 16 bytes each.

    Example::

        signer = WebhookSigner(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        headers = signer.headers(event.id, body)  # webhook-id, -timestamp, -signature

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_keys",)

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        if isinstance(secrets, str | bytes) or not secrets:
            msg = "give a sequence of one or more secrets"
            raise ValueError(msg)
        self._keys = tuple(_key(secret) for secret in secrets)

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-separated."""
        return " ".join(_signature(key, msg_id, timestamp, body) for key in self._keys)

    def headers(self, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """The three headers of a message with id *msg_id* (the event's id), signed now."""
        when = int(time.time()) if timestamp is None else timestamp
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(when),
            "webhook-signature": self.signature(msg_id, when, body),
        }


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str | bytes],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """
    Check a received webhook; return its ``webhook-id`` (what to deduplicate on).

    *headers* are looked up case-insensitively. The timestamp must be within
    *tolerance* seconds of *now* (default: the system clock), which bounds
    replays; any ``v1`` signature may match any of *secrets* (a rotation).
    Comparisons are constant-time.

    Raises:
        InvalidSignature: a header is missing or malformed, the timestamp is
            too old or too new, or no signature matches.

    .. versionadded:: 0.2.0
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    given = lowered.get("webhook-signature")
    if not msg_id or not stamp or not given:
        msg = "webhook-id, webhook-timestamp and webhook-signature are all required"
        raise InvalidSignature(msg)
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        msg = f"webhook-timestamp is more than {tolerance:g} s from now"
        raise InvalidSignature(msg)
    offered = [part for part in given.split(" ") if part.startswith("v1,")]
    if not offered:
        raise InvalidSignature("webhook-signature has no v1 signature")
    for key in (_key(secret) for secret in secrets):
        expected = _signature(key, msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, part) for part in offered):
            return msg_id
    raise InvalidSignature("no signature matches a known secret")
