"""What a node tells about itself: INFO, CLUSTER DESCRIBE, /status, /metrics data.

Theory of operation
-------------------
`Introspection` is the node's read-only reporting component, handed the
parts it reports on (registry, peer book, membership's map, the request
paths' counts, the driver's and forwarder's counters). Nothing here changes state; every figure is a snapshot taken
on the event loop, so it is consistent with itself but may be stale a moment
later. `cluster_description` is the format of docs/protocol.md (CLUSTER
DESCRIBE), which `ringbolt.client` routes with.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ringbolt.consensus.types import Role
from ringbolt.server.groups import META_GROUP_ID
from ringbolt.server.replica import Replica

if TYPE_CHECKING:
    from ringbolt.server.config import NodeConfig
    from ringbolt.server.forward import Forwarder
    from ringbolt.server.membership import Membership
    from ringbolt.server.peers import PeerBook
    from ringbolt.server.registry import ReplicaRegistry
    from ringbolt.server.transport import Transport


class Introspection:
    """The node's reports (see the module docstring)."""

    def __init__(self, config: NodeConfig, registry: ReplicaRegistry, peers: PeerBook,
                 membership: Membership, transport: Transport, forwarder: Forwarder,
                 counters: Callable[[], dict[str, Any]],
                 local_count: Callable[[int], int], batch_sizes: list[int]) -> None:
        self.config = config
        self.node_id = config.node_id
        self.registry = registry
        self.peers = peers
        self.membership = membership
        self.transport = transport
        self.forwarder = forwarder
        self.counters = counters
        """The node's counters: driver, request paths, ticks (merged)."""
        self._local_count = local_count
        self.started_at = time.time()
        self.batch_sizes = batch_sizes
        """Entries appended per round, the latest 1,000 (the driver's list)."""

    @property
    def replicas(self) -> dict[int, Replica]:
        return self.registry.hosted

    @property
    def _client_addresses(self) -> dict[int, str]:
        return self.peers.client_addresses

    def info(self) -> dict[str, dict[str, object]]:
        leaders = sum(1 for r in self.replicas.values() if r.role is Role.LEADER)
        return {
            "server": {"ringbolt_version": "0.1.0", "node_id": self.node_id,
                       "process_id": os.getpid(),
                       "uptime_in_seconds": int(time.time() - self.started_at),
                       "tcp_port": self.config.client_address.port,
                       "dc": self.config.dc, "zone": self.config.zone},
            "replication": {"role": "master" if leaders else "slave",
                            "shards": len(self.registry.group_ids),
                            "shards_led": leaders, "peers": len(self._client_addresses)},
            "stats": {k: v for k, v in self.counters().items() if isinstance(v, int)},
        }

    def cluster_description(self) -> dict[str, object]:
        """This node's view in the format of docs/protocol.md (CLUSTER)."""
        nodes: list[dict[str, object]] = [{
            "id": self.node_id, "address": str(self.config.client_address),
            "peer_address": str(self.config.peer_address), "dc": self.config.dc,
            "zone": self.config.zone, "connected": True}]
        cluster_map = self.membership.map
        known = ({n.node_id: n for n in cluster_map.nodes} if cluster_map is not None else {})
        for node_id in sorted(set(self._client_addresses) | set(known)):
            record = known.get(node_id)
            if node_id == self.node_id or (record is not None and record.state.name == "REMOVED"):
                continue
            nodes.append({"id": node_id,
                          "address": record.client_address if record else
                          self._client_addresses.get(node_id, ""),
                          "peer_address": record.peer_address if record else "",
                          "dc": record.dc if record else "", "zone": record.zone if record else "",
                          "connected": self.transport.connected(node_id)})
        groups: list[dict[str, object]] = []
        for group_id, replica in sorted(self.replicas.items()):
            if group_id == META_GROUP_ID:
                continue
            status = replica.status()
            groups.append({
                "id": group_id, "leader": status.leader or None, "term": status.term,
                "role": status.role.name.lower(),
                "members": sorted(status.conf.voters | status.conf.learners),
                "voters": sorted(status.conf.voters),
                "commit_index": status.commit, "applied_index": replica.applied})
        led = all(group["leader"] is not None for group in groups)
        meta = self.replicas.get(META_GROUP_ID)
        meta_status = meta.status() if meta is not None else None
        return {"cluster_state": "ok" if led and cluster_map is not None else "fail",
                "node_id": self.node_id,
                "shards": len(cluster_map.shards) if cluster_map is not None else 0,
                "nodes": nodes, "groups": groups,
                "meta": None if meta_status is None else {
                    "leader": meta_status.leader or None, "role": meta_status.role.name.lower(),
                    "voters": sorted(meta_status.conf.voters),
                    "learners": sorted(meta_status.conf.learners)},
                **self.membership.describe()}

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        groups = [self._group_status(g, r) for g, r in sorted(self.replicas.items())
                  if g != META_GROUP_ID]
        meta = self.replicas.get(META_GROUP_ID)
        peers = {str(node_id): {"client_address": address,
                                "connected": self.transport.connected(node_id)}
                 for node_id, address in sorted(self._client_addresses.items())}
        cluster_map = self.membership.map
        return {"node_id": self.node_id, "pid": os.getpid(),
                "dc": self.config.dc, "zone": self.config.zone,
                "client_address": str(self.config.client_address),
                "peer_address": str(self.config.peer_address),
                "shards": len(self.registry.group_ids), "groups": groups, "peers": peers,
                "map_version": cluster_map.version if cluster_map is not None else 0,
                "meta": None if meta is None else self._group_status(META_GROUP_ID, meta),
                "membership": dict(self.membership.stats),
                "map": None if cluster_map is None else {
                    "version": cluster_map.version,
                    "shards": [{"id": s.shard_id, "start": s.start, "end": s.end,
                                "replicas": list(s.replicas)} for s in cluster_map.shards],
                    "nodes": {str(n.node_id): n.state.name.lower() for n in cluster_map.nodes}}}

    def _group_status(self, group_id: int, replica: Replica) -> dict[str, object]:
        status = replica.status()
        return {"group": group_id, "role": status.role.name.lower(), "term": status.term,
                "leader": status.leader, "commit": status.commit, "applied": replica.applied,
                "last_index": status.last_index, "voters": sorted(status.conf.voters),
                "keys": self._local_count(group_id) if group_id != META_GROUP_ID else 0,
                "learners": sorted(status.conf.learners),
                "followers": self._follower_lag(replica)}

    def _follower_lag(self, replica: Replica) -> dict[str, dict[str, int]]:
        """The leader's view of each follower: match index and lag behind its log."""
        progress = getattr(replica.core, "progress", None)
        if replica.role is not Role.LEADER or not callable(progress):
            return {}
        last = replica.core.status().last_index
        lags = {}
        for node in sorted(replica.status().conf.voters | replica.status().conf.learners):
            if node == self.node_id:
                continue
            match = getattr(progress(node), "match", None)
            if isinstance(match, int):
                lags[str(node)] = {"match": match, "lag": last - match}
        return lags

    def statistics(self) -> dict[str, object]:
        return {"node": {**self.counters(), **self.forwarder.stats},
                "forwards_inflight": len(self.forwarder.inflight),
                "replicas": {g: r.statistics() for g, r in self.replicas.items()},
                "transport": self.transport.statistics()}
