"""
The one place that names every cache key and tag of the reference stores.

Reads are cached under a *key* each and carry *tags*; a write invalidates the
tags of what it changed and the keys of the lookups it may have answered
with ``None`` before (a new username, a new id), so no read returns data
older than the last committed write.

====================================  ==================================  ===============
read                                  key                                 tags
====================================  ==================================  ===============
``users.get_by_id(7)``                ``user:7``                          ``user:7``
``users.get_by_username("ada")``      ``user:name:ada``                   ``user:<id>``
``users.get_by_email("a@x.org")``     ``user:email:a@x.org``              ``user:<id>``
``bills.get_by_id(3)``                ``bill:3``                          ``bill:3``
``votes.get_by_id(9)``                ``vote:9``                          ``vote:9``
``votes.get_by_bill_id(3, page, n)``  ``votes:bill:3:<page>:<n>``         ``votes:bill:3``
``votes.get_by_user_id(7, page, n)``  ``votes:user:7:<page>:<n>``         ``votes:user:7``
``votes.counts(3)``                   ``counts:3``                        ``votes:bill:3``
====================================  ==================================  ===============

(``<id>`` tags come from the loaded record, so a lookup by name is dropped
when that user changes, whatever the name was. ``table:<name>`` tags, from
:func:`perfkit.pagination.count_tag`, carry the cached counts of
``bills.get_all``.)

==========================  ==================================================
write                       invalidates
==========================  ==================================================
``users.create``            keys ``user:<new id>``, ``user:name:<name>``,
                            ``user:email:<email>``; tag ``table:users``
``users.update``            tag ``user:<id>``; keys of the new name and email
``bills.create``            key ``bill:<new id>``; tag ``table:bills``
``bills.update``            tags ``bill:<id>``, ``table:bills``
``votes.cast``              key ``vote:<new id>``; tags ``votes:bill:<bill>``,
                            ``votes:user:<user>``, ``table:votes``
==========================  ==================================================
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BILL",
    "COUNTS",
    "USER",
    "USER_BY_EMAIL",
    "USER_BY_NAME",
    "VOTE",
    "VOTES_BY_BILL",
    "VOTES_BY_USER",
    "bill_tag",
    "user_tag",
    "vote_tag",
    "votes_of_bill_tag",
    "votes_of_user_tag",
]

USER: Final = "user:{user_id}"
USER_BY_NAME: Final = "user:name:{username}"
USER_BY_EMAIL: Final = "user:email:{email}"
BILL: Final = "bill:{bill_id}"
VOTE: Final = "vote:{vote_id}"
VOTES_BY_BILL: Final = "votes:bill:{bill_id}:{page}:{limit}"
VOTES_BY_USER: Final = "votes:user:{user_id}:{page}:{limit}"
COUNTS: Final = "counts:{bill_id}"


def user_tag(user_id: int) -> str:
    """Tag of every cached read that returned user *user_id*."""
    return f"user:{user_id}"


def bill_tag(bill_id: int) -> str:
    """Tag of every cached read of bill *bill_id*."""
    return f"bill:{bill_id}"


def vote_tag(vote_id: int) -> str:
    """Tag of the cached read of vote *vote_id*."""
    return f"vote:{vote_id}"


def votes_of_bill_tag(bill_id: int) -> str:
    """Tag of cached vote lists and counts of bill *bill_id*."""
    return f"votes:bill:{bill_id}"


def votes_of_user_tag(user_id: int) -> str:
    """Tag of cached vote lists of user *user_id*."""
    return f"votes:user:{user_id}"
