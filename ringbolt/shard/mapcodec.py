"""msgpack codec of the cluster map and of its commands.

Theory of operation
-------------------
Maps and commands travel as msgpack arrays whose first element is
`MAP_FORMAT_VERSION`. A map is
`[format, version, replicas, epsilon, ring_version, nodes, shards]`; each
shard row carries only its start (its end is the next start, or 2**64,
which does not fit a msgpack integer). A command is `[format, kind, fields...]`
with `kind` a `CommandKind`.

`encode`/`encode_command` decode their own output before returning it (a
mismatch is a bug: AssertionError). `decode`/`decode_command` take untrusted
bytes: sizes are capped before anything is built, every field is type
checked, the decoded map must satisfy every structural rule of
`clustermap.first_problem`, and any failure raises `ClusterMapDecodeError`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import msgpack

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
    ShardRecord,
    SplitShard,
    UpdateNode,
    check_node,
    first_problem,
)
from ringbolt.shard.limits import map_bytes_max, nodes_max, replicas_max, shards_max
from ringbolt.shard.ring import Ring, RingError

MAP_FORMAT_VERSION = 1


class ClusterMapDecodeError(ClusterMapError):
    """Bytes that are not a valid encoded map or command."""


class CommandKind(enum.IntEnum):
    ADD_NODE = 1
    DRAIN_NODE = 2
    REMOVE_NODE = 3
    UPDATE_NODE = 4
    SPLIT_SHARD = 5
    MERGE_SHARDS = 6
    APPLY_MOVE = 7
    SET_LEADER_HINT = 8


def encode(cluster_map: ClusterMap) -> bytes:
    """msgpack; shard ends are implied by the next start (2**64 does not fit)."""
    data = [
        MAP_FORMAT_VERSION,
        cluster_map.version,
        cluster_map.replicas,
        cluster_map.epsilon,
        cluster_map.ring_version,
        [_node_row(n) for n in cluster_map.nodes],
        [
            [s.shard_id, s.start, list(s.replicas), s.leader_hint, s.version]
            for s in cluster_map.shards
        ],
    ]
    encoded: bytes = msgpack.packb(data, use_bin_type=True)
    assert decode(encoded) == cluster_map
    return encoded


def decode(data: bytes) -> ClusterMap:
    if len(data) > map_bytes_max:
        raise ClusterMapDecodeError(f"encoded map exceeds map_bytes_max={map_bytes_max}")
    fields = _unpack(data)
    if not isinstance(fields, list) or len(fields) != 7 or fields[0] != MAP_FORMAT_VERSION:
        raise ClusterMapDecodeError("not a cluster map of a known format")
    _, version, replicas, epsilon, ring_version, node_rows, shard_rows = fields
    try:
        nodes = tuple(_node_from_row(row) for row in _bounded_list(node_rows, nodes_max))
        ring = Ring.from_dict(
            {
                "format": 1,
                "version": ring_version,
                "starts": [row[1] for row in _rows(shard_rows, 5)],
                "shard_ids": [row[0] for row in shard_rows],
            }
        )
        shards = tuple(
            ShardRecord(
                shard_id=_int(row[0]),
                start=r.start,
                end=r.end,
                replicas=tuple(_int(n) for n in _bounded_list(row[2], replicas_max)),
                leader_hint=None if row[3] is None else _int(row[3]),
                version=_int(row[4]),
            )
            for row, r in zip(shard_rows, ring.ranges(), strict=True)
        )
        cluster_map = ClusterMap(
            version=_int(version),
            replicas=_int(replicas),
            epsilon=float(epsilon) if isinstance(epsilon, float | int) else -1.0,
            ring_version=ring.version,
            nodes=nodes,
            shards=shards,
        )
        for node in nodes:
            check_node(node)
    except (RingError, TypeError, ValueError, IndexError) as error:
        if isinstance(error, ClusterMapDecodeError):
            raise
        raise ClusterMapDecodeError(f"invalid cluster map: {error}") from error
    problem = first_problem(cluster_map)
    if problem is not None:
        raise ClusterMapDecodeError(f"invalid cluster map: {problem}")
    return cluster_map


def encode_command(command: MapCommand) -> bytes:
    """msgpack [kind, fields...]; the form the meta group's log carries."""
    match command:
        case AddNode(node=node):
            row: list[Any] = [CommandKind.ADD_NODE, _node_row(node)]
        case DrainNode(node_id=node_id):
            row = [CommandKind.DRAIN_NODE, node_id]
        case RemoveNode(node_id=node_id):
            row = [CommandKind.REMOVE_NODE, node_id]
        case UpdateNode():
            row = [
                CommandKind.UPDATE_NODE,
                command.node_id,
                command.dc,
                command.zone,
                command.weight,
            ]
        case SplitShard():
            row = [CommandKind.SPLIT_SHARD, command.shard_id, command.new_shard_id, command.at_hash]
        case MergeShards():
            row = [CommandKind.MERGE_SHARDS, command.left_id, command.right_id]
        case ApplyMove():
            row = [CommandKind.APPLY_MOVE, command.shard_id, command.from_node, command.to_node]
        case SetLeaderHint():
            row = [CommandKind.SET_LEADER_HINT, command.shard_id, command.node_id]
    encoded: bytes = msgpack.packb([MAP_FORMAT_VERSION, *row], use_bin_type=True)
    assert decode_command(encoded) == command
    return encoded


def decode_command(data: bytes) -> MapCommand:
    fields = _unpack(data)
    if not isinstance(fields, list) or len(fields) < 2 or fields[0] != MAP_FORMAT_VERSION:
        raise ClusterMapDecodeError("not a cluster map command of a known format")
    try:
        kind, args = CommandKind(fields[1]), fields[2:]
        builder, arity = _COMMAND_BUILDERS[kind]
        if len(args) != arity:
            raise ClusterMapDecodeError(f"{kind.name} takes {arity} fields, got {len(args)}")
        return builder(args)
    except (TypeError, ValueError, IndexError) as error:
        if isinstance(error, ClusterMapDecodeError):
            raise
        raise ClusterMapDecodeError(f"invalid cluster map command: {error}") from error


_COMMAND_BUILDERS: dict[CommandKind, tuple[Callable[[list[Any]], MapCommand], int]] = {
    CommandKind.ADD_NODE: (lambda a: AddNode(node=_node_from_row(a[0])), 1),
    CommandKind.DRAIN_NODE: (lambda a: DrainNode(node_id=_int(a[0])), 1),
    CommandKind.REMOVE_NODE: (lambda a: RemoveNode(node_id=_int(a[0])), 1),
    CommandKind.UPDATE_NODE: (
        lambda a: UpdateNode(node_id=_int(a[0]), dc=_str(a[1]), zone=_str(a[2]), weight=_int(a[3])),
        4,
    ),
    CommandKind.SPLIT_SHARD: (
        lambda a: SplitShard(shard_id=_int(a[0]), new_shard_id=_int(a[1]), at_hash=_opt_int(a[2])),
        3,
    ),
    CommandKind.MERGE_SHARDS: (lambda a: MergeShards(left_id=_int(a[0]), right_id=_int(a[1])), 2),
    CommandKind.APPLY_MOVE: (
        lambda a: ApplyMove(shard_id=_int(a[0]), from_node=_opt_int(a[1]), to_node=_opt_int(a[2])),
        3,
    ),
    CommandKind.SET_LEADER_HINT: (
        lambda a: SetLeaderHint(shard_id=_int(a[0]), node_id=_opt_int(a[1])),
        2,
    ),
}
assert set(_COMMAND_BUILDERS) == set(CommandKind)


def _node_row(node: NodeRecord) -> list[Any]:
    return [
        node.node_id,
        node.peer_address,
        node.client_address,
        node.dc,
        node.zone,
        node.weight,
        int(node.state),
    ]


def _node_from_row(row: Any) -> NodeRecord:
    if not isinstance(row, list) or len(row) != 7:
        raise ClusterMapDecodeError("a node row has 7 fields")
    return NodeRecord(
        node_id=_int(row[0]),
        peer_address=_str(row[1]),
        client_address=_str(row[2]),
        dc=_str(row[3]),
        zone=_str(row[4]),
        weight=_int(row[5]),
        state=NodeState(row[6]),
    )


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise ClusterMapDecodeError(f"not msgpack: {error}") from error


def _rows(value: Any, width: int) -> list[list[Any]]:
    rows = _bounded_list(value, shards_max)
    if not all(isinstance(row, list) and len(row) == width for row in rows):
        raise ClusterMapDecodeError(f"rows of {width} fields expected")
    return rows


def _bounded_list(value: Any, limit: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise ClusterMapDecodeError(f"expected a list of at most {limit} items")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ClusterMapDecodeError(f"expected an integer, got {value!r}")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ClusterMapDecodeError(f"expected a string, got {value!r}")
    return value
