"""Leader balance: which shard leaderships to move so no node carries most writes.

Theory of operation
-------------------
Every write of a shard goes through its leader, so a node leading many shards
carries a matching share of the write traffic. `plan_leader_moves` takes who
leads what and returns the fewest transfers that leave every node leading
either floor(G/N) or ceil(G/N) shards (G shards, N nodes). Each move goes to a
node that already holds a replica of that shard. Pure and deterministic:
ties are broken by node and shard id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LeaderMove:
    shard: int
    source: int
    target: int


def plan_leader_moves(leaders: Mapping[int, int], members: Mapping[int, Sequence[int]],
                      nodes: Sequence[int]) -> list[LeaderMove]:
    """`leaders`: shard -> leading node; `members`: shard -> its replica nodes."""
    assert nodes, "no nodes"
    led: dict[int, list[int]] = {node: [] for node in sorted(nodes)}
    for shard in sorted(leaders):
        led.setdefault(leaders[shard], []).append(shard)
    ceiling = -(-len(leaders) // len(nodes))
    floor = len(leaders) // len(nodes)
    moves: list[LeaderMove] = []
    while True:
        heavy = max(led, key=lambda node: (len(led[node]), -node))
        light = min(led, key=lambda node: (len(led[node]), node))
        if len(led[heavy]) <= ceiling and len(led[light]) >= floor:
            break
        if len(led[heavy]) - len(led[light]) <= 1:
            break
        movable = [s for s in led[heavy] if light in members.get(s, ())]
        if not movable:
            break  # no shard of the heaviest node has a replica on the lightest
        shard = movable[0]
        led[heavy].remove(shard)
        led[light].append(shard)
        moves.append(LeaderMove(shard, heavy, light))
    assert len(moves) <= len(leaders)
    return moves
