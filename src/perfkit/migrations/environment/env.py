"""The Alembic environment of ``perfkit.migrations.upgrade``: it runs on the caller's connection."""

from alembic import context

from perfkit.migrations import _migrate

_migrate.run_environment(context)
