"""
Where a circuit breaker's state lives: this process, or Redis (shared by every process).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from perfkit._clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    import redis

__all__ = [
    "STATE_CLOSED",
    "STATE_HALF_OPEN",
    "STATE_OPEN",
    "BreakerStorage",
    "MemoryBreakerStorage",
    "RedisBreakerStorage",
    "StateView",
]

# pybreaker's names for the states (tests check they still match).
STATE_CLOSED: Final = "closed"
STATE_OPEN: Final = "open"
STATE_HALF_OPEN: Final = "half-open"


@dataclass(frozen=True, slots=True)
class StateView:
    """A breaker's shared state as read: which state, since which transition."""

    state: str
    generation: int
    retry_after: float  # seconds until an open breaker admits a trial (0 otherwise)


class BreakerStorage(Protocol):
    """
    The shared part of a breaker: its state and the transitions between states.

    Every transition is conditional on the *generation* the caller saw, so
    two processes racing to trip or close the same breaker cannot undo each
    other. Outcome counting stays in each process.

    .. versionadded:: 0.1.0
    """

    shared: bool
    """Whether other processes see this state (so it must be re-read now and then)."""

    def read(self, reset_timeout: float) -> StateView:
        """The current state."""
        ...

    def open(self, generation: int) -> StateView:
        """Open the breaker unless it moved past *generation*; return what is now true."""
        ...

    def close(self, generation: int) -> StateView:
        """Close it unless it moved past *generation*."""
        ...

    def force(self, state: str) -> StateView:
        """Set *state* whatever it was (manual open/close)."""
        ...

    def acquire_trial(self, max_calls: int, reset_timeout: float) -> tuple[bool, StateView]:
        """
        Ask to make a call while not closed: half-opens an open breaker whose
        reset timeout has passed, and hands out at most *max_calls* trial slots.
        """
        ...

    def release_trial(self) -> None:
        """Give a trial slot back."""
        ...


class MemoryBreakerStorage:
    """
    Breaker state in this process.

    .. versionadded:: 0.1.0
    """

    shared = False

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = STATE_CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._trials = 0

    def _view(self, reset_timeout: float) -> StateView:
        wait = 0.0
        if self._state == STATE_OPEN:
            wait = max(0.0, self._opened_at + reset_timeout - self._clock.monotonic())
        return StateView(self._state, self._generation, wait)

    def _move(self, state: str) -> None:
        self._state = state
        self._generation += 1
        self._trials = 0
        if state == STATE_OPEN:
            self._opened_at = self._clock.monotonic()

    def read(self, reset_timeout: float) -> StateView:
        return self._view(reset_timeout)

    def open(self, generation: int) -> StateView:
        with self._lock:
            if self._generation == generation and self._state != STATE_OPEN:
                self._move(STATE_OPEN)
            return self._view(0.0)

    def close(self, generation: int) -> StateView:
        with self._lock:
            if self._generation == generation and self._state == STATE_HALF_OPEN:
                self._move(STATE_CLOSED)
            return self._view(0.0)

    def force(self, state: str) -> StateView:
        with self._lock:
            self._move(state)
            return self._view(0.0)

    def acquire_trial(self, max_calls: int, reset_timeout: float) -> tuple[bool, StateView]:
        with self._lock:
            if self._state == STATE_CLOSED:
                return True, self._view(reset_timeout)
            if self._state == STATE_OPEN:
                if self._clock.monotonic() < self._opened_at + reset_timeout:
                    return False, self._view(reset_timeout)
                self._move(STATE_HALF_OPEN)
            if self._trials >= max_calls:
                return False, self._view(reset_timeout)
            self._trials += 1
            return True, self._view(reset_timeout)

    def release_trial(self) -> None:
        with self._lock:
            self._trials = max(0, self._trials - 1)


_STATES: Final = (STATE_CLOSED, STATE_OPEN, STATE_HALF_OPEN)

# Each script works on one hash: state (0 closed, 1 open, 2 half-open), gen, opened (ms), trials.
# Times come from the Redis server, so processes with different clocks agree.
_PRELUDE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'gen', 'opened', 'trials')
local state = tonumber(h[1] or '0')
local gen = tonumber(h[2] or '0')
local opened = tonumber(h[3] or '0')
local trials = tonumber(h[4] or '0')
local function move(to)
  gen = gen + 1
  state = to
  trials = 0
  if to == 1 then opened = now end
  redis.call('HSET', KEYS[1], 'state', state, 'gen', gen, 'opened', opened, 'trials', 0)
end
local function wait(reset)
  if state ~= 1 then return 0 end
  return math.max(0, opened + reset - now)
end
"""
_READ: Final = _PRELUDE + "return {state, gen, wait(tonumber(ARGV[1]))}"
_OPEN: Final = (
    _PRELUDE
    + """
if gen == tonumber(ARGV[1]) and state ~= 1 then move(1) end
return {state, gen, 0}
"""
)
_CLOSE: Final = (
    _PRELUDE
    + """
if gen == tonumber(ARGV[1]) and state == 2 then move(0) end
return {state, gen, 0}
"""
)
_FORCE: Final = _PRELUDE + "move(tonumber(ARGV[1])) return {state, gen, 0}"
_TRIAL: Final = (
    _PRELUDE
    + """
local max, reset = tonumber(ARGV[1]), tonumber(ARGV[2])
if state == 0 then return {1, state, gen, 0} end
if state == 1 then
  if now < opened + reset then return {0, state, gen, wait(reset)} end
  move(2)
end
if trials >= max then return {0, state, gen, 0} end
redis.call('HINCRBY', KEYS[1], 'trials', 1)
return {1, state, gen, 0}
"""
)
_RELEASE: Final = """
if tonumber(redis.call('HGET', KEYS[1], 'trials') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], 'trials', -1)
end
return 0
"""


class RedisBreakerStorage:
    """
    Breaker state in Redis, shared by every process using the same *name*.

    The key is ``<prefix>:breaker:<name>``; creating a storage never resets
    the state others see, and two breakers with different names never share
    a key. Every transition is one Lua script, conditional on the generation
    the caller saw, and times come from the Redis server's clock.

    Args:
        client: A ``redis.Redis`` client (give it short timeouts).
        name: The breaker's name.
        prefix: Key prefix (a namespace per application).

    .. versionadded:: 0.1.0
    """

    shared = True

    def __init__(self, client: redis.Redis, *, name: str, prefix: str = "perfkit") -> None:
        self.client = client
        self.key = f"{prefix}:breaker:{name}"
        self._read: Any = client.register_script(_READ)
        self._open: Any = client.register_script(_OPEN)
        self._close: Any = client.register_script(_CLOSE)
        self._force: Any = client.register_script(_FORCE)
        self._trial: Any = client.register_script(_TRIAL)
        self._release: Any = client.register_script(_RELEASE)

    @staticmethod
    def _view(raw: list[Any]) -> StateView:
        state, generation, wait_ms = (int(x) for x in raw)
        return StateView(_STATES[state], generation, wait_ms / 1000)

    def read(self, reset_timeout: float) -> StateView:
        return self._view(self._read(keys=[self.key], args=[int(reset_timeout * 1000)]))

    def open(self, generation: int) -> StateView:
        return self._view(self._open(keys=[self.key], args=[generation]))

    def close(self, generation: int) -> StateView:
        return self._view(self._close(keys=[self.key], args=[generation]))

    def force(self, state: str) -> StateView:
        return self._view(self._force(keys=[self.key], args=[_STATES.index(state)]))

    def acquire_trial(self, max_calls: int, reset_timeout: float) -> tuple[bool, StateView]:
        raw = self._trial(keys=[self.key], args=[max_calls, int(reset_timeout * 1000)])
        return bool(int(raw[0])), self._view(raw[1:])

    def release_trial(self) -> None:
        self._release(keys=[self.key])
