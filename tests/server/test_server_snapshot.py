"""Log compaction on real nodes: a follower that missed a compacted stretch of
the log catches up by snapshot; a node restarts from snapshot metadata + store."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.request import urlopen

import pytest
import redis
from server_workload import dump_logs

from ringbolt.server import limits
from ringbolt.server.process import LocalCluster, find_base_port

pytestmark = pytest.mark.timeout(240)

KEYS = int(limits.compact_every_entries * 1.5)


def load(port: int, prefix: str) -> None:
    client = redis.Redis(port=port, socket_timeout=30)
    for start in range(0, KEYS, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 1000, KEYS)):
            pipe.set(f"{prefix}{i}", f"value-{i}")
        assert all(pipe.execute())


def check(port: int, prefix: str) -> None:
    client = redis.Redis(port=port, socket_timeout=30)
    for start in range(0, KEYS, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 1000, KEYS)):
            pipe.get(f"{prefix}{i}")
        values = pipe.execute()
        expected = [f"value-{i}".encode() for i in range(start, min(start + 1000, KEYS))]
        assert values == expected


def test_lagging_follower_catches_up_by_snapshot_and_restarts_keep_data(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path, find_base_port(3, start=31000), shards=1)
    with cluster:
        try:
            cluster.start()
            leader = cluster.wait_for_leader(0, 30.0)
            follower = next(n for n in cluster.node_ids() if n != leader)
            cluster.kill(follower, signal.SIGKILL)
            load(cluster.client_port(leader), "a:")  # the leader compacts past the follower
            status = cluster.status(leader)
            assert status["groups"][0]["commit"] > limits.compact_every_entries
            cluster.restart(follower)
            cluster.wait_caught_up(follower, 0, 60.0)
            check(cluster.client_port(follower), "a:")
            metrics = urlopen(f"http://{cluster.admin_address(follower)}/metrics").read()
            assert b'ringbolt_group_snapshots_installed_total{group="0"} 1.0' in metrics
            # every node restarts from its WAL (snapshot metadata) and its store
            for node in cluster.node_ids():
                cluster.kill(node, signal.SIGKILL)
            for node in cluster.node_ids():
                cluster.restart(node)
            cluster.wait_for_leader(0, 30.0)
            for node in cluster.node_ids():
                cluster.wait_caught_up(node, 0, 60.0)
                check(cluster.client_port(node), "a:")
        except Exception:
            print(dump_logs(cluster))
            raise
