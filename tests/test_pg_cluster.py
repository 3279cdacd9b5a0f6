"""
tests/pg_cluster.py: a private PostgreSQL cluster that tests may restart or crash.
"""

from __future__ import annotations

import sqlalchemy as sa

from perfkit import db
from pg_cluster import PostgresCluster


def _count(cluster: PostgresCluster) -> int:
    engine = db.create_engine(cluster.url, pool_size=1)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM notes")).scalar_one())
    finally:
        engine.dispose()


def test_cluster_serves_and_keeps_data_across_restart_and_crash(
    pg_cluster: PostgresCluster,
) -> None:
    """The engine works; a row written survives a fast restart and a SIGKILL crash."""
    assert pg_cluster.is_ready()
    assert ":5432/" not in pg_cluster.url
    engine = db.create_engine(pg_cluster.url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            conn.exec_driver_sql("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            conn.exec_driver_sql("INSERT INTO notes VALUES (1, 'before restart')")

        pg_cluster.restart()
        assert pg_cluster.is_ready()
        # The pooled connection died with the old server; pre-ping replaces it.
        with engine.connect() as conn:
            body = conn.execute(sa.text("SELECT body FROM notes WHERE id = 1")).scalar_one()
        assert body == "before restart"

        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO notes VALUES (2, 'before crash')")
        pg_cluster.kill()
        assert not pg_cluster.is_ready()
        pg_cluster.start()
        assert _count(pg_cluster) == 2
    finally:
        engine.dispose()


def test_cleanup_removes_the_directory(pg_cluster: PostgresCluster) -> None:
    """cleanup() stops the server and deletes its files; calling it twice is harmless."""
    pg_cluster.cleanup()
    assert not pg_cluster.dir.exists()
    assert not pg_cluster.is_ready()
    pg_cluster.cleanup()
