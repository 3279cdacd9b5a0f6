"""
The error tree: every perfkit error is also the closest builtin.
"""

from __future__ import annotations

import pytest

from perfkit import Conflict, InvalidInput, InvalidPage, NotFound, PerfkitError


@pytest.mark.parametrize(
    ("error", "builtin", "code"),
    [
        (NotFound("bill", 5), LookupError, "not_found"),
        (Conflict("taken"), ValueError, "conflict"),
        (InvalidInput("title", "too long"), ValueError, "invalid_input"),
        (InvalidPage("page", "must be positive"), ValueError, "invalid_page"),
    ],
)
def test_errors_subclass_the_closest_builtin(
    error: PerfkitError, builtin: type[Exception], code: str
) -> None:
    """Each error is a PerfkitError and its builtin, with a stable code."""
    assert isinstance(error, PerfkitError)
    assert isinstance(error, builtin)
    assert code == error.code


def test_not_found_carries_its_context() -> None:
    """NotFound names the entity, the key and the field it was looked up by."""
    error = NotFound("user", "ada", field="username")

    assert (error.entity, error.key, error.field) == ("user", "ada", "username")
    assert str(error) == "user with username='ada' does not exist"


def test_invalid_input_names_the_field() -> None:
    """InvalidInput's message starts with the field it is about."""
    error = InvalidInput("limit", "must be at most 100")

    assert error.field == "limit"
    assert "limit: must be at most 100" == error.message == str(error)
    assert isinstance(InvalidPage("page", "x"), InvalidInput)
