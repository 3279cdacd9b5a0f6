"""
The reference store contract on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from contract.store_contract import StoreContract
from perfkit.cache import Cache, MemoryBackend, RedisBackend
from perfkit.reference import Stores, codec, open_stores


class TestSQLiteStores(StoreContract):
    """The contract on a SQLite file in WAL mode."""

    @pytest.fixture
    def stores(self, sqlite_engine: Engine) -> Iterator[Stores]:
        with open_stores(sqlite_engine) as opened:
            yield opened


class TestPostgreSQLStores(StoreContract):
    """The contract on the real PostgreSQL service."""

    @pytest.fixture
    def stores(self, pg_clean_engine: Engine) -> Iterator[Stores]:
        with open_stores(pg_clean_engine) as opened:
            yield opened


def test_open_stores_from_url_creates_schema_and_owns_engine(tmp_path) -> None:
    """open_stores(url) creates the tables and disposes of its own engine on close."""
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"

    with open_stores(url) as stores:
        user = stores.users.create(username="first", email="first@example.org")
        engine = stores.engine
    assert engine.pool.checkedout() == 0

    with open_stores(url, schema="none") as again:
        assert user == again.users.get_by_id(user.id)


def test_open_stores_leaves_a_given_engine_open(sqlite_engine: Engine) -> None:
    """Closing stores built on a caller's engine leaves that engine usable."""
    with open_stores(sqlite_engine) as stores:
        stores.users.create(username="keeper", email="keeper@example.org")

    with open_stores(sqlite_engine) as stores:
        assert stores.users.get_by_username("keeper") is not None


class TestSQLiteStoresCachedInMemory(StoreContract):
    """The contract on SQLite with reads cached in process."""

    @pytest.fixture
    def stores(self, sqlite_engine: Engine) -> Iterator[Stores]:
        cache = Cache(MemoryBackend(), namespace="contract")
        with open_stores(sqlite_engine, cache=cache) as opened:
            yield opened


class TestPostgreSQLStoresCachedInRedis(StoreContract):
    """The contract on PostgreSQL with reads cached in the Redis service."""

    @pytest.fixture
    def stores(
        self, pg_clean_engine: Engine, redis_url: str, redis_prefix: str
    ) -> Iterator[Stores]:
        backend = RedisBackend(redis_url, prefix=redis_prefix, codec=codec())
        with open_stores(pg_clean_engine, cache=Cache(backend, namespace="contract")) as opened:
            yield opened
        backend.close()


def test_create_schema_is_deprecated_for_schema(tmp_path: Path) -> None:
    """create_schema= still works, with a DeprecationWarning that points at the caller and
    names its replacement."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    with pytest.warns(DeprecationWarning, match='pass schema="create"') as caught:
        stores = open_stores(url, create_schema=True)
    stores.close()
    assert caught[0].filename == __file__
