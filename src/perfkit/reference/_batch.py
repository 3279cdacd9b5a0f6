"""
Batch writes of the reference stores: one ``INSERT ... SELECT`` per chunk.

Each chunk is one transaction and, when every item goes in, one statement:
the chunk's rows come in as a :class:`~perfkit.batch.RowSource`, a ``JOIN``
drops the items whose bill, user or sponsor does not exist, ``ON CONFLICT DO
NOTHING`` drops those that are taken, and ``RETURNING`` says which went in.
Only a chunk with failed items runs a second query, to tell each one why.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from perfkit.batch import BatchResult, ItemResult, RowSource, chunked
from perfkit.errors import Conflict, InvalidInput, NotFound
from perfkit.pagination import count_tag
from perfkit.reference import _validate as v
from perfkit.reference import cache_keys as keys
from perfkit.reference import events as ev
from perfkit.reference.models import Bill, BillStatus, User, Vote, VoteChoice, utcnow
from perfkit.reference.records import BillRecord, UserRecord, VoteRecord

if TYPE_CHECKING:
    from perfkit.reference.stores import _Database

__all__ = ["cast_votes", "create_bills", "create_users", "validate_chunk_size"]

T = TypeVar("T")
V = TypeVar("V")

MAX_CHUNK_SIZE: Final = 10_000

_USERS: Final = cast("sa.Table", User.__table__)
_BILLS: Final = cast("sa.Table", Bill.__table__)
_VOTES: Final = cast("sa.Table", Vote.__table__)
_NOW: Final = sa.bindparam("now", type_=Vote.created_at.type)


def validate_chunk_size(chunk_size: int) -> int:
    """*chunk_size* if it is an integer from 1 to 10,000, else ValueError."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        msg = f"chunk_size must be an integer, not {chunk_size!r}"
        raise ValueError(msg)
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        msg = f"chunk_size must be from 1 to {MAX_CHUNK_SIZE}, not {chunk_size}"
        raise ValueError(msg)
    return chunk_size


def _fields(item: object, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    """The item's fields, checked to be a mapping with exactly the known names."""
    if not isinstance(item, Mapping):
        raise InvalidInput("item", f"must be a mapping of fields, got {type(item).__name__}")
    for name in item:
        if name not in required and name not in optional:
            raise InvalidInput(str(name), "is not a field of this item")
    for name in required:
        if name not in item:
            raise InvalidInput(name, "is required")
    return dict(item)


def _insert(dialect: str) -> Callable[[sa.Table], Any]:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _run(
    items: Iterable[object],
    chunk_size: int,
    validate: Callable[[object], V],
    write: Callable[[list[tuple[int, V]]], list[ItemResult[T]]],
) -> BatchResult[T]:
    """Validate each item, write the valid ones chunk by chunk, and merge in input order."""
    results: list[ItemResult[T]] = []
    offset = 0
    for chunk in chunked(items, validate_chunk_size(chunk_size)):
        slots: list[ItemResult[T] | None] = [None] * len(chunk)
        valid: list[tuple[int, V]] = []
        for index, item in enumerate(chunk, offset):
            try:
                valid.append((index, validate(item)))
            except InvalidInput as exc:
                slots[index - offset] = ItemResult(index, error=exc)
        if valid:
            for result in write(valid):
                slots[result.index - offset] = result
        offset += len(chunk)
        results.extend(cast("list[ItemResult[T]]", slots))  # write() answers every valid item
    return BatchResult(tuple(results))


def _rounds(
    valid: list[tuple[int, V]], key: Callable[[V], tuple[Hashable, ...]]
) -> Iterator[list[tuple[int, V]]]:
    """
    The items in rounds whose items share no key: an item repeating a key of an earlier
    one waits for the next round. One INSERT cannot tell two rows of one key apart, so a
    repeat goes in after its first item was stored or refused, and gets what it would
    have got alone (a Conflict if the first was stored, its own result if not).
    """
    pending = valid
    while pending:
        taken: set[tuple[int, Hashable]] = set()
        now: list[tuple[int, V]] = []
        later: list[tuple[int, V]] = []
        for index, value in pending:
            keys_of = [(n, k) for n, k in enumerate(key(value))]  # the n-th key of an item
            if any(k in taken for k in keys_of):
                later.append((index, value))
            else:
                taken.update(keys_of)
                now.append((index, value))
        yield now
        pending = later


# -- votes --------------------------------------------------------------------------------------

Ballot = tuple[int, int, VoteChoice]  # bill_id, user_id, choice

_BALLOT_FIELDS: Final = frozenset({"bill_id", "user_id", "choice"})
_CHOICES: Final = {choice.value: choice for choice in VoteChoice}


def _ballot(item: object) -> Ballot:
    if type(item) is dict and item.keys() == _BALLOT_FIELDS:  # the usual item, checked fast
        choice = item["choice"]
        bill, user = item["bill_id"], item["user_id"]
        picked = _CHOICES.get(choice) if type(choice) is str else None
        if (
            type(bill) is int
            and type(user) is int
            and 0 < bill <= v.MAX_ID
            and 0 < user <= v.MAX_ID
            and picked is not None
        ):
            return bill, user, picked
    fields = _fields(item, ("bill_id", "user_id", "choice"))
    return (
        v.record_id("bill_id", fields["bill_id"]),
        v.record_id("user_id", fields["user_id"]),
        v.choice("choice", fields["choice"], VoteChoice),
    )


_VOTE_KEY: Final = (_VOTES.c.id, _VOTES.c.bill_id, _VOTES.c.user_id)


@cache
def _cast_statement(dialect: str) -> tuple[RowSource, Any]:
    rows = RowSource(
        dialect,
        {"bill_id": sa.BigInteger(), "user_id": sa.BigInteger(), "choice": sa.String()},
        name="ballot",
    )
    bill_id, user_id, choice = rows.columns
    picked = (
        sa.select(bill_id, user_id, choice, _NOW)
        .select_from(rows.table)
        .join(_BILLS, _BILLS.c.id == bill_id)
        .join(_USERS, _USERS.c.id == user_id)
        .where(sa.true())  # SQLite: without a WHERE, "ON CONFLICT" would parse as a join's ON
        .order_by(rows.ordinal)  # ids in input order
    )
    stmt = (
        _insert(dialect)(_VOTES)
        .from_select(["bill_id", "user_id", "choice", "created_at"], picked)
        .on_conflict_do_nothing(index_elements=["bill_id", "user_id"])
        .returning(*_VOTE_KEY)  # the rest is the input's and the chunk's timestamp
    )
    return rows, stmt


_EXISTING: Final = sa.union_all(
    sa.select(sa.literal("bill"), _BILLS.c.id).where(
        _BILLS.c.id.in_(sa.bindparam("bill_ids", expanding=True))
    ),
    sa.select(sa.literal("user"), _USERS.c.id).where(
        _USERS.c.id.in_(sa.bindparam("user_ids", expanding=True))
    ),
)
_MARKED_VOTES: Final = sa.select(*_VOTE_KEY).where(
    _VOTES.c.created_at == _NOW, _VOTES.c.bill_id.in_(sa.bindparam("bill_ids", expanding=True))
)


def cast_votes(db: _Database, items: Iterable[object], chunk_size: int) -> BatchResult[VoteRecord]:
    """The body of :meth:`VoteStore.cast_many`."""

    def write(valid: list[tuple[int, Ballot]]) -> list[ItemResult[VoteRecord]]:
        rounds = _rounds(valid, lambda b: ((b[0], b[1]),))
        return [result for unique in rounds for result in write_round(unique)]

    def write_round(unique: list[tuple[int, Ballot]]) -> list[ItemResult[VoteRecord]]:
        now = utcnow()

        def finish(conn: Connection, rows: Sequence[Any]) -> list[ItemResult[VoteRecord]]:
            ids = {(bill, user): vote_id for vote_id, bill, user in rows}
            found: set[tuple[str, int]] = set()
            if len(ids) < len(unique):
                missing = [b for _, b in unique if (b[0], b[1]) not in ids]
                params = {
                    "bill_ids": sorted({b[0] for b in missing}),
                    "user_ids": sorted({b[1] for b in missing}),
                }
                found = {(kind, key) for kind, key in conn.execute(_EXISTING, params)}
            results: list[ItemResult[VoteRecord]] = []
            for index, (bill, user, choice) in unique:
                vote_id = ids.get((bill, user))
                if vote_id is not None:
                    results.append(ItemResult(index, VoteRecord(vote_id, bill, user, choice, now)))
                elif ("bill", bill) not in found:
                    results.append(ItemResult(index, error=NotFound("bill", bill)))
                elif ("user", user) not in found:
                    results.append(ItemResult(index, error=NotFound("user", user)))
                else:
                    message = f"user {user} has already voted on bill {bill}"
                    results.append(ItemResult(index, error=Conflict(message)))
            return results

        def work(conn: Connection) -> list[ItemResult[VoteRecord]]:
            rows, stmt = _cast_statement(conn.dialect.name)
            ballots = [(b, u, c.value) for _, (b, u, c) in unique]
            params = {**rows.params(ballots), "now": now}
            results = finish(conn, conn.execute(stmt, params).all())
            if db.outbox is not None:
                stored = [r.value for r in results if r.value is not None]
                db.emit(
                    conn,
                    [(ev.VOTE_CAST, ev.event_key(v.bill_id), ev.vote_payload(v)) for v in stored],
                )
            return results

        def verify(conn: Connection) -> list[ItemResult[VoteRecord]] | None:
            # The chunk's votes carry its timestamp, to the microsecond: if any is there, all are.
            bills = sorted({b[0] for _, b in unique})
            marked = conn.execute(_MARKED_VOTES, {"now": now, "bill_ids": bills}).all()
            pairs = {(b[0], b[1]) for _, b in unique}
            rows = [row for row in marked if (row.bill_id, row.user_id) in pairs]
            return finish(conn, rows) if rows else None

        # The tags of every item that may go in: invalidating one whose item failed is harmless.
        tags = _vote_tags(unique)
        results = db.transact(work, verify=verify, touches=tags)
        created = [r.value.id for r in results if r.value is not None]
        if created:
            db.invalidate(keys=[f"vote:{vote_id}" for vote_id in created], tags=tags)
        return results

    return _run(items, chunk_size, _ballot, write)


def _vote_tags(unique: list[tuple[int, Ballot]]) -> list[str]:
    tags = {count_tag("votes")}
    tags.update({keys.votes_of_bill_tag(bill) for _, (bill, _u, _c) in unique})
    tags.update({keys.votes_of_user_tag(user) for _, (_b, user, _c) in unique})
    return list(tags)


# -- users --------------------------------------------------------------------------------------

Account = tuple[str, str]  # username, email


def _account(item: object) -> Account:
    fields = _fields(item, ("username", "email"))
    return v.username(fields["username"]), v.email(fields["email"])


@cache
def _create_users_statement(dialect: str) -> tuple[RowSource, Any]:
    rows = RowSource(dialect, {"username": sa.String(), "email": sa.String()}, name="account")
    picked = (
        sa.select(*rows.columns, _NOW)
        .select_from(rows.table)
        .where(sa.true())
        .order_by(rows.ordinal)
    )
    stmt = (
        _insert(dialect)(_USERS)
        .from_select(["username", "email", "created_at"], picked)
        .on_conflict_do_nothing()  # either unique index
        .returning(*_USERS.c)
    )
    return rows, stmt


_TAKEN: Final = sa.select(_USERS.c.username, _USERS.c.email).where(
    sa.or_(
        _USERS.c.username.in_(sa.bindparam("usernames", expanding=True)),
        _USERS.c.email.in_(sa.bindparam("emails", expanding=True)),
    )
)
_MARKED_USERS: Final = sa.select(*_USERS.c).where(
    _USERS.c.created_at == _NOW, _USERS.c.username.in_(sa.bindparam("usernames", expanding=True))
)


def create_users(
    db: _Database, items: Iterable[object], chunk_size: int
) -> BatchResult[UserRecord]:
    """The body of :meth:`UserStore.create_many`."""

    def write(valid: list[tuple[int, Account]]) -> list[ItemResult[UserRecord]]:
        rounds = _rounds(valid, lambda a: a)  # username, email
        return [result for unique in rounds for result in write_round(unique)]

    def write_round(unique: list[tuple[int, Account]]) -> list[ItemResult[UserRecord]]:
        now = utcnow()

        def finish(conn: Connection, rows: Sequence[Any]) -> list[ItemResult[UserRecord]]:
            stored = {(row.username, row.email): UserRecord(*row) for row in rows}
            missing = [a for _, a in unique if a not in stored]
            taken_names: set[str] = set()
            taken_emails: set[str] = set()
            if missing:
                params = {"usernames": [a[0] for a in missing], "emails": [a[1] for a in missing]}
                for username, email in conn.execute(_TAKEN, params):
                    taken_names.add(username)
                    taken_emails.add(email)
            results: list[ItemResult[UserRecord]] = []
            for index, account in unique:
                record = stored.get(account)
                if record is not None:
                    results.append(ItemResult(index, record))
                    continue
                username, email = account
                if username in taken_names:
                    error = Conflict(f"username {username!r} is taken")
                elif email in taken_emails:
                    error = Conflict(f"email {email!r} is taken")
                else:
                    error = Conflict("username or email is taken")
                results.append(ItemResult(index, error=error))
            return results

        def work(conn: Connection) -> list[ItemResult[UserRecord]]:
            rows, stmt = _create_users_statement(conn.dialect.name)
            params = {**rows.params([a for _, a in unique]), "now": now}
            return finish(conn, conn.execute(stmt, params).all())

        def verify(conn: Connection) -> list[ItemResult[UserRecord]] | None:
            names = [a[0] for _, a in unique]
            marked = conn.execute(_MARKED_USERS, {"now": now, "usernames": names}).all()
            return finish(conn, marked) if marked else None

        lookups = [k for _, (name, email) in unique for k in _lookup_keys(name, email)]
        tags = [count_tag("users")]
        results = db.transact(work, verify=verify, touches=tags, touches_keys=lookups)
        created = [r.value for r in results if r.value is not None]
        if created:
            db.invalidate(
                keys=[
                    k
                    for user in created
                    for k in (
                        keys.USER.format(user_id=user.id),
                        *_lookup_keys(user.username, user.email),
                    )
                ],
                tags=tags,
            )
        return results

    return _run(items, chunk_size, _account, write)


def _lookup_keys(username: str, email: str) -> tuple[str, str]:
    return keys.USER_BY_NAME.format(username=username), keys.USER_BY_EMAIL.format(email=email)


# -- bills --------------------------------------------------------------------------------------

Draft = tuple[str, str, str, int]  # title, summary, status, sponsor_id


def _draft(item: object) -> Draft:
    fields = _fields(item, ("title", "sponsor_id"), ("summary", "status"))
    return (
        v.text("title", fields["title"], max_length=v.MAX_TITLE),
        v.text("summary", fields.get("summary", ""), max_length=v.MAX_SUMMARY, allow_empty=True),
        v.choice("status", fields.get("status", BillStatus.DRAFT), BillStatus).value,
        v.record_id("sponsor_id", fields["sponsor_id"]),
    )


@cache
def _create_bills_statement(dialect: str) -> tuple[RowSource, Any]:
    rows = RowSource(
        dialect,
        {
            "title": sa.String(),
            "summary": sa.String(),
            "status": sa.String(),
            "sponsor_id": sa.BigInteger(),
        },
        name="draft",
    )
    title, summary, status, sponsor_id = rows.columns
    picked = (
        sa.select(title, summary, status, sponsor_id, _NOW, _NOW)
        .select_from(rows.table)
        .join(_USERS, _USERS.c.id == sponsor_id)
        .where(sa.true())
        .order_by(rows.ordinal)
    )
    columns = ["title", "summary", "status", "sponsor_id", "created_at", "updated_at"]
    stmt = _insert(dialect)(_BILLS).from_select(columns, picked).returning(*_BILLS.c)
    return rows, stmt


_MARKED_BILLS: Final = sa.select(*_BILLS.c).where(
    _BILLS.c.created_at == _NOW,
    _BILLS.c.sponsor_id.in_(sa.bindparam("sponsor_ids", expanding=True)),
)


def create_bills(
    db: _Database, items: Iterable[object], chunk_size: int
) -> BatchResult[BillRecord]:
    """The body of :meth:`BillStore.create_many`."""

    def write(valid: list[tuple[int, Draft]]) -> list[ItemResult[BillRecord]]:
        now = utcnow()

        def finish(rows: Sequence[Any]) -> list[ItemResult[BillRecord]]:
            # Bills have no natural key: rows pair with items by their values, in order
            # (items with equal values are interchangeable).
            stored: dict[Draft, deque[BillRecord]] = defaultdict(deque)
            for row in rows:
                record = BillRecord(*row)
                draft = (record.title, record.summary, record.status.value, record.sponsor_id)
                stored[draft].append(record)
            results: list[ItemResult[BillRecord]] = []
            for index, draft in valid:
                queue = stored.get(draft)
                if queue:
                    results.append(ItemResult(index, queue.popleft()))
                else:  # the JOIN on users dropped it: bills have no other way to fail
                    results.append(ItemResult(index, error=NotFound("user", draft[3])))
            return results

        def work(conn: Connection) -> list[ItemResult[BillRecord]]:
            rows, stmt = _create_bills_statement(conn.dialect.name)
            params = {**rows.params([d for _, d in valid]), "now": now}
            return finish(conn.execute(stmt, params).all())

        def verify(conn: Connection) -> list[ItemResult[BillRecord]] | None:
            sponsors = sorted({d[3] for _, d in valid})
            marked = conn.execute(_MARKED_BILLS, {"now": now, "sponsor_ids": sponsors}).all()
            return finish(marked) if marked else None

        tags = [count_tag("bills")]
        results = db.transact(work, verify=verify, touches=tags)
        created = [r.value for r in results if r.value is not None]
        if created:
            db.invalidate(keys=[keys.BILL.format(bill_id=bill.id) for bill in created], tags=tags)
        return results

    return _run(items, chunk_size, _draft, write)
