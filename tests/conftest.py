"""
Shared fixtures: real SQLite files and a real PostgreSQL schema per test run.

PostgreSQL comes from ``PERFKIT_TEST_DATABASE_URL`` (default: the loopback
service). Unreachable, its tests skip with the reason, unless
``PERFKIT_REQUIRE_SERVICES=1`` (set by CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from helpers import delete_keys
from perfkit import db, migrations
from perfkit.cache import Cache, MemoryBackend
from perfkit.reference import Stores, open_stores
from perfkit.testing import FakeClock
from pg_cluster import PostgresCluster
from pg_cluster import available as pg_cluster_available

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("PERFKIT_TEST_DATABASE_URL", DEFAULT_PG_URL)
REQUIRE_SERVICES = os.environ.get("PERFKIT_REQUIRE_SERVICES", "") not in ("", "0")


def service_unavailable(name: str, url: str, reason: object) -> None:
    """
    Skip the test, or fail it when services are required.
    """
    where = make_url(url).render_as_string(hide_password=True)
    message = f"{name} unreachable at {where}: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (PERFKIT_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """
    A URL of a fresh PostgreSQL schema for this test run, dropped at the end.
    """
    probe = db.create_engine(PG_URL, pool_size=1, connect_args={"connect_timeout": 2})
    try:
        with probe.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        probe.dispose()
        service_unavailable("PostgreSQL", PG_URL, exc.orig or exc)
    try:
        with _schema(probe, f"perfkit_test_{os.getpid()}") as url:
            yield url
    finally:
        probe.dispose()


@contextmanager
def _schema(admin: Engine, prefix: str) -> Iterator[str]:
    """A new schema on *admin*'s database: the URL that uses it; dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = admin.url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session", autouse=True)
def metrics_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The example API's instance metrics in this run's temporary directory, not in /tmp."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERFKIT_METRICS_DIR", str(tmp_path_factory.mktemp("instance-metrics")))
        yield


@pytest.fixture
def fresh_pg_url(pg_schema_url: str) -> Iterator[str]:
    """
    A URL of an empty PostgreSQL schema of this test's own, dropped at the end.
    """
    base = make_url(pg_schema_url).difference_update_query(["options"])
    admin = db.create_engine(base, pool_size=1)
    try:
        with _schema(admin, "perfkit_fresh") as url:
            yield url
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def pg_engine(pg_schema_url: str) -> Iterator[Engine]:
    """
    An engine on this run's PostgreSQL schema with the reference tables.
    """
    engine = db.create_engine(pg_schema_url)
    migrations.upgrade(engine, "perfkit", "perfkit_reference")
    yield engine
    engine.dispose()


def truncate(engine: Engine) -> None:
    """
    Empty the reference tables (and the example's webhook tables) and restart their ids.
    """
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE votes, bills, users RESTART IDENTITY CASCADE")
        # perfkit's own tables (the outbox, the webhooks), made by the migrations.
        conn.exec_driver_sql(
            "TRUNCATE perfkit_outbox, perfkit_webhook_deliveries, perfkit_webhook_endpoints "
            "RESTART IDENTITY CASCADE"
        )


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """
    An engine on a fresh SQLite file (WAL, so it behaves like production).
    """
    engine = db.create_engine(f"sqlite:///{tmp_path / 'perfkit.sqlite3'}")
    migrations.upgrade(engine, "perfkit_reference")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_clean_engine(pg_engine: Engine) -> Engine:
    """
    The PostgreSQL engine with empty reference tables.
    """
    truncate(pg_engine)
    return pg_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """
    An empty reference database on each backend.
    """
    name = "sqlite_engine" if request.param == "sqlite" else "pg_clean_engine"
    result: Engine = request.getfixturevalue(name)
    return result


@pytest.fixture
def stores(engine: Engine) -> Iterator[Stores]:
    """
    The reference stores on an empty database, on each backend.
    """
    with open_stores(engine) as opened:
        yield opened


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


REDIS_URL = os.environ.get("PERFKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL of the test service, checked to answer."""
    import redis  # noqa: PLC0415 - only the tests that need Redis load it

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", REDIS_URL, exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    import redis  # noqa: PLC0415

    prefix = f"perfkit-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    delete_keys(client, prefix)
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock for TTLs."""
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> Cache:
    """An in-memory cache on *clock*: 10 s TTL, no jitter."""
    return Cache(MemoryBackend(clock=clock), namespace="t", ttl=10, jitter=0, clock=clock)


@pytest.fixture
def pg_cluster() -> Iterator[PostgresCluster]:
    """
    A started private PostgreSQL cluster (own data dir and port), removed after
    the test: for tests that stop, restart or crash the server.
    """
    reason = pg_cluster_available()
    if reason is not None:
        service_unavailable("PostgreSQL cluster", "postgresql://127.0.0.1", reason)
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


RABBITMQ_URL = os.environ.get("PERFKIT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The RabbitMQ URL of the test service, checked to answer."""
    import pika  # noqa: PLC0415 - only the queue tests load it

    try:
        parameters = pika.URLParameters(RABBITMQ_URL)
        parameters.socket_timeout = 2
        pika.BlockingConnection(parameters).close()
    except Exception as exc:
        service_unavailable("RabbitMQ", RABBITMQ_URL, exc)
    return RABBITMQ_URL
