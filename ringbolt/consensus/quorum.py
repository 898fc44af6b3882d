"""Majority-quorum arithmetic, kept apart so it can be property-tested alone.

Theory of operation
-------------------
With the voters' acknowledged indexes (match indexes, ReadIndex rounds, lease
ticks -- anything monotone), the largest value acknowledged by a majority is
the `(n // 2 + 1)`-th largest. A voter that has acknowledged nothing counts
as 0. Vote tallies are WON once a majority granted, LOST once a majority can
no longer be reached, PENDING otherwise. An empty voter set commits nothing
and wins nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class VoteResult(enum.IntEnum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(voter_count: int) -> int:
    return voter_count // 2 + 1


def quorum_index(voters: Iterable[int], acknowledged: Mapping[int, int]) -> int:
    """The largest value that a majority of `voters` has acknowledged."""
    values = sorted([acknowledged.get(v, 0) for v in voters], reverse=True)
    if not values:
        return 0
    return values[len(values) // 2]


def vote_result(voters: Iterable[int], votes: Mapping[int, bool]) -> VoteResult:
    granted = rejected = missing = 0
    for voter in voters:
        vote = votes.get(voter)
        if vote is None:
            missing += 1
        elif vote:
            granted += 1
        else:
            rejected += 1
    total = granted + rejected + missing
    if total == 0:
        return VoteResult.LOST
    needed = majority(total)
    if granted >= needed:
        return VoteResult.WON
    if granted + missing >= needed:
        return VoteResult.PENDING
    return VoteResult.LOST


def has_quorum(voters: Iterable[int], active: Iterable[int]) -> bool:
    voter_set = set(voters)
    return bool(voter_set) and len(voter_set & set(active)) >= majority(len(voter_set))
