"""
Schema migrations of perfkit's own tables, shipped in the wheel as Alembic revisions.

Two branches, each with its own label:

* ``perfkit``: the outbox (:class:`perfkit.outbox.Outbox`) and the webhook tables
  (:class:`perfkit.webhooks.Webhooks`), under their default names;
* ``perfkit_reference``: the reference store's users, bills and votes.

Run them once per release, before the workers start, in one of two ways:

* from a shell or a deploy step: ``perfkit db upgrade URL [--branch B]`` (or
  :func:`upgrade`), which records them in ``perfkit_version``; safe to run from several
  places at once (one applies each revision, the others wait and find it done);
* in an Alembic environment of your own: add :data:`VERSIONS` (and, if you serve the
  reference store, :data:`REFERENCE_VERSIONS`) to ``version_locations`` in
  ``alembic.ini``, run ``alembic upgrade heads``, and pass :func:`include_name` to
  ``context.configure()`` so autogenerate leaves perfkit's tables alone.

Workers call :func:`prepare` (or :func:`check`) at startup: on PostgreSQL they never
change the schema, and refuse to start on one that is behind, naming the command that
fixes it; an SQLite file (the embedded default) is upgraded in place, with no command.

:func:`copy_database` moves the rows of an SQLite database into PostgreSQL (the demo's
path to production), verified by counts and checksums.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from ._copy import CopyReport, TableCopy, copy_database
from ._migrate import (
    BRANCHES,
    REFERENCE_VERSIONS,
    VERSION_TABLE,
    VERSIONS,
    Branch,
    SchemaState,
    check,
    include_name,
    prepare,
    state,
    upgrade,
)

__all__ = [
    "BRANCHES",
    "REFERENCE_VERSIONS",
    "VERSIONS",
    "VERSION_TABLE",
    "Branch",
    "CopyReport",
    "SchemaState",
    "TableCopy",
    "check",
    "copy_database",
    "include_name",
    "prepare",
    "state",
    "upgrade",
]
