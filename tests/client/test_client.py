"""The Python client and the DistributedSystem facade against real node processes."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ringbolt.client import AsyncClient, Client, DistributedSystem, OutcomeUnknown
from ringbolt.client.layout import Address, Layout, LayoutError
from ringbolt.client.policy import Action, classify
from ringbolt.server.process import LocalCluster, find_base_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data_dir = tmp_path_factory.mktemp("client-cluster")
    with LocalCluster(3, data_dir=data_dir, base_port=find_base_port(3), shards=4) as local:
        local.start()
        for group in range(4):
            local.wait_for_leader(group, 30.0)
        yield local


def addresses(cluster: LocalCluster) -> list[str]:
    return [f"127.0.0.1:{port}" for port in cluster.client_ports()]


def test_layout_routes_each_key_to_its_shard_leader(cluster: LocalCluster) -> None:
    with Client(addresses(cluster)) as client:
        layout = client.refresh_layout()
        for _ in range(200):  # the answering node may learn of a new leader a heartbeat late
            if layout is not None and set(layout.leaders) == {0, 1, 2, 3}:
                break
            time.sleep(0.05)
            layout = client.refresh_layout()
        assert layout is not None
        assert set(layout.addresses) == {1, 2, 3}
        assert set(layout.leaders) == {0, 1, 2, 3}
        for group, leader in layout.leaders.items():
            assert cluster.leader_of(group) == leader
        address = layout.leader_address(b"some-key")
        assert address is not None
        assert address.port in cluster.client_ports()


def test_set_get_delete_cas_incr(cluster: LocalCluster) -> None:
    with Client(addresses(cluster)) as client:
        assert client.set("k1", "v1") is True
        assert client.get("k1") == b"v1"
        assert client.cas("k1", "v1", "v2") is True
        assert client.cas("k1", "v1", "v3") is False
        assert client.get("k1") == b"v2"
        assert client.incrby("counter", 5) == 5
        assert client.delete("k1", "missing") == 1
        assert client.get("k1") is None
        assert client.set("nx-key", "a", nx=True) is True
        assert client.set("nx-key", "b", nx=True) is False


def test_pipeline_answers_in_order_across_shards(cluster: LocalCluster) -> None:
    with Client(addresses(cluster)) as client:
        pipeline = client.pipeline()
        for i in range(50):
            pipeline.set(f"p{i}", f"value{i}")
        for i in range(50):
            pipeline.get(f"p{i}")
        results = pipeline.execute()
        assert results[:50] == [b"OK"] * 50
        assert results[50:] == [f"value{i}".encode() for i in range(50)]


def test_definite_errors_reach_the_caller(cluster: LocalCluster) -> None:
    with Client(addresses(cluster)) as client:
        client.set("text", "abc")
        with pytest.raises(redis.ResponseError, match="not an integer"):
            client.incrby("text", 1)


def test_async_client(cluster: LocalCluster) -> None:
    async def scenario() -> list[object]:
        async with AsyncClient(addresses(cluster)) as client:
            await client.set("async-key", "1")
            swapped = await client.cas("async-key", "1", "2")
            return [swapped, await client.get("async-key"), await client.delete("async-key")]

    assert asyncio.run(scenario()) == [True, b"2", 1]


def test_client_survives_leader_kill(cluster: LocalCluster) -> None:
    with Client(addresses(cluster), deadline_s=20.0) as client:
        client.set("survivor", "before")
        victim = cluster.wait_for_leader(0, 10.0)
        cluster.kill(victim, signal.SIGKILL)
        try:
            # Reads retry until a new leader serves them.
            assert client.get("survivor") == b"before"
            written = 0
            for i in range(20):
                try:
                    client.set(f"after{i}", "x")
                    written += 1
                except OutcomeUnknown:
                    pass
            assert written > 0
        finally:
            cluster.restart(victim)


def test_facade_with_an_embedded_cluster() -> None:
    with DistributedSystem() as system:
        system.add_data("user:1", "Ada")
        assert system.get_data("user:1") == "Ada"
        assert system.remove_data("user:1") is True
        assert system.remove_data("user:1") is False
        assert system.get_data("user:1") is None
        moves = system.balance_load()
        assert isinstance(moves, list)
        cluster_dir = Path(system._cluster.data_dir)
    assert not cluster_dir.exists()


def test_facade_against_running_cluster_balances_leaders(cluster: LocalCluster) -> None:
    with DistributedSystem(addresses(cluster)) as system:
        system.add_data(b"bin\x00key", b"\xff\x00")
        assert system.get_data(b"bin\x00key") == b"\xff\x00"
        system.balance_load()
        leaders = [cluster.wait_for_leader(group, 10.0) for group in range(4)]
        per_node = [leaders.count(node) for node in (1, 2, 3)]
        assert max(per_node) - min(per_node) <= 1, leaders


def test_policy_classification() -> None:
    refused = redis.ConnectionError("Error 111 connecting")
    assert classify(refused, sent=False, write=True) is Action.RETRY
    assert classify(refused, sent=True, write=True) is Action.UNKNOWN
    assert classify(refused, sent=True, write=False) is Action.RETRY
    assert classify(redis.ResponseError("TRYAGAIN not executed, retry"), sent=True, write=True) is Action.RETRY
    assert classify(redis.ResponseError("TRYAGAIN outcome unknown"), sent=True, write=True) is Action.UNKNOWN
    assert classify(redis.ResponseError("BUSY queue full"), sent=True, write=True) is Action.RETRY
    assert classify(redis.ResponseError("ERR syntax error"), sent=True, write=True) is Action.RAISE


def test_layout_parsing_errors_are_typed() -> None:
    with pytest.raises(LayoutError):
        Layout.from_description("{not json")
    with pytest.raises(LayoutError):
        Layout.from_description('{"shards": 0, "node_id": 1, "client_address": "h:1"}')
    with pytest.raises(ValueError):
        Address.parse("no-port")


def test_policy_understands_redis_py_exception_classes() -> None:
    from redis.exceptions import TryAgainError

    lost = TryAgainError("shard 0: the leader changed during the read; retry")
    assert classify(lost, sent=True, write=False) is Action.RETRY
    assert classify(TryAgainError("not executed, retry"), sent=True, write=True) is Action.RETRY
    assert classify(TryAgainError("outcome unknown"), sent=True, write=True) is Action.UNKNOWN


def test_cluster_describe_and_transfer_commands(cluster: LocalCluster) -> None:
    import json

    leader = cluster.wait_for_leader(1, 10.0)
    node = redis.Redis(port=cluster.client_port(leader))
    try:
        description = json.loads(node.execute_command("CLUSTER", "DESCRIBE"))
        assert description["node_id"] == leader
        assert description["shards"] == 4
        assert {n["id"] for n in description["nodes"]} == {1, 2, 3}
        assert [g["id"] for g in description["groups"]] == [0, 1, 2, 3]
        target = next(n for n in (1, 2, 3) if n != leader)
        assert node.execute_command("CLUSTER", "TRANSFER", 1, target) == b"OK"
        for _ in range(100):
            if cluster.leader_of(1) == target:
                break
            time.sleep(0.05)
        assert cluster.leader_of(1) == target
        with pytest.raises(redis.ResponseError, match="does not lead"):
            node.execute_command("CLUSTER", "TRANSFER", 1, leader)
        with pytest.raises(redis.ResponseError, match="not an integer"):
            node.execute_command("CLUSTER", "TRANSFER", "x", 1)
    finally:
        node.close()
