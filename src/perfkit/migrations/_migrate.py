"""
perfkit's Alembic revisions, applied once per release, and the check a worker makes at startup.

Two branches ship in the wheel, each with its own label, so a deployment takes only what
it uses: ``perfkit`` (the outbox and the webhook tables) and ``perfkit_reference`` (the
reference store's users, bills and votes). Revision ids are ``<branch>_<NNNN>``, so a
worker can tell a revision newer than its own code from one that is not perfkit's.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from perfkit import db as _db
from perfkit.errors import SchemaNotCurrent

__all__ = [
    "BRANCHES",
    "REFERENCE_VERSIONS",
    "VERSIONS",
    "VERSION_TABLE",
    "Branch",
    "SchemaState",
    "check",
    "include_name",
    "prepare",
    "state",
    "upgrade",
]

log = logging.getLogger("perfkit.migrations")

Branch = Literal["perfkit", "perfkit_reference"]

BRANCHES: Final[tuple[Branch, ...]] = ("perfkit", "perfkit_reference")
VERSIONS: Final = "perfkit.migrations:versions"
REFERENCE_VERSIONS: Final = "perfkit.migrations:reference_versions"
_LOCATIONS: Final = ("versions", "reference_versions")
VERSION_TABLE: Final = "perfkit_version"
_ALEMBIC_TABLE: Final = "alembic_version"
_HERE: Final = Path(__file__).parent
_OURS: Final = re.compile(r"perfkit(_reference)?_\d{4}")
_OWN_TABLES: Final = frozenset(
    {
        VERSION_TABLE,
        "perfkit_outbox",
        "perfkit_webhook_endpoints",
        "perfkit_webhook_deliveries",
        "perfkit_cursor_keys",
    }
)


@dataclass(frozen=True, slots=True)
class SchemaState:
    """
    Where one branch of perfkit's schema stands in a database.

    Attributes:
        branch: The branch (``"perfkit"`` or ``"perfkit_reference"``).
        head: The newest revision this code knows.
        current: The revision the database is at (``None``: never migrated).
        status: ``"current"``; ``"behind"`` (run the upgrade); ``"missing"`` (never
            migrated); or ``"ahead"`` (a newer release migrated it: a rolling deploy or a
            rollback, which starts, since revisions only add).

    .. versionadded:: 0.2.0
    """

    branch: str
    head: str
    current: str | None
    status: Literal["current", "behind", "missing", "ahead"]


def _branches(branches: Sequence[str]) -> tuple[Branch, ...]:
    chosen = tuple(branches) or ("perfkit",)
    for branch in chosen:
        if branch not in BRANCHES:
            msg = f"unknown branch {branch!r}: perfkit's branches are {', '.join(BRANCHES)}"
            raise ValueError(msg)
    return chosen  # type: ignore[return-value]  # checked just above


@functools.cache
def _script() -> Any:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - only where migrations run

    return ScriptDirectory(
        str(_HERE / "environment"), version_locations=[str(_HERE / d) for d in _LOCATIONS]
    )


def _head(branch: str) -> str:
    heads = _script().get_revisions(f"{branch}@head")
    (head,) = heads
    return str(head.revision)


def _known(revision: str) -> bool:
    from alembic.script.revision import ResolutionError  # noqa: PLC0415
    from alembic.util import CommandError  # noqa: PLC0415

    try:
        return _script().get_revision(revision) is not None
    except (ResolutionError, CommandError):
        return False


def _lineage(revision: str) -> set[str]:
    """*revision* and every revision below it."""
    return {str(r.revision) for r in _script().iterate_revisions(revision, "base")}


def _rows(conn: Connection, tables: Iterable[str]) -> list[str]:
    inspector = sa.inspect(conn)
    found: list[str] = []
    for table in tables:
        if inspector.has_table(table):
            column = sa.column("version_num", sa.String)
            query = sa.select(column).select_from(sa.table(table, column))
            found += [str(v) for v in conn.execute(query).scalars()]
    return found


def _state_of(branch: str, versions: Sequence[str]) -> SchemaState:
    head = _head(branch)
    own = re.compile(rf"{re.escape(branch)}_\d{{4}}")
    mine = [v for v in versions if own.fullmatch(v)]
    if not mine:
        return SchemaState(branch, head, None, "missing")
    current = mine[0]
    if not _known(current):
        return SchemaState(branch, head, current, "ahead")
    status: Literal["current", "behind"] = "current" if head in _lineage(current) else "behind"
    return SchemaState(branch, head, current, status)


def state(
    engine: Engine | Connection,
    *branches: Branch,
    version_table: str | None = None,
) -> list[SchemaState]:
    """
    Where each of *branches* (default: ``perfkit``) stands in the database.

    Args:
        engine: The database's engine (or a connection of it).
        branches: ``"perfkit"``, ``"perfkit_reference"``.
        version_table: The Alembic version table to read. By default perfkit's own
            (``perfkit_version``, which :func:`upgrade` writes) and ``alembic_version``
            (where an Alembic environment of yours that includes :data:`VERSIONS` records
            perfkit's revisions next to yours).

    .. versionadded:: 0.2.0
    """
    chosen = _branches(branches)
    tables = [version_table] if version_table else [VERSION_TABLE, _ALEMBIC_TABLE]
    if isinstance(engine, Connection):
        versions = _rows(engine, tables)
    else:
        with engine.connect() as conn:
            versions = _rows(conn, tables)
    return [_state_of(branch, versions) for branch in chosen]


def upgrade(
    engine: Engine,
    *branches: Branch,
    version_table: str = VERSION_TABLE,
) -> list[str]:
    """
    Apply the revisions of *branches* (default: ``perfkit``) the database lacks; return their ids.

    All of them run in one transaction under :func:`perfkit.db.schema_transaction`
    (PostgreSQL: a transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE``): when
    several processes upgrade at once, one applies each revision and the others find the
    database current and apply nothing. Tables that exist already (made by
    ``create_tables`` before migrations) are adopted as they are. The same from a shell:
    ``perfkit db upgrade URL``.

    Args:
        engine: The database's engine.
        branches: ``"perfkit"`` (the outbox and webhook tables) and/or
            ``"perfkit_reference"`` (the reference store's tables).
        version_table: Where the applied revisions are recorded.

    Example::

        applied = upgrade(engine, "perfkit", "perfkit_reference")

    .. versionadded:: 0.2.0
    """
    from alembic import command  # noqa: PLC0415 - only where migrations run
    from alembic.config import Config  # noqa: PLC0415

    chosen = _branches(branches)
    applied: list[str] = []
    with _db.schema_transaction(engine) as conn:
        newer = [v for v in _rows(conn, [version_table]) if _OURS.fullmatch(v) and not _known(v)]
        if newer:
            # A newer release migrated this database (a rollback, a rolling deploy): Alembic
            # cannot place a revision it does not know, and revisions only add, so nothing to do.
            log.warning(
                "the database is at %s, newer than this release knows: nothing applied",
                ", ".join(newer),
            )
            return []
        config = Config()
        config.set_main_option("script_location", str(_HERE / "environment"))
        config.set_main_option("path_separator", "newline")
        config.set_main_option("version_locations", "\n".join(str(_HERE / d) for d in _LOCATIONS))
        config.attributes.update(connection=conn, version_table=version_table, applied=applied)
        for branch in chosen:
            command.upgrade(config, f"{branch}@head")
    if applied:
        log.info("applied %s to %s", ", ".join(applied), _db.normalize_url(engine.url))
    return applied


def _command(engine: Engine, branches: Sequence[str]) -> str:
    url = engine.url.render_as_string(hide_password=True)
    flags = "".join(f" --branch {b}" for b in branches if b != "perfkit" or len(branches) > 1)
    return f"perfkit db upgrade '{url}'{flags}"


def check(engine: Engine, *branches: Branch, version_table: str | None = None) -> None:
    """
    Raise :class:`~perfkit.errors.SchemaNotCurrent` unless *branches* are at their head.

    A worker calls it at startup so that it refuses to start on a schema it does not fit,
    with the command that fixes it, instead of failing on its first query. A database a
    newer release migrated (a rolling deploy, a rollback) passes, with a warning.

    Args:
        engine: The database's engine.
        branches: As for :func:`upgrade` (default: ``perfkit``).
        version_table: As for :func:`state`.

    Raises:
        SchemaNotCurrent: A branch is missing or behind; the message names the command.

    .. versionadded:: 0.2.0
    """
    chosen = _branches(branches)
    states = state(engine, *chosen, version_table=version_table)
    stale = [s for s in states if s.status in ("missing", "behind")]
    for ahead in (s for s in states if s.status == "ahead"):
        log.warning(
            "the database is at %s, newer than this release's %s: starting anyway",
            ahead.current,
            ahead.head,
        )
    if stale:
        where = "; ".join(
            f"{s.branch}: never migrated"
            if s.current is None
            else f"{s.branch}: at {s.current}, this release needs {s.head}"
            for s in stale
        )
        raise SchemaNotCurrent(where, _command(engine, chosen))


def prepare(engine: Engine, *branches: Branch) -> list[str]:
    """
    Make the schema fit at startup: upgrade an SQLite file, check anything else.

    The embedded SQLite default needs no command: its one process (or the few that
    share the file) upgrades it under ``BEGIN IMMEDIATE``. On PostgreSQL and the rest,
    workers never change the schema at startup (``perfkit db upgrade`` runs once per
    release, before them): they check it, and raise
    :class:`~perfkit.errors.SchemaNotCurrent` naming that command when it is behind.

    Returns:
        The revisions applied (always empty outside SQLite).

    .. versionadded:: 0.2.0
    """
    chosen = _branches(branches)
    if engine.dialect.name == "sqlite":
        return upgrade(engine, *chosen)
    check(engine, *chosen)
    return []


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """
    Leave perfkit's tables out of your Alembic autogenerate.

    Pass it as ``include_name=`` to ``context.configure()`` in your ``env.py``: without it,
    autogenerate would propose dropping the tables perfkit's own revisions made (they
    are not in your metadata).

    .. versionadded:: 0.2.0
    """
    return not (type_ == "table" and name in _OWN_TABLES)


def run_environment(context: Any) -> None:
    """The body of the bundled ``env.py``: migrate on the connection :func:`upgrade` holds."""
    attributes = context.config.attributes
    applied: list[str] = attributes["applied"]

    def record(*, step: Any, **_: Any) -> None:
        if step.is_upgrade:
            applied.append(str(step.up_revision_id))

    context.configure(
        connection=attributes["connection"],
        version_table=attributes["version_table"],
        on_version_apply=record,
    )
    with context.begin_transaction():
        context.run_migrations()
