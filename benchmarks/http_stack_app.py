"""
The example API as ``benchmarks/http_stack.py`` serves it: ``make demo``'s app
and request log, on a seeded SQLite file (``PERFKIT_DATABASE_URL``).

``uvicorn --factory http_stack_app:create``
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from fastapi import FastAPI

from bill_api import telemetry
from bill_api.app import create_app
from perfkit.reference import User, open_stores, seed


def seeded(url: str) -> None:
    """Seed the database at *url* if it is empty (once, before processes share it)."""
    with open_stores(url) as stores:
        with stores.engine.connect() as conn:
            empty = conn.execute(sa.select(sa.func.count()).select_from(User)).scalar_one() == 0
        if empty:
            seed(stores.engine)


def create() -> FastAPI:
    """Seed the database if it is empty, log requests as the demo does, build the app."""
    url = os.environ["PERFKIT_DATABASE_URL"]
    seeded(url)
    if os.environ.get("PERFKIT_REQUEST_LOG") != "off":  # for the breakdown rows
        telemetry.log_requests()
    return create_app(database_url=url)
