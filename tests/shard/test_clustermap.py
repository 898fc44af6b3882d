"""The cluster map state machine (commands, rebalancing) and its codec."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbolt.shard.clustermap import (
    AddNode,
    ApplyMove,
    ClusterMap,
    ClusterMapError,
    DrainNode,
    MapCommand,
    MergeShards,
    NodeRecord,
    NodeState,
    RemoveNode,
    SetLeaderHint,
    SplitShard,
    UpdateNode,
    apply,
    bootstrap,
    plan_rebalance,
)
from ringbolt.shard.limits import HASH_SPACE
from ringbolt.shard.mapcodec import (
    ClusterMapDecodeError,
    decode,
    decode_command,
    encode,
    encode_command,
)
from ringbolt.shard.placement import dc_violations


def node(node_id: int, dc: str = "") -> NodeRecord:
    return NodeRecord(
        node_id=node_id,
        peer_address=f"127.0.0.1:{17000 + node_id}",
        client_address=f"127.0.0.1:{16000 + node_id}",
        dc=dc or f"dc{node_id % 3}",
        zone="z",
    )


def small_map(nodes: int = 9, shards: int = 48) -> ClusterMap:
    return bootstrap([node(i) for i in range(nodes)], shards)


def run_moves(cluster_map: ClusterMap) -> ClusterMap:
    for move in plan_rebalance(cluster_map):
        cluster_map = apply(
            cluster_map,
            ApplyMove(shard_id=move.shard_id, from_node=move.from_node, to_node=move.to_node),
        )
    return cluster_map


def test_bootstrap_tiles_the_ring_and_places_every_shard() -> None:
    cluster_map = small_map()
    assert cluster_map.version == 1
    ranges = [(s.start, s.end) for s in cluster_map.shards]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == HASH_SPACE
    assert all(len(set(s.replicas)) == 3 for s in cluster_map.shards)
    nodes = [n.placement_node() for n in cluster_map.nodes]
    assert dc_violations(cluster_map.placement(), nodes, 3) == 0
    assert plan_rebalance(cluster_map) == []
    ring = cluster_map.ring()
    assert ring.shard_ids() == [s.shard_id for s in cluster_map.shards]


def test_adding_a_node_then_rebalancing_moves_replicas_onto_it_only() -> None:
    before = small_map()
    grown = apply(before, AddNode(node=node(9, dc="dc0")))
    assert grown.version == before.version + 1
    moves = plan_rebalance(grown)
    assert moves
    assert {move.to_node for move in moves} == {9}
    after = run_moves(grown)
    assert after.version == grown.version + len(moves)
    assert after.placement().loads()[9] == len(moves)
    assert plan_rebalance(after) == []


def test_draining_moves_the_nodes_replicas_away_then_it_can_be_removed() -> None:
    cluster_map = apply(small_map(), DrainNode(node_id=4))
    held = len(cluster_map.placement().shards_of(4))
    with pytest.raises(ClusterMapError, match="still holds"):
        apply(cluster_map, RemoveNode(node_id=4))
    moves = plan_rebalance(cluster_map)
    assert len(moves) == held
    assert {move.from_node for move in moves} == {4}
    drained = run_moves(cluster_map)
    assert drained.placement().shards_of(4) == []
    removed = apply(drained, RemoveNode(node_id=4))
    assert removed.node(4).state is NodeState.REMOVED
    with pytest.raises(ClusterMapError, match="never reused"):
        apply(removed, AddNode(node=node(4)))
    assert removed.statistics()["nodes_removed"] == 1


def test_a_draining_node_receives_no_move() -> None:
    cluster_map = apply(small_map(), DrainNode(node_id=1))
    shard = next(s for s in cluster_map.shards if 1 not in s.replicas)
    with pytest.raises(ClusterMapError, match="not ACTIVE"):
        apply(
            cluster_map, ApplyMove(shard_id=shard.shard_id, from_node=shard.replicas[0], to_node=1)
        )


def test_split_keeps_replicas_and_merge_restores_the_range() -> None:
    cluster_map = apply(
        small_map(), SetLeaderHint(shard_id=7, node_id=small_map().shard(7).replicas[1])
    )
    original = cluster_map.shard(7)
    split = apply(cluster_map, SplitShard(shard_id=7, new_shard_id=1000))
    left, right = split.shard(7), split.shard(1000)
    assert (left.start, left.end, right.start, right.end) == (
        original.start,
        (original.start + original.end) // 2,
        (original.start + original.end) // 2,
        original.end,
    )
    assert left.replicas == right.replicas == original.replicas
    assert left.version == original.version + 1
    assert split.ring_version == cluster_map.ring_version + 1
    merged = apply(split, MergeShards(left_id=7, right_id=1000))
    assert (merged.shard(7).start, merged.shard(7).end) == (original.start, original.end)
    assert merged.ring().same_ranges(cluster_map.ring())
    with pytest.raises(ClusterMapError, match="no shard"):
        merged.shard(1000)


def test_merge_refuses_shards_on_different_replicas() -> None:
    cluster_map = small_map()
    left, right = cluster_map.shards[0], cluster_map.shards[1]
    assert set(left.replicas) != set(right.replicas)
    with pytest.raises(ClusterMapError, match="same replicas"):
        apply(cluster_map, MergeShards(left_id=left.shard_id, right_id=right.shard_id))


def test_apply_move_keeps_slot_order_and_drops_a_stale_leader_hint() -> None:
    cluster_map = small_map()
    shard = cluster_map.shard(3)
    hinted = apply(cluster_map, SetLeaderHint(shard_id=3, node_id=shard.replicas[1]))
    newcomer = next(n.node_id for n in cluster_map.nodes if n.node_id not in shard.replicas)
    moved = apply(hinted, ApplyMove(shard_id=3, from_node=shard.replicas[1], to_node=newcomer))
    assert moved.shard(3).replicas == (shard.replicas[0], newcomer, shard.replicas[2])
    assert moved.shard(3).leader_hint is None
    assert moved.shard(3).version == shard.version + 1


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (ApplyMove(shard_id=3, from_node=None, to_node=None), "two different ends"),
        (ApplyMove(shard_id=999, from_node=1, to_node=2), "no shard"),
        (DrainNode(node_id=99), "no node"),
        (RemoveNode(node_id=1), "must be DRAINING"),
        (SplitShard(shard_id=3, new_shard_id=4), "already exists"),
        (SplitShard(shard_id=3, new_shard_id=-4), "outside"),
        (SplitShard(shard_id=3, new_shard_id=500, at_hash=0), "strictly inside"),
        (MergeShards(left_id=3, right_id=9), "no shard|same replicas|does not directly follow"),
        (UpdateNode(node_id=1, dc="x" * 100, zone="", weight=1), "labels"),
        (UpdateNode(node_id=1, dc="a", zone="", weight=0), "weight"),
        (AddNode(node=NodeRecord(node_id=50, peer_address="", client_address="h:1")), "address"),
    ],
)
def test_rejected_commands_raise_and_change_nothing(command: MapCommand, message: str) -> None:
    cluster_map = small_map()
    snapshot = encode(cluster_map)
    with pytest.raises(ClusterMapError, match=message):
        apply(cluster_map, command)
    assert encode(cluster_map) == snapshot


def test_apply_move_refuses_impossible_moves() -> None:
    cluster_map = small_map()
    shard = cluster_map.shard(2)
    outsider = next(n.node_id for n in cluster_map.nodes if n.node_id not in shard.replicas)
    with pytest.raises(ClusterMapError, match="holds no replica"):
        apply(cluster_map, ApplyMove(shard_id=2, from_node=outsider, to_node=shard.replicas[0]))
    with pytest.raises(ClusterMapError, match="already holds"):
        apply(
            cluster_map,
            ApplyMove(shard_id=2, from_node=shard.replicas[0], to_node=shard.replicas[1]),
        )
    with pytest.raises(ClusterMapError, match="holds no replica"):
        apply(cluster_map, SetLeaderHint(shard_id=2, node_id=outsider))


def test_a_label_change_triggers_moves_that_restore_dc_spread() -> None:
    cluster_map = small_map(nodes=12, shards=60)
    first, second = cluster_map.node(0), cluster_map.node(1)
    cluster_map = apply(cluster_map, UpdateNode(node_id=0, dc=second.dc, zone="z", weight=1))
    cluster_map = apply(cluster_map, UpdateNode(node_id=1, dc=first.dc, zone="z", weight=1))
    nodes = [n.placement_node() for n in cluster_map.nodes]
    assert dc_violations(cluster_map.placement(), nodes, 3) > 0
    healed = run_moves(cluster_map)
    assert dc_violations(healed.placement(), nodes, 3) == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=25))
def test_random_command_sequences_keep_the_map_valid(script: list[int]) -> None:
    cluster_map = small_map(nodes=6, shards=12)
    next_node, next_shard = 6, 100
    for step in script:
        shard_ids = [s.shard_id for s in cluster_map.shards]
        active = [n.node_id for n in cluster_map.active_nodes()]
        draining = [n.node_id for n in cluster_map.nodes if n.state is NodeState.DRAINING]
        commands: list[MapCommand] = [
            AddNode(node=node(next_node)),
            DrainNode(node_id=active[step % len(active)]),
            RemoveNode(node_id=draining[0] if draining else 0),
            SplitShard(shard_id=shard_ids[step % len(shard_ids)], new_shard_id=next_shard),
            MergeShards(left_id=shard_ids[0], right_id=shard_ids[-1] if len(shard_ids) > 1 else 0),
        ]
        try:
            if step < len(commands):
                cluster_map = apply(cluster_map, commands[step])
                next_node += step == 0
                next_shard += step == 3
            else:
                cluster_map = run_moves(cluster_map)
                assert plan_rebalance(cluster_map) == []
        except ClusterMapError:
            pass
        assert decode(encode(cluster_map)) == cluster_map


def test_map_codec_round_trips_and_rejects_garbage() -> None:
    cluster_map = apply(small_map(), SplitShard(shard_id=0, new_shard_id=77))
    assert decode(encode(cluster_map)) == cluster_map
    with pytest.raises(ClusterMapDecodeError):
        decode(b"\xc1garbage")
    with pytest.raises(ClusterMapDecodeError):
        decode(msgpack.packb([2, 1, 3, 0.1, 0, [], []]))
    fields = msgpack.unpackb(encode(cluster_map))
    broken = [list(row) for row in fields[6]]
    broken[1][2] = [broken[1][2][0], broken[1][2][0]]  # a repeated replica
    with pytest.raises(ClusterMapDecodeError, match="repeated"):
        decode(msgpack.packb([*fields[:6], broken]))
    unknown = [list(row) for row in fields[6]]
    unknown[0][2] = [123456]
    with pytest.raises(ClusterMapDecodeError, match="unknown or removed"):
        decode(msgpack.packb([*fields[:6], unknown]))
    with pytest.raises(ClusterMapDecodeError, match="epsilon"):
        decode(msgpack.packb([*fields[:3], 9.0, *fields[4:]]))


def test_command_codec_round_trips_every_kind_and_rejects_garbage() -> None:
    commands: list[MapCommand] = [
        AddNode(node=node(5)),
        DrainNode(node_id=3),
        RemoveNode(node_id=3),
        UpdateNode(node_id=2, dc="east", zone="b", weight=3),
        SplitShard(shard_id=1, new_shard_id=9, at_hash=12345),
        SplitShard(shard_id=1, new_shard_id=9),
        MergeShards(left_id=1, right_id=9),
        ApplyMove(shard_id=4, from_node=None, to_node=2),
        SetLeaderHint(shard_id=4, node_id=None),
    ]
    for command in commands:
        assert decode_command(encode_command(command)) == command
    for garbage in [
        b"",
        b"\x93",
        msgpack.packb([1, 99, 1]),
        msgpack.packb([1, 2, "x"]),
        msgpack.packb([1, 2]),
        msgpack.packb([1, 1, [1, 2]]),
    ]:
        with pytest.raises(ClusterMapDecodeError):
            decode_command(garbage)
