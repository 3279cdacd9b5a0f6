"""
The reference stores: users, bills and votes over SQLAlchemy Core.

Reads run on a plain connection (a deferred transaction on SQLite, so they
never wait for writers), retried on a fresh connection when one drops
mid-query (:func:`perfkit.run_read`). Writes run in one transaction each,
started with ``BEGIN IMMEDIATE`` on SQLite (see :mod:`perfkit.db`), check what
they depend on inside it and either commit everything or nothing; each
declares how to tell, after a lost COMMIT, whether it was applied.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, TypeAlias, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from perfkit import db as _db
from perfkit.batch import DEFAULT_CHUNK_SIZE, BatchResult
from perfkit.cache import Cache
from perfkit.errors import CommitOutcomeUnknown, Conflict, NotFound
from perfkit.pagination import DEFAULT_BATCH_SIZE as DEFAULT_EXPORT_BATCH
from perfkit.pagination import (
    CountStrategy,
    CursorKeys,
    CursorPage,
    Page,
    count_tag,
    cursor_keys_table,
    keyset_batches,
    paginate,
    paginate_keyset,
    validate_page,
)
from perfkit.reference import _batch
from perfkit.reference import _validate as v
from perfkit.reference import cache_keys as keys
from perfkit.reference import events as ev
from perfkit.reference.models import Base, Bill, BillStatus, User, Vote, VoteChoice, utcnow
from perfkit.reference.records import (
    BillRecord,
    NewBill,
    NewUser,
    NewVote,
    UserRecord,
    VoteCounts,
    VoteRecord,
)
from perfkit.resilience import run_in_transaction, run_read

if TYPE_CHECKING:
    from perfkit.outbox import Outbox

    AnyRow: TypeAlias = Row[*tuple[Any, ...]]
    AnySelect: TypeAlias = sa.Select[*tuple[Any, ...]]

__all__ = ["BillStore", "Stores", "UserStore", "VoteStore", "open_stores"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_PAGE_SIZE: Final = 20
READ_DEADLINE: Final = 2.0
"""Seconds a read keeps retrying transient failures (a dropped connection, a restart)."""
WRITE_DEADLINE: Final = 5.0
"""Seconds a write transaction keeps retrying (busy, serialization, a lost connection)."""
_WRITE_ATTEMPTS: Final = 100  # the deadline is the limit, not the count

_USER_COLUMNS: Final = (User.id, User.username, User.email, User.created_at)
_BILL_COLUMNS: Final = (
    Bill.id,
    Bill.title,
    Bill.summary,
    Bill.status,
    Bill.sponsor_id,
    Bill.created_at,
    Bill.updated_at,
)
_VOTE_COLUMNS: Final = (Vote.id, Vote.bill_id, Vote.user_id, Vote.choice, Vote.created_at)

# Statements are built once with bound parameters: building a select() per call
# costs more than SQLAlchemy's cached compile of it.
_USER_BY_ID: Final = sa.select(*_USER_COLUMNS).where(User.id == sa.bindparam("key"))
_USER_BY_USERNAME: Final = sa.select(*_USER_COLUMNS).where(User.username == sa.bindparam("key"))
_USER_BY_EMAIL: Final = sa.select(*_USER_COLUMNS).where(User.email == sa.bindparam("key"))
_BILL_BY_ID: Final = sa.select(*_BILL_COLUMNS).where(Bill.id == sa.bindparam("key"))
_VOTE_BY_ID: Final = sa.select(*_VOTE_COLUMNS).where(Vote.id == sa.bindparam("key"))
_BILL_EXISTS: Final = sa.select(Bill.id).where(Bill.id == sa.bindparam("key"))
_USER_EXISTS: Final = sa.select(User.id).where(User.id == sa.bindparam("key"))
# Writes too: an INSERT on the table (not the mapped class, whose ORM plugin costs on every
# call) with its values as parameters. ~40 % of a create's time went to building statements.
_INSERT_USER: Final = sa.insert(cast("sa.Table", User.__table__)).returning(*_USER_COLUMNS)
_INSERT_BILL: Final = sa.insert(cast("sa.Table", Bill.__table__)).returning(*_BILL_COLUMNS)
_INSERT_VOTE: Final = sa.insert(cast("sa.Table", Vote.__table__)).returning(*_VOTE_COLUMNS)
_USERS_TAKEN: Final = sa.select(User.username, User.email).where(
    sa.or_(User.username == sa.bindparam("username"), User.email == sa.bindparam("email"))
)
_VOTE_COUNTS: Final = (
    sa.select(Vote.choice, sa.func.count())
    .where(Vote.bill_id == sa.bindparam("key"))
    .group_by(Vote.choice)
)


class _Database:
    """
    What a store works on: an engine for reads, one for writes, an optional cache.
    """

    __slots__ = (
        "cache",
        "cursor_secret",
        "engine",
        "outbox",
        "read_deadline",
        "write_deadline",
        "writer",
    )

    def __init__(
        self,
        engine: Engine,
        cache: Cache | None,
        cursor_secret: str | bytes | CursorKeys | None,
        deadlines: tuple[float, float] = (READ_DEADLINE, WRITE_DEADLINE),
        outbox: Outbox | None = None,
    ) -> None:
        self.engine = engine
        self.outbox = outbox
        self.writer = _db.for_writes(engine)
        self.cache = cache
        self.cursor_secret = cursor_secret
        self.read_deadline, self.write_deadline = deadlines
        for deadline in deadlines:
            if not deadline > 0:
                msg = f"deadlines must be positive seconds, not {deadline!r}"
                raise ValueError(msg)

    def keyset(
        self,
        stmt: AnySelect,
        *,
        limit: int,
        cursor: str | None,
        exists: AnySelect | None = None,
        entity: str = "",
        key: int = 0,
    ) -> CursorPage[AnyRow]:
        """A keyset page of *stmt*; NotFound if it is empty and *exists* finds nothing."""

        def read(conn: Connection) -> CursorPage[AnyRow]:
            page = paginate_keyset(
                conn, stmt, limit=limit, cursor=cursor, secret=self.cursor_secret
            )
            if exists is not None and not page.items and not self.exists(conn, exists, key):
                raise NotFound(entity, key)
            return page

        return self.read(read)

    def cached(
        self,
        loader: Callable[P, R],
        *,
        key: str,
        tags: Sequence[str] = (),
        result_tags: Callable[[Any], Iterable[str]] | None = None,
    ) -> Callable[P, R]:
        """*loader* behind the cache, or *loader* itself without one."""
        if self.cache is None:
            return loader
        return self.cache.cached(key=key, tags=tags, result_tags=result_tags)(loader)

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        """Drop cached reads a committed write changed (no-op without a cache)."""
        if self.cache is not None:
            self.cache.invalidate(keys=keys, tags=tags)

    def read(self, query: Callable[[Connection], R]) -> R:
        """Run *query* on a fresh connection, again on a new one after a transient failure."""
        return run_read(self.engine.connect, query, timeout=self.read_deadline)

    def one(self, stmt: AnySelect, key: object) -> AnyRow | None:
        """The first row of *stmt* with its ``key`` parameter bound, or ``None``."""
        return self.read(lambda conn: conn.execute(stmt, {"key": key}).first())

    def transact(
        self,
        work: Callable[[Connection], R],
        *,
        verify: Callable[[Connection], R | None],
        touches: Collection[str] = (),
        touches_keys: Collection[str] = (),
    ) -> R:
        """
        Run *work* in one write transaction (``BEGIN IMMEDIATE`` on SQLite),
        retried as a whole on transient failures (busy, serialization, deadlock,
        a lost connection). After a lost COMMIT, *verify* tells whether it was
        applied; if the call then fails anyway (nobody could tell, or a later
        step failed), the tags *touches* and the keys *touches_keys* are
        invalidated before the error is raised, since the write may be there.
        """
        checked: list[bool] = []

        def check(conn: Connection) -> R | None:
            checked.append(True)  # a COMMIT was lost: the write may be there
            return verify(conn)

        try:
            return run_in_transaction(
                self.writer.connect,
                work,
                verify=check,
                attempts=_WRITE_ATTEMPTS,
                timeout=self.write_deadline,
            )
        except Exception as exc:
            if checked or isinstance(exc, CommitOutcomeUnknown):
                # Whatever failed after a lost COMMIT, the write may be stored.
                self.invalidate(keys=touches_keys, tags=touches)
            raise

    def emit(self, conn: Connection, events: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Write *events* (type, key, payload) to the outbox in *conn*'s transaction, if any."""
        if self.outbox is not None:
            self.outbox.add_many(conn, events)

    def exists(self, conn: Connection, stmt: AnySelect, key: int) -> bool:
        return conn.execute(stmt, {"key": key}).first() is not None


def _user_tags(user: UserRecord) -> list[str]:
    return [keys.user_tag(user.id)]


def _user_keys(
    user_id: int | None, *, username: str | None = None, email: str | None = None
) -> list[str]:
    """Keys of the lookups that may hold a cached "no such user" for these values."""
    names = [] if user_id is None else [keys.USER.format(user_id=user_id)]
    if username is not None:
        names.append(keys.USER_BY_NAME.format(username=username))
    if email is not None:
        names.append(keys.USER_BY_EMAIL.format(email=email))
    return names


def _user(row: AnyRow) -> UserRecord:
    return UserRecord(*row)


def _bill(row: AnyRow) -> BillRecord:
    return BillRecord(*row)


def _vote(row: AnyRow) -> VoteRecord:
    return VoteRecord(*row)


class UserStore:
    """
    Users: looked up by id, username or email; created and renamed.

    Usernames and emails are unique and compare case-insensitively (they are
    stored lower-cased).
    """

    __slots__ = ("_by_email", "_by_id", "_by_name", "_db")

    def __init__(self, database: _Database) -> None:
        self._db = database
        self._by_id = database.cached(self._load_by_id, key=keys.USER, tags=[keys.USER])
        self._by_name = database.cached(
            self._load_by_name, key=keys.USER_BY_NAME, result_tags=_user_tags
        )
        self._by_email = database.cached(
            self._load_by_email, key=keys.USER_BY_EMAIL, result_tags=_user_tags
        )

    def get_by_id(self, user_id: int) -> UserRecord | None:
        """
        Return the user with *user_id*, or ``None``.
        """
        return self._by_id(v.record_id("user_id", user_id))

    def get_by_username(self, username: str) -> UserRecord | None:
        """
        Return the user called *username* (any case), or ``None``.
        """
        return self._by_name(v.username(username))

    def get_by_email(self, email: str) -> UserRecord | None:
        """
        Return the user with *email* (any case), or ``None``.
        """
        return self._by_email(v.email(email))

    def _load_by_id(self, user_id: int) -> UserRecord | None:
        return self._one(_USER_BY_ID, user_id)

    def _load_by_name(self, username: str) -> UserRecord | None:
        return self._one(_USER_BY_USERNAME, username)

    def _load_by_email(self, email: str) -> UserRecord | None:
        return self._one(_USER_BY_EMAIL, email)

    def _one(self, stmt: AnySelect, key: object) -> UserRecord | None:
        row = self._db.one(stmt, key)
        return None if row is None else _user(row)

    def create(self, *, username: str, email: str) -> UserRecord:
        """
        Create a user.

        Raises:
            InvalidInput: *username* or *email* is malformed.
            Conflict: the username or email is taken.
        """
        values = {"username": v.username(username), "email": v.email(email)}

        def work(conn: Connection) -> UserRecord:
            _raise_taken(conn.execute(_USERS_TAKEN, values), values)
            row = _insert_one(
                conn, _INSERT_USER, "username or email is taken", {**values, "created_at": utcnow()}
            )
            return _user(row)

        def created(conn: Connection) -> UserRecord | None:
            # Both unique values, together: only this create stores that pair.
            stmt = _USER_BY_USERNAME.where(User.email == values["email"])
            row = conn.execute(stmt, {"key": values["username"]}).first()
            return None if row is None else _user(row)

        tags = [count_tag("users")]
        user = self._db.transact(
            work, verify=created, touches=tags, touches_keys=_user_keys(None, **values)
        )
        self._db.invalidate(keys=_user_keys(user.id, **values), tags=tags)
        return user

    def create_many(
        self, users: Iterable[NewUser], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> BatchResult[UserRecord]:
        """
        Create many users: one transaction and one ``INSERT`` per chunk of *chunk_size*.

        Each item succeeds or fails alone, and the result says which: an
        item is :class:`~perfkit.errors.InvalidInput` if malformed, and
        :class:`~perfkit.errors.Conflict` if its username or email is taken.
        An item that repeats an earlier item's username or email goes in
        after it (a second statement), so it gets what it would have got
        alone: a Conflict if the earlier one was stored, its own result if
        not. Chunks commit in order; if one
        fails as a whole (the database stays unreachable past the write
        deadline), the error is raised and the chunks before it stay
        committed (running the batch again reports them as conflicts).
        Invalidates what :meth:`create` does, once per chunk.

        Raises:
            ValueError: *chunk_size* is not from 1 to 10,000.

        Example::

            result = stores.users.create_many(
                [{"username": "ada", "email": "ada@example.org"}, ...]
            )
            [item.error for item in result.failed]

        .. versionadded:: 0.2.0
        """
        return _batch.create_users(self._db, users, chunk_size)

    def update(
        self, user_id: int, *, username: str | None = None, email: str | None = None
    ) -> UserRecord:
        """
        Change a user's username and/or email; ``None`` leaves a field as it is.

        Raises:
            NotFound: there is no user *user_id*.
            InvalidInput: a new value is malformed.
            Conflict: the new username or email belongs to another user.
        """
        key = v.record_id("user_id", user_id)
        values: dict[str, str] = {}
        if username is not None:
            values["username"] = v.username(username)
        if email is not None:
            values["email"] = v.email(email)

        def work(conn: Connection) -> tuple[UserRecord, dict[str, str]]:
            current = conn.execute(_USER_BY_ID, {"key": key}).first()
            if current is None:
                raise NotFound("user", key)
            record = _user(current)
            changes = {
                name: value for name, value in values.items() if getattr(record, name) != value
            }
            if not changes:
                return record, changes
            self._check_free(conn, changes, user_id=key)
            stmt = sa.update(User).where(User.id == key).values(**changes).returning(*_USER_COLUMNS)
            return _user(_insert_one(conn, stmt, "username or email is taken")), changes

        def updated(conn: Connection) -> tuple[UserRecord, dict[str, str]] | None:
            row = conn.execute(_USER_BY_ID, {"key": key}).first()
            if row is None or any(getattr(row, name) != value for name, value in values.items()):
                return None
            return _user(row), values  # invalidating unchanged values too is harmless

        user, changes = self._db.transact(
            work,
            verify=updated,
            touches=[keys.user_tag(key)],
            touches_keys=_user_keys(None, **values),
        )
        if not changes:
            return user
        # The old name and email entries carry the user's tag; the new ones may
        # hold a cached "no such user".
        self._db.invalidate(keys=_user_keys(None, **changes), tags=[keys.user_tag(key)])
        return user

    @staticmethod
    def _check_free(conn: Connection, values: dict[str, str], *, user_id: int) -> None:
        clauses = [getattr(User, name) == value for name, value in values.items()]
        stmt = sa.select(User.username, User.email).where(sa.or_(*clauses), User.id != user_id)
        _raise_taken(conn.execute(stmt), values)


class BillStore:
    """
    Bills: listed newest first, looked up by id, created and edited.
    """

    __slots__ = ("_by_id", "_db")

    def __init__(self, database: _Database) -> None:
        self._db = database
        self._by_id = database.cached(self._load_by_id, key=keys.BILL, tags=[keys.BILL])

    def get_by_id(self, bill_id: int) -> BillRecord | None:
        """
        Return the bill with *bill_id*, or ``None``.
        """
        return self._by_id(v.record_id("bill_id", bill_id))

    def _load_by_id(self, bill_id: int) -> BillRecord | None:
        row = self._db.one(_BILL_BY_ID, bill_id)
        return None if row is None else _bill(row)

    def get_all(
        self,
        *,
        page: int = 1,
        limit: int = DEFAULT_PAGE_SIZE,
        status: BillStatus | str | None = None,
        count: CountStrategy | None = None,
    ) -> Page[BillRecord]:
        """
        Return one page of bills, newest first, optionally only those in *status*.

        *count* defaults to ``"cached"`` when the stores have a cache (the
        count is invalidated by every bill write) and ``"exact"`` otherwise.

        Raises:
            InvalidPage: *page* or *limit* is out of range.
            InvalidInput: *status* is not a bill status.
        """
        stmt = self._list(status)
        cache = self._db.cache
        strategy = count or ("cached" if cache is not None else "exact")
        result = self._db.read(
            lambda conn: paginate(conn, stmt, page=page, limit=limit, count=strategy, cache=cache)
        )
        return result.map(_bill)

    def get_all_keyset(
        self,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        status: BillStatus | str | None = None,
    ) -> CursorPage[BillRecord]:
        """
        Return one keyset page of bills, newest first: as fast at row 1,000,000 as at row 1.

        Raises:
            InvalidPage: *limit* is out of range.
            InvalidCursor: *cursor* is malformed, altered or from another listing.
            InvalidInput: *status* is not a bill status.
        """
        return self._db.keyset(self._list(status), limit=limit, cursor=cursor).map(_bill)

    def export(
        self, *, status: BillStatus | str | None = None, batch_size: int = DEFAULT_EXPORT_BATCH
    ) -> Iterator[list[BillRecord]]:
        """
        Every bill (or those in *status*), oldest id first, in lists of *batch_size*.

        The first batch is read before this returns (a database that cannot
        be reached raises here, before an HTTP layer starts a body); each
        batch is one keyset query on a fresh connection (never the
        cache): memory stays at one batch, nothing is held between batches,
        and a bill that exists throughout the walk comes out exactly once
        (the key, the id, never changes) with its values as of its batch.
        Stop iterating and no further query runs.

        Raises:
            InvalidInput: *status* is not a bill status.
            ValueError: *batch_size* is not from 1 to 100,000.

        .. versionadded:: 0.2.0
        """
        stmt: AnySelect = sa.select(*_BILL_COLUMNS).order_by(Bill.id)
        if status is not None:
            stmt = stmt.where(Bill.status == v.choice("status", status, BillStatus))
        return _records(keyset_batches(self._db.engine, stmt, batch_size=batch_size), _bill)

    @staticmethod
    def _list(status: BillStatus | str | None) -> AnySelect:
        stmt = sa.select(*_BILL_COLUMNS).order_by(Bill.created_at.desc(), Bill.id.desc())
        if status is not None:
            stmt = stmt.where(Bill.status == v.choice("status", status, BillStatus))
        return stmt

    def create(
        self,
        *,
        title: str,
        sponsor_id: int,
        summary: str = "",
        status: BillStatus | str = BillStatus.DRAFT,
    ) -> BillRecord:
        """
        Create a bill sponsored by user *sponsor_id*.

        Raises:
            InvalidInput: a field is malformed (titles are 1-200 characters,
                summaries at most 10,000).
            NotFound: there is no user *sponsor_id*.
        """
        now = utcnow()
        sponsor = v.record_id("sponsor_id", sponsor_id)
        values = {
            "title": v.text("title", title, max_length=v.MAX_TITLE),
            "summary": v.text("summary", summary, max_length=v.MAX_SUMMARY, allow_empty=True),
            "status": v.choice("status", status, BillStatus),
            "sponsor_id": sponsor,
            "created_at": now,
            "updated_at": now,
        }

        def work(conn: Connection) -> BillRecord:
            if not self._db.exists(conn, _USER_EXISTS, sponsor):
                raise NotFound("user", sponsor)
            return _bill(
                _insert_one(conn, _INSERT_BILL, "bill conflicts with a stored one", values)
            )

        def created(conn: Connection) -> BillRecord | None:
            # Bills have no natural key: the sponsor, title and creation time taken
            # before the first attempt (to the microsecond) single this one out.
            stmt = (
                sa.select(*_BILL_COLUMNS)
                .where(Bill.sponsor_id == sponsor, Bill.created_at == now)
                .where(Bill.title == values["title"])
                .order_by(Bill.id.desc())
            )
            row = conn.execute(stmt).first()
            return None if row is None else _bill(row)

        tags = [count_tag("bills")]
        bill = self._db.transact(work, verify=created, touches=tags)
        self._db.invalidate(keys=[keys.BILL.format(bill_id=bill.id)], tags=tags)
        return bill

    def create_many(
        self, bills: Iterable[NewBill], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> BatchResult[BillRecord]:
        """
        Create many bills: one transaction and one ``INSERT`` per chunk of *chunk_size*.

        An item fails alone: :class:`~perfkit.errors.InvalidInput` if
        malformed, :class:`~perfkit.errors.NotFound` if its sponsor does not
        exist. Chunks commit in order, as in
        :meth:`UserStore.create_many`; invalidates what :meth:`create` does,
        once per chunk.

        Raises:
            ValueError: *chunk_size* is not from 1 to 10,000.

        .. versionadded:: 0.2.0
        """
        return _batch.create_bills(self._db, bills, chunk_size)

    def update(
        self,
        bill_id: int,
        *,
        title: str | None = None,
        summary: str | None = None,
        status: BillStatus | str | None = None,
    ) -> BillRecord:
        """
        Change a bill's fields; ``None`` leaves a field as it is.

        ``updated_at`` moves only when a value really changes.

        Raises:
            NotFound: there is no bill *bill_id*.
            InvalidInput: a new value is malformed.
        """
        key = v.record_id("bill_id", bill_id)
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = v.text("title", title, max_length=v.MAX_TITLE)
        if summary is not None:
            values["summary"] = v.text(
                "summary", summary, max_length=v.MAX_SUMMARY, allow_empty=True
            )
        if status is not None:
            values["status"] = v.choice("status", status, BillStatus)
        if not values:
            current = self.get_by_id(key)
            if current is None:
                raise NotFound("bill", key)
            return current

        def work(conn: Connection) -> tuple[BillRecord, bool]:
            row = conn.execute(_BILL_BY_ID, {"key": key}).first()
            if row is None:
                raise NotFound("bill", key)
            record = _bill(row)
            changes = {
                name: value for name, value in values.items() if getattr(record, name) != value
            }
            if not changes:
                return record, False
            stmt = (
                sa.update(Bill)
                .where(Bill.id == key)
                .values(**changes, updated_at=utcnow())
                .returning(*_BILL_COLUMNS)
            )
            bill = _bill(conn.execute(stmt).one())
            if "status" in changes and self._db.outbox is not None:
                payload = {"bill": bill.to_dict(), "previous_status": record.status.value}
                self._db.emit(conn, [(ev.BILL_STATUS_CHANGED, ev.event_key(key), payload)])
            return bill, True

        def updated(conn: Connection) -> tuple[BillRecord, bool] | None:
            row = conn.execute(_BILL_BY_ID, {"key": key}).first()
            if row is None or any(getattr(row, name) != value for name, value in values.items()):
                return None
            return _bill(row), True  # invalidate even if it already held these values

        bill, changed = self._db.transact(
            work, verify=updated, touches=[keys.bill_tag(key), count_tag("bills")]
        )
        if not changed:
            return bill
        # The status may have changed: counts of filtered lists go too.
        self._db.invalidate(tags=[keys.bill_tag(key), count_tag("bills")])
        return bill


class VoteStore:
    """
    Votes: cast once per user and bill, listed per bill or per user, counted.
    """

    __slots__ = ("_by_bill", "_by_id", "_by_user", "_counts", "_db")

    def __init__(self, database: _Database) -> None:
        self._db = database
        self._by_id = database.cached(self._load_by_id, key=keys.VOTE, tags=[keys.VOTE])
        self._by_bill = database.cached(
            self._load_by_bill, key=keys.VOTES_BY_BILL, tags=["votes:bill:{bill_id}"]
        )
        self._by_user = database.cached(
            self._load_by_user, key=keys.VOTES_BY_USER, tags=["votes:user:{user_id}"]
        )
        self._counts = database.cached(
            self._load_counts, key=keys.COUNTS, tags=["votes:bill:{bill_id}"]
        )

    def get_by_id(self, vote_id: int) -> VoteRecord | None:
        """
        Return the vote with *vote_id*, or ``None``.
        """
        return self._by_id(v.record_id("vote_id", vote_id))

    def _load_by_id(self, vote_id: int) -> VoteRecord | None:
        row = self._db.one(_VOTE_BY_ID, vote_id)
        return None if row is None else _vote(row)

    def get_by_bill_id(
        self, bill_id: int, *, page: int = 1, limit: int = DEFAULT_PAGE_SIZE
    ) -> Page[VoteRecord]:
        """
        Return one page of the votes on bill *bill_id*, oldest first.

        Raises:
            NotFound: there is no bill *bill_id*.
            InvalidPage: *page* or *limit* is out of range.
        """
        key = v.record_id("bill_id", bill_id)
        validate_page(page, limit)
        return self._by_bill(key, page, limit)

    def _load_by_bill(self, bill_id: int, page: int, limit: int) -> Page[VoteRecord]:
        stmt = sa.select(*_VOTE_COLUMNS).where(Vote.bill_id == bill_id).order_by(Vote.id)
        return self._page(stmt, page, limit, exists=_BILL_EXISTS, entity="bill", key=bill_id)

    def get_by_user_id(
        self, user_id: int, *, page: int = 1, limit: int = DEFAULT_PAGE_SIZE
    ) -> Page[VoteRecord]:
        """
        Return one page of the votes user *user_id* cast, oldest first.

        Raises:
            NotFound: there is no user *user_id*.
            InvalidPage: *page* or *limit* is out of range.
        """
        key = v.record_id("user_id", user_id)
        validate_page(page, limit)
        return self._by_user(key, page, limit)

    def get_by_bill_id_keyset(
        self, bill_id: int, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> CursorPage[VoteRecord]:
        """
        Return one keyset page of the votes on bill *bill_id*, oldest first.

        Raises:
            NotFound: there is no bill *bill_id*.
            InvalidPage: *limit* is out of range.
            InvalidCursor: *cursor* is malformed, altered or from another listing.
        """
        key = v.record_id("bill_id", bill_id)
        stmt = sa.select(*_VOTE_COLUMNS).where(Vote.bill_id == key).order_by(Vote.id)
        page = self._db.keyset(
            stmt, limit=limit, cursor=cursor, exists=_BILL_EXISTS, entity="bill", key=key
        )
        return page.map(_vote)

    def get_by_user_id_keyset(
        self, user_id: int, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> CursorPage[VoteRecord]:
        """
        Return one keyset page of the votes user *user_id* cast, oldest first.

        Raises:
            NotFound: there is no user *user_id*.
            InvalidPage: *limit* is out of range.
            InvalidCursor: *cursor* is malformed, altered or from another listing.
        """
        key = v.record_id("user_id", user_id)
        stmt = sa.select(*_VOTE_COLUMNS).where(Vote.user_id == key).order_by(Vote.id)
        page = self._db.keyset(
            stmt, limit=limit, cursor=cursor, exists=_USER_EXISTS, entity="user", key=key
        )
        return page.map(_vote)

    def export_by_bill(
        self, bill_id: int, *, batch_size: int = DEFAULT_EXPORT_BATCH
    ) -> Iterator[list[VoteRecord]]:
        """
        Every vote on bill *bill_id*, oldest first, in lists of *batch_size*.

        The bill is looked up, and the first batch read, before this
        returns (so an HTTP layer can answer 404 or 503 before it starts a
        body); each batch is one keyset query, as in :meth:`BillStore.export`.

        Raises:
            NotFound: there is no bill *bill_id*.
            ValueError: *batch_size* is not from 1 to 100,000.

        .. versionadded:: 0.2.0
        """
        key = v.record_id("bill_id", bill_id)
        stmt: AnySelect = sa.select(*_VOTE_COLUMNS).where(Vote.bill_id == key).order_by(Vote.id)
        batches = keyset_batches(self._db.engine, stmt, batch_size=batch_size)
        if self._db.one(_BILL_EXISTS, key) is None:
            raise NotFound("bill", key)
        return _records(batches, _vote)

    def _load_by_user(self, user_id: int, page: int, limit: int) -> Page[VoteRecord]:
        stmt = sa.select(*_VOTE_COLUMNS).where(Vote.user_id == user_id).order_by(Vote.id)
        return self._page(stmt, page, limit, exists=_USER_EXISTS, entity="user", key=user_id)

    def cast(self, *, bill_id: int, user_id: int, choice: VoteChoice | str) -> VoteRecord:
        """
        Record user *user_id*'s vote on bill *bill_id*.

        Raises:
            InvalidInput: *choice* is not yes, no or abstain, or an id is malformed.
            NotFound: the bill or the user does not exist.
            Conflict: the user has already voted on this bill.
        """
        bill = v.record_id("bill_id", bill_id)
        user = v.record_id("user_id", user_id)
        picked = v.choice("choice", choice, VoteChoice)

        def work(conn: Connection) -> VoteRecord:
            if not self._db.exists(conn, _BILL_EXISTS, bill):
                raise NotFound("bill", bill)
            if not self._db.exists(conn, _USER_EXISTS, user):
                raise NotFound("user", user)
            values = {"bill_id": bill, "user_id": user, "choice": picked, "created_at": utcnow()}
            message = f"user {user} has already voted on bill {bill}"
            vote = _vote(_insert_one(conn, _INSERT_VOTE, message, values))
            if self._db.outbox is not None:  # no event built for stores without one
                self._db.emit(conn, [(ev.VOTE_CAST, ev.event_key(bill), ev.vote_payload(vote))])
            return vote

        def cast(conn: Connection) -> VoteRecord | None:
            # One vote per (bill, user): if it is there with this choice, it is this one.
            row = conn.execute(
                sa.select(*_VOTE_COLUMNS).where(Vote.bill_id == bill, Vote.user_id == user)
            ).first()
            return None if row is None or row.choice != picked else _vote(row)

        tags = [keys.votes_of_bill_tag(bill), keys.votes_of_user_tag(user), count_tag("votes")]
        vote = self._db.transact(work, verify=cast, touches=tags)
        self._db.invalidate(keys=[keys.VOTE.format(vote_id=vote.id)], tags=tags)
        return vote

    def cast_many(
        self, votes: Iterable[NewVote], *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> BatchResult[VoteRecord]:
        """
        Cast many votes: one transaction and, unless items fail, one statement per chunk.

        Each item succeeds or fails alone, and the result says which:
        :class:`~perfkit.errors.InvalidInput` (a malformed id or choice),
        :class:`~perfkit.errors.NotFound` (no such bill or user) or
        :class:`~perfkit.errors.Conflict` (the user has voted on that bill,
        before or in an earlier item of the batch: repeats go in after the
        item they repeat, as in :meth:`UserStore.create_many`). Chunks commit
        in order, as in
        :meth:`UserStore.create_many`; invalidates what :meth:`cast` does
        (each bill's counts and lists), once per chunk.

        Raises:
            ValueError: *chunk_size* is not from 1 to 10,000.

        Example::

            stores.votes.cast_many(
                {"bill_id": bill.id, "user_id": user.id, "choice": "yes"} for user in users
            )

        .. versionadded:: 0.2.0
        """
        return _batch.cast_votes(self._db, votes, chunk_size)

    def counts(self, bill_id: int) -> VoteCounts:
        """
        Return how the votes on bill *bill_id* split, from one grouped query.

        Raises:
            NotFound: there is no bill *bill_id*.
        """
        return self._counts(v.record_id("bill_id", bill_id))

    def _load_counts(self, bill_id: int) -> VoteCounts:
        def read(conn: Connection) -> dict[Any, int]:
            tally = {choice: int(n) for choice, n in conn.execute(_VOTE_COUNTS, {"key": bill_id})}
            if not tally and not self._db.exists(conn, _BILL_EXISTS, bill_id):
                raise NotFound("bill", bill_id)
            return tally

        tally = self._db.read(read)
        return VoteCounts(
            bill_id=bill_id,
            yes=tally.get(VoteChoice.YES, 0),
            no=tally.get(VoteChoice.NO, 0),
            abstain=tally.get(VoteChoice.ABSTAIN, 0),
        )

    def _page(
        self,
        stmt: AnySelect,
        page: int,
        limit: int,
        *,
        exists: AnySelect,
        entity: str,
        key: int,
    ) -> Page[VoteRecord]:

        def read(conn: Connection) -> Page[AnyRow]:
            result = paginate(conn, stmt, page=page, limit=limit)
            if not result.items and not self._db.exists(conn, exists, key):
                raise NotFound(entity, key)
            return result

        return self._db.read(read).map(_vote)


def _records(batches: Iterator[list[AnyRow]], record: Callable[[AnyRow], R]) -> Iterator[list[R]]:
    for rows in batches:
        yield [record(row) for row in rows]


def _raise_taken(rows: Iterable[AnyRow], values: dict[str, str]) -> None:
    """Conflict naming the first of *values* (username, email) that a row already holds."""
    for row in rows:
        for name, value in values.items():
            if getattr(row, name) == value:
                raise Conflict(f"{name} {value!r} is taken")


def _insert_one(
    conn: Connection, stmt: Any, conflict: str, values: dict[str, Any] | None = None
) -> AnyRow:
    """
    Run a single-row INSERT/UPDATE … RETURNING (with *values* as its parameters), turning
    a uniqueness race into Conflict.

    Other integrity errors (a foreign key, a CHECK) are bugs of the caller's
    checks, not conflicts, and propagate unchanged.
    """
    try:
        return conn.execute(stmt, values).one()
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise Conflict(conflict) from exc
        raise


def _is_unique_violation(exc: IntegrityError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)  # psycopg
    if sqlstate is not None:
        return bool(sqlstate == "23505")
    return str(exc.orig).startswith("UNIQUE constraint failed")  # sqlite3


class Stores:
    """
    The three reference stores over one engine.

    Use as a context manager, or call :meth:`close`, to release the engine's
    connections (only when :func:`open_stores` created the engine).
    """

    __slots__ = ("_owns_engine", "bills", "cache", "engine", "outbox", "users", "votes")

    def __init__(
        self,
        engine: Engine,
        *,
        owns_engine: bool,
        cache: Cache | None = None,
        cursor_secret: str | bytes | CursorKeys | None = None,
        read_deadline: float = READ_DEADLINE,
        write_deadline: float = WRITE_DEADLINE,
        outbox: Outbox | None = None,
    ) -> None:
        deadlines = (read_deadline, write_deadline)
        database = _Database(engine, cache, cursor_secret, deadlines, outbox)
        self.engine = engine
        self.cache = cache
        self.outbox = outbox
        self.users = UserStore(database)
        self.bills = BillStore(database)
        self.votes = VoteStore(database)
        self._owns_engine = owns_engine

    def close(self) -> None:
        """
        Dispose of the engine if :func:`open_stores` created it.
        """
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Stores:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_stores(
    database: str | URL | Engine,
    *,
    cache: Cache | None = None,
    schema: Literal["migrate", "create", "none"] = "migrate",
    create_schema: bool | None = None,
    cursor_secret: str | bytes | CursorKeys | None = None,
    read_deadline: float = READ_DEADLINE,
    write_deadline: float = WRITE_DEADLINE,
    outbox: Outbox | None = None,
) -> Stores:
    """
    Open the reference stores on *database*.

    Args:
        database: A database URL (an engine is made with
            :func:`perfkit.db.create_engine`) or an existing engine, which
            should come from :func:`perfkit.db.create_engine` so SQLite writes
            begin with ``BEGIN IMMEDIATE``.
        cache: Cache reads through this :class:`~perfkit.cache.Cache` and
            invalidate after each committed write (keys and tags:
            :mod:`perfkit.reference.cache_keys`). With a shared backend
            (Redis), give it :func:`perfkit.reference.codec` so records
            round-trip.
        schema: ``"migrate"`` (the default) applies the reference store's
            migrations to an SQLite database (the embedded default needs no
            command), and on any other database checks that they were
            applied, raising :class:`~perfkit.errors.SchemaNotCurrent` with
            the command to run (``perfkit db upgrade URL --branch
            perfkit_reference``) when they were not: workers never change a
            PostgreSQL schema as they start (:func:`perfkit.migrations.prepare`).
            And perfkit's branch (``perfkit``: the shared cursor keys, the
            outbox and webhook tables).
            ``"create"`` creates the missing tables with no migration record
            (:func:`perfkit.db.create_tables`: throwaway databases);
            ``"none"`` leaves the schema alone.
        create_schema: Deprecated: ``False`` is ``schema="none"``, ``True``
            is ``schema="create"``.
        cursor_secret: What signs keyset cursors: a secret, or
            :class:`~perfkit.pagination.CursorKeys` to rotate (default:
            ``PERFKIT_CURSOR_SECRET``, else a key shared through the
            database, the same in every worker and instance:
            :class:`~perfkit.pagination.SharedCursorKeys`).
        read_deadline: Seconds a read keeps retrying transient failures (a
            dropped connection, a database restart) on fresh connections.
        write_deadline: Seconds a write keeps retrying its whole transaction
            (SQLite busy, serialization failures, deadlocks, lost
            connections). After both, the failure is raised: the HTTP layer
            answers it 503 (:func:`perfkit.fastapi.install`).
        outbox: Write an event for every vote cast and every bill status
            change into this :class:`~perfkit.outbox.Outbox`, in the write's
            own transaction (:mod:`perfkit.reference.events`); its table is
            migrated (the default name) or created with the schema.

    Example::

        with open_stores("sqlite:///votes.db") as stores:
            alice = stores.users.create(username="alice", email="alice@example.org")
            bill = stores.bills.create(title="Clean Air Act", sponsor_id=alice.id)
            stores.votes.cast(bill_id=bill.id, user_id=alice.id, choice="yes")
            stores.votes.counts(bill.id)  # VoteCounts(bill_id=1, yes=1, no=0, abstain=0)

    .. versionadded:: 0.1.0
    """
    if create_schema is not None:
        warnings.warn(
            f'create_schema= is deprecated: pass schema="{"create" if create_schema else "none"}"'
            ' (or leave the default, "migrate")',
            DeprecationWarning,
            stacklevel=2,
        )
        schema = "create" if create_schema else "none"
    if schema not in ("migrate", "create", "none"):
        msg = f'schema must be "migrate", "create" or "none", not {schema!r}'
        raise ValueError(msg)
    owns_engine = not isinstance(database, Engine)
    engine = _db.create_engine(database) if not isinstance(database, Engine) else database
    try:
        _make_schema(engine, schema, outbox)
    except BaseException:
        if owns_engine:
            engine.dispose()
        raise
    return Stores(
        engine,
        owns_engine=owns_engine,
        cache=cache,
        cursor_secret=cursor_secret,
        read_deadline=read_deadline,
        write_deadline=write_deadline,
        outbox=outbox,
    )


def _make_schema(engine: Engine, schema: str, outbox: Outbox | None) -> None:
    extra = () if outbox is None else (outbox.table,)
    if schema == "create":
        keys = cursor_keys_table(sa.MetaData())  # the shared cursor keys
        _db.create_tables(engine, Base.metadata, keys, *extra)
    elif schema == "migrate":
        from perfkit import migrations  # noqa: PLC0415 - alembic, only where it runs
        from perfkit.outbox import DEFAULT_TABLE  # noqa: PLC0415

        # perfkit's branch too: the shared cursor keys (and the outbox, by default).
        migrations.prepare(engine, "perfkit_reference", "perfkit")
        if outbox is not None and outbox.table.name != DEFAULT_TABLE:
            _db.create_tables(engine, outbox.table)  # a name of the caller's: not perfkit's
