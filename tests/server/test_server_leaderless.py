"""A write that arrives while its shard has no leader waits (bounded) for the
election instead of failing at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from ringbolt.server.process import LocalCluster, find_base_port

pytestmark = pytest.mark.timeout(120)


def test_writes_during_the_first_election_wait_for_a_leader(tmp_path: Path) -> None:
    with LocalCluster(3, tmp_path, find_base_port(3, start=23000), shards=4) as cluster:
        cluster.start()  # waits for health, not for leaders
        clients = [redis.Redis(port=port, socket_timeout=10) for port in cluster.client_ports()]
        try:
            # Right after start most shards have no leader yet: every write must
            # still succeed, on every node, without the client retrying.
            for i in range(40):
                assert clients[i % 3].set(f"early{i}", str(i)) is True
            for i in range(40):
                assert clients[(i + 1) % 3].get(f"early{i}") == str(i).encode()
        finally:
            for client in clients:
                client.close()
