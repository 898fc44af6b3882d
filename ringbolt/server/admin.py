"""Admin HTTP endpoint of one node (aiohttp, same event loop as the node).

Theory of operation
-------------------
Three read-only routes:

* ``GET /health`` -> ``200 ok`` while the node runs (liveness only);
* ``GET /status`` -> JSON: node id, labels, addresses, peers (connected or
  not) and, per group: role, term, leader, commit, applied, last index and,
  on the leader, each follower's match index and lag;
* ``GET /metrics`` -> Prometheus text exposition.

Metrics are not counted on the hot path: a custom collector reads the node's
`statistics()` counters at scrape time, so serving a request costs nothing
extra. Each node has its own `CollectorRegistry` (tests run several nodes in
one process).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ringbolt.server.config import Address

_ROLE_VALUES = {"follower": 0, "pre_candidate": 1, "candidate": 2, "leader": 3, "learner": 4}


class AdminSource(Protocol):
    node_id: int

    def status(self) -> dict[str, object]: ...

    def statistics(self) -> dict[str, object]: ...


class NodeCollector:
    """Turns `node.statistics()` and `node.status()` into Prometheus metrics."""

    def __init__(self, node: AdminSource) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        stats: dict[str, Any] = self.node.statistics()
        node_stats: dict[str, Any] = stats["node"]
        counters = {
            "rounds": "Driver rounds that handled at least one Ready",
            "fsyncs": "WAL fdatasync calls (one per round that persisted something)",
            "fsyncs_inline": "WAL fdatasync calls made on the event loop (no round in flight)",
            "messages_sent": "Raft messages queued to peers",
            "messages_dropped": "Raft messages dropped (peer down or queue full)",
            "forwards_sent": "Client writes forwarded to a leader",
            "forwards_served": "Forwarded writes proposed here as leader",
            "forward_timeouts": "Forwarded writes without an answer in time",
            "writes": "Client writes submitted",
            "reads": "Linearizable reads submitted",
            "stale_reads": "Stale (local) reads served",
            "ticks": "Raft ticks",
            "forwarded_elsewhere": "Requests forwarded to a node hosting their shard",
            "writes_reproposed": "Writes proposed again after a new leader overwrote them",
            "forwards_retried": "Forwards sent again after the old leader did not execute them",
            "reads_retried": "Reads issued again after an election or a transfer",
        }
        for name, help_text in counters.items():
            metric = CounterMetricFamily(f"ringbolt_{name}", help_text)
            metric.add_metric([], float(node_stats[name]))
            yield metric
        fsync_seconds = CounterMetricFamily("ringbolt_fsync_seconds", "Time spent in fdatasync")
        fsync_seconds.add_metric([], float(node_stats["fsync_seconds"]))
        yield fsync_seconds
        yield from self._batches(node_stats)
        inflight = GaugeMetricFamily("ringbolt_forwards_inflight", "Forwarded writes awaiting")
        inflight.add_metric([], float(stats["forwards_inflight"]))
        yield inflight
        yield from self._replicas(stats["replicas"])
        yield from self._peers(stats["transport"]["peers"])
        yield from self._groups()

    def _batches(self, node_stats: dict[str, Any]) -> Iterator[Metric]:
        batch = GaugeMetricFamily("ringbolt_round_entries_mean",
                                  "Mean entries persisted per round (last 1000 rounds)")
        sizes = getattr(self.node, "batch_sizes", [])
        batch.add_metric([], float(sum(sizes) / len(sizes)) if sizes else 0.0)
        yield batch
        peak = GaugeMetricFamily("ringbolt_round_entries_max", "Most entries in one round")
        peak.add_metric([], float(node_stats["round_entries_max"]))
        yield peak

    def _replicas(self, replicas: dict[int, dict[str, int]]) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "proposals": CounterMetricFamily("ringbolt_group_proposals", "Proposals", labels=["group"]),
            "applied_entries": CounterMetricFamily("ringbolt_group_applied_entries",
                                                   "Entries applied", labels=["group"]),
            "leader_changes": CounterMetricFamily("ringbolt_group_leader_changes",
                                                  "Leader changes seen (elections)",
                                                  labels=["group"]),
            "proposals_pending": GaugeMetricFamily("ringbolt_group_proposals_pending",
                                                   "Proposals waiting to apply", labels=["group"]),
            "reads_pending": GaugeMetricFamily("ringbolt_group_reads_pending",
                                               "Reads waiting", labels=["group"]),
            "snapshots_taken": CounterMetricFamily("ringbolt_group_snapshots_taken",
                                                   "Log compactions", labels=["group"]),
            "elections": CounterMetricFamily("ringbolt_group_elections",
                                             "Elections this node started (as candidate)",
                                             labels=["group"]),
            "snapshots_installed": CounterMetricFamily("ringbolt_group_snapshots_installed",
                                                       "Snapshots received from a leader",
                                                       labels=["group"]),
        }
        for group_id, values in replicas.items():
            for name, family in families.items():
                family.add_metric([str(group_id)], float(values[name]))
        yield from families.values()

    def _peers(self, peers: dict[int, dict[str, Any]]) -> Iterator[Metric]:
        queued = GaugeMetricFamily("ringbolt_peer_queue_depth", "Messages queued for a peer",
                                   labels=["peer"])
        dropped = CounterMetricFamily("ringbolt_peer_dropped", "Messages dropped for a peer",
                                      labels=["peer"])
        connected = GaugeMetricFamily("ringbolt_peer_connected", "1 if the link is up",
                                      labels=["peer"])
        link_counters = {
            "connects": "Connections dialled to a peer",
            "silence_closes": "Links closed because a peer was silent too long",
            "connect_timeouts": "Dials to a peer that timed out",
            "keepalives_sent": "Keep-alive frames sent on an idle link",
        }
        links = {name: CounterMetricFamily(f"ringbolt_peer_{name}", text, labels=["peer"])
                 for name, text in link_counters.items()}
        for peer_id, values in peers.items():
            queued.add_metric([str(peer_id)], float(values["queued"]))
            dropped.add_metric([str(peer_id)], float(values["dropped"]))
            connected.add_metric([str(peer_id)], 1.0 if values["connected"] else 0.0)
            for name, family in links.items():
                if isinstance(values.get(name), (int, float)):
                    family.add_metric([str(peer_id)], float(values[name]))
        yield from (queued, dropped, connected, *links.values())

    def _groups(self) -> Iterator[Metric]:
        status = self.node.status()
        groups: list[dict[str, Any]] = status["groups"]  # type: ignore[assignment]
        term = GaugeMetricFamily("ringbolt_group_term", "Current term", labels=["group"])
        role = GaugeMetricFamily("ringbolt_group_role",
                                 "0 follower, 1 pre-candidate, 2 candidate, 3 leader, 4 learner",
                                 labels=["group"])
        commit = GaugeMetricFamily("ringbolt_group_commit_index", "Commit index", labels=["group"])
        for group in groups:
            label = [str(group["group"])]
            term.add_metric(label, float(group["term"]))
            role.add_metric(label, float(_ROLE_VALUES.get(str(group["role"]), -1)))
            commit.add_metric(label, float(group["commit"]))
        yield from (term, role, commit)


def make_app(node: AdminSource) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def status(request: web.Request) -> web.Response:
        return web.json_response(node.status())

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


async def start_admin(node: AdminSource, address: Address) -> web.AppRunner:
    """Serve the admin app; raises OSError if the port is taken. Stop with `cleanup()`."""
    runner = web.AppRunner(make_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, address.host, address.port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
