"""
Standard Webhooks signing, verification and retry schedule (perfkit.webhooks).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from perfkit.errors import InvalidInput, InvalidSignature, PerfkitError
from perfkit.http import error_status
from perfkit.webhooks import (
    RETRY_SCHEDULE,
    WebhookSigner,
    check_url,
    parse_retry_after,
    retry_delay,
    verify_webhook,
)

# The example of the Standard Webhooks spec and its reference libraries.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER = "whsec_" + "A" * 43 + "="  # 32 zero bytes, base64


def test_the_specs_example_signs_to_its_published_signature() -> None:
    """HMAC-SHA256 of "id.timestamp.body", base64, with the v1 prefix."""
    headers = WebhookSigner([SECRET]).headers(MSG_ID, BODY, timestamp=TIMESTAMP)
    assert {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP),
            "webhook-signature": EXPECTED} == headers  # fmt: skip


def test_verify_accepts_the_example_and_returns_the_id() -> None:
    """A receiver gets the id back (to deduplicate on); header names in any case."""
    headers = {
        "Webhook-Id": MSG_ID,
        "WEBHOOK-TIMESTAMP": str(TIMESTAMP),
        "webhook-signature": EXPECTED,
    }
    assert verify_webhook(headers, BODY, [SECRET], now=TIMESTAMP + 10) == MSG_ID


def test_during_a_rotation_every_secret_signs_and_either_verifies() -> None:
    """Two secrets: two signatures; a receiver knowing only the old or only the new accepts."""
    headers = WebhookSigner([OTHER, SECRET]).headers(MSG_ID, BODY, timestamp=TIMESTAMP)
    parts = headers["webhook-signature"].split(" ")
    assert (len(parts), parts[1]) == (2, EXPECTED)
    for known in ([SECRET], [OTHER], [b"x" * 32, SECRET]):
        assert verify_webhook(headers, BODY, known, now=TIMESTAMP) == MSG_ID


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"body": b'{"test": 2432232315}'}, "no signature matches"),
        ({"webhook-id": "msg_other"}, "no signature matches"),
        ({"webhook-signature": "v1,AAAA"}, "no signature matches"),
        ({"webhook-signature": "v2," + EXPECTED[3:]}, "no v1 signature"),
        ({"webhook-signature": ""}, "all required"),
        ({"webhook-timestamp": "soon"}, "not an integer"),
        ({"webhook-timestamp": str(TIMESTAMP - 301)}, "more than 300 s"),
        ({"webhook-timestamp": str(TIMESTAMP + 301)}, "more than 300 s"),
        ({"secrets": [OTHER]}, "no signature matches"),
    ],
)
def test_what_does_not_verify_is_an_invalid_signature(change: dict[str, Any], match: str) -> None:
    """A changed body, id, signature, stale or future timestamp or unknown secret is refused."""
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": EXPECTED,
    }
    headers.update({k: v for k, v in change.items() if k.startswith("webhook-")})
    body = change.get("body", BODY)
    with pytest.raises(InvalidSignature, match=match):
        verify_webhook(headers, body, change.get("secrets", [SECRET]), now=TIMESTAMP)


def test_invalid_signature_is_a_401_perfkit_error() -> None:
    """Receivers built on perfkit's envelope answer it 401 with code invalid_signature."""
    error = InvalidSignature("no signature matches a known secret")
    assert (
        isinstance(error, PerfkitError) and isinstance(error, ValueError),
        error_status(error),
        error.code,
    ) == (True, 401, "invalid_signature")


@pytest.mark.parametrize("secrets", [[], "whsec_x", ["not base64!"], [b"short"]])
def test_bad_secrets_are_value_errors(secrets: Any) -> None:
    """No secret, a bare string, undecodable or under 16 bytes: refused at construction."""
    with pytest.raises(ValueError, match="secret"):
        WebhookSigner(secrets)


def test_the_schedule_is_the_specs_and_ends() -> None:
    """Without jitter: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then give up."""
    delays = [retry_delay(n, jitter=0) for n in range(1, len(RETRY_SCHEDULE) + 2)]
    assert delays == [0, 5, 300, 1800, 7200, 18000, 36000, 36000, None]


def test_jitter_spreads_each_delay_within_its_fraction() -> None:
    """10% jitter: every delay within ±10% of the schedule's, and not all the same."""
    rng = random.Random(7)
    seen = [retry_delay(3, random=rng) for _ in range(200)]
    assert all(d is not None and 270 <= d <= 330 for d in seen)
    assert len({round(d or 0, 3) for d in seen}) > 100


def test_retry_after_wins_when_longer() -> None:
    """A receiver's Retry-After postpones the attempt; a shorter one does not hurry it."""
    assert retry_delay(2, retry_after=120, jitter=0) == 120
    assert retry_delay(3, retry_after=10, jitter=0) == 300


def test_retry_after_parses_seconds_and_http_dates() -> None:
    """Delta-seconds, an HTTP-date (past: 0), garbage (None), capped at a day."""
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    stamp = now.timestamp()
    assert [
        parse_retry_after("120", now=stamp),
        parse_retry_after(later, now=stamp),
        parse_retry_after(earlier, now=stamp),
        parse_retry_after("soon", now=stamp),
        parse_retry_after(None, now=stamp),
        parse_retry_after("999999", now=stamp),
    ] == [120.0, 90.0, 0.0, None, None, 86400.0]


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.1), (True, 0.1), (1, 1.5), (1, -0.1)])
def test_retry_delay_refuses_bad_arguments(attempt: Any, jitter: float) -> None:
    """Attempts count from 1; jitter is a fraction."""
    with pytest.raises(ValueError, match=r"attempt|jitter"):
        retry_delay(attempt, jitter=jitter)


# -- where a webhook may go (check_url) ----------------------------------------------------


def _names(host: str, _port: int) -> list[str]:
    return {
        "public.test": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
        "mixed.test": ["93.184.215.14", "10.0.0.7"],
        "inside.test": ["192.168.1.20"],
        "mapped.test": ["::ffff:127.0.0.1"],
    }.get(host, [])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://100.64.0.1/",  # shared address space
        "http://0.0.0.0/",
        "http://[fd00::1]/",  # unique local
        "http://224.0.0.1/",  # multicast
        "http://inside.test/",
        "http://mixed.test/",  # one private address among public ones is enough
        "http://mapped.test/",  # ::ffff:127.0.0.1 is loopback
        "http://nowhere.test/",  # does not resolve
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://[::7f00:1]/",  # IPv4-compatible
        "http://[::ffff:0:7f00:1]/",  # IPv4-translated
        "http://[fec0::1]/",  # site-local
    ],
)
def test_non_public_targets_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_url(url, resolve=_names)
    assert refused.value.field == "url"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.215.14/", "http:// or https://"),
        ("https://user:pw@93.184.215.14/", "user name or password"),
        ("https://93.184.215.14/#x", "fragment"),
        ("https:///path", "names a host"),
        ("https://93.184.215.14:99999/", "port"),
        ("https://93.184.215.14/a b", "spaces"),
        ("https://93.184.215.14/" + "a" * 2_000, "2,000"),
        ("", "2,000"),
        ("http://[::1/", "malformed"),
        ("http://[public.test]/", "malformed"),
        ("http://a..b/", "not a valid domain name"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        check_url(url, resolve=_names)


def test_a_public_url_is_pinned_to_the_address_it_resolved_to() -> None:
    target = check_url("https://public.test:8443/hooks?x=1", resolve=_names)
    assert (target.host, target.address) == ("public.test", "93.184.215.14")
    assert target.connect_url == "https://93.184.215.14:8443/hooks?x=1"
    six = check_url("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/h", resolve=_names)
    assert six.connect_url == "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/h"


def test_an_internationalised_name_is_checked_and_sent_as_idna() -> None:
    def names(host: str, _port: int) -> list[str]:
        return {"xn--bcher-kva.test": ["93.184.215.14"]}.get(host, [])

    target = check_url("https://bücher.test:8443/h", resolve=names)
    assert (target.host, target.host_header) == ("xn--bcher-kva.test", "xn--bcher-kva.test:8443")
    assert check_url("http://[64:ff9b::5db8:d70e]/", resolve=names).address == "64:ff9b::5db8:d70e"


def test_private_targets_pass_only_when_allowed() -> None:
    target = check_url("http://inside.test/h", allow_private=True, resolve=_names)
    assert target.connect_url == "http://192.168.1.20/h"
    with pytest.raises(InvalidInput, match="does not resolve"):
        check_url("http://nowhere.test/", allow_private=True, resolve=_names)
