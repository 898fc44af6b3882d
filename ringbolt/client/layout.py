"""The client's picture of the cluster: which shard owns a key, who leads it.

Theory of operation
-------------------
Any node answers `CLUSTER DESCRIBE` with a JSON document (its own view:
shard count, each group's leader, every node's client address). The client
builds a `Layout` from it and routes each key to the leader of its shard, so
that a request costs one hop instead of a forward. The layout is only a
hint: a stale one costs a forward (any node forwards to the leader) or a
retry, never a wrong answer, because only the leader commits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ringbolt.shard.ring import Ring


class LayoutError(ValueError):
    """A node's description could not be understood."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, separator, port = text.rpartition(":")
        if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f'expected "host:port", got {text!r}')
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class Layout:
    ring: Ring
    leaders: dict[int, int] = field(default_factory=dict)
    """group id -> leader node id (absent when unknown)."""
    addresses: dict[int, Address] = field(default_factory=dict)
    """node id -> client address."""
    placement: dict[int, list[int]] = field(default_factory=dict)
    """shard id -> the nodes holding a replica (empty when every node holds all)."""
    map_version: int = 0

    def leader_address(self, key: bytes) -> Address | None:
        """The shard's leader, else a node holding a replica (it forwards)."""
        shard = self.ring.shard_for_key(key)
        leader = self.leaders.get(shard)
        if leader is None:
            holders = self.placement.get(shard)
            leader = holders[0] if holders else None
        return None if leader is None else self.addresses.get(leader)

    def group_of(self, key: bytes) -> int:
        return self.ring.shard_for_key(key)

    @classmethod
    def from_description(cls, text: str | bytes) -> Layout:
        try:
            description = json.loads(text)
            shards = int(description["shards"])
            addresses = {
                int(node["id"]): Address.parse(node["address"])
                for node in description.get("nodes", [])
                if node.get("address")
            }
            leaders = {
                int(group["id"]): int(group["leader"])
                for group in description.get("groups", [])
                if group.get("leader")
            }
            ring_rows = description.get("ring") or []
            ring = (Ring([int(row[0]) for row in ring_rows], [int(row[1]) for row in ring_rows])
                    if ring_rows else Ring.uniform(list(range(shards))))
            placement = {int(shard): [int(n) for n in holders]
                         for shard, holders in (description.get("placement") or {}).items()}
            map_version = int(description.get("map_version") or 0)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
            raise LayoutError(f"cannot understand the cluster description: {error}") from error
        if shards < 1:
            raise LayoutError("cluster description has no shards")
        return cls(ring, leaders, addresses, placement, map_version)

    def merge(self, other: Layout) -> Layout:
        """Combine two nodes' views (each knows the leaders of the shards it hosts)."""
        newer, older = (other, self) if other.map_version >= self.map_version else (self, other)
        leaders = {**older.leaders, **newer.leaders}
        return Layout(newer.ring, leaders, {**older.addresses, **newer.addresses},
                      newer.placement or older.placement, newer.map_version)
