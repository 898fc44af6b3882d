"""Leader balance planning against a brute-force notion of 'balanced'."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringbolt.shard.leaders import plan_leader_moves


def _apply(leaders: dict[int, int], moves: list) -> dict[int, int]:
    result = dict(leaders)
    for move in moves:
        assert result[move.shard] == move.source
        result[move.shard] = move.target
    return result


def test_all_on_one_node_spreads_evenly() -> None:
    leaders = {shard: 1 for shard in range(7)}
    members = {shard: [1, 2, 3] for shard in range(7)}
    moves = plan_leader_moves(leaders, members, [1, 2, 3])
    final = _apply(leaders, moves)
    counts = sorted(list(final.values()).count(node) for node in (1, 2, 3))
    assert counts == [2, 2, 3]
    assert len(moves) == 4  # the fewest: 7 - 3


def test_balanced_input_moves_nothing() -> None:
    leaders = {0: 1, 1: 2, 2: 3, 3: 1}
    assert plan_leader_moves(leaders, {s: [1, 2, 3] for s in leaders}, [1, 2, 3]) == []


def test_moves_only_to_replica_holders() -> None:
    leaders = {0: 1, 1: 1}
    members = {0: [1, 2], 1: [1, 2]}
    moves = plan_leader_moves(leaders, members, [1, 2, 3])
    assert all(move.target == 2 for move in moves)


@given(st.dictionaries(st.integers(0, 40), st.integers(1, 5), min_size=1), st.integers(5, 6))
def test_result_is_within_one(leaders: dict[int, int], node_count: int) -> None:
    nodes = list(range(1, node_count + 1))
    members = {shard: nodes for shard in leaders}
    final = _apply(leaders, plan_leader_moves(leaders, members, nodes))
    counts = [list(final.values()).count(node) for node in nodes]
    assert max(counts) - min(counts) <= 1
