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
    for _ in range(len(leaders) * len(led) + 1):
        move = _best_move(led, members, floor, ceiling)
        if move is None:
            break
        led[move.source].remove(move.shard)
        led[move.target].append(move.shard)
        moves.append(move)
    return moves


def _best_move(led: dict[int, list[int]], members: Mapping[int, Sequence[int]],
               floor: int, ceiling: int) -> LeaderMove | None:
    """One transfer from the most loaded node that can give a leadership to a
    less loaded replica holder, preferring the least loaded taker. Every move
    narrows the spread, so the loop ends; it stops once every node leads floor
    or ceiling shards, or no replica holder can take one."""
    if all(floor <= len(shards) <= ceiling for shards in led.values()):
        return None
    for heavy in sorted(led, key=lambda node: (-len(led[node]), node)):
        for light in sorted(led, key=lambda node: (len(led[node]), node)):
            if len(led[heavy]) - len(led[light]) <= 1:
                break
            movable = [s for s in sorted(led[heavy]) if light in members.get(s, ())]
            if movable:
                return LeaderMove(movable[0], heavy, light)
    return None
