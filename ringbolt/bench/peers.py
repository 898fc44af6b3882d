"""Start and stop the systems `ringbolt bench compare` measures.

Theory of operation
-------------------
Each system is a context manager factory taking a scratch directory and
yielding the RESP addresses to load. It starts its processes on 127.0.0.1
and free ports, waits (bounded) until they answer, and on exit stops exactly
the processes it started (SIGTERM, then SIGKILL after a grace period).

A system that cannot be run here raises `Skipped` with the reason before
starting anything; `compare` prints the reason and goes on. Only systems
speaking RESP are driven by the load generator, so the same client measures
every system; etcd, ZooKeeper and PySyncObj would each need their own
client driver; etcd is driven through its v3 JSON gateway over HTTP/1.1
keep-alive connections by the same load generator (`protocol="etcd"`);
PySyncObj has no client protocol, so each of its 3 processes runs
`ringbolt.bench.pysyncobj_node` (a RESP front end over a ReplDict);
ZooKeeper is started and driven (with kazoo) by `ringbolt.bench.zookeeper`
(see docs/benchmarks.md).

    ringbolt   3 nodes via LocalCluster, one shard, fsync on; clients are
               spread over all nodes (followers forward writes).
    redis-aof-always  Debian redis-server, --appendonly yes --appendfsync always
    redis-aof-off     Debian redis-server, no AOF and no RDB snapshots
    etcd       3 members of Debian etcd-server (3.4), defaults (fsync on)
    pysyncobj  3 PySyncObj processes with a RESP front end (no fsync)
    zookeeper  3 servers of Debian zookeeper (3.8), defaults (fsync on), kazoo
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

Address = tuple[str, int]
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0


class Skipped(Exception):
    """This system cannot be measured here; the message says why."""


_handed_out: set[int] = set()


def free_port() -> int:
    """A bindable port below Linux's ephemeral range (32768+), never handed out
    twice by this process: a port from the ephemeral range can be taken by an
    outgoing peer connection before the server that should listen on it binds."""
    for port in range(20_000 + os.getpid() % 3_000 * 3, 32_000):
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise Skipped("no free port below 32000")


def ping(address: Address, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_ping(address: Address, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Skipped(f"process exited with status {process.returncode}")
        if ping(address):
            return
        time.sleep(0.05)
    raise Skipped(f"{address[0]}:{address[1]} did not answer PING in {timeout_s:.0f}s")


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace_s)


def apt_install(package: str, installed: Callable[[], bool]) -> bool:
    """Install a Debian package when running as root with apt-get; on a fresh
    machine (no package lists yet) run `apt-get update` once and try again.
    True when `installed()` holds afterwards."""
    if installed():
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", package], ["apt-get", "update"],
                    ["apt-get", "install", "-y", package]):
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=900, env=environment)
        if command[1] == "install" and installed():
            return True
    return False


def redis_server_path() -> str:
    if apt_install("redis-server", lambda: shutil.which("redis-server") is not None):
        found = shutil.which("redis-server")
        assert found is not None
        return found
    raise Skipped("redis-server is not installed and could not be (apt-get install -y "
                  "redis-server, as root)")


@contextmanager
def redis(scratch: Path, aof_always: bool) -> Iterator[list[Address]]:
    binary = redis_server_path()
    port = free_port()
    scratch.mkdir(parents=True, exist_ok=True)
    persistence = (["--appendonly", "yes", "--appendfsync", "always"] if aof_always
                   else ["--appendonly", "no"])
    command = [binary, "--bind", HOST, "--port", str(port), "--dir", str(scratch),
               "--save", "", "--daemonize", "no", "--protected-mode", "no", *persistence]
    log = open(scratch / "redis.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ping((HOST, port), process, START_TIMEOUT_S)
        yield [(HOST, port)]
    finally:
        stop_process(process)
        log.close()


@contextmanager
def ringbolt(scratch: Path) -> Iterator[list[Address]]:
    from ringbolt.server.process import ClusterError, LocalCluster, find_base_port

    try:
        cluster = LocalCluster(3, scratch, base_port=find_base_port(3), shards=1, fsync=True)
    except ClusterError as error:
        raise Skipped(str(error)) from error
    with cluster:
        cluster.start(START_TIMEOUT_S)
        cluster.wait_for_leader(0, START_TIMEOUT_S)
        yield [(HOST, port) for port in cluster.client_ports()]


def etcd_path() -> str:
    if apt_install("etcd-server", lambda: shutil.which("etcd") is not None):
        found = shutil.which("etcd")
        assert found is not None
        return found
    raise Skipped("etcd is not installed and could not be (apt-get install -y etcd-server, "
                  "as root)")


def etcd_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1.0) as reply:
            return b'"true"' in reply.read()
    except OSError:
        return False


@contextmanager
def etcd(scratch: Path) -> Iterator[list[Address]]:
    binary = etcd_path()
    members = [(f"m{i}", free_port(), free_port()) for i in range(1, 4)]
    initial = ",".join(f"{name}=http://{HOST}:{peer}" for name, _, peer in members)
    processes: list[subprocess.Popen[bytes]] = []
    log = open(scratch / "etcd.log", "wb")  # noqa: SIM115 - closed below
    try:
        for name, client, peer in members:
            processes.append(subprocess.Popen(
                [binary, "--name", name, "--data-dir", str(scratch / name),
                 "--listen-client-urls", f"http://{HOST}:{client}",
                 "--advertise-client-urls", f"http://{HOST}:{client}",
                 "--listen-peer-urls", f"http://{HOST}:{peer}",
                 "--initial-advertise-peer-urls", f"http://{HOST}:{peer}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", "ringbolt-bench", "--log-level", "error"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(etcd_healthy(client) for _, client, _ in members):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise Skipped("etcd cluster did not become healthy (see etcd.log)")
            time.sleep(0.2)
        yield [(HOST, client) for _, client, _ in members]
    finally:
        for process in processes:
            stop_process(process)
        log.close()


@contextmanager
def pysyncobj(scratch: Path) -> Iterator[list[Address]]:
    if importlib.util.find_spec("pysyncobj") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pysyncobj==0.3.17"],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=600)
        importlib.invalidate_caches()
        if importlib.util.find_spec("pysyncobj") is None:
            raise Skipped("pysyncobj is not installed and pip could not install it")
    nodes = [(free_port(), free_port()) for _ in range(3)]
    processes: list[subprocess.Popen[bytes]] = []
    log = open(scratch / "pysyncobj.log", "wb")  # noqa: SIM115 - closed below
    try:
        for index, (client, raft) in enumerate(nodes):
            partners = [f"--partner={HOST}:{r}" for i, (_, r) in enumerate(nodes) if i != index]
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "ringbolt.bench.pysyncobj_node", "--port", str(client),
                 "--self", f"{HOST}:{raft}", *partners],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True))
        for process, (client, _) in zip(processes, nodes, strict=True):
            wait_ping((HOST, client), process, START_TIMEOUT_S)
        yield [(HOST, client) for client, _ in nodes]
    finally:
        for process in processes:
            stop_process(process)
        log.close()


def zookeeper(scratch: Path) -> AbstractContextManager[list[Address]]:
    from ringbolt.bench.zookeeper import ensemble  # imports this module

    return ensemble(scratch)


def unsupported(reason: str) -> Callable[[Path], AbstractContextManager[list[Address]]]:
    @contextmanager
    def start(scratch: Path) -> Iterator[list[Address]]:
        raise Skipped(reason)
        yield []  # pragma: no cover - unreachable, makes this a generator

    return start


NO_DRIVER = ("needs its own client driver (the load generator speaks RESP only); "
             "not implemented yet")

SYSTEMS: dict[str, Callable[[Path], AbstractContextManager[list[Address]]]] = {
    "ringbolt": ringbolt,
    "redis-aof-always": lambda scratch: redis(scratch, aof_always=True),
    "redis-aof-off": lambda scratch: redis(scratch, aof_always=False),
    "etcd": etcd,
    "zookeeper": zookeeper,
    "pysyncobj": pysyncobj,
}

# The load generator's wire protocol per system (default RESP).
PROTOCOL = {"etcd": "etcd", "zookeeper": "zookeeper"}
