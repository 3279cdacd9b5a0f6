"""
perfkit.migrations: the revisions match the models, run once under concurrency, adopt old
schemas, refuse a stale schema at startup, fit a user's own Alembic environment; the copy.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from perfkit import db, migrations
from perfkit.errors import SchemaNotCurrent
from perfkit.outbox import Outbox
from perfkit.pagination import cursor_keys_table
from perfkit.reference import Base, open_stores, seed
from perfkit.webhooks import Webhooks

ROOT = Path(__file__).resolve().parents[1]
BOTH = ("perfkit", "perfkit_reference")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


@pytest.fixture
def empty(empty_url: str) -> Iterator[Engine]:
    """An engine on an empty database."""
    engine = db.create_engine(empty_url)
    yield engine
    engine.dispose()


def _model_metadata(engine: Engine) -> sa.MetaData:
    """The tables as the code declares them: the reference models, the outbox, the webhooks."""
    metadata = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    Outbox(metadata=metadata)
    cursor_keys_table(metadata)
    hooks = Webhooks(engine, metadata=metadata)
    hooks.close()
    return metadata


def test_the_revisions_make_exactly_what_the_models_declare(empty: Engine) -> None:
    """After the upgrade, Alembic's autogenerate finds nothing to add, drop or alter."""
    from alembic.autogenerate import compare_metadata  # noqa: PLC0415
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

    assert migrations.upgrade(empty, *BOTH) == [
        "perfkit_0001",
        "perfkit_0002",
        "perfkit_reference_0001",
    ]
    with empty.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, type_, parents: name != migrations.VERSION_TABLE,
            },
        )
        diff = compare_metadata(context, _model_metadata(empty))
    assert diff == []


def test_a_second_upgrade_applies_nothing_and_the_state_is_current(empty: Engine) -> None:
    """upgrade is idempotent; state() and check() see each branch at its head."""
    migrations.upgrade(empty, *BOTH)
    assert migrations.upgrade(empty, *BOTH) == []
    states = migrations.state(empty, *BOTH)
    assert [(s.branch, s.status) for s in states] == [
        ("perfkit", "current"),
        ("perfkit_reference", "current"),
    ]
    migrations.check(empty, *BOTH)


def test_a_schema_made_before_migrations_is_adopted_with_its_rows(empty: Engine) -> None:
    """Tables that create_tables made (0.1's open_stores) are kept as they are, rows and all,
    and the revision is recorded."""
    db.create_tables(empty, Base.metadata)
    with db.for_writes(empty).begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO users (id, username, email, created_at) "
            "VALUES (1, 'ada', 'ada@example.org', '2026-01-01 00:00:00')"
        )
    assert migrations.upgrade(empty, "perfkit_reference") == ["perfkit_reference_0001"]
    with empty.connect() as conn:
        assert list(conn.exec_driver_sql("SELECT username FROM users").scalars()) == ["ada"]


def test_an_unmigrated_postgresql_refuses_with_the_command(fresh_pg_url: str) -> None:
    """check() and open_stores() raise SchemaNotCurrent naming `perfkit db upgrade` with the
    URL (password hidden) and the branches; nothing was created."""
    engine = db.create_engine(fresh_pg_url)
    try:
        with pytest.raises(SchemaNotCurrent) as raised:
            open_stores(engine, outbox=Outbox())
        assert "perfkit_reference: never migrated" in raised.value.where
        assert raised.value.command.startswith("perfkit db upgrade 'postgresql+psycopg://")
        assert raised.value.command.endswith("--branch perfkit_reference --branch perfkit")
        assert raised.value.command in str(raised.value)
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_sqlite_is_migrated_at_startup_with_no_command(tmp_path: Path) -> None:
    """The embedded default: open_stores on a new file upgrades it (the demo needs no step)."""
    with open_stores(f"sqlite:///{tmp_path / 'demo.sqlite3'}", outbox=Outbox()) as stores:
        states = migrations.state(stores.engine, *BOTH)
    assert [s.status for s in states] == ["current", "current"]


def test_a_database_a_newer_release_migrated_starts_with_a_warning(
    empty: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A revision this code does not know, of perfkit's branch (a rolling deploy or a
    rollback): the state is "ahead", check() logs a warning instead of refusing, and upgrade()
    and prepare() apply nothing instead of failing."""
    migrations.upgrade(empty, "perfkit")
    with db.for_writes(empty).begin() as conn:
        conn.exec_driver_sql("UPDATE perfkit_version SET version_num = 'perfkit_0999'")
    with caplog.at_level(logging.WARNING, logger="perfkit.migrations"):
        migrations.check(empty, "perfkit")
    (state,) = migrations.state(empty, "perfkit")
    assert (state.status, state.current) == ("ahead", "perfkit_0999")
    assert "perfkit_0999" in caplog.text


def test_an_unknown_branch_is_a_clear_error(empty: Engine) -> None:
    """A misspelt branch names the real ones."""
    with pytest.raises(ValueError, match="perfkit, perfkit_reference"):
        migrations.upgrade(empty, "perfkit_refrence")  # type: ignore[arg-type]


# -- processes started together -----------------------------------------------------------------

_TOGETHER = """
import asyncio, os, sys
from pathlib import Path

def wait_for_the_others(barrier: Path, count: int) -> None:
    (barrier / str(os.getpid())).touch()  # imported: check in, then wait for the others
    while len(list(barrier.iterdir())) < count:
        pass

url, barrier, count, what = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if what == "migrate":
    from perfkit import db, migrations
    engine = db.create_engine(url)
    wait_for_the_others(barrier, count)
    print(",".join(migrations.upgrade(engine, "perfkit", "perfkit_reference")))
else:
    from bill_api import create_app
    app = create_app(database_url=url)
    wait_for_the_others(barrier, count)

    async def start() -> None:
        async with app.router.lifespan_context(app):  # the example API's startup and shutdown
            pass

    asyncio.run(start())
"""


def _together(url: str, what: str, count: int, barrier: Path) -> list[tuple[int, str, str]]:
    """Run *count* processes that do *what* at the same moment; their exit codes and output."""
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _TOGETHER, url, str(barrier), str(count), what],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(count)
    ]
    try:
        outputs = [p.communicate(timeout=90) for p in processes]
    finally:
        for process in processes:
            process.kill()
            process.communicate()
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]


@pytest.mark.slow
def test_postgresql_workers_refuse_then_one_migrator_applies_each_revision_then_all_start(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    """Example-API workers started at once on an empty PostgreSQL all refuse, naming the
    command; six migrators started at once: one applies each revision, five apply nothing;
    then the workers started at once all start (before migrations, one of six used to die of
    a UniqueViolation on pg_type in 3 runs of 3, creating the tables itself)."""
    refused = _together(fresh_pg_url, "serve", 2, tmp_path / "first")
    assert [code for code, _, _ in refused] == [1] * 2
    assert all("perfkit db upgrade" in err for _, _, err in refused), refused[0][2][-500:]

    migrated = _together(fresh_pg_url, "migrate", 6, tmp_path / "migrate")
    assert [code for code, _, _ in migrated] == [0] * 6, [e[-300:] for _, _, e in migrated]
    applied = sorted(out.strip() for _, out, _ in migrated)
    assert applied == [""] * 5 + ["perfkit_0001,perfkit_0002,perfkit_reference_0001"]

    served = _together(fresh_pg_url, "serve", 3, tmp_path / "second")
    assert [code for code, _, _ in served] == [0] * 3, [e[-300:] for _, _, e in served]


@pytest.mark.slow
def test_sqlite_workers_started_together_all_start(tmp_path: Path) -> None:
    """Three example-API workers on a new SQLite file: each migrates or finds it migrated."""
    url = f"sqlite:///{tmp_path / 'together.sqlite3'}"
    served = _together(url, "serve", 3, tmp_path / "barrier")
    assert [code for code, _, _ in served] == [0] * 3, [e[-300:] for _, _, e in served]
    engine = db.create_engine(url)
    try:
        assert [s.status for s in migrations.state(engine, *BOTH)] == ["current", "current"]
    finally:
        engine.dispose()


# -- the command ---------------------------------------------------------------------------------


def _perfkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("perfkit")
    return subprocess.run(
        [str(command), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_the_command_checks_upgrades_and_reports(tmp_path: Path) -> None:
    """perfkit db check exits 1 with the command, upgrade applies what is missing, current lists
    each branch (each run a second of imports: on SQLite only; the functions they call run on
    both, and a second upgrade applying nothing is tested above)."""
    empty_url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    check = _perfkit("db", "check", empty_url, "--branch", "perfkit_reference")
    assert check.returncode == 1
    assert "perfkit db upgrade" in check.stderr
    upgraded = _perfkit("db", "upgrade", empty_url, "--branch", "perfkit_reference")
    assert upgraded.stdout == "applied perfkit_reference_0001\n"
    current = _perfkit(
        "db", "current", empty_url, "--branch", "perfkit", "--branch", "perfkit_reference"
    ).stdout
    assert "perfkit: - (head perfkit_0002): missing" in current
    assert "perfkit_reference: perfkit_reference_0001 (head perfkit_reference_0001): current" in (
        current
    )


def test_the_command_without_a_url_or_with_a_bad_one_says_so() -> None:
    """No URL and no PERFKIT_DATABASE_URL: exit 2 with the remedy; a malformed URL: exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "PERFKIT_DATABASE_URL"}
    missing = _perfkit("db", "upgrade", env=env)
    assert (
        missing.returncode,
        missing.stderr,
    ) == (2, "perfkit: give a database URL or set PERFKIT_DATABASE_URL\n")
    assert _perfkit("db", "check", "not a url").returncode == 2


# -- a user's own Alembic environment ------------------------------------------------------------

_ENV_PY = """
from alembic import context
import sqlalchemy as sa
from perfkit import db, migrations

metadata = sa.MetaData()
sa.Table("tickets", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("event", sa.String(100), nullable=False))

engine = db.create_engine(context.config.get_main_option("sqlalchemy.url"))
with db.schema_transaction(engine) as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      include_name=migrations.include_name)
    context.run_migrations()
engine.dispose()
"""

_TICKETS = """
import sqlalchemy as sa
from alembic import op

revision = "tickets_0001"
down_revision = None
branch_labels = ("tickets",)
depends_on = None

def upgrade() -> None:
    op.create_table("tickets", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("event", sa.String(100), nullable=False))

def downgrade() -> None:
    op.drop_table("tickets")
"""


def test_a_users_alembic_environment_runs_perfkits_branch_next_to_its_own(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL: version_locations = ... perfkit.migrations:versions (path_separator =
    space: the package form has a colon, which "os" would split): `alembic upgrade heads`
    applies the user's revision and perfkit's; perfkit.migrations.check finds its branch
    current in alembic_version; `alembic check` (with include_name) finds nothing to do."""
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(_ENV_PY)
    (tmp_path / "migrations" / "versions" / "tickets_0001.py").write_text(_TICKETS)
    (tmp_path / "alembic.ini").write_text(
        textwrap.dedent(f"""\
        [alembic]
        script_location = %(here)s/migrations
        path_separator = space
        version_locations = %(here)s/migrations/versions {migrations.VERSIONS}
        sqlalchemy.url = {fresh_pg_url.replace("%", "%%")}
        """)
    )
    alembic = [sys.executable, "-m", "alembic", "-c", str(tmp_path / "alembic.ini")]
    upgraded = subprocess.run([*alembic, "upgrade", "heads"], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    engine = db.create_engine(fresh_pg_url)
    try:
        migrations.check(engine, "perfkit")
        assert {"tickets", "perfkit_outbox", "alembic_version"} <= set(
            sa.inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
    checked = subprocess.run([*alembic, "check"], capture_output=True, text=True, timeout=60,
                             check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- copying SQLite into PostgreSQL --------------------------------------------------------------


def test_a_sqlite_database_is_copied_into_postgresql_verified(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    """Rows, counts and checksums equal on both sides; the sequences moved past the copied
    ids (the next insert does not collide); a second copy into the now full tables is refused
    and changes nothing."""
    source = db.create_engine(f"sqlite:///{tmp_path / 'demo.sqlite3'}")
    destination = db.create_engine(fresh_pg_url)
    try:
        summary = seed(source, users=40, bills=12, votes=200, random_seed=5)
        migrations.upgrade(destination, *BOTH)
        report = migrations.copy_database(source, destination, Base.metadata, batch=17)
        assert [(t.name, t.rows) for t in report.tables] == [
            ("users", 40),
            ("bills", 12),
            ("votes", 200),
        ]
        assert summary.votes == 200
        assert len(report.sequences) == 3
        with open_stores(destination) as stores:
            user = stores.users.create(username="newcomer", email="new@example.org")
            assert user.id == 41
            assert stores.bills.get_all(page=1, limit=1).total == 12
        with pytest.raises(ValueError, match="'users' is not empty"):
            migrations.copy_database(source, destination, Base.metadata)
        with destination.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar_one() == 41
    finally:
        source.dispose()
        destination.dispose()


def test_copy_refuses_a_destination_without_the_schema(tmp_path: Path) -> None:
    """The destination's tables must exist: the error says to make the schema first."""
    source = db.create_engine(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    destination = db.create_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    try:
        migrations.upgrade(source, "perfkit_reference")
        with pytest.raises(ValueError, match="make its schema first"):
            migrations.copy_database(source, destination, Base.metadata)
    finally:
        source.dispose()
        destination.dispose()


def test_the_copy_command_copies_and_reports(tmp_path: Path, fresh_pg_url: str) -> None:
    """perfkit db copy SOURCE DESTINATION --branch perfkit_reference: one line per table."""
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    source = db.create_engine(url)
    seed(source, users=5, bills=2, votes=6, random_seed=1)
    source.dispose()
    assert (
        _perfkit("db", "copy", url, fresh_pg_url, "--branch", "perfkit_reference").returncode == 1
    )
    _perfkit("db", "upgrade", fresh_pg_url, "--branch", "perfkit_reference")
    copied = _perfkit("db", "copy", url, fresh_pg_url, "--branch", "perfkit_reference")
    assert copied.returncode == 0, copied.stderr
    assert "users: 5 rows" in copied.stdout
    assert "copied 13 rows in 3 tables" in copied.stdout


def test_text_keys_copy_whatever_order_each_database_sorts_them(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    """A table keyed by text ('Bob' < 'alice' bytewise on SQLite, not by PostgreSQL's locale):
    the copy verifies (the checksum does not depend on row order)."""
    tags = sa.Table("tags", sa.MetaData(), sa.Column("name", sa.String(20), primary_key=True))
    source = db.create_engine(f"sqlite:///{tmp_path / 'tags.sqlite3'}")
    destination = db.create_engine(fresh_pg_url)
    try:
        for engine in (source, destination):
            tags.create(engine)
        with source.begin() as conn:
            conn.execute(tags.insert(), [{"name": n} for n in ("alice", "Bob", "_x", "Zed", "bob")])
        report = migrations.copy_database(source, destination, tags, batch=2)
        assert [(t.name, t.rows) for t in report.tables] == [("tags", 5)]
    finally:
        source.dispose()
        destination.dispose()
