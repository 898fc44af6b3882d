"""Start, stop, kill and inspect a local cluster of real node processes.

Theory of operation
-------------------
`LocalCluster(n, data_dir, base_port, shards)` writes one config per node and
runs each node as ``python -m ringbolt serve --config ...`` in its own process
group (so a Ctrl-C aimed at the caller does not reach the nodes; the cluster
stops them itself, cleanly). Port layout for node i (1-based) and base port P:

    RESP  P + i - 1      peer  P + 100 + i - 1      admin  P + 200 + i - 1

Node i keeps its data in ``data_dir/node<i>/`` and its log in
``data_dir/node<i>.log``. Everything that waits is bounded by a timeout.
The admin endpoint (`/health`, `/status`) tells when a node is up and who
leads a group. `LocalCluster` is used by `ringbolt cluster up`, the demo, the
tests and the benchmarks; it only ever signals processes it started.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ringbolt.server.config import Address, NodeConfig, PeerConfig, render_config

PEER_PORT_OFFSET = 100
ADMIN_PORT_OFFSET = 200
HOST = "127.0.0.1"


class ClusterError(Exception):
    """A node did not come up, died, or no leader emerged in time."""


def port_layout(node: int, base_port: int) -> tuple[int, int, int]:
    """(client, peer, admin) ports of 1-based `node`."""
    return (base_port + node - 1, base_port + PEER_PORT_OFFSET + node - 1,
            base_port + ADMIN_PORT_OFFSET + node - 1)


def ports_free(nodes: int, base_port: int) -> bool:
    for node in range(1, nodes + 1):
        for port in port_layout(node, base_port):
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((HOST, port))
                except OSError:
                    return False
    return True


def find_base_port(nodes: int, start: int = 20000, stop: int = 32000, step: int = 317) -> int:
    """A base port whose whole layout is free right now (bounded search). It
    stays below Linux's ephemeral range (32768+): a port in that range may be
    taken at any moment by some outgoing connection, e.g. a peer dial."""
    for base in range(start, stop, step):
        if ports_free(nodes, base):
            return base
    raise ClusterError("no free port range found")


def fetch_json(address: str, path: str, timeout_s: float = 2.0) -> Any:
    """GET http://address/path as JSON; raises OSError/ValueError when unreachable
    or when what answers is not an admin HTTP server (e.g. a RESP client port)."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout_s) as response:
            return json.loads(response.read())
    except http.client.HTTPException as error:
        raise ValueError(f"{address} does not answer HTTP ({type(error).__name__}: "
                         f"{str(error).strip()[:80]}); is it the node's admin address?") from None


class LocalCluster:
    def __init__(self, nodes: int, data_dir: Path, base_port: int = 7379, shards: int = 1, *,
                 fsync: bool = True, requirepass: str | None = None,
                 log_level: str = "info", replicas: int = 3,
                 options: dict[str, Any] | None = None) -> None:
        assert 1 <= nodes <= 64
        self.nodes = nodes
        self.initial_nodes = nodes
        """Nodes 1..initial_nodes bootstrap the cluster; later ones join it."""
        self.data_dir = Path(data_dir).resolve()
        self.base_port = base_port
        self.shards = shards
        self.fsync = fsync
        self.requirepass = requirepass
        self.log_level = log_level
        self.replicas = replicas
        self.seeds: dict[int, set[int]] = {}
        self.options = dict(options or {})
        """Further `NodeConfig` fields for every node (e.g. split_keys_max)."""
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, IO[bytes]] = {}

    # -- layout -----------------------------------------------------------------

    def node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))

    def client_ports(self) -> list[int]:
        return [port_layout(n, self.base_port)[0] for n in self.node_ids()]

    def client_port(self, node: int) -> int:
        return port_layout(node, self.base_port)[0]

    def admin_address(self, node: int) -> str:
        return f"{HOST}:{port_layout(node, self.base_port)[2]}"

    def config_path(self, node: int) -> Path:
        return self.data_dir / f"node{node}.toml"

    def log_path(self, node: int) -> Path:
        return self.data_dir / f"node{node}.log"

    def config(self, node: int) -> NodeConfig:
        """Initial nodes list each other (the same list on every one of them, so
        they derive the same initial map); a joining node lists the nodes
        running when it was added as its seeds."""
        peers = {}
        seeds = set(range(1, self.initial_nodes + 1))
        if node > self.initial_nodes:  # a joiner: the running nodes are its seeds
            seeds = self.seeds.get(node) or {n for n in self.node_ids() if self.alive(n)} or seeds
        for other in sorted({*seeds, node}):
            client, peer, admin = port_layout(other, self.base_port)
            peers[other] = PeerConfig(node_id=other, address=Address(HOST, peer),
                                      client_address=Address(HOST, client),
                                      admin_address=Address(HOST, admin))
        own = peers.pop(node)
        assert own.admin_address is not None and own.client_address is not None
        return NodeConfig(node_id=node, client_address=own.client_address,
                          peer_address=own.address, admin_address=own.admin_address,
                          data_dir=self.data_dir / f"node{node}", peers=peers,
                          shards=self.shards, fsync=self.fsync, requirepass=self.requirepass,
                          log_level=self.log_level, join=node > self.initial_nodes,
                          replicas=self.replicas, **self.options)

    def write_configs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for node in self.node_ids():
            self.config_path(node).write_text(render_config(self.config(node)))

    # -- processes ------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        self.write_configs()
        for node in self.node_ids():
            self._spawn(node)
        for node in self.node_ids():
            self.wait_healthy(node, timeout_s)

    def add_node(self, timeout_s: float = 30.0, seeds: set[int] | None = None) -> int:
        """Start one more node with `join = true` (its `[peers.*]`: `seeds`, by
        default every running node); returns its id. It holds nothing until
        `ringbolt cluster add-node` (or `ClusterAdmin.add_node`) registers it."""
        self.nodes += 1
        node = self.nodes
        if seeds:
            self.seeds[node] = set(seeds)
        self.config_path(node).write_text(render_config(self.config(node)))
        self._spawn(node)
        self.wait_healthy(node, timeout_s)
        return node

    def _spawn(self, node: int) -> None:
        assert node not in self.processes or self.processes[node].poll() is not None
        log = open(self.log_path(node), "ab")  # noqa: SIM115 - closed in _reap
        self._logs[node] = log
        self.processes[node] = subprocess.Popen(
            [sys.executable, "-m", "ringbolt", "serve", "--config", str(self.config_path(node))],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def alive(self, node: int) -> bool:
        process = self.processes.get(node)
        return process is not None and process.poll() is None

    def exited(self) -> dict[int, int]:
        """Nodes whose process has exited, with their exit codes."""
        result = {}
        for node, process in self.processes.items():
            code = process.poll()
            if code is not None:
                result[node] = code
        return result

    def pid(self, node: int) -> int | None:
        process = self.processes.get(node)
        return None if process is None else process.pid

    def wait_healthy(self, node: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive(node):
                raise ClusterError(f"node {node} exited during startup (code "
                                   f"{self.processes[node].poll()}); see {self.log_path(node)}")
            with contextlib.suppress(OSError, ValueError):
                fetch_json(self.admin_address(node), "/status", timeout_s=1.0)
                return
            time.sleep(0.05)
        raise ClusterError(f"node {node} not healthy after {timeout_s:g} s; "
                           f"see {self.log_path(node)}")

    def kill(self, node: int, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> None:
        process = self.processes.get(node)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
        self._reap(node)

    def restart(self, node: int, timeout_s: float = 30.0) -> None:
        self.kill(node, signal.SIGTERM)
        self._spawn(node)
        self.wait_healthy(node, timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
            self._reap(node)

    def _reap(self, node: int) -> None:
        log = self._logs.pop(node, None)
        if log is not None:
            log.close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    # -- inspection -----------------------------------------------------------------

    def status(self, node: int, timeout_s: float = 2.0) -> dict[str, Any]:
        result: dict[str, Any] = fetch_json(self.admin_address(node), "/status", timeout_s)
        return result

    def leader_of(self, group: int = 0) -> int | None:
        """The leader of `group` agreed by the live nodes that know one (highest term)."""
        best: tuple[int, int] | None = None
        for node in self.node_ids():
            if not self.alive(node):
                continue
            try:
                status = self.status(node, timeout_s=1.0)
            except (OSError, ValueError):
                continue
            for entry in status["groups"]:
                if (entry["group"] == group and entry["role"] == "leader"
                        and (best is None or entry["term"] > best[0])):
                    best = (entry["term"], node)
        return None if best is None else best[1]

    def wait_for_leader(self, group: int = 0, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader_of(group)
            if leader is not None:
                return leader
            time.sleep(0.05)
        raise ClusterError(f"no leader for group {group} after {timeout_s:g} s")

    def wait_caught_up(self, node: int, group: int = 0, timeout_s: float = 30.0) -> None:
        """Wait until `node` has applied everything the leader had committed when asked."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader_of(group)
            with contextlib.suppress(OSError, ValueError, KeyError):
                if leader is not None:
                    target = _group(self.status(leader), group)["commit"]
                    if _group(self.status(node), group)["applied"] >= target:
                        return
            time.sleep(0.05)
        raise ClusterError(f"node {node} did not catch up on group {group} in {timeout_s:g} s")


def _group(status: dict[str, Any], group: int) -> dict[str, Any]:
    for entry in status["groups"]:
        if entry["group"] == group:
            return dict(entry)
    raise KeyError(group)
