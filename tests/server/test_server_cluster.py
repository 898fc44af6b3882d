"""A real 3-node cluster (processes, TCP, fsync): clients, tools, failover, faults."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis
from server_workload import Workload, dump_logs, wait_until

from ringbolt.check.linearizability import check_history
from ringbolt.server.process import LocalCluster, fetch_json

pytestmark = pytest.mark.timeout(300)


def test_set_get_through_every_node(cluster: LocalCluster) -> None:
    clients = [redis.Redis(port=p, socket_timeout=10) for p in cluster.client_ports()]
    for writer_index, writer in enumerate(clients):
        for i in range(20):  # keys over both shards; most nodes forward to a leader
            assert writer.set(f"k{writer_index}:{i}", f"v{writer_index}:{i}") is True
    for reader in clients:
        for writer_index in range(len(clients)):
            for i in range(20):
                assert reader.get(f"k{writer_index}:{i}") == f"v{writer_index}:{i}".encode()
    assert clients[0].incr("counter") == 1
    assert clients[1].incr("counter") == 2
    assert clients[2].get("missing") is None
    with pytest.raises(redis.ResponseError):
        clients[1].incr("k0:0")  # not an integer: a deterministic refusal, not a crash
    assert clients[2].delete("k0:0", ) == 1
    assert clients[0].get("k0:0") is None


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")
def test_redis_cli(cluster: LocalCluster) -> None:
    port = str(cluster.client_ports()[1])

    def cli(*arguments: str) -> str:
        done = subprocess.run(["redis-cli", "-p", port, *arguments], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert cli("PING") == "PONG"
    assert cli("SET", "cli-key", "hello world") == "OK"
    assert cli("GET", "cli-key") == "hello world"
    assert cli("INCRBY", "cli-n", "5") == "5"


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="needs redis-benchmark")
@pytest.mark.parametrize("pipeline", [1, 16])
def test_redis_benchmark_has_no_errors(cluster: LocalCluster, pipeline: int) -> None:
    port = str(cluster.client_ports()[0])
    done = subprocess.run(
        ["redis-benchmark", "-p", port, "-t", "set,get", "-d", "100", "-n", "20000",
         "-c", "50", "-P", str(pipeline), "-q"],
        capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert any(line.startswith("SET:") for line in output.replace("\r", "\n").splitlines())
    assert not [line for line in lines if "error" in line.lower()], output


def test_admin_status_metrics_and_cluster_status(cluster: LocalCluster) -> None:
    status = fetch_json(cluster.admin_address(1), "/status")
    assert status["node_id"] == 1
    assert [g["group"] for g in status["groups"]] == [0, 1]
    leaders = {g["group"]: g["leader"] for g in status["groups"]}
    assert set(leaders.values()) <= {1, 2, 3}
    for group in (0, 1):
        leader_status = cluster.status(leaders[group])
        entry = next(g for g in leader_status["groups"] if g["group"] == group)
        assert entry["role"] == "leader"
        assert entry["commit"] >= entry["applied"] >= 1
    metrics = subprocess.run([sys.executable, "-c", "import urllib.request,sys;sys.stdout.write("
                              f"urllib.request.urlopen('http://{cluster.admin_address(2)}/metrics')"
                              ".read().decode())"], capture_output=True, text=True, timeout=30)
    assert "ringbolt_fsyncs_total" in metrics.stdout
    assert 'ringbolt_group_term{group="0"}' in metrics.stdout
    assert re.search(r'ringbolt_peer_connects_total\{peer="1"\} [1-9]', metrics.stdout)
    assert "ringbolt_writes_reproposed_total" in metrics.stdout
    base = str(cluster.base_port)
    done = subprocess.run([sys.executable, "-m", "ringbolt", "cluster", "status", "--base-port",
                           base, "--nodes", "3", "--json"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    statuses = json.loads(done.stdout)
    assert sorted(s["node_id"] for s in statuses.values()) == [1, 2, 3]
    table = subprocess.run([sys.executable, "-m", "ringbolt", "cluster", "status", "--base-port",
                            base, "--nodes", "3"], capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    assert "leader" in table.stdout
    shard_rows = [line for line in table.stdout.splitlines()
                  if "0000000000000000-7fffffffffffffff" in line
                  or "8000000000000000-ffffffffffffffff" in line]
    assert len(shard_rows) == 2, table.stdout  # the two shards' ranges
    for row in shard_rows:  # three replicas, a leader among them
        replicas = re.search(r"\b([123]),([123]),([123])\b", row)
        assert replicas is not None and len(set(replicas.groups())) == 3, row


def test_cluster_status_reports_an_unreachable_node(cluster: LocalCluster) -> None:
    done = subprocess.run([sys.executable, "-m", "ringbolt", "cluster", "status",
                           "--address", cluster.admin_address(1), "--address", "127.0.0.1:9"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith("error: node at 127.0.0.1:9 is unreachable")
    assert "leader" in done.stdout  # the reachable node is still shown


def test_cluster_status_given_a_client_port_says_so(cluster: LocalCluster) -> None:
    """A RESP port is not an admin port: a one-line error, no traceback."""
    client = f"127.0.0.1:{cluster.client_ports()[0]}"
    done = subprocess.run([sys.executable, "-m", "ringbolt", "cluster", "status",
                           "--address", client], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"error: node at {client} is unreachable: {client} does not "
                                "answer HTTP"), errors[0]
    assert "admin address" in errors[0]


def run_faults(cluster: LocalCluster, duration_s: float, kills: int, seed: int) -> None:
    """Workload on every node while the leader of group 0 is SIGKILLed `kills` times."""
    workload = Workload(cluster.client_ports(), seed)
    rng = random.Random(seed)

    async def nemesis() -> None:
        gap_s = duration_s / (kills + 1)
        for _ in range(kills):
            await asyncio.sleep(gap_s * (0.6 + 0.4 * rng.random()))
            victim = await asyncio.to_thread(cluster.wait_for_leader, 0, 15.0)
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim, signal.SIGKILL)
            # a new leader is elected among the survivors and writes continue
            leader = await asyncio.to_thread(cluster.wait_for_leader, 0, 15.0)
            assert leader != victim
            for _ in range(200):
                if workload.last_ok_at > killed_at:
                    break
                await asyncio.sleep(0.05)
            assert workload.last_ok_at > killed_at, "no write succeeded after the failover"
            await asyncio.sleep(1.0 + rng.random())
            await asyncio.to_thread(cluster.restart, victim)

    async def scenario() -> None:
        await asyncio.gather(workload.run(clients=6, duration_s=duration_s), nemesis())

    try:
        asyncio.run(scenario())
        for node in cluster.node_ids():
            cluster.wait_caught_up(node, 0, 30.0)
            cluster.wait_caught_up(node, 1, 30.0)
        missing = asyncio.run(workload.missing_ledger_keys(cluster.client_ports()[0]))
    except Exception:
        print(dump_logs(cluster))
        raise
    print(f"ops: {workload.counts}, ledger writes acknowledged: {len(workload.ledger)}")
    assert workload.counts["ok"] > 100
    assert len(workload.ledger) > 10
    assert missing == [], f"acknowledged writes lost: {missing[:10]}"
    result = check_history(workload.history, time_limit_s=60.0)
    if not result.valid:
        workload.history.to_jsonl(cluster.data_dir / "history.jsonl")
        (cluster.data_dir / "errors.txt").write_text(
            "".join(f"{op + 1} {text}\n" for op, text in sorted(workload.errors.items())))
        print(dump_logs(cluster))
    assert result.valid, (cluster.data_dir / "history.jsonl", result.violations[:3])
    wait_until(lambda: all(cluster.alive(n) for n in cluster.node_ids()), 5.0, "all nodes up")


def test_leader_kill_restart_catch_up(cluster: LocalCluster) -> None:
    run_faults(cluster, duration_s=15.0, kills=2, seed=11)


@pytest.mark.slow
def test_sixty_second_fault_run(cluster: LocalCluster) -> None:
    run_faults(cluster, duration_s=60.0, kills=3, seed=23)


def test_leadership_transfers_are_invisible_to_clients(cluster: LocalCluster) -> None:
    """Writes that meet a transfer wait for the new leader instead of failing,
    so a client without retries (like redis-benchmark) sees no error."""
    errors: list[str] = []
    written = 0
    stop = threading.Event()

    def writer(port: int) -> None:
        nonlocal written
        connection = redis.Redis(port=port, socket_timeout=10)
        for i in itertools.count():
            if stop.is_set() or i > 100_000:
                break
            try:
                connection.set(f"transfer:{port}:{i}", "x")
                written += 1
            except redis.RedisError as error:
                errors.append(str(error))
        connection.close()

    threads = [threading.Thread(target=writer, args=(port,)) for port in cluster.client_ports()]
    for thread in threads:
        thread.start()
    moved = 0
    try:
        for round_ in range(8):
            time.sleep(0.4)
            leader = cluster.wait_for_leader(0, 10.0)
            target = [n for n in cluster.node_ids() if n != leader][round_ % 2]
            connection = redis.Redis(port=cluster.client_port(leader), socket_timeout=10)
            with contextlib.suppress(redis.ResponseError):  # lost the lead meanwhile
                connection.execute_command("CLUSTER", "TRANSFER", 0, target)
                moved += 1
            connection.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert moved >= 4 and written > 100
    assert errors == [], errors[:5]


@pytest.mark.parametrize(("arguments", "expected"), [
    (["CLUSTER", "SPLIT", "abc"], "ERR expected an integer, got 'abc'"),
    (["CLUSTER", "SPLIT", "999"], "ERR no shard 999"),
    (["CLUSTER", "SPLIT", "0", "0"], "ERR split point 0 is not inside shard 0's range"),
    (["CLUSTER", "REMOVENODE", "99"], "ERR no node 99"),
    (["CLUSTER", "REMOVENODE", "2"], "ERR node 2 still holds"),
    (["CLUSTER", "ADDNODE", "x", "h:1", "h:2"], "ERR expected an integer, got 'x'"),
    (["CLUSTER", "ADDNODE", "2", "h:1", "h:2"], "ERR node id 2 is taken"),
    (["CLUSTER", "REBALANCE", "NOW"], "ERR syntax error: CLUSTER REBALANCE [DRYRUN]"),
    (["CLUSTER", "MAP", "extra"], "ERR unknown CLUSTER subcommand or wrong arguments: MAP"),
])
def test_cluster_admin_errors_are_one_line_and_change_nothing(
        cluster: LocalCluster, arguments: list[str], expected: str) -> None:
    connection = redis.Redis(port=cluster.client_port(1), socket_timeout=30)
    before = json.loads(connection.execute_command("CLUSTER", "MAP"))
    with pytest.raises(redis.ResponseError) as caught:
        connection.execute_command(*arguments)
    assert str(caught.value).startswith(expected.removeprefix("ERR ")), str(caught.value)
    assert json.loads(connection.execute_command("CLUSTER", "MAP"))["version"] == before["version"]
    connection.close()


def test_add_node_cli_reports_an_unreachable_node(cluster: LocalCluster) -> None:
    done = subprocess.run([sys.executable, "-m", "ringbolt", "cluster", "add-node",
                           "127.0.0.1:9", "--cluster", f"127.0.0.1:{cluster.client_port(1)}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "127.0.0.1:9" in done.stderr, done.stderr


def test_a_pipelined_read_sees_the_write_before_it_on_the_connection(
        cluster: LocalCluster) -> None:
    """As in Redis, commands of one connection take effect in order, also
    when pipelined and on a node that must forward the writes."""
    for port in cluster.client_ports():
        connection = redis.Redis(port=port, socket_timeout=30)
        pipe = connection.pipeline(transaction=False)
        for i in range(200):
            pipe.set(f"order:{port}:{i}", f"v{i}")
            pipe.get(f"order:{port}:{i}")
            pipe.set(f"order:{port}:{i}", f"w{i}")
            pipe.mget(f"order:{port}:{i}", f"order:{port}:{i + 1}")
        replies = pipe.execute()
        for i in range(200):
            assert replies[4 * i + 1] == f"v{i}".encode(), (port, i)
            assert replies[4 * i + 3][0] == f"w{i}".encode(), (port, i)
        connection.close()
