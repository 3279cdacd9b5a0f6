"""
The exceptions perfkit raises.

Every error derives from :class:`PerfkitError` *and* from the closest builtin,
so callers can catch either::

    PerfkitError
    ├── NotFound(LookupError)        a record that was asked for does not exist
    ├── Conflict(ValueError)         a write would break a uniqueness rule
    ├── InvalidInput(ValueError)     an argument is malformed or out of range
    │   ├── InvalidPage              page/limit outside the allowed range
    │   └── InvalidCursor            a keyset cursor is malformed, altered or foreign
    ├── BodyTooLarge(ValueError)     a request body went over the HTTP layer's limit
    ├── InvalidSignature(ValueError) a webhook's signature or timestamp does not verify
    ├── CircuitOpenError(RuntimeError)      a circuit breaker refused the call
    ├── CommitOutcomeUnknown(RuntimeError)  the connection died during COMMIT
    ├── Overloaded(RuntimeError)            a bounded resource is full: retry after a while
    └── SchemaNotCurrent(RuntimeError)      the database's schema is behind this release

Each error carries a stable machine-readable ``code`` (the ``code`` of the
HTTP layer's JSON error envelope) next to its human-readable message.
"""

from __future__ import annotations

__all__ = [
    "BodyTooLarge",
    "CircuitOpenError",
    "CommitOutcomeUnknown",
    "Conflict",
    "InvalidCursor",
    "InvalidInput",
    "InvalidPage",
    "InvalidSignature",
    "NotFound",
    "Overloaded",
    "PerfkitError",
    "SchemaNotCurrent",
]


class PerfkitError(Exception):
    """
    Base class of every exception perfkit raises on purpose.
    """

    code: str = "perfkit_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(PerfkitError, LookupError):
    """
    The record that was asked for does not exist.

    Args:
        entity: What was looked up (``"user"``, ``"bill"``…).
        key: The value it was looked up by.
        field: The name of the field the key belongs to.
    """

    code = "not_found"

    def __init__(self, entity: str, key: object, *, field: str = "id") -> None:
        super().__init__(f"{entity} with {field}={key!r} does not exist")
        self.entity = entity
        self.key = key
        self.field = field


class Conflict(PerfkitError, ValueError):
    """
    A write would break a uniqueness rule (a taken username, a second vote).

    Nothing was written when this is raised.
    """

    code = "conflict"


class InvalidInput(PerfkitError, ValueError):
    """
    An argument is malformed or out of range.

    Args:
        field: The name of the offending argument or field.
        message: What is wrong with it.
    """

    code = "invalid_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidPage(InvalidInput):
    """
    ``page`` or ``limit`` is outside the allowed range.
    """

    code = "invalid_page"


class InvalidCursor(InvalidInput):
    """
    A keyset cursor is malformed, was altered, or belongs to another query or sort.

    The message says which, never what the cursor held.
    """

    code = "invalid_cursor"

    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


class BodyTooLarge(PerfkitError, ValueError):
    """
    A request body went over the limit of :class:`perfkit.http.BodyLimit`.

    Raised from the middleware's ``receive`` when a body sent without a
    ``Content-Length`` (or with a false one) grows past the limit; the
    middleware answers 413 itself when the application lets it through.

    Args:
        max_bytes: The limit, in bytes.

    .. versionadded:: 0.2.0
    """

    code = "payload_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the request body exceeds {max_bytes} bytes")
        self.max_bytes = max_bytes


class InvalidSignature(PerfkitError, ValueError):
    """
    A webhook request does not verify: a header is missing or malformed, its
    timestamp is outside the tolerance, or no signature matches a secret.

    The message says which, never what the right signature would be.

    .. versionadded:: 0.2.0
    """

    code = "invalid_signature"


class CircuitOpenError(PerfkitError, RuntimeError):
    """
    A circuit breaker is open (or its half-open trial slots are taken) and refused the call.

    Never transient: retrying it at once only adds load. ``retry_after`` says
    when the breaker will let a trial call through.

    Args:
        name: The breaker's name.
        retry_after: Seconds until a trial call may be let through (0 if a
            trial is running right now).
    """

    code = "circuit_open"

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit {name!r} is open; retry after {retry_after:.3f} s")
        self.name = name
        self.retry_after = retry_after


class CommitOutcomeUnknown(PerfkitError, RuntimeError):
    """
    The connection was lost while COMMIT was in flight: the transaction may or may not have
    been applied, so it was not retried.

    Mark the unit ``idempotent=True`` if running it twice is harmless.
    """

    code = "commit_outcome_unknown"


class SchemaNotCurrent(PerfkitError, RuntimeError):
    """
    The database's schema is behind what this release needs: run the migrations first.

    Args:
        where: Which branches, and where each stands.
        command: The command that brings the schema up to date.

    .. versionadded:: 0.2.0
    """

    code = "schema_not_current"

    def __init__(self, where: str, command: str) -> None:
        super().__init__(
            f"the database's schema is behind this release ({where}): run `{command}` "
            "once (it is safe to run from several places at once), then start the workers"
        )
        self.where = where
        self.command = command


class Overloaded(PerfkitError, RuntimeError):
    """
    A bounded resource of this process is full (say, every streamed-export slot): the request
    was refused at once instead of queueing; retry after ``retry_after`` seconds.

    Args:
        what: What is full, for people (``"exports"``).
        retry_after: Seconds the client should wait.

    .. versionadded:: 0.2.0
    """

    code = "overloaded"

    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(
            f"too many {what} in progress on this server; retry after {retry_after:g} s"
        )
        self.what = what
        self.retry_after = retry_after
