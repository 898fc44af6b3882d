"""The cluster map: which nodes exist, which shards, and where each shard lives.

Theory of operation
-------------------
The meta group (one Raft group) replicates a log of map commands; every
member applies them with `apply(cluster_map, command)` and so holds the same
`ClusterMap`. This module is that deterministic state machine and its data
model, with no I/O:

* nodes: id, addresses, `dc`/`zone` labels, placement weight and a state
  ACTIVE -> DRAINING -> REMOVED (ids are never reused);
* shards: id, ring range [start, end), replica node ids, a leader hint and a
  per-shard version bumped on every change to that shard;
* a map `version` bumped by every applied command, so any holder can tell
  that its copy is stale.

Commands: `AddNode`, `DrainNode`, `RemoveNode` (only once drained: a node
holding replicas cannot vanish), `UpdateNode` (labels, weight),
`SplitShard` / `MergeShards` (the ring operations; a split leaves both halves
on the same replicas, a merge needs co-located replicas), `ApplyMove` (one
replica changes node, after the data has been copied) and `SetLeaderHint`.
A command that does not fit the map raises `ClusterMapError` and changes
nothing; the map itself is immutable, so a rejected command cannot leave it
half-applied.

`plan_rebalance(cluster_map)` runs placement over the active nodes, starting
from the current replicas, and returns the moves to propose, one `ApplyMove`
each. `ringbolt.shard.mapcodec` carries maps and commands as msgpack.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ringbolt.shard.limits import (
    HASH_SPACE,
    address_chars_max,
    epsilon_default,
    epsilon_max,
    nodes_max,
    replicas_default,
    replicas_max,
)
from ringbolt.shard.placement import (
    ID_LIMIT,
    Move,
    Placement,
    PlacementError,
    PlacementNode,
    place,
    plan_moves,
)
from ringbolt.shard.ring import Ring, RingError, ShardRange


class ClusterMapError(ValueError):
    """A command does not fit the current map; the map is unchanged."""


class NodeState(enum.IntEnum):
    ACTIVE = 0
    """Eligible to hold replicas."""
    DRAINING = 1
    """Keeps its replicas until they are moved away; receives no new ones."""
    REMOVED = 2
    """Gone for good; holds nothing. Kept so the id is never reused."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    node_id: int
    peer_address: str
    """host:port of the node's peer (Raft) transport."""
    client_address: str
    """host:port where the node serves the Redis protocol."""
    dc: str = ""
    zone: str = ""
    weight: int = 1
    state: NodeState = NodeState.ACTIVE

    def placement_node(self) -> PlacementNode:
        return PlacementNode(node_id=self.node_id, dc=self.dc, zone=self.zone, weight=self.weight)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardRecord:
    shard_id: int
    start: int
    end: int
    replicas: tuple[int, ...]
    leader_hint: int | None = None
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterMap:
    version: int
    replicas: int
    """Target replication factor of every shard."""
    epsilon: float
    """Bounded-load slack used by `plan_rebalance`."""
    ring_version: int
    nodes: tuple[NodeRecord, ...] = field(default=())
    """Sorted by node id."""
    shards: tuple[ShardRecord, ...] = field(default=())
    """Sorted by range start; the ranges tile [0, 2**64)."""

    def node(self, node_id: int) -> NodeRecord:
        for record in self.nodes:
            if record.node_id == node_id:
                return record
        raise ClusterMapError(f"no node {node_id}")

    def shard(self, shard_id: int) -> ShardRecord:
        for record in self.shards:
            if record.shard_id == shard_id:
                return record
        raise ClusterMapError(f"no shard {shard_id}")

    def ring(self) -> Ring:
        """The key -> shard ring described by this map (build once, reuse)."""
        return Ring(
            [s.start for s in self.shards], [s.shard_id for s in self.shards], self.ring_version
        )

    def placement(self) -> Placement:
        return Placement({s.shard_id: s.replicas for s in self.shards})

    def active_nodes(self) -> list[NodeRecord]:
        return [n for n in self.nodes if n.state is NodeState.ACTIVE]

    def statistics(self) -> dict[str, int]:
        loads = self.placement().loads()
        return {
            "version": self.version,
            "ring_version": self.ring_version,
            "shards": len(self.shards),
            "nodes_active": sum(n.state is NodeState.ACTIVE for n in self.nodes),
            "nodes_draining": sum(n.state is NodeState.DRAINING for n in self.nodes),
            "nodes_removed": sum(n.state is NodeState.REMOVED for n in self.nodes),
            "replicas_per_node_max": max(loads.values(), default=0),
            "under_replicated_shards": sum(len(s.replicas) < self.replicas for s in self.shards),
        }


# -- commands ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AddNode:
    node: NodeRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainNode:
    node_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveNode:
    node_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateNode:
    node_id: int
    dc: str
    zone: str
    weight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitShard:
    shard_id: int
    new_shard_id: int
    at_hash: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MergeShards:
    left_id: int
    right_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyMove:
    shard_id: int
    from_node: int | None
    to_node: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLeaderHint:
    shard_id: int
    node_id: int | None


MapCommand = (
    AddNode
    | DrainNode
    | RemoveNode
    | UpdateNode
    | SplitShard
    | MergeShards
    | ApplyMove
    | SetLeaderHint
)


# -- construction and planning ------------------------------------------------


def bootstrap(
    nodes: Sequence[NodeRecord],
    shard_count: int,
    *,
    replicas: int = replicas_default,
    epsilon: float = epsilon_default,
) -> ClusterMap:
    """A fresh map: `shard_count` equal ranges (ids 0..n-1) placed on `nodes`."""
    if not nodes:
        raise ClusterMapError("a cluster needs at least one node")
    records = tuple(sorted(nodes, key=lambda n: n.node_id))
    for record in records:
        check_node(record)
    if len({n.node_id for n in records}) != len(records):
        raise ClusterMapError("node ids must be distinct")
    try:
        ring = Ring.uniform(list(range(shard_count)))
        placement = place(
            [n.placement_node() for n in records if n.state is NodeState.ACTIVE],
            ring.shard_ids(),
            replicas=replicas,
            epsilon=epsilon,
        )
    except (RingError, PlacementError) as error:
        raise ClusterMapError(str(error)) from error
    shards = tuple(
        ShardRecord(
            shard_id=r.shard_id, start=r.start, end=r.end, replicas=placement.replicas(r.shard_id)
        )
        for r in ring.ranges()
    )
    cluster_map = ClusterMap(
        version=1,
        replicas=replicas,
        epsilon=epsilon,
        ring_version=ring.version,
        nodes=records,
        shards=shards,
    )
    _assert_invariants(cluster_map)
    return cluster_map


def plan_rebalance(cluster_map: ClusterMap) -> list[Move]:
    """Moves that bring the map to the placement its active nodes call for."""
    active = [n.placement_node() for n in cluster_map.active_nodes()]
    if not active:
        raise ClusterMapError("no active node to place replicas on")
    current = cluster_map.placement()
    try:
        target = place(
            active,
            current.shard_ids(),
            replicas=cluster_map.replicas,
            epsilon=cluster_map.epsilon,
            previous=current,
        )
    except PlacementError as error:
        raise ClusterMapError(str(error)) from error
    return plan_moves(current, target)


# -- the state machine ----------------------------------------------------------


def apply(cluster_map: ClusterMap, command: MapCommand) -> ClusterMap:
    """Apply one command; the result has `version` one higher."""
    handler = _HANDLERS.get(type(command))
    assert handler is not None, f"no handler for {type(command).__name__}"
    changed = handler(cluster_map, command)
    result = replace(changed, version=cluster_map.version + 1)
    _assert_invariants(result)
    return result


def _add_node(cluster_map: ClusterMap, command: Any) -> ClusterMap:
    node: NodeRecord = command.node
    check_node(node)
    if node.state is not NodeState.ACTIVE:
        raise ClusterMapError("a new node joins as ACTIVE")
    if any(n.node_id == node.node_id for n in cluster_map.nodes):
        raise ClusterMapError(f"node id {node.node_id} is taken (ids are never reused)")
    if len(cluster_map.nodes) >= nodes_max:
        raise ClusterMapError(f"the map already holds nodes_max={nodes_max} nodes")
    nodes = tuple(sorted([*cluster_map.nodes, node], key=lambda n: n.node_id))
    return replace(cluster_map, nodes=nodes)


def _drain_node(cluster_map: ClusterMap, command: Any) -> ClusterMap:
    node = cluster_map.node(command.node_id)
    if node.state is not NodeState.ACTIVE:
        raise ClusterMapError(f"node {node.node_id} is {node.state.name}, not ACTIVE")
    if len(cluster_map.active_nodes()) == 1:
        raise ClusterMapError("cannot drain the last active node")
    return _with_node(cluster_map, replace(node, state=NodeState.DRAINING))


def _remove_node(cluster_map: ClusterMap, command: Any) -> ClusterMap:
    node = cluster_map.node(command.node_id)
    if node.state is not NodeState.DRAINING:
        raise ClusterMapError(f"node {node.node_id} must be DRAINING to be removed")
    held = [s.shard_id for s in cluster_map.shards if node.node_id in s.replicas]
    if held:
        raise ClusterMapError(f"node {node.node_id} still holds {len(held)} replicas")
    return _with_node(cluster_map, replace(node, state=NodeState.REMOVED))


def _update_node(cluster_map: ClusterMap, command: Any) -> ClusterMap:
    node = cluster_map.node(command.node_id)
    if node.state is NodeState.REMOVED:
        raise ClusterMapError(f"node {node.node_id} is removed")
    updated = replace(node, dc=command.dc, zone=command.zone, weight=command.weight)
    check_node(updated)
    return _with_node(cluster_map, updated)


def _split_shard(cluster_map: ClusterMap, command: Any) -> ClusterMap:
    shard = cluster_map.shard(command.shard_id)
    if not 0 <= command.new_shard_id < ID_LIMIT:
        raise ClusterMapError(f"shard id {command.new_shard_id} outside [0, 2**63)")
    try:
        ring = cluster_map.ring().split(command.shard_id, command.new_shard_id, command.at_hash)
    except RingError as error:
        raise ClusterMapError(str(error)) from error
    left, right = ring.range_of(shard.shard_id), ring.range_of(command.new_shard_id)
    halves = [
        replace(shard, end=left.end, version=shard.version + 1),
        ShardRecord(
            shard_id=right.shard_id,
            start=right.start,
            end=right.end,
            replicas=shard.replicas,
            leader_hint=shard.leader_hint,
        ),
    ]
    return _with_ring(cluster_map, ring, {s.shard_id: s for s in halves})


def _merge_shards(cluster_map: ClusterMap, command: Any) -> ClusterMap:
    left, right = cluster_map.shard(command.left_id), cluster_map.shard(command.right_id)
    if set(left.replicas) != set(right.replicas):
        raise ClusterMapError("shards to merge must live on the same replicas")
    try:
        ring = cluster_map.ring().merge(command.left_id, command.right_id)
    except RingError as error:
        raise ClusterMapError(str(error)) from error
    merged = replace(left, end=right.end, version=max(left.version, right.version) + 1)
    return _with_ring(cluster_map, ring, {left.shard_id: merged})


def _apply_move(cluster_map: ClusterMap, command: Any) -> ClusterMap:
    shard = cluster_map.shard(command.shard_id)
    source, target = command.from_node, command.to_node
    if (source is None and target is None) or source == target:
        raise ClusterMapError("a move needs two different ends")
    replicas = list(shard.replicas)
    if source is not None and source not in replicas:
        raise ClusterMapError(f"node {source} holds no replica of shard {shard.shard_id}")
    if target is not None:
        if target in replicas:
            raise ClusterMapError(f"node {target} already holds shard {shard.shard_id}")
        if cluster_map.node(target).state is not NodeState.ACTIVE:
            raise ClusterMapError(f"node {target} is not ACTIVE")
    if source is None:
        if len(replicas) >= replicas_max:
            raise ClusterMapError(f"shard {shard.shard_id} already has replicas_max replicas")
        replicas.append(target)
    elif target is None:
        if len(replicas) == 1:
            raise ClusterMapError(f"cannot drop the last replica of shard {shard.shard_id}")
        replicas.remove(source)
    else:
        replicas[replicas.index(source)] = target
    hint = shard.leader_hint if shard.leader_hint in replicas else None
    updated = replace(shard, replicas=tuple(replicas), leader_hint=hint, version=shard.version + 1)
    return _with_shard(cluster_map, updated)


def _set_leader_hint(cluster_map: ClusterMap, command: Any) -> ClusterMap:
    shard = cluster_map.shard(command.shard_id)
    if command.node_id is not None and command.node_id not in shard.replicas:
        raise ClusterMapError(f"node {command.node_id} holds no replica of shard {shard.shard_id}")
    return _with_shard(cluster_map, replace(shard, leader_hint=command.node_id))


_HANDLERS: dict[type, Callable[[ClusterMap, Any], ClusterMap]] = {
    AddNode: _add_node,
    DrainNode: _drain_node,
    RemoveNode: _remove_node,
    UpdateNode: _update_node,
    SplitShard: _split_shard,
    MergeShards: _merge_shards,
    ApplyMove: _apply_move,
    SetLeaderHint: _set_leader_hint,
}


def _with_node(cluster_map: ClusterMap, node: NodeRecord) -> ClusterMap:
    nodes = tuple(node if n.node_id == node.node_id else n for n in cluster_map.nodes)
    return replace(cluster_map, nodes=nodes)


def _with_shard(cluster_map: ClusterMap, shard: ShardRecord) -> ClusterMap:
    shards = tuple(shard if s.shard_id == shard.shard_id else s for s in cluster_map.shards)
    return replace(cluster_map, shards=shards)


def _with_ring(cluster_map: ClusterMap, ring: Ring, changed: dict[int, ShardRecord]) -> ClusterMap:
    """Rebuild the shard list in the ring's order, taking `changed` records first."""
    existing = {s.shard_id: s for s in cluster_map.shards}
    shards = []
    for shard_range in ring.ranges():
        record = changed.get(shard_range.shard_id) or existing[shard_range.shard_id]
        assert (record.start, record.end) == (shard_range.start, shard_range.end)
        shards.append(record)
    return replace(cluster_map, shards=tuple(shards), ring_version=ring.version)


def check_node(node: NodeRecord) -> None:
    try:
        node.placement_node()
    except PlacementError as error:
        raise ClusterMapError(str(error)) from error
    for address in (node.peer_address, node.client_address):
        if not isinstance(address, str) or not 0 < len(address) <= address_chars_max:
            raise ClusterMapError(f"node {node.node_id}: bad address {address!r}")


def _assert_invariants(cluster_map: ClusterMap) -> None:
    """What every map produced here keeps; a failure is a bug in this module."""
    problem = first_problem(cluster_map)
    assert problem is None, problem


def first_problem(cluster_map: ClusterMap) -> str | None:
    """The first broken structural rule of a map, or None."""
    ids = [n.node_id for n in cluster_map.nodes]
    state = {n.node_id: n.state for n in cluster_map.nodes}
    shards = cluster_map.shards
    if cluster_map.version < 1 or not 1 <= cluster_map.replicas <= replicas_max:
        return "version or replication factor out of range"
    if not 0.0 < cluster_map.epsilon <= epsilon_max:
        return "epsilon out of range"
    if ids != sorted(set(ids)):
        return "nodes must be sorted by id, ids distinct"
    if not shards or shards[0].start != 0 or shards[-1].end != HASH_SPACE:
        return "shard ranges must cover [0, 2**64)"
    if any(a.end != b.start for a, b in zip(shards, shards[1:], strict=False)):
        return "shard ranges must be contiguous"
    for shard in shards:
        if not 0 <= shard.shard_id < ID_LIMIT or shard.start >= shard.end:
            return f"shard {shard.shard_id}: bad id or empty range"
        if not 0 < len(shard.replicas) <= replicas_max:
            return f"shard {shard.shard_id}: replica count out of range"
        if len(set(shard.replicas)) != len(shard.replicas):
            return f"shard {shard.shard_id}: repeated replica"
        if not all(state.get(n) in (NodeState.ACTIVE, NodeState.DRAINING) for n in shard.replicas):
            return f"shard {shard.shard_id}: replica on an unknown or removed node"
        if shard.leader_hint is not None and shard.leader_hint not in shard.replicas:
            return f"shard {shard.shard_id}: leader hint is not a replica"
    return None


__all__ = [
    "AddNode",
    "ApplyMove",
    "ClusterMap",
    "ClusterMapError",
    "DrainNode",
    "MapCommand",
    "MergeShards",
    "Move",
    "NodeRecord",
    "NodeState",
    "RemoveNode",
    "SetLeaderHint",
    "ShardRange",
    "ShardRecord",
    "SplitShard",
    "UpdateNode",
    "apply",
    "bootstrap",
    "plan_rebalance",
]
