"""Quorum arithmetic against a brute-force reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringbolt.consensus.quorum import VoteResult, has_quorum, quorum_index, vote_result

voter_sets = st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=7, unique=True)


def reference_commit(voters: list[int], matches: dict[int, int]) -> int:
    """The largest index that more than half of the voters have."""
    candidates = {0} | {matches.get(v, 0) for v in voters}
    return max(
        index
        for index in candidates
        if 2 * sum(1 for v in voters if matches.get(v, 0) >= index) > len(voters)
    )


@settings(max_examples=500, deadline=None)
@given(voter_sets, st.dictionaries(st.integers(1, 12), st.integers(0, 50)))
def test_quorum_index_matches_reference(voters: list[int], matches: dict[int, int]) -> None:
    assert quorum_index(voters, matches) == reference_commit(voters, matches)


@settings(max_examples=500, deadline=None)
@given(voter_sets, st.dictionaries(st.integers(1, 12), st.booleans()))
def test_vote_result_matches_reference(voters: list[int], votes: dict[int, bool]) -> None:
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    half = len(voters) / 2
    expected = (
        VoteResult.WON
        if granted > half
        else VoteResult.LOST
        if rejected >= half
        else VoteResult.PENDING
    )
    assert vote_result(voters, votes) == expected


def test_empty_configuration_commits_and_wins_nothing() -> None:
    assert quorum_index([], {1: 5}) == 0
    assert vote_result([], {1: True}) == VoteResult.LOST
    assert not has_quorum([], [1])


@given(voter_sets, st.sets(st.integers(1, 12)))
def test_has_quorum(voters: list[int], active: set[int]) -> None:
    assert has_quorum(voters, active) == (2 * len(set(voters) & active) > len(voters))
