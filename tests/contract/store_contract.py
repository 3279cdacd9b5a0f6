"""
The behaviour every database backend of the reference stores must show.

A backend's test module subclasses :class:`StoreContract` and supplies a
``stores`` fixture holding empty stores on that backend.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from perfkit import Conflict, InvalidCursor, InvalidInput, InvalidPage, NotFound
from perfkit.reference import (
    Bill,
    BillRecord,
    BillStatus,
    Stores,
    User,
    UserRecord,
    Vote,
    VoteChoice,
    VoteCounts,
    seed,
)
from perfkit.testing import count_queries


def _count(stores: Stores, table: type[Any]) -> int:
    with stores.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _user(stores: Stores, name: str = "alice") -> UserRecord:
    return stores.users.create(username=name, email=f"{name}@example.org")


def _bill(stores: Stores, sponsor: UserRecord, title: str = "Clean Air Act") -> BillRecord:
    return stores.bills.create(title=title, sponsor_id=sponsor.id)


class StoreContract:
    """
    Tests of the reference stores, independent of the database.
    """

    # -- users ---------------------------------------------------------------

    def test_user_round_trip(self, stores: Stores) -> None:
        """A created user is found by id, username and email."""
        user = stores.users.create(username="Alice", email="Alice@Example.org")

        assert user.username == "alice"
        assert user.email == "alice@example.org"
        assert user == stores.users.get_by_id(user.id)
        assert user == stores.users.get_by_username("ALICE")
        assert user == stores.users.get_by_email("alice@EXAMPLE.org")

    def test_missing_user_is_none(self, stores: Stores) -> None:
        """Lookups of absent users return None, not an error."""
        assert stores.users.get_by_id(12345) is None
        assert stores.users.get_by_username("nobody") is None
        assert stores.users.get_by_email("nobody@example.org") is None

    @pytest.mark.parametrize(
        ("username", "email", "taken"),
        [("alice", "other@example.org", "username"), ("bob", "ALICE@example.org", "email")],
    )
    def test_taken_username_or_email_conflicts(
        self, stores: Stores, username: str, email: str, taken: str
    ) -> None:
        """A second user with a taken username or email is refused and not stored."""
        _user(stores)

        with pytest.raises(Conflict, match=taken):
            stores.users.create(username=username, email=email)

        assert _count(stores, User) == 1

    def test_update_user(self, stores: Stores) -> None:
        """Renaming frees the old username and takes the new one."""
        user = _user(stores)

        updated = stores.users.update(user.id, username="alicia", email="alicia@example.org")

        assert (updated.username, updated.email) == ("alicia", "alicia@example.org")
        assert stores.users.get_by_username("alice") is None
        assert updated == stores.users.get_by_username("alicia")
        assert user.created_at == updated.created_at

    def test_update_user_to_taken_name_conflicts(self, stores: Stores) -> None:
        """A rename onto another user's username is refused and changes nothing."""
        alice, bob = _user(stores, "alice"), _user(stores, "bob")

        with pytest.raises(Conflict, match="username"):
            stores.users.update(bob.id, username="ALICE")

        assert bob == stores.users.get_by_id(bob.id)
        assert alice == stores.users.get_by_username("alice")

    def test_update_user_without_changes_returns_it(self, stores: Stores) -> None:
        """An update to the current values is a no-op that still returns the user."""
        user = _user(stores)

        assert user == stores.users.update(user.id, username="ALICE")
        assert user == stores.users.update(user.id)

    def test_update_missing_user_is_not_found(self, stores: Stores) -> None:
        """Updating an absent user raises NotFound."""
        with pytest.raises(NotFound, match="user"):
            stores.users.update(99, username="ghost")

    @pytest.mark.parametrize(
        ("username", "email"),
        [
            ("ab", "ab@example.org"),
            ("-dash", "d@example.org"),
            ("has space", "s@example.org"),
            ("x" * 33, "x@example.org"),
            ("nul\x00l", "n@example.org"),
            ("ok_name", "not-an-email"),
            ("ok_name", "a@b"),
            ("ok_name", "a@" + "b" * 250 + ".org"),
            ("ok_name", "\ud800@example.org"),
            (5, "five@example.org"),
            ("ok_name", None),
        ],
    )
    def test_invalid_user_input(self, stores: Stores, username: Any, email: Any) -> None:
        """Malformed usernames and emails raise InvalidInput and store nothing."""
        with pytest.raises(InvalidInput):
            stores.users.create(username=username, email=email)

        assert stores.users.get_by_username("ok_name") is None

    @pytest.mark.parametrize("bad_id", [0, -1, 2**63, True, "1", 1.0, None])
    def test_invalid_ids(self, stores: Stores, bad_id: Any) -> None:
        """Ids that cannot be row ids raise InvalidInput on every lookup."""
        for lookup in (stores.users.get_by_id, stores.bills.get_by_id, stores.votes.get_by_id):
            with pytest.raises(InvalidInput):
                lookup(bad_id)

    def test_largest_id_is_a_valid_miss(self, stores: Stores) -> None:
        """The largest 64-bit id is accepted and simply not found."""
        assert stores.users.get_by_id(2**63 - 1) is None

    # -- bills ---------------------------------------------------------------

    def test_bill_round_trip(self, stores: Stores) -> None:
        """A created bill is found by id with its defaults filled in."""
        sponsor = _user(stores)

        bill = stores.bills.create(title="Clean Air Act", sponsor_id=sponsor.id, summary="Air.")

        assert bill.status == BillStatus.DRAFT
        assert bill.created_at == bill.updated_at
        assert bill == stores.bills.get_by_id(bill.id)
        assert stores.bills.get_by_id(bill.id + 1) is None

    def test_bill_with_unknown_sponsor_is_not_found(self, stores: Stores) -> None:
        """A bill cannot name a sponsor that does not exist."""
        with pytest.raises(NotFound, match="user"):
            stores.bills.create(title="Orphan Act", sponsor_id=42)

    @pytest.mark.parametrize(
        "fields",
        [
            {"title": ""},
            {"title": "   "},
            {"title": "x" * 201},
            {"title": "x" * 1_000_000},
            {"summary": "s" * 10_001},
            {"status": "enacted"},
            {"title": "NUL\x00"},
            {"title": None},
        ],
    )
    def test_invalid_bill_input(self, stores: Stores, fields: dict[str, Any]) -> None:
        """Malformed bill fields raise InvalidInput, on create and on update."""
        sponsor = _user(stores)
        bill = _bill(stores, sponsor)
        values: dict[str, Any] = {"title": "Valid Act", "sponsor_id": sponsor.id, **fields}

        with pytest.raises(InvalidInput):
            stores.bills.create(**values)
        if fields.get("title", "") is not None:
            with pytest.raises(InvalidInput):
                stores.bills.update(bill.id, **fields)

        assert [bill] == list(stores.bills.get_all().items)

    def test_update_bill(self, stores: Stores) -> None:
        """An update changes the given fields and moves updated_at."""
        bill = _bill(stores, _user(stores))

        updated = stores.bills.update(bill.id, status="introduced", summary="Now with text.")

        assert (BillStatus.INTRODUCED, "Now with text.", bill.title) == (
            updated.status,
            updated.summary,
            updated.title,
        )
        assert updated.updated_at >= bill.updated_at
        assert updated == stores.bills.get_by_id(bill.id)

    def test_update_bill_without_changes_keeps_updated_at(self, stores: Stores) -> None:
        """Writing a bill's current values back changes nothing, not even updated_at."""
        bill = _bill(stores, _user(stores))

        assert stores.bills.update(bill.id, title=bill.title, status="draft") == bill
        assert stores.bills.update(bill.id) == bill
        assert stores.bills.get_by_id(bill.id) == bill

    def test_update_missing_bill_is_not_found(self, stores: Stores) -> None:
        """Updating an absent bill raises NotFound, with or without changes."""
        with pytest.raises(NotFound, match="bill"):
            stores.bills.update(7, title="Ghost Act")
        with pytest.raises(NotFound, match="bill"):
            stores.bills.update(7)

    def test_bills_list_newest_first_with_metadata(self, stores: Stores) -> None:
        """get_all pages through bills newest first and reports totals."""
        sponsor = _user(stores)
        bills = [_bill(stores, sponsor, f"Act {i}") for i in range(5)]

        first = stores.bills.get_all(page=1, limit=2)
        last = stores.bills.get_all(page=3, limit=2)

        assert [b.id for b in reversed(bills)][:2] == [b.id for b in first.items]
        assert (first.total, first.pages, first.has_next, first.has_prev) == (5, 3, True, False)
        assert [bills[0]] == list(last.items)
        assert (last.has_next, last.has_prev) == (False, True)
        assert stores.bills.get_all(page=4, limit=2).items == ()

    def test_bills_filtered_by_status(self, stores: Stores) -> None:
        """get_all(status=...) lists only bills in that status."""
        sponsor = _user(stores)
        draft = _bill(stores, sponsor, "Draft Act")
        passed = stores.bills.create(title="Passed Act", sponsor_id=sponsor.id, status="passed")

        assert [passed] == list(stores.bills.get_all(status="passed").items)
        assert [draft] == list(stores.bills.get_all(status=BillStatus.DRAFT).items)
        with pytest.raises(InvalidInput, match="status"):
            stores.bills.get_all(status="vetoed")

    @pytest.mark.parametrize(("page", "limit"), [(0, 10), (-1, 10), (1, 0), (1, 101), (True, 5)])
    def test_bills_invalid_page(self, stores: Stores, page: Any, limit: Any) -> None:
        """Out-of-range page or limit raises InvalidPage."""
        with pytest.raises(InvalidPage):
            stores.bills.get_all(page=page, limit=limit)

    def test_bills_keyset_walks_every_bill_once(self, stores: Stores) -> None:
        """Keyset pages of bills, newest first, forward and back, with status filter."""
        sponsor = _user(stores)
        bills = [_bill(stores, sponsor, f"Act {i}") for i in range(5)]
        newest_first = [b.id for b in reversed(bills)]

        seen: list[int] = []
        page = stores.bills.get_all_keyset(limit=2)
        seen += [b.id for b in page.items]
        while page.next_cursor:
            page = stores.bills.get_all_keyset(limit=2, cursor=page.next_cursor)
            seen += [b.id for b in page.items]
        back = stores.bills.get_all_keyset(limit=2, cursor=page.prev_cursor)

        assert seen == newest_first
        assert [b.id for b in back.items] == newest_first[2:4]
        assert list(stores.bills.get_all_keyset(status="passed").items) == []

    def test_keyset_cursors_cannot_cross_listings(self, stores: Stores) -> None:
        """A bills cursor is refused by the votes listing, and an edited one everywhere."""
        sponsor = _user(stores)
        for i in range(3):
            _bill(stores, sponsor, f"Act {i}")
        cursor = stores.bills.get_all_keyset(limit=1).next_cursor
        assert cursor is not None

        with pytest.raises(InvalidCursor):
            stores.votes.get_by_bill_id_keyset(1, cursor=cursor)
        with pytest.raises(InvalidCursor):
            stores.bills.get_all_keyset(limit=1, cursor=cursor[:-3] + "xyz")
        with pytest.raises(InvalidCursor):
            stores.bills.get_all_keyset(limit=1, cursor=cursor, status="draft")

    def test_cached_bill_counts_follow_writes(self, stores: Stores) -> None:
        """get_all's total moves with every create and status change, cached or not."""
        sponsor = _user(stores)
        bills = [_bill(stores, sponsor, f"Act {i}") for i in range(3)]
        assert stores.bills.get_all(limit=1).total == 3
        assert stores.bills.get_all(limit=1, status="passed").total == 0

        _bill(stores, sponsor, "Fourth Act")
        stores.bills.update(bills[0].id, status="passed")

        assert stores.bills.get_all(limit=1).total == 4
        assert stores.bills.get_all(limit=1, status="passed").total == 1

    # -- votes ---------------------------------------------------------------

    def test_cast_and_read_votes(self, stores: Stores) -> None:
        """A cast vote is found by id, by bill and by user."""
        alice = _user(stores)
        bill = _bill(stores, alice)

        vote = stores.votes.cast(bill_id=bill.id, user_id=alice.id, choice="yes")

        assert vote.choice == VoteChoice.YES
        assert vote == stores.votes.get_by_id(vote.id)
        assert [vote] == list(stores.votes.get_by_bill_id(bill.id).items)
        assert [vote] == list(stores.votes.get_by_user_id(alice.id).items)
        assert stores.votes.get_by_id(vote.id + 1) is None

    def test_second_vote_conflicts_and_keeps_the_first(self, stores: Stores) -> None:
        """A user's second vote on a bill is refused; the first one stands."""
        alice = _user(stores)
        bill = _bill(stores, alice)
        first = stores.votes.cast(bill_id=bill.id, user_id=alice.id, choice="yes")

        with pytest.raises(Conflict, match="already voted"):
            stores.votes.cast(bill_id=bill.id, user_id=alice.id, choice="no")

        assert [first] == list(stores.votes.get_by_bill_id(bill.id).items)

    @pytest.mark.parametrize(("missing", "entity"), [("bill", "bill"), ("user", "user")])
    def test_vote_on_missing_rows_is_not_found(
        self, stores: Stores, missing: str, entity: str
    ) -> None:
        """A vote naming an absent bill or user raises NotFound and writes no row."""
        alice = _user(stores)
        bill = _bill(stores, alice)
        ids = {"bill_id": bill.id, "user_id": alice.id, f"{missing}_id": 999}

        with pytest.raises(NotFound, match=entity):
            stores.votes.cast(**ids, choice="yes")

        assert _count(stores, Vote) == 0

    @pytest.mark.parametrize("choice", ["maybe", "", "YES ", None, 1])
    def test_invalid_choice(self, stores: Stores, choice: Any) -> None:
        """Anything but yes/no/abstain raises InvalidInput and writes no row."""
        alice = _user(stores)
        bill = _bill(stores, alice)

        with pytest.raises(InvalidInput, match="choice"):
            stores.votes.cast(bill_id=bill.id, user_id=alice.id, choice=choice)

        assert _count(stores, Vote) == 0

    def test_counts_from_one_grouped_query(self, stores: Stores) -> None:
        """counts() tallies yes/no/abstain in a single SELECT."""
        users = [_user(stores, f"user{i}") for i in range(6)]
        bill = _bill(stores, users[0])
        for user, choice in zip(users, ["yes", "yes", "yes", "no", "no", "abstain"], strict=True):
            stores.votes.cast(bill_id=bill.id, user_id=user.id, choice=choice)

        with count_queries(stores.engine) as seen:
            counts = stores.votes.counts(bill.id)

        assert VoteCounts(bill_id=bill.id, yes=3, no=2, abstain=1) == counts
        assert counts.total == 6
        assert seen.count == 1

    def test_counts_of_bill_without_votes_are_zero(self, stores: Stores) -> None:
        """A bill nobody voted on counts zero of each choice."""
        bill = _bill(stores, _user(stores))

        assert VoteCounts(bill_id=bill.id, yes=0, no=0, abstain=0) == stores.votes.counts(bill.id)

    def test_reads_of_missing_bill_or_user_are_not_found(self, stores: Stores) -> None:
        """Vote listings and counts of absent bills or users raise NotFound."""
        with pytest.raises(NotFound, match="bill"):
            stores.votes.counts(1)
        with pytest.raises(NotFound, match="bill"):
            stores.votes.get_by_bill_id(1)
        with pytest.raises(NotFound, match="user"):
            stores.votes.get_by_user_id(1)

    def test_votes_paginate_in_order(self, stores: Stores) -> None:
        """Votes of a bill page oldest first with correct metadata."""
        users = [_user(stores, f"voter{i}") for i in range(5)]
        bill = _bill(stores, users[0])
        votes = [stores.votes.cast(bill_id=bill.id, user_id=u.id, choice="no") for u in users]

        page = stores.votes.get_by_bill_id(bill.id, page=2, limit=2)

        assert votes[2:4] == list(page.items)
        assert (page.total, page.pages, page.has_next, page.has_prev) == (5, 3, True, True)
        assert stores.votes.get_by_bill_id(bill.id, page=9, limit=2).items == ()

    def test_vote_keyset_listings(self, stores: Stores) -> None:
        """Votes of a bill and of a user page by keyset; unknown ids are NotFound."""
        users = [_user(stores, f"kvoter{i}") for i in range(3)]
        bill = _bill(stores, users[0])
        votes = [stores.votes.cast(bill_id=bill.id, user_id=u.id, choice="yes") for u in users]

        first = stores.votes.get_by_bill_id_keyset(bill.id, limit=2)
        rest = stores.votes.get_by_bill_id_keyset(bill.id, limit=2, cursor=first.next_cursor)
        mine = stores.votes.get_by_user_id_keyset(users[1].id)

        assert list(first.items + rest.items) == votes
        assert (rest.has_next, rest.has_prev) == (False, True)
        assert list(mine.items) == [votes[1]]
        with pytest.raises(NotFound, match="bill"):
            stores.votes.get_by_bill_id_keyset(999)
        with pytest.raises(NotFound, match="user"):
            stores.votes.get_by_user_id_keyset(999)

    def test_concurrent_duplicate_votes_store_exactly_one(self, stores: Stores) -> None:
        """Eight threads casting the same vote at once: one wins, seven get Conflict."""
        alice = _user(stores)
        bill = _bill(stores, alice)
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def vote() -> None:
            barrier.wait()
            try:
                stores.votes.cast(bill_id=bill.id, user_id=alice.id, choice="yes")
                outcomes.append("ok")
            except Conflict:
                outcomes.append("conflict")

        threads = [threading.Thread(target=vote) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
        assert _count(stores, Vote) == 1

    # -- records -------------------------------------------------------------

    def test_records_are_frozen_json_ready_and_utc(self, stores: Stores) -> None:
        """Records are immutable, serialise to JSON and carry aware UTC times."""
        alice = _user(stores)
        bill = _bill(stores, alice)
        vote = stores.votes.cast(bill_id=bill.id, user_id=alice.id, choice="abstain")
        counts = stores.votes.counts(bill.id)

        for record in (alice, bill, vote, counts):
            json.dumps(record.to_dict())
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(record, dataclasses.fields(record)[0].name, 0)
        for stamp in (alice.created_at, bill.created_at, bill.updated_at, vote.created_at):
            assert timedelta(0) == stamp.utcoffset()
            assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)
        assert vote.to_dict()["choice"] == "abstain"

    # -- seeding -------------------------------------------------------------

    def test_seed_fills_an_empty_schema_once(self, stores: Stores) -> None:
        """seed() writes the asked volumes with unique votes, and refuses a second run."""
        summary = seed(stores.engine, users=50, bills=200, votes=2_000, random_seed=3)

        assert (summary.users, summary.bills, summary.votes) == (50, 200, 2_000)
        assert [_count(stores, model) for model in (User, Bill, Vote)] == [50, 200, 2_000]
        with stores.engine.connect() as conn:
            pairs = conn.execute(
                sa.select(sa.func.count()).select_from(
                    sa.select(Vote.bill_id, Vote.user_id).distinct().subquery()
                )
            ).scalar_one()
        assert pairs == 2_000
        newest = stores.bills.get_all(limit=1).items[0]
        assert newest.id == 200
        # ids continue after the seeded ones
        assert _user(stores, "fresh").id == 51
        with pytest.raises(Conflict, match="not empty"):
            seed(stores.engine, users=1, bills=0, votes=0)
