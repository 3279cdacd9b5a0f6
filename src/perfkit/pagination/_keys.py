"""
The keys that sign keyset cursors: given, or shared through the database with no set-up.

Every key has an id, carried in the cursor, so a ring of keys can verify while one signs:
the previous key keeps verifying after a rotation. Three sources, in this order:

* a secret given in code (``secret=``) or in ``PERFKIT_CURSOR_SECRET`` (comma-separated:
  the first signs, the others still verify, for rotating by hand);
* otherwise the database the page is read from: one random key per day in the table
  ``perfkit_cursor_keys`` (made by ``perfkit db upgrade``), the first worker of the day
  inserts it and every other worker of every instance reads the same one; today's and
  yesterday's verify;
* otherwise (no such table, or no engine to find it through) a key of this process only,
  said once in the log with both remedies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from perfkit import db as _db
from perfkit._sqltypes import UTCDateTime

__all__ = [
    "KEYS_TABLE",
    "ROTATE_EVERY",
    "CursorKeys",
    "SharedCursorKeys",
    "aresolve_keys",
    "cursor_keys_table",
    "engine_of",
    "resolve_keys",
]

log = logging.getLogger("perfkit.pagination")

KEYS_TABLE: Final = "perfkit_cursor_keys"
ROTATE_EVERY: Final = 86_400.0
_RECHECK: Final = 60.0  # seconds between looks for a table that was missing
_UNKNOWN_RELOAD: Final = 1.0  # at most one reload per second for an id not in the ring


def cursor_keys_table(metadata: sa.MetaData) -> sa.Table:
    """The table of shared cursor keys, in *metadata* (what the migration makes)."""
    return sa.Table(
        KEYS_TABLE,
        metadata,
        sa.Column("kid", sa.String(16), primary_key=True),
        sa.Column("secret", sa.String(64), nullable=False),  # 32 random bytes, hex
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


_TABLE: Final = cursor_keys_table(sa.MetaData())


class CursorKeys:
    """
    A ring of cursor-signing keys: the first signs, every one verifies.

    Give one to ``paginate_keyset(secret=...)`` (or a secret string, which makes one). To
    rotate by hand, put the new secret first and keep the old one until the cursors it
    signed no longer matter: ``CursorKeys("new secret", "old secret")``, or
    ``PERFKIT_CURSOR_SECRET="new secret,old secret"``.

    Args:
        secrets: One or more secrets (``str`` or ``bytes``), newest first.

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_ring", "_signing")

    def __init__(self, *secrets: str | bytes) -> None:
        if not secrets or any(not s for s in secrets):
            msg = "CursorKeys needs at least one non-empty secret"
            raise ValueError(msg)
        keys = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets]
        self._ring: dict[str, bytes] = {_kid_of(k): k for k in keys}
        self._signing = (_kid_of(keys[0]), keys[0])

    def signing(self) -> tuple[str, bytes]:
        """The id and key that sign new cursors."""
        return self._signing

    def verifying(self, kid: str) -> bytes | None:
        """The key with id *kid*, or ``None`` when the ring has none."""
        return self._ring.get(kid)

    @property
    def per_process(self) -> bool:
        """Whether the key is this process's own (cursors fail in the others)."""
        return False


def _kid_of(key: bytes) -> str:
    return "s" + hashlib.sha256(key).hexdigest()[:8]


class _ProcessKeys(CursorKeys):
    """A random key of this process only: the fallback, said once in the log."""

    __slots__ = ()

    @property
    def per_process(self) -> bool:
        return True


_PROCESS: Final = _ProcessKeys(secrets.token_bytes(32))


class SharedCursorKeys(CursorKeys):
    """
    Cursor keys shared by every process through the table ``perfkit_cursor_keys``.

    One key per period (a day by default), inserted by the first process that needs it
    and read by all the others: workers and instances that share the database sign and
    verify alike, with nothing to configure. The current period's key signs; it and the
    previous period's verify (so a cursor lives at least one period). A cursor whose key
    id is the next period's (another instance's clock crossed into it first) makes this
    process read the table again, at most once a second. Keys older than three periods
    are deleted by the process that inserts a new one.

    Anyone who can read that table can sign cursors; a cursor only positions a page of a
    query the caller was allowed to run, so that grants nothing more.

    With an ``AsyncEngine``, :meth:`signing` and :meth:`verifying` do no I/O:
    ``apaginate_keyset`` awaits :meth:`aprepare` first.

    Args:
        engine: The database the table is in (an ``Engine`` or an ``AsyncEngine``).
        rotate_every: Seconds per key.
        clock: Wall-clock seconds (a fake one in tests).

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_clock", "_engine", "_lock", "_next_load", "_period", "_rotate", "_tried")

    @classmethod
    def _weakly(cls, engine: Any) -> SharedCursorKeys:
        """Keys that do not keep *engine* alive (the per-engine cache's: its key is weak)."""
        keys = cls(engine)
        keys._engine = weakref.ref(engine)
        return keys

    def __init__(
        self,
        engine: Any,
        *,
        rotate_every: float = ROTATE_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rotate_every <= 0:
            msg = f"rotate_every must be more than 0 s, not {rotate_every!r}"
            raise ValueError(msg)
        self._engine: Callable[[], Any] = lambda: engine
        self._rotate = rotate_every
        self._clock = clock
        self._lock = threading.Lock()
        self._ring = {}
        self._signing = ("", b"")
        self._period = -1
        self._next_load = 0.0
        self._tried = -_UNKNOWN_RELOAD

    # The decisions, without I/O: when to read the table, and what to make of it.

    def _due(self, now: float, kid: str | None) -> bool:
        """Whether to read the table now: a new period, or an id of the next one."""
        if now >= self._next_load:
            return True
        newer = kid is not None and kid not in self._ring and kid == f"d{self._period + 1}"
        if newer and now - self._tried >= _UNKNOWN_RELOAD:
            self._tried = now
            return True
        return False

    def _wanted(self, now: float, kid: str | None) -> tuple[int, list[str]]:
        period = int(now // self._rotate)
        wanted = [f"d{period}", f"d{period - 1}"]
        if kid is not None and kid == f"d{period + 1}":
            wanted.append(kid)  # another instance's clock is ahead: its key verifies too
        return period, wanted

    def _take(self, period: int, found: dict[str, str]) -> bool:
        """Keep what the table holds; whether it lacked this period's key."""
        if f"d{period}" not in found:
            return False
        self._ring = {kid: bytes.fromhex(hexed) for kid, hexed in found.items()}
        self._signing = (f"d{period}", self._ring[f"d{period}"])
        self._period = period
        self._next_load = (period + 1) * self._rotate  # the next key's period
        return True

    # The sync driver.

    def _prepare(self, kid: str | None) -> None:
        engine = self._engine()
        if not isinstance(engine, Engine):
            return  # asyncio: aprepare() did it
        now = self._clock()
        if not self._due(now, kid):
            return
        with self._lock:
            period, wanted = self._wanted(now, kid)
            with engine.connect() as conn:
                found = _read(conn, wanted)
            if not self._take(period, found):
                with _db.for_writes(engine).begin() as conn:  # SQLite: BEGIN IMMEDIATE
                    _insert(conn, wanted[0], now, self._rotate)
                    self._took(period, _read(conn, wanted))

    def _took(self, period: int, found: dict[str, str]) -> None:
        if not self._take(period, found):  # an isolation level that hides the winner's row
            msg = f"the cursor key of period {period} is neither in {KEYS_TABLE} nor insertable"
            raise RuntimeError(msg)

    def signing(self) -> tuple[str, bytes]:
        self._prepare(None)
        return self._signing

    def verifying(self, kid: str) -> bytes | None:
        self._prepare(kid)
        return self._ring.get(kid)

    # The asyncio driver.

    async def aprepare(self, kid: str | None = None) -> None:
        """Read the table through the ``AsyncEngine`` if a new period or *kid* needs it."""
        now = self._clock()
        if not self._due(now, kid):
            return
        period, wanted = self._wanted(now, kid)
        engine = self._engine()
        async with engine.connect() as conn:
            found = await conn.run_sync(_read, wanted)
        if not self._take(period, found):
            async with _db.for_writes(engine).begin() as conn:
                await conn.run_sync(_insert, wanted[0], now, self._rotate)
                self._took(period, await conn.run_sync(_read, wanted))


def _read(conn: Connection, kids: list[str]) -> dict[str, str]:
    query = sa.select(_TABLE.c.kid, _TABLE.c.secret).where(_TABLE.c.kid.in_(kids))
    return {str(k): str(s) for k, s in conn.execute(query)}


def _insert(conn: Connection, kid: str, now: float, rotate: float) -> None:
    created = datetime.fromtimestamp(now, UTC)
    try:
        with conn.begin_nested():  # another process may insert it first: keep theirs
            conn.execute(
                _TABLE.insert().values(kid=kid, secret=secrets.token_hex(32), created_at=created)
            )
    except sa.exc.IntegrityError:
        return
    old = created - timedelta(seconds=3 * rotate)
    conn.execute(_TABLE.delete().where(_TABLE.c.created_at < old))


# -- which keys a call uses ---------------------------------------------------------------------

_static: dict[str | bytes, CursorKeys] = {}
_shared: weakref.WeakKeyDictionary[Any, SharedCursorKeys] = weakref.WeakKeyDictionary()
_missing: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()
_fallback_logged = False


def _given(secret: str | bytes | CursorKeys | None) -> CursorKeys | None:
    """*secret*, else ``PERFKIT_CURSOR_SECRET``, as keys; ``None`` when neither is set."""
    if isinstance(secret, CursorKeys):
        return secret
    if secret is None or secret == "":
        text = os.environ.get("PERFKIT_CURSOR_SECRET")
        if not text:
            return None
        secret = text
    keys = _static.get(secret)
    if keys is None:
        parts = secret.split(",") if isinstance(secret, str) else [secret]
        keys = _static[secret] = CursorKeys(*[part for part in parts if part])
    return keys


def engine_of(bind: Any) -> Any:  # noqa: PLR0911 - one return per kind of bind
    """The engine behind *bind* (an ``Engine`` or an ``AsyncEngine``), or ``None``."""
    if isinstance(bind, Engine) or isinstance(getattr(bind, "sync_engine", None), Engine):
        return bind  # an Engine, or an AsyncEngine
    if isinstance(bind, Connection):
        return bind.engine
    if hasattr(bind, "sync_connection"):  # an AsyncConnection
        return bind.engine
    kw = getattr(bind, "kw", None)  # a session factory, sync or async
    if isinstance(kw, dict):
        return engine_of(kw.get("bind"))
    if hasattr(bind, "sync_session"):  # an AsyncSession
        return engine_of(bind.bind)
    if hasattr(bind, "get_bind"):  # a Session
        try:
            return engine_of(bind.get_bind())
        except sa.exc.UnboundExecutionError:
            return None
    return None


def _cached_shared(engine: Any) -> tuple[SharedCursorKeys | None, bool]:
    """The engine's shared keys; and whether to look for the table (again)."""
    keys = _shared.get(engine)
    if keys is not None:
        return keys, False
    return None, time.monotonic() >= _missing.get(engine, 0.0)


def _remember(engine: Any, present: bool) -> SharedCursorKeys | None:
    with _shared_lock:
        if not present:
            _missing[engine] = time.monotonic() + _RECHECK
            return None
        found = _shared.get(engine)
        if found is None:
            found = _shared[engine] = SharedCursorKeys._weakly(engine)
        return found


def resolve_keys(secret: str | bytes | CursorKeys | None, bind: Any = None) -> CursorKeys:
    """
    The keys a page uses: *secret*, else ``PERFKIT_CURSOR_SECRET``, else the shared keys
    of the database behind *bind*, else this process's own (said once in the log).
    """
    given = _given(secret)
    if given is not None:
        return given
    engine = engine_of(bind)
    if isinstance(engine, Engine):
        keys, look = _cached_shared(engine)
        if look:
            keys = _remember(engine, _has_table(engine))
        if keys is not None:
            return keys
    _say_process_key(engine)
    return _PROCESS


async def aresolve_keys(
    secret: str | bytes | CursorKeys | None, bind: Any, kid: str | None
) -> CursorKeys:
    """The asyncio twin of :func:`resolve_keys`; reads the shared keys if they need it."""
    given = _given(secret)
    if given is not None:
        return given
    engine = engine_of(bind)
    if engine is not None and not isinstance(engine, Engine):
        keys, look = _cached_shared(engine)
        if look:
            async with engine.connect() as conn:
                present = await conn.run_sync(_table_exists)
            keys = _remember(engine, present)
        if keys is not None:
            await keys.aprepare(kid)
            return keys
    _say_process_key(engine)
    return _PROCESS


def _table_exists(conn: Connection) -> bool:
    return sa.inspect(conn).has_table(KEYS_TABLE)


def _has_table(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            return _table_exists(conn)
    except sa.exc.DBAPIError:
        return False


def _say_process_key(engine: Any) -> None:
    global _fallback_logged  # noqa: PLW0603 - once per process
    if _fallback_logged:
        return
    _fallback_logged = True
    where = (
        f"the database has no {KEYS_TABLE} table (run `perfkit db upgrade URL`)"
        if engine is not None
        else "no database engine was found to share a key through"
    )
    log.warning(
        "keyset cursors are signed with a key of this process only, so other workers and "
        "instances refuse them: no cursor secret was given, PERFKIT_CURSOR_SECRET is unset, "
        "and %s",
        where,
    )
