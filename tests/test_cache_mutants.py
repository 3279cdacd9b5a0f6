"""
Planted invalidation bugs: the cache property test must catch every one.

Each mutant drops one key or one tag from one write's invalidation in the
reference stores (the table in :mod:`perfkit.reference.cache_keys`) and runs
the state machine of ``test_cache_invalidation`` on the memory backend;
Hypothesis must find a cached read that differs from the database. A mutant
that survives is a hole in the property test, not in the stores.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Collection, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from perfkit import db
from perfkit.cache import Backend, Cache, MemoryBackend
from perfkit.reference import BillStore, UserStore, VoteStore, open_stores
from test_cache_invalidation import SETTINGS, CachedStoreMachine

MUTANT_SETTINGS = settings(
    SETTINGS,
    max_examples=200,  # the hardest mutant is caught in about 30 runs: the rest is margin
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: one failure is enough
)

_WRITES: dict[str, tuple[type, str]] = {
    "users.create": (UserStore, "create"),
    "users.update": (UserStore, "update"),
    "bills.create": (BillStore, "create"),
    "bills.update": (BillStore, "update"),
    "votes.cast": (VoteStore, "cast"),
}

_WRITING: ContextVar[str] = ContextVar("writing", default="")


@dataclass(frozen=True, slots=True)
class Mutant:
    """Drop the keys or tags matching *pattern* from the invalidations of *write*."""

    write: str
    kind: str
    pattern: str

    def drops(self, write: str, kind: str, name: str) -> bool:
        """Whether this mutant removes *name* from *write*'s *kind*."""
        if (write, kind) != (self.write, self.kind):
            return False
        return re.fullmatch(self.pattern, name) is not None

    def __str__(self) -> str:
        return f"{self.write}-{self.kind}-{self.pattern}"


# Every key and tag of every ``invalidate`` call in perfkit/reference/stores.py.
MUTANTS = [
    Mutant("users.create", "keys", r"user:\d+"),
    Mutant("users.create", "keys", r"user:name:.+"),
    Mutant("users.create", "keys", r"user:email:.+"),
    Mutant("users.create", "tags", r"table:users"),
    Mutant("users.update", "tags", r"user:\d+"),
    Mutant("users.update", "keys", r"user:name:.+"),
    Mutant("users.update", "keys", r"user:email:.+"),
    Mutant("bills.create", "keys", r"bill:\d+"),
    Mutant("bills.create", "tags", r"table:bills"),
    Mutant("bills.update", "tags", r"bill:\d+"),
    Mutant("bills.update", "tags", r"table:bills"),
    Mutant("votes.cast", "keys", r"vote:\d+"),
    Mutant("votes.cast", "tags", r"votes:bill:\d+"),
    Mutant("votes.cast", "tags", r"votes:user:\d+"),
    Mutant("votes.cast", "tags", r"table:votes"),
]


class MutantCache(Cache):
    """A cache whose ``invalidate`` forgets what *mutant* drops, and counts it."""

    def __init__(self, backend: Backend, *, mutant: Mutant | None, namespace: str) -> None:
        super().__init__(backend, namespace=namespace)
        self.mutant = mutant
        self.dropped = 0
        self.seen: list[tuple[str, str, str]] = []

    def invalidate(self, *, keys: Collection[str] = (), tags: Collection[str] = ()) -> None:
        """Invalidate all but the mutant's names; record every name asked for."""
        write = _WRITING.get()
        kept = {"keys": list(keys), "tags": list(tags)}
        for kind, names in kept.items():
            self.seen.extend((write, kind, name) for name in names)
            if self.mutant is not None:
                before = len(names)
                names[:] = [n for n in names if not self.mutant.drops(write, kind, n)]
                self.dropped += before - len(names)
        super().invalidate(keys=kept["keys"], tags=kept["tags"])


@pytest.fixture
def tracked_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make each reference write name itself while it runs (for the mutant's filter)."""
    for write, (cls, method) in _WRITES.items():
        monkeypatch.setattr(cls, method, _naming(write, getattr(cls, method)))


def _naming(write: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _writing(write):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _writing(write: str) -> Iterator[None]:
    token = _WRITING.set(write)
    try:
        yield
    finally:
        _WRITING.reset(token)


def _machine(mutant: Mutant | None, caches: list[MutantCache]) -> type[CachedStoreMachine]:
    class MutantMachine(CachedStoreMachine):
        def make_cache(self, backend: Backend) -> Cache:
            cache = MutantCache(backend, mutant=mutant, namespace="mutant")
            caches.append(cache)
            return cache

    return MutantMachine


@pytest.mark.usefixtures("tracked_writes")
@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_state_machine_catches_a_dropped_invalidation(mutant: Mutant) -> None:
    """Dropping this one key or tag makes some cached read differ from the database."""
    caches: list[MutantCache] = []
    with pytest.raises(AssertionError):
        run_state_machine_as_test(_machine(mutant, caches), settings=MUTANT_SETTINGS)
    assert sum(cache.dropped for cache in caches) > 0  # the mutant was live


@pytest.mark.usefixtures("tracked_writes")
def test_every_invalidated_name_has_exactly_one_mutant() -> None:
    """Each key and tag every reference write invalidates is what one mutant drops."""
    cache = MutantCache(MemoryBackend(), mutant=None, namespace="census")
    engine = db.create_engine("sqlite://")
    stores = open_stores(engine, cache=cache)
    ada = stores.users.create(username="ada", email="ada@example.org")
    stores.users.update(ada.id, username="adb", email="adb@example.org")
    bill = stores.bills.create(title="Clean Air Act", sponsor_id=ada.id)
    stores.bills.update(bill.id, status="passed")
    stores.votes.cast(bill_id=bill.id, user_id=ada.id, choice="yes")
    engine.dispose()

    assert sorted(_WRITES) == sorted({write for write, _, _ in cache.seen})
    matches = {item: [str(m) for m in MUTANTS if m.drops(*item)] for item in cache.seen}
    assert dict.fromkeys(matches, 1) == {item: len(ms) for item, ms in matches.items()}
    assert sorted(map(str, MUTANTS)) == sorted({m for ms in matches.values() for m in ms})
