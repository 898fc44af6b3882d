"""Shard replicas -> nodes: rendezvous hashing with bounded loads, DC-aware, minimal moves.

Theory of operation
-------------------
Each shard ranks every node by a rendezvous (highest-random-weight) score,
xxh3_64(node id, seed=shard id); with unequal weights the score is the
weighted rendezvous key w / -ln(u). The ranking is the shard's consistent-hash
order: adding or removing a node never reorders the other nodes.

Every node n has a fair share f(n) of the R = shards * replicas replicas
(proportional to weight, at most one replica per shard: `fair_shares`) and
integer bounds derived from it and epsilon:

* `cap(n)    = ceil((1 + epsilon) f(n))` -- hard: no node ever holds more
  (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads");
* `tight(n)  = ceil(f(n))` -- a new replica prefers nodes below it;
* `lower(n)  = floor((1 - epsilon) f(n))` -- a node below it pulls replicas;
* `target(n) = floor(f(n))` -- where pulling stops.

`place(nodes, shard_ids, previous=...)` starts from `previous` (or nothing)
so that a membership change moves as few replicas as possible:

1. keep: a previous replica stays if its node is still active and the shard
   does not hold more same-DC replicas than it must (an evicted replica goes
   back to its node in pass 3 unless another node adds a missing DC);
2. shed: a node above its cap drops the replicas it ranks lowest;
3. fill: each empty slot walks the shard's ranking and takes the first node
   below cap, preferring (in order) a DC the shard lacks, a zone it lacks, and
   a node below `tight` -- bounded-load consistent hashing. If no node below
   cap fits, an augmenting path of hand-overs frees one (`_make_room`);
4. steal: a node below `target` takes replicas from busier holders, walking
   shards in its own ranking order, never shrinking a shard's DC or zone
   spread and never pushing a donor below its `lower`. Replicas placed by
   this same call move again for free, so any such node may take those; a
   replica that would otherwise stay is taken only by a node below `lower`
   (typically a new node).

So adding a node moves about floor(R / (N + 1)) replicas, all onto the new
node; removing a node moves exactly that node's replicas; a DC label change
moves only replicas whose shard can gain a DC. Everything iterates in sorted
order: the same input gives the same placement on every machine.

`plan_moves(old, new)` turns two placements into the list of replica moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ringbolt.shard.limits import epsilon_default, replicas_default, replicas_max, shards_max
from ringbolt.shard.planner import (
    ID_LIMIT,
    PlacementError,
    PlacementNode,
    Planner,
    fair_shares,
    is_id,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    """Move one replica of `shard_id`. None on one side: replica added or dropped."""

    shard_id: int
    from_node: int | None
    to_node: int | None

    def __post_init__(self) -> None:
        assert self.from_node is not None or self.to_node is not None
        assert self.from_node != self.to_node


class Placement:
    """An immutable map shard id -> tuple of distinct node ids (slot order kept)."""

    __slots__ = ("_replicas",)

    def __init__(self, replicas: Mapping[int, Iterable[int]]) -> None:
        self._replicas: dict[int, tuple[int, ...]] = {
            shard: tuple(replicas[shard]) for shard in sorted(replicas)
        }
        for shard, nodes in self._replicas.items():
            assert len(set(nodes)) == len(nodes), f"shard {shard} repeats a node: {nodes}"

    def replicas(self, shard_id: int) -> tuple[int, ...]:
        return self._replicas[shard_id]

    def shard_ids(self) -> list[int]:
        return list(self._replicas)

    def items(self) -> list[tuple[int, tuple[int, ...]]]:
        return list(self._replicas.items())

    def loads(self) -> dict[int, int]:
        """Replicas per node, for the nodes that hold any."""
        counts: dict[int, int] = {}
        for nodes in self._replicas.values():
            for node in nodes:
                counts[node] = counts.get(node, 0) + 1
        return dict(sorted(counts.items()))

    def shards_of(self, node_id: int) -> list[int]:
        return [shard for shard, nodes in self._replicas.items() if node_id in nodes]

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._replicas

    def __len__(self) -> int:
        return len(self._replicas)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Placement) and self._replicas == other._replicas

    def __hash__(self) -> int:
        return hash(tuple(self._replicas.items()))

    def __repr__(self) -> str:
        return f"Placement(shards={len(self)})"

    def to_dict(self) -> dict[str, Any]:
        return {"replicas": [[shard, list(nodes)] for shard, nodes in self._replicas.items()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Placement:
        rows = data.get("replicas")
        if not isinstance(rows, list) or len(rows) > shards_max:
            raise PlacementError("placement replicas must be a bounded list")
        replicas: dict[int, tuple[int, ...]] = {}
        for row in rows:
            if not (isinstance(row, list | tuple) and len(row) == 2 and isinstance(row[1], list)):
                raise PlacementError("placement rows are [shard, [nodes]]")
            shard, nodes = row
            if not is_id(shard) or not all(is_id(n) for n in nodes) or shard in replicas:
                raise PlacementError(f"malformed placement row {row!r}")
            if len(nodes) > replicas_max or len(set(nodes)) != len(nodes):
                raise PlacementError(f"shard {shard}: replicas must be distinct and few")
            replicas[shard] = tuple(nodes)
        return cls(replicas)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementSummary:
    """Load and diversity figures of one placement."""

    nodes: int
    shards: int
    replicas_total: int
    load_mean: float
    load_max: int
    load_min: int
    max_over_mean: float
    dc_violations: int


def place(
    nodes: Sequence[PlacementNode],
    shard_ids: Sequence[int],
    *,
    replicas: int = replicas_default,
    epsilon: float = epsilon_default,
    previous: Placement | None = None,
) -> Placement:
    """Place `replicas` replicas of every shard on the given (active) nodes."""
    return place_with_statistics(
        nodes, shard_ids, replicas=replicas, epsilon=epsilon, previous=previous
    )[0]


def place_with_statistics(
    nodes: Sequence[PlacementNode],
    shard_ids: Sequence[int],
    *,
    replicas: int = replicas_default,
    epsilon: float = epsilon_default,
    previous: Placement | None = None,
) -> tuple[Placement, dict[str, int]]:
    """`place`, plus counters of what each pass did."""
    planner = Planner(nodes, shard_ids, replicas, epsilon)
    planner.keep(dict(previous.items()) if previous is not None else {})
    planner.shed()
    planner.fill()
    planner.steal()
    return Placement(planner.result()), dict(planner.counters)


def plan_moves(old: Placement, new: Placement) -> list[Move]:
    """The replica moves that turn `old` into `new`, sorted by shard.

    Within a shard, dropped and added replicas pair up in slot order (which
    `place` preserves), so each pair is one move from one node to another.
    """
    moves: list[Move] = []
    for shard in sorted(set(old.shard_ids()) | set(new.shard_ids())):
        before = old.replicas(shard) if shard in old else ()
        after = new.replicas(shard) if shard in new else ()
        dropped = [node for node in before if node not in after]
        added = [node for node in after if node not in before]
        for index in range(max(len(dropped), len(added))):
            moves.append(
                Move(
                    shard_id=shard,
                    from_node=dropped[index] if index < len(dropped) else None,
                    to_node=added[index] if index < len(added) else None,
                )
            )
    return moves


def dc_violations(placement: Placement, nodes: Sequence[PlacementNode], replicas: int) -> int:
    """Shards whose replicas span fewer DCs than min(replicas, DCs available)."""
    dc_of = {node.node_id: node.dc for node in nodes}
    wanted = min(replicas, len(nodes), len(set(dc_of.values())))
    return sum(
        1
        for _, holders in placement.items()
        if len({dc_of[node] for node in holders if node in dc_of}) < wanted
    )


def summarize(
    placement: Placement, nodes: Sequence[PlacementNode], replicas: int
) -> PlacementSummary:
    """Load spread (over every given node, empty ones included) and DC violations."""
    loads = placement.loads()
    per_node = [loads.get(node.node_id, 0) for node in nodes]
    total = sum(per_node)
    assert total == sum(len(holders) for _, holders in placement.items())
    mean = total / len(per_node) if per_node else 0.0
    return PlacementSummary(
        nodes=len(nodes),
        shards=len(placement),
        replicas_total=total,
        load_mean=mean,
        load_max=max(per_node, default=0),
        load_min=min(per_node, default=0),
        max_over_mean=max(per_node, default=0) / mean if mean else 0.0,
        dc_violations=dc_violations(placement, nodes, replicas),
    )


__all__ = [
    "ID_LIMIT",
    "Move",
    "Placement",
    "PlacementError",
    "PlacementNode",
    "PlacementSummary",
    "dc_violations",
    "fair_shares",
    "place",
    "place_with_statistics",
    "plan_moves",
    "summarize",
]
