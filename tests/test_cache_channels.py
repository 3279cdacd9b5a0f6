"""
Scoped invalidation channels: tiered backends on different Redis databases stay apart.

Redis pub/sub ignores database numbers, so a channel named only after the key
prefix would carry one database's invalidations into every other database's
L1. The default channel names the database too.
"""

# ruff: noqa: SIM300 - asserts read `expected == actual` (STYLE.md)

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from helpers import delete_keys
from perfkit.cache import RedisBackend, TieredBackend

Messages = list[tuple[list[str], list[str]]]


def on_db(url: str, db: int) -> str:
    """*url* pointed at database *db*."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@pytest.fixture
def db1_url(redis_url: str, redis_prefix: str) -> Iterator[str]:
    """The test Redis on database 1; this test's keys there are deleted afterwards."""
    url = on_db(redis_url, 1)
    yield url
    client = redis.Redis.from_url(url)
    delete_keys(client, redis_prefix)
    client.close()


def tiered(url: str, prefix: str, received: Messages, event: threading.Event) -> TieredBackend:
    """A subscribed tiered backend that records each message and sets *event*."""

    def on_message(keys: list[str], tags: list[str]) -> None:
        received.append((keys, tags))
        event.set()

    backend = TieredBackend(RedisBackend(url, prefix=prefix), on_message=on_message)
    assert backend.wait_subscribed(5), "listener did not subscribe"
    return backend


def test_default_channel_names_the_database(
    redis_url: str, redis_prefix: str, db1_url: str
) -> None:
    """Same prefix, different databases: different default channels."""
    db0 = TieredBackend(RedisBackend(redis_url, prefix=redis_prefix))
    db1 = TieredBackend(RedisBackend(db1_url, prefix=redis_prefix))
    try:
        assert f"{redis_prefix}:db0:invalidations" == db0.channel
        assert f"{redis_prefix}:db1:invalidations" == db1.channel
    finally:
        db0.close()
        db1.close()


def test_invalidation_stays_in_its_database(
    redis_url: str, redis_prefix: str, db1_url: str
) -> None:
    """An invalidation on db 0 reaches a db 0 L1 and never a db 1 L1 on the same prefix."""
    control_got: Messages = []
    other_got: Messages = []
    control_event, other_event = threading.Event(), threading.Event()
    writer = TieredBackend(RedisBackend(redis_url, prefix=redis_prefix))
    assert writer.wait_subscribed(5), "listener did not subscribe"
    control = tiered(redis_url, redis_prefix, control_got, control_event)
    other = tiered(db1_url, redis_prefix, other_got, other_event)
    try:
        other.set("ns:k", "db1 value", ttl=30, tags=["ns#t"], token=other.fill_token())
        assert "db1 value" == other.l1.get("ns:k")

        writer.invalidate(keys=["ns:k"], tags=["ns#t"])

        assert control_event.wait(5), "the same-db control never got the invalidation"
        assert [(["ns:k"], ["ns#t"])] == control_got
        assert not other_event.is_set()
        # A fence: a message on the other's own channel, published after the control's
        # arrived. One connection delivers in order, so had the db 0 message been sent
        # to the other listener, it would arrive before this one.
        writer_db1 = RedisBackend(db1_url, prefix=redis_prefix, channel=other.channel)
        try:
            writer_db1.invalidate(keys=["ns:fence"])
        finally:
            writer_db1.close()
        assert other_event.wait(5), "the other db's listener never got its own message"
        assert [(["ns:fence"], [])] == other_got
        assert "db1 value" == other.l1.get("ns:k")
    finally:
        writer.close()
        control.close()
        other.close()
