"""A split whose map update was lost is finished by the parent's leader."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

from ringbolt.consensus.types import Role
from ringbolt.server.membership import Membership
from ringbolt.shard import clustermap
from ringbolt.shard.clustermap import ClusterMap, NodeRecord
from ringbolt.shard.limits import HASH_SPACE


def test_the_parents_leader_puts_a_recorded_split_into_the_map() -> None:
    nodes = [NodeRecord(node_id=i, peer_address=f"h:{i}", client_address=f"h:{i + 10}")
             for i in (1, 2, 3)]
    start = clustermap.bootstrap(nodes, 2)
    cut = HASH_SPACE // 4
    leader = SimpleNamespace(role=Role.LEADER)
    registry: Any = SimpleNamespace(
        node_id=1, hosted={0: leader, 1: SimpleNamespace(role=Role.FOLLOWER)})
    config: Any = SimpleNamespace(node_id=1, balance_leaders=False, split_keys_max=0,
                                  election_timeout_ticks=20, join=False, peers={})
    groups: Any = SimpleNamespace(
        last_split=lambda shard: (HASH_SPACE // 2, cut, 7) if shard == 0 else None)
    membership = Membership(config, registry, SimpleNamespace(), groups,  # type: ignore[arg-type]
                            random.Random(1))
    membership.map = start
    changes: list[ClusterMap] = []

    async def update(change: Any) -> ClusterMap:
        changes.append(change(start))
        return changes[-1]

    membership.update = update  # type: ignore[method-assign]

    async def run() -> None:
        membership.heal_splits()
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(run())
    assert len(changes) == 1
    healed = changes[0]
    assert sorted(s.shard_id for s in healed.shards) == [0, 1, 7]
    assert healed.shard(7).start == cut and healed.shard(0).end == cut
    membership.map = healed
    changes.clear()
    asyncio.run(run())
    assert changes == []  # nothing left to heal
