"""Replica placement: distinctness, DC spread, the load bound, minimal moves."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbolt.shard.placement import (
    Move,
    Placement,
    PlacementError,
    PlacementNode,
    dc_violations,
    fair_shares,
    place,
    place_with_statistics,
    plan_moves,
    summarize,
)


@dataclass(frozen=True)
class Config:
    nodes: list[PlacementNode]
    shard_ids: list[int]
    replicas: int
    epsilon: float


def make_nodes(count: int, dcs: int, weights: list[int] | None = None) -> list[PlacementNode]:
    return [
        PlacementNode(
            node_id=10 + 3 * index,
            dc=f"dc{index % dcs}",
            zone=f"z{(index // dcs) % 2}",
            weight=weights[index] if weights else 1,
        )
        for index in range(count)
    ]


@st.composite
def configs(draw: st.DrawFn, balanced_dcs: bool = False, weighted: bool = False) -> Config:
    dcs = draw(st.integers(1, 4))
    count = dcs * draw(st.integers(1, 4)) if balanced_dcs else draw(st.integers(1, 12))
    weights = (
        draw(st.lists(st.integers(1, 3), min_size=count, max_size=count)) if weighted else None
    )
    shards = draw(st.lists(st.integers(0, 5_000), min_size=1, max_size=150, unique=True))
    return Config(
        nodes=make_nodes(count, dcs, weights),
        shard_ids=shards,
        replicas=draw(st.integers(1, 4)),
        epsilon=draw(st.sampled_from([0.05, 0.1, 0.25, 0.5])),
    )


def caps(config: Config) -> dict[int, int]:
    """The bound: ceil((1 + eps) * fair share), never above one replica per shard."""
    width = min(config.replicas, len(config.nodes))
    slack = Fraction(config.epsilon).limit_denominator(1_000_000)
    shards = len(config.shard_ids)
    return {
        node: min(shards, math.ceil((1 + slack) * share))
        for node, share in fair_shares(config.nodes, shards, width).items()
    }


@settings(max_examples=80, deadline=None)
@given(configs(weighted=True))
def test_fair_shares_are_proportional_to_weight_up_to_one_replica_per_shard(
    config: Config,
) -> None:
    width = min(config.replicas, len(config.nodes))
    shards = len(config.shard_ids)
    shares = fair_shares(config.nodes, shards, width)
    assert sum(shares.values()) == shards * width
    assert all(0 <= share <= shards for share in shares.values())
    unsaturated = [node for node in config.nodes if shares[node.node_id] < shards]
    ratios = {shares[node.node_id] / node.weight for node in unsaturated}
    assert len(ratios) <= 1
    if ratios:
        ratio = ratios.pop()
        for node in config.nodes:
            if shares[node.node_id] == shards:
                assert ratio * node.weight >= shards  # would exceed one per shard


def assert_valid(placement: Placement, config: Config) -> None:
    ids = {node.node_id for node in config.nodes}
    width = min(config.replicas, len(config.nodes))
    assert sorted(placement.shard_ids()) == sorted(config.shard_ids)
    for _, holders in placement.items():
        assert len(holders) == width
        assert len(set(holders)) == width
        assert set(holders) <= ids
    bound = caps(config)
    for node, load in placement.loads().items():
        assert load <= bound[node], f"node {node} holds {load} > cap {bound[node]}"


def apply_moves(placement: Placement, moves: list[Move]) -> Placement:
    replicas = {shard: list(nodes) for shard, nodes in placement.items()}
    for move in moves:
        holders = replicas.setdefault(move.shard_id, [])
        if move.from_node is not None:
            holders.remove(move.from_node)
        if move.to_node is not None:
            assert move.to_node not in holders
            holders.append(move.to_node)
    return Placement({shard: sorted(nodes) for shard, nodes in replicas.items() if nodes})


def as_sets(placement: Placement) -> dict[int, frozenset[int]]:
    return {shard: frozenset(nodes) for shard, nodes in placement.items()}


@settings(max_examples=80, deadline=None)
@given(configs(weighted=True))
def test_every_shard_gets_distinct_nodes_within_the_load_bound(config: Config) -> None:
    placement, counters = place_with_statistics(
        config.nodes, config.shard_ids, replicas=config.replicas, epsilon=config.epsilon
    )
    assert_valid(placement, config)
    assert counters["cap_overflows"] == 0


@settings(max_examples=80, deadline=None)
@given(configs(balanced_dcs=True))
def test_replicas_span_distinct_dcs_when_there_are_enough(config: Config) -> None:
    placement = place(
        config.nodes, config.shard_ids, replicas=config.replicas, epsilon=config.epsilon
    )
    dcs = {node.node_id: node.dc for node in config.nodes}
    wanted = min(config.replicas, len(set(dcs.values())))
    for _, holders in placement.items():
        assert len({dcs[node] for node in holders}) >= wanted
    assert dc_violations(placement, config.nodes, config.replicas) == 0


@settings(max_examples=80, deadline=None)
@given(configs(balanced_dcs=True), st.data())
def test_removal_moves_only_the_removed_nodes_replicas(config: Config, data: st.DataObject) -> None:
    width = min(config.replicas, len(config.nodes) - 1)
    if width == 0 or config.epsilon * len(config.shard_ids) * width / len(config.nodes) < width:
        return  # the bound leaves no node a spare slot per replica: swaps may be needed
    before = place(config.nodes, config.shard_ids, replicas=config.replicas, epsilon=config.epsilon)
    gone = data.draw(st.sampled_from(config.nodes))
    rest = [node for node in config.nodes if node != gone]
    after = place(
        rest, config.shard_ids, replicas=config.replicas, epsilon=config.epsilon, previous=before
    )
    assert_valid(after, replace(config, nodes=rest))
    moves = plan_moves(before, after)
    if config.replicas < len(config.nodes):
        assert {move.from_node for move in moves} <= {gone.node_id}
        assert all(move.to_node is not None for move in moves)
        assert len(moves) == before.loads().get(gone.node_id, 0)
    else:
        # Every node held every shard: the removed node's replicas are dropped.
        assert all(
            move == Move(shard_id=move.shard_id, from_node=gone.node_id, to_node=None)
            for move in moves
        )
    assert as_sets(apply_moves(before, moves)) == as_sets(after)


@settings(max_examples=80, deadline=None)
@given(configs(balanced_dcs=True))
def test_an_added_node_receives_every_move_and_at_most_its_share(config: Config) -> None:
    before = place(config.nodes, config.shard_ids, replicas=config.replicas, epsilon=config.epsilon)
    newcomer = PlacementNode(node_id=1, dc="dc0", zone="z9")
    grown = [*config.nodes, newcomer]
    after = place(
        grown, config.shard_ids, replicas=config.replicas, epsilon=config.epsilon, previous=before
    )
    assert_valid(after, replace(config, nodes=grown))
    moves = plan_moves(before, after)
    new_caps = caps(replace(config, nodes=grown))
    if all(load <= new_caps[node] for node, load in before.loads().items()):
        # Nobody is over the new (lower) bound: only the newcomer gains.
        assert all(move.to_node == newcomer.node_id for move in moves)
        width = min(config.replicas, len(grown))
        assert len(moves) <= len(config.shard_ids) * width // len(grown)
    assert as_sets(apply_moves(before, moves)) == as_sets(after)


@settings(max_examples=60, deadline=None)
@given(configs(weighted=True), st.randoms(use_true_random=False))
def test_placement_is_deterministic_and_stable(config: Config, shuffle: object) -> None:
    first = place(config.nodes, config.shard_ids, replicas=config.replicas, epsilon=config.epsilon)
    nodes, shards = list(config.nodes), list(config.shard_ids)
    shuffle.shuffle(nodes)  # type: ignore[attr-defined]
    shuffle.shuffle(shards)  # type: ignore[attr-defined]
    assert place(nodes, shards, replicas=config.replicas, epsilon=config.epsilon) == first
    again = place(nodes, shards, replicas=config.replicas, epsilon=config.epsilon, previous=first)
    before_violations = dc_violations(first, config.nodes, config.replicas)
    if before_violations == 0:
        assert plan_moves(first, again) == []
    else:
        # Greedy placement under a tight bound left a shard short of DCs; a
        # second pass may fix it, never make it worse.
        assert dc_violations(again, config.nodes, config.replicas) <= before_violations


def test_full_size_placement_is_balanced_and_moves_near_the_ideal() -> None:
    nodes = make_nodes(60, 3)
    shards = list(range(3000))
    before = place(nodes, shards)
    summary = summarize(before, nodes, 3)
    assert summary.max_over_mean <= 1.10
    assert summary.dc_violations == 0
    grown = [*nodes, PlacementNode(node_id=1, dc="dc1", zone="z0")]
    added = plan_moves(before, place(grown, shards, previous=before))
    assert len(added) <= 1.15 * (9000 / 61)
    assert len(added) >= 0.85 * (9000 / 61)


def test_dc_label_changes_restore_dc_spread_with_bounded_moves() -> None:
    nodes = make_nodes(12, 3)
    shards = list(range(300))
    before = place(nodes, shards)
    # Two nodes trade DCs: DC sizes stay feasible, but shards now double up.
    first, second = replace(nodes[0], dc="dc1"), replace(nodes[1], dc="dc0")
    relabelled = [first, second, *nodes[2:]]
    assert dc_violations(before, relabelled, 3) > 0
    after = place(relabelled, shards, previous=before)
    assert dc_violations(after, relabelled, 3) == 0
    moves = plan_moves(before, after)
    # At most one move per replica the two nodes held (every doubled-up shard
    # involves one of them); the keep pass may evict either holder of a pair.
    assert 0 < len(moves) <= before.loads()[first.node_id] + before.loads()[second.node_id]
    assert all(move.from_node is not None and move.to_node is not None for move in moves)


def test_a_node_of_weight_two_holds_twice_the_replicas() -> None:
    nodes = make_nodes(4, 4, weights=[2, 1, 1, 1])  # one node per DC: no spread limits
    placement = place(nodes, list(range(500)), replicas=2)
    loads = placement.loads()
    heavy, light = loads[nodes[0].node_id], [loads[n.node_id] for n in nodes[1:]]
    assert heavy == pytest.approx(400, abs=10)
    assert all(load == pytest.approx(200, abs=10) for load in light)


def test_fewer_nodes_than_replicas_uses_every_node_once() -> None:
    nodes = make_nodes(2, 2)
    placement = place(nodes, [1, 2, 3], replicas=3)
    assert all(sorted(h) == [10, 13] for _, h in placement.items())


def test_plan_moves_reports_added_and_dropped_replicas() -> None:
    old = Placement({1: (1, 2), 2: (3,)})
    new = Placement({1: (1, 4, 5), 3: (6,)})
    assert plan_moves(old, new) == [
        Move(shard_id=1, from_node=2, to_node=4),
        Move(shard_id=1, from_node=None, to_node=5),
        Move(shard_id=2, from_node=3, to_node=None),
        Move(shard_id=3, from_node=None, to_node=6),
    ]


def test_placement_serialization_round_trips_and_rejects_garbage() -> None:
    placement = place(make_nodes(5, 2), list(range(20)))
    assert Placement.from_dict(placement.to_dict()) == placement
    for bad in [
        {"replicas": 5},
        {"replicas": [[1, [2, 2]]]},
        {"replicas": [[1, [2]], [1, [3]]]},
        {"replicas": [["x", [2]]]},
        {"replicas": [[1]]},
    ]:
        with pytest.raises(PlacementError):
            Placement.from_dict(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 0}, "replicas"),
        ({"replicas": 8}, "replicas"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": 5.0}, "epsilon"),
    ],
)
def test_place_refuses_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(PlacementError, match=message):
        place(make_nodes(3, 1), [1, 2], **kwargs)  # type: ignore[arg-type]


def test_place_refuses_bad_nodes_and_shards() -> None:
    with pytest.raises(PlacementError, match="at least one node"):
        place([], [1])
    with pytest.raises(PlacementError, match="distinct"):
        place(make_nodes(2, 1) * 2, [1])
    with pytest.raises(PlacementError, match="shard ids"):
        place(make_nodes(2, 1), [1, 1])
    with pytest.raises(PlacementError, match="shard ids"):
        place(make_nodes(2, 1), [-1])
    with pytest.raises(PlacementError, match="weight"):
        PlacementNode(node_id=1, weight=0)
    with pytest.raises(PlacementError, match="node id"):
        PlacementNode(node_id=-1)


def test_a_tiny_dc_fills_to_its_cap_and_the_rest_double_up() -> None:
    # dc2 has one node: it can hold at most cap replicas, one per shard, so
    # exactly shards - cap shards cannot span three DCs. The hard bound wins.
    nodes = [PlacementNode(node_id=i, dc=f"dc{i % 2}", zone=f"z{i % 3}") for i in range(30)]
    nodes.append(PlacementNode(node_id=99, dc="dc2"))
    shards = list(range(600))
    placement, counters = place_with_statistics(nodes, shards)
    config = Config(nodes=nodes, shard_ids=shards, replicas=3, epsilon=0.1)
    assert_valid(placement, config)
    lonely_cap = caps(config)[99]
    assert placement.loads()[99] == lonely_cap
    assert dc_violations(placement, nodes, 3) == len(shards) - lonely_cap
    assert counters["cap_overflows"] == 0
    again = place(nodes, shards, previous=placement)
    assert plan_moves(placement, again) == []  # no churn chasing an impossible spread
