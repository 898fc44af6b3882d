"""The `KeyValueService` a node shows its clients, assembled from its parts.

The RESP front end sees one object; behind it the data paths are the
request component's (requests.py), the reports the introspection's and the
cluster commands membership's. The methods are bound once at start, so a
request costs no extra call on the way in.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ringbolt.consensus.types import NotLeader, ProposalDropped
from ringbolt.server.service import Busy, ServiceError, ServiceLimits, Unavailable

if TYPE_CHECKING:
    from ringbolt.server.introspection import Introspection
    from ringbolt.server.membership import Membership
    from ringbolt.server.registry import ReplicaRegistry
    from ringbolt.server.requests import Requests


class NodeService:
    """What the RESP front end calls (ringbolt.server.service.KeyValueService)."""

    def __init__(self, limits: ServiceLimits, requests: Requests, introspection: Introspection,
                 membership: Membership, registry: ReplicaRegistry) -> None:
        self.limits = limits
        self.node_id = registry.node_id
        self._registry = registry
        self._membership = membership
        self.group_of = requests.group_of
        self.submit_write = requests.submit_write
        self.submit_read = requests.submit_read
        self.scan = requests.scan
        self.dbsize = requests.dbsize
        self.info = introspection.info
        self.cluster_description = introspection.cluster_description
        self.status = introspection.status
        self.statistics = introspection.statistics

    @staticmethod
    def now_ms() -> int:
        """This node's wall clock: relative expiry (EX/PX) becomes absolute with
        it. The leader stamps the entry's own time when it proposes it
        (replica.py), so apply-time expiry does not depend on which node a
        client talked to."""
        return time.time_ns() // 1_000_000

    async def cluster_admin(self, arguments: list[bytes]) -> bytes:
        """CLUSTER MAP / ADDNODE / DRAINNODE / REMOVENODE / REBALANCE (membership.py)."""
        return await self._membership.admin(arguments)

    def transfer_leadership(self, group_id: int, target: int) -> None:
        replica = self._registry.hosted.get(group_id)
        if replica is None:
            raise ServiceError(f"no shard {group_id}")
        if target not in replica.status().conf.voters:
            raise ServiceError(f"no node {target}")
        try:
            replica.core.transfer_leadership(target)
        except NotLeader as error:
            raise Unavailable(f"node {self.node_id} does not lead shard {group_id} "
                              f"(leader hint: {error.leader_hint or 'unknown'})") from None
        except ProposalDropped as error:
            raise Busy(f"shard {group_id} cannot transfer now: {error}") from None
        self._registry.wake()
