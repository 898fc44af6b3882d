"""Online membership on real processes: nodes join and leave under load, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import TryAgainError
from server_workload import Workload, dump_logs

from ringbolt.check.linearizability import check_history
from ringbolt.client.admin import ClusterAdmin
from ringbolt.client.client import Client
from ringbolt.client.facade import DistributedSystem
from ringbolt.server.process import LocalCluster, find_base_port

SHARDS = 24


def cli(*arguments: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ringbolt", "cluster", *arguments],
                          capture_output=True, text=True, timeout=timeout_s)


@contextlib.contextmanager
def converged_cluster(tmp_path: Path, base_port: int, *, shards: int,
                      options: dict[str, Any] | None = None
                      ) -> Iterator[tuple[LocalCluster, list[str], ClusterAdmin]]:
    """A started 3-node cluster whose map has converged: (cluster, client
    addresses, an admin client over them)."""
    cluster = LocalCluster(3, tmp_path, base_port, shards=shards, options=options)
    with cluster:
        cluster.start()
        addresses = [f"127.0.0.1:{port}" for port in cluster.client_ports()]
        admin = ClusterAdmin(addresses)
        admin.wait_converged(60.0)
        yield cluster, addresses, admin


def test_add_two_nodes_then_remove_one_under_load(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path, find_base_port(5, start=22000), shards=SHARDS)
    with cluster:
        cluster.start()
        addresses = [f"127.0.0.1:{port}" for port in cluster.client_ports()]
        admin = ClusterAdmin(addresses)
        admin.wait_converged(60.0)
        workload = Workload(cluster.client_ports(), seed=5, keys=SHARDS)
        steps: list[str] = []

        async def changes() -> None:
            await asyncio.sleep(2.0)
            for _ in range(2):
                node = await asyncio.to_thread(cluster.add_node)
                done = await asyncio.to_thread(
                    cli, "add-node", f"127.0.0.1:{cluster.client_port(node)}",
                    "--cluster", addresses[1], "--json")
                assert done.returncode == 0, done.stderr
                steps.append(done.stdout)
                await asyncio.sleep(1.0)
            done = await asyncio.to_thread(cli, "remove-node", "1", "--cluster", addresses[1],
                                           "--json")
            assert done.returncode == 0, done.stderr
            steps.append(done.stdout)
            await asyncio.sleep(1.0)
            workload.stop()

        async def scenario() -> None:
            await asyncio.gather(workload.run(clients=6, duration_s=150.0), changes())

        try:
            asyncio.run(scenario())
            missing = asyncio.run(workload.missing_ledger_keys(cluster.client_ports()[1]))
            states = admin.wait_converged(30.0)
        except Exception:
            print(dump_logs(cluster))
            raise
        print(f"ops: {workload.counts}; steps: {steps}")
        assert workload.counts["ok"] > 200 and len(workload.ledger) > 20
        assert missing == [], f"acknowledged writes lost: {missing[:10]}"

        loads = {node: 0 for node in (2, 3, 4, 5)}
        for state in states:
            assert 1 not in state.replicas and len(state.replicas) == 3
            for node in state.replicas:
                loads[node] += 1
        mean = statistics.mean(loads.values())
        assert all(abs(load - mean) <= 0.25 * mean for load in loads.values()), loads
        leads = {node: 0 for node in loads}
        for state in admin.shard_states():
            assert state.leader in leads
            leads[state.leader] += 1
        assert max(leads.values()) - min(leads.values()) <= 2, leads  # each within ±1 of mean

        # DBSIZE and SCAN cover every shard, whichever node is asked
        written = {op["key"] for op in workload.history if op["type"] == "ok"
                   and op["f"] == "write"}
        maybe = {op["key"] for op in workload.history if op["type"] == "info"}
        for port in cluster.client_ports()[1:]:
            address = f"127.0.0.1:{port}"
            size = int(admin.call("DBSIZE", address=address))
            assert len(written) <= size <= len(written | maybe), (address, size)
            scanned: set[str] = set()
            cursor = 0
            for _ in range(10_000):
                cursor, keys = admin.call("SCAN", cursor, "COUNT", 100, address=address)
                scanned |= {k.decode() for k in keys}
                if int(cursor) == 0:
                    break
            assert written <= scanned <= written | maybe, address

        result = check_history(workload.history, time_limit_s=60.0)
        if not result.valid:
            workload.history.to_jsonl(tmp_path / "history.jsonl")
        assert result.valid, (tmp_path / "history.jsonl", result.violations[:3])


@pytest.fixture
def small_cluster(tmp_path: Path) -> LocalCluster:
    return LocalCluster(3, tmp_path, find_base_port(4, start=23000), shards=4)


def test_rebalance_dry_run_changes_nothing_and_a_joiner_serves_every_key(
        small_cluster: LocalCluster) -> None:
    with small_cluster as cluster:
        cluster.start()
        addresses = [f"127.0.0.1:{port}" for port in cluster.client_ports()]
        admin = ClusterAdmin(addresses)
        admin.wait_converged(60.0)
        version = admin.cluster_map()["version"]
        meta_leader = admin.describe(addresses[0])["meta"]["leader"]
        seed = next(n for n in (1, 2, 3) if n != meta_leader)
        node = cluster.add_node(seeds={seed})  # its only seed does not lead the meta group
        joiner = f"127.0.0.1:{cluster.client_port(node)}"
        admin.add_node(joiner)
        dry = cli("rebalance", "--dry-run", "--json", "--cluster", addresses[0])
        assert dry.returncode == 0, dry.stderr
        assert '"dry_run": true' in dry.stdout and '"moves": [{' in dry.stdout
        assert admin.cluster_map()["version"] == version + 1  # only the AddNode
        for i in range(50):
            admin.call("SET", f"key{i}", f"value{i}", address=joiner)
        with DistributedSystem(addresses) as system:
            moves = system.balance_load()  # the facade runs the rebalance
        assert {m["kind"] for m in moves} >= {"replica"}
        assert all(m["to"] == node for m in moves if m["kind"] == "replica")
        states = admin.wait_converged(60.0)
        assert any(node in s.replicas for s in states)
        assert not all(node in s.replicas for s in states)  # so some keys are elsewhere
        deadline = time.monotonic() + 10
        for i in range(50):  # every node answers for every key, hosting it or not
            for address in [*addresses, joiner]:
                while True:
                    try:
                        value = admin.call("GET", f"key{i}", address=address)
                    except TryAgainError:  # a replica that is just joining: retry
                        value = None
                    if value == f"value{i}".encode() or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert value == f"value{i}".encode(), (address, i)


def test_split_under_load_loses_nothing_and_clients_follow(tmp_path: Path) -> None:
    with converged_cluster(tmp_path, find_base_port(3, start=24000), shards=2) as (
            cluster, addresses, admin):
        workload = Workload(cluster.client_ports(), seed=7, keys=16)
        splits: list[str] = []

        async def changes() -> None:
            await asyncio.sleep(2.0)
            for shard in (0, 1, 0):
                done = await asyncio.to_thread(cli, "split", str(shard), "--cluster",
                                               addresses[shard % 3], "--json")
                assert done.returncode == 0, done.stderr
                splits.append(done.stdout)
                await asyncio.sleep(1.5)
            workload.stop()

        smart_errors: list[str] = []
        smart_written: dict[str, str] = {}

        def smart_client() -> None:
            """The Python client: retries what was not executed, follows the map."""
            client = Client(addresses)
            try:
                for i in itertools.count():
                    if workload.stopped:
                        break
                    key, value = f"smart:{i % 300}", f"v{i}"
                    try:
                        client.set(key, value)
                        smart_written[key] = value
                        assert client.get(key) == value.encode()
                    except Exception as error:  # noqa: BLE001 - counted and asserted
                        smart_errors.append(repr(error))
            finally:
                client.close()

        async def scenario() -> None:
            await asyncio.gather(workload.run(clients=6, duration_s=120.0), changes(),
                                 asyncio.to_thread(smart_client))

        try:
            asyncio.run(scenario())
            missing = asyncio.run(workload.missing_ledger_keys(cluster.client_ports()[2]))
            states = admin.wait_converged(30.0)
        except Exception:
            print(dump_logs(cluster))
            raise
        print(f"ops: {workload.counts}; splits: {splits}")
        cluster_map = admin.cluster_map()
        assert sorted(s["id"] for s in cluster_map["shards"]) == [0, 1, 2, 3, 4]
        assert len(states) == 5 and all(s.leader is not None for s in states)
        assert workload.counts["ok"] > 200 and len(workload.ledger) > 20
        assert workload.counts["info"] == 0  # every failure was a definite "not executed"
        assert missing == [], f"acknowledged writes lost: {missing[:10]}"
        assert smart_errors == [], smart_errors[:5]
        assert len(smart_written) == 300
        # every key lives in exactly one shard: no copy was left behind in a parent
        written = {op["key"] for op in workload.history if op["type"] == "ok"
                   and op["f"] == "write"} | set(smart_written)
        for address in addresses:
            assert int(admin.call("DBSIZE", address=address)) == len(written)
        result = check_history(workload.history, time_limit_s=60.0)
        if not result.valid:
            workload.history.to_jsonl(tmp_path / "history.jsonl")
        assert result.valid, (tmp_path / "history.jsonl", result.violations[:3])


def test_a_node_down_for_good_is_replaced(tmp_path: Path) -> None:
    with converged_cluster(tmp_path, find_base_port(5, start=25000), shards=6) as (
            cluster, addresses, admin):
        for i in range(100):
            admin.call("SET", f"key{i}", f"value{i}")
        cluster.kill(2, signal.SIGKILL)  # gone for good, disk and all
        survivors = [addresses[0], addresses[2]]
        node = cluster.add_node()  # its replacement
        joiner = f"127.0.0.1:{cluster.client_port(node)}"
        done = cli("add-node", joiner, "--no-rebalance", "--cluster", survivors[0], "--json")
        assert done.returncode == 0, done.stderr
        done = cli("remove-node", "2", "--cluster", survivors[0], "--json")
        assert done.returncode == 0, done.stderr
        moves = json.loads(done.stdout)["moves"]
        assert moves and all(m["from"] == 2 and m["to"] == node for m in moves)
        states = ClusterAdmin(survivors).wait_converged(30.0)
        assert all(set(s.replicas) == {1, 3, node} for s in states)
        for i in range(100):
            for address in [*survivors, joiner]:
                assert admin.call("GET", f"key{i}", address=address) == f"value{i}".encode()


def test_a_restarted_node_knows_the_nodes_that_joined_before_it_stopped(
        tmp_path: Path) -> None:
    """A node's config lists only the peers it was created with; the others
    come from the cluster map. After a restart it must take their addresses
    from the map it stored, or it refuses their connections and, when one of
    them leads a group it is in, never hears from that group again (found by
    a Jepsen run: replace, then kill an old node)."""
    with converged_cluster(tmp_path, find_base_port(4, start=26500), shards=3) as (
            cluster, addresses, admin):
        node = cluster.add_node()
        joiner = f"127.0.0.1:{cluster.client_port(node)}"
        done = cli("add-node", joiner, "--cluster", addresses[0], "--json")
        assert done.returncode == 0, done.stderr
        ClusterAdmin([*addresses, joiner]).wait_converged(60.0)
        assert cluster.status(1)["peers"][str(node)]["connected"] is True
        cluster.restart(1)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            peers = cluster.status(1)["peers"]
            if peers.get(str(node), {}).get("connected"):
                break
            time.sleep(0.2)
        assert cluster.status(1)["peers"].get(str(node), {}).get("connected") is True, (
            cluster.status(1)["peers"])


def test_big_shards_split_and_leaders_spread_by_themselves(tmp_path: Path) -> None:
    cluster = LocalCluster(3, tmp_path, find_base_port(3, start=26000), shards=4,
                           options={"split_keys_max": 60})
    with cluster:
        cluster.start()
        addresses = [f"127.0.0.1:{port}" for port in cluster.client_ports()]
        admin = ClusterAdmin(addresses)
        states = admin.wait_converged(60.0)
        for state in states:  # crowd every leadership onto node 1
            if state.leader != 1:
                with contextlib.suppress(redis.ResponseError):
                    admin.call("CLUSTER", "TRANSFER", state.shard, 1,
                               address=addresses[state.leader - 1])
        client = Client(addresses)
        for i in range(400):
            client.set(f"key{i}", f"value{i}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = admin.wait_converged(30.0)
            leads = [sum(s.leader == n for s in states) for n in (1, 2, 3)]
            if len(states) >= 7 and max(leads) - min(leads) <= 1:
                break
            time.sleep(0.5)
        assert len(states) >= 7, f"no automatic split: {len(states)} shards"
        assert max(leads) - min(leads) <= 1, leads
        assert all(client.get(f"key{i}") == f"value{i}".encode() for i in range(400))
        assert int(admin.call("DBSIZE")) == 400
        client.close()


@pytest.mark.slow
def test_membership_soak(tmp_path: Path) -> None:
    """Nodes come and go and shards split, round after round, under load."""
    cluster = LocalCluster(3, tmp_path, find_base_port(9, start=20000), shards=8)
    with cluster:
        cluster.start()
        addresses = {n: f"127.0.0.1:{cluster.client_port(n)}" for n in (1, 2, 3)}
        admin = ClusterAdmin(list(addresses.values()))
        admin.wait_converged(60.0)
        workload = Workload(cluster.client_ports(), seed=11, keys=24)
        log: list[str] = []

        async def changes() -> None:
            for round_ in range(5):
                node = await asyncio.to_thread(cluster.add_node)
                addresses[node] = f"127.0.0.1:{cluster.client_port(node)}"
                entry = next(iter(addresses.values()))
                done = await asyncio.to_thread(cli, "add-node", addresses[node], "--cluster",
                                               entry, "--json")
                assert done.returncode == 0, done.stderr
                shard = round_ % 8
                done = await asyncio.to_thread(cli, "split", str(shard), "--cluster", entry)
                assert done.returncode == 0, done.stderr
                victim = min(addresses)
                del addresses[victim]
                entry = next(iter(addresses.values()))
                done = await asyncio.to_thread(cli, "remove-node", str(victim), "--cluster",
                                               entry, "--json")
                assert done.returncode == 0, done.stderr
                await asyncio.to_thread(cluster.kill, victim, signal.SIGTERM)
                log.append(f"round {round_}: +{node} split {shard} -{victim}")
            workload.stop()

        async def scenario() -> None:
            await asyncio.gather(workload.run(clients=6, duration_s=600.0), changes())

        try:
            asyncio.run(scenario())
            port = int(next(iter(addresses.values())).rpartition(":")[2])
            missing = asyncio.run(workload.missing_ledger_keys(port))
            states = ClusterAdmin(list(addresses.values())).wait_converged(60.0)
        except Exception:
            print(dump_logs(cluster))
            raise
        print(f"ops: {workload.counts}; {log}")
        assert len(states) == 13 and missing == []
        assert workload.counts["ok"] > 1000
        result = check_history(workload.history, time_limit_s=120.0)
        if not result.valid:
            workload.history.to_jsonl(tmp_path / "history.jsonl")
        assert result.valid, (tmp_path / "history.jsonl", result.violations[:3])


def test_concurrent_splits_get_distinct_shards(tmp_path: Path) -> None:
    with converged_cluster(tmp_path, find_base_port(3, start=27000), shards=4,
                           options={"split_keys_max": 0}) as (cluster, addresses, admin):
        client = Client(addresses)
        for i in range(300):
            client.set(f"key{i}", f"value{i}")
        results: dict[int, dict[str, object]] = {}

        def split(shard: int) -> None:
            results[shard] = ClusterAdmin([addresses[shard]]).split(shard)

        threads = [threading.Thread(target=split, args=(shard,)) for shard in (0, 1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        children = sorted(int(str(r["child"])) for r in results.values())
        assert len(children) == 3 and len(set(children)) == 3, results
        states = admin.wait_converged(30.0)
        assert sorted(s.shard for s in states) == [0, 1, 2, 3, *children]
        assert all(client.get(f"key{i}") == f"value{i}".encode() for i in range(300))
        assert int(admin.call("DBSIZE")) == 300
        client.close()
