"""
``perfkit``: the commands a deployment runs around its workers (``perfkit db ...``).
"""

from __future__ import annotations

import argparse
import os
import sys

import sqlalchemy as sa

from perfkit import db, migrations
from perfkit.errors import SchemaNotCurrent

__all__ = ["main"]

_URL_HELP = "database URL (default: $PERFKIT_DATABASE_URL)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perfkit", description="perfkit's deployment commands.")
    groups = parser.add_subparsers(dest="group", required=True)
    database = groups.add_parser("db", help="schema migrations and copies").add_subparsers(
        dest="command", required=True
    )
    upgrade = database.add_parser(
        "upgrade", help="apply perfkit's revisions the database lacks (once per release)"
    )
    check = database.add_parser(
        "check", help="exit 1 unless the schema is current (what a worker checks at startup)"
    )
    current = database.add_parser("current", help="where each branch stands")
    for command in (upgrade, check, current):
        command.add_argument("url", nargs="?", help=_URL_HELP)
    copy = database.add_parser(
        "copy", help="copy every row into an empty, migrated database, verified (SQLite to PG)"
    )
    copy.add_argument("source", help="the database the rows are in")
    copy.add_argument("destination", help="the database they go to (its schema made first)")
    copy.add_argument("--batch", type=int, default=1_000, help="rows per insert (1000)")
    for command in (upgrade, check, current, copy):
        command.add_argument(
            "--branch",
            action="append",
            choices=migrations.BRANCHES,
            help="perfkit (outbox, webhooks; the default) or perfkit_reference (the "
            "reference store); repeat for both",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``perfkit``: 0 on success, 1 when a check fails, 2 for bad usage."""
    args = _parser().parse_args(argv)
    branches = tuple(args.branch or ("perfkit",))
    try:
        if args.command == "copy":
            return _copy(args.source, args.destination, branches, args.batch)
        url = args.url or os.environ.get("PERFKIT_DATABASE_URL")
        if not url:
            print("perfkit: give a database URL or set PERFKIT_DATABASE_URL", file=sys.stderr)
            return 2
        engine = db.create_engine(url)
        try:
            return _run(args.command, engine, branches)
        finally:
            engine.dispose()
    except sa.exc.ArgumentError as exc:  # a malformed URL
        print(f"perfkit: {exc}", file=sys.stderr)
        return 2
    except (ValueError, sa.exc.DBAPIError) as exc:
        # A copy refused (tables missing or not empty, or not verified); a database that
        # cannot be reached, or refuses (permission denied).
        if isinstance(exc, sa.exc.OperationalError):
            message = f"cannot reach the database: {exc.orig or exc}"
        elif isinstance(exc, sa.exc.DBAPIError):
            message = f"the database refused: {exc.orig or exc}"
        else:
            message = str(exc)
        print(f"perfkit: {message}", file=sys.stderr)
        return 1


def _run(command: str, engine: sa.Engine, branches: tuple[migrations.Branch, ...]) -> int:
    if command == "upgrade":
        applied = migrations.upgrade(engine, *branches)
        print(f"applied {', '.join(applied)}" if applied else "already current: nothing applied")
        return 0
    if command == "check":
        try:
            migrations.check(engine, *branches)
        except SchemaNotCurrent as exc:
            print(f"perfkit: {exc}", file=sys.stderr)
            return 1
        print("current")
        return 0
    for state in migrations.state(engine, *branches):
        print(f"{state.branch}: {state.current or '-'} (head {state.head}): {state.status}")
    return 0


def _copy(
    source_url: str, destination_url: str, branches: tuple[migrations.Branch, ...], batch: int
) -> int:
    source = db.create_engine(source_url)
    destination = db.create_engine(destination_url)
    try:
        schema = _tables(destination, branches)
        migrations.check(destination, *branches)
        report = migrations.copy_database(source, destination, *schema, batch=batch)
    except SchemaNotCurrent as exc:
        print(f"perfkit: the destination: {exc}", file=sys.stderr)
        return 1
    finally:
        source.dispose()
        destination.dispose()
    for table in report.tables:
        print(f"{table.name}: {table.rows} rows, sha256 {table.checksum[:16]}")
    print(
        f"copied {report.rows} rows in {len(report.tables)} tables in {report.seconds:.1f} s; "
        f"sequences moved: {', '.join(report.sequences) or 'none'}"
    )
    return 0


def _tables(engine: sa.Engine, branches: tuple[migrations.Branch, ...]) -> list[sa.Table]:
    """The tables of *branches*, with the column types their code reads them with."""
    tables: list[sa.Table] = []
    if "perfkit" in branches:
        from perfkit.outbox import Outbox  # noqa: PLC0415 - only the branches asked for
        from perfkit.webhooks import Webhooks  # noqa: PLC0415

        hooks = Webhooks(engine)
        tables += [Outbox().table, hooks.tables.endpoints, hooks.tables.deliveries]
        hooks.close()
    if "perfkit_reference" in branches:
        from perfkit.reference import Base  # noqa: PLC0415

        tables += Base.metadata.sorted_tables
    return tables
