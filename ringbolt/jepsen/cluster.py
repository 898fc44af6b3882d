"""Node processes inside the test namespaces.

Theory of operation
-------------------
`NamespaceCluster(network, work_dir, log_dir)` writes one `NodeConfig` per node
(every node on its namespace address, fixed ports: RESP 6379, peer 7000, admin
8000; every node a replica of the shard, up to `REPLICAS_MAX`) and starts
``ip netns exec NS python -m ringbolt serve --config ...`` (`ip netns exec`
execs, so the Popen pid IS the node). An `unsafe` mutation
(test-only, to prove the checkers catch bugs) goes into each node's TOML as
``unsafe = [...]``; the node passes it to every group's Raft config.

Signals go only to processes this object started: `kill` (SIGKILL),
`pause`/`resume` (SIGSTOP/SIGCONT), `start` again after a kill. Node logs are
appended to ``log_dir/n<i>.log`` across restarts. `stop_all` kills what is
left (CONT first, so a paused node can die). Leader and progress come from
the admin `/status` of each node, each call bounded by a short timeout.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from ringbolt.jepsen import limits
from ringbolt.jepsen.netns import TestNetwork
from ringbolt.server.config import Address, NodeConfig, PeerConfig, render_config
from ringbolt.server.process import fetch_json
from ringbolt.server.service import DEFAULT_ADMIN_NETWORKS

CLIENT_PORT = 6379
PEER_PORT = 7000
ADMIN_PORT = 8000
REPLICAS_MAX = 7
"""Replicas per shard a node config accepts: every node replicates the shard
(Jepsen style: each client is bound to a node that hosts the data) up to it."""


class NodeError(Exception):
    """A node did not start, or the cluster did not converge in time."""


class NamespaceCluster:
    def __init__(self, network: TestNetwork, work_dir: Path, log_dir: Path, *,
                 unsafe: frozenset[str] = frozenset(), fsync: bool = True) -> None:
        self.network = network
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.unsafe = unsafe
        self.fsync = fsync
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.paused: set[int] = set()
        self._logs: dict[int, IO[bytes]] = {}
        self._identity: dict[int, int] = {}
        """Namespace -> id of the node running there, once a node was replaced."""
        self._next_id = len(network.node_ids()) + 1
        self.splits_done = 0

    def identity(self, node: int) -> int:
        """The id of the node in namespace `node` (a replacement gets a new id)."""
        return self._identity.get(node, node)

    def data_dir(self, node: int) -> Path:
        return self.work_dir / f"n{node}"

    def rejoin(self, node: int) -> int:
        """Start a NEW node (fresh id, empty data, ``join = true``) in namespace
        `node`, the others as its seeds; returns its id."""
        assert not self.alive(node), f"node {node} is running"
        self._identity[node] = new_id = self._next_id
        self._next_id += 1
        self.config_path(node).write_text(render_config(self.config(node)))
        self.start(node)
        self.wait_up(node)
        return new_id

    def node_ids(self) -> list[int]:
        return self.network.node_ids()

    def client_address(self, node: int) -> tuple[str, int]:
        return self.network.address(node), CLIENT_PORT

    def admin_address(self, node: int) -> str:
        return f"{self.network.address(node)}:{ADMIN_PORT}"

    def config(self, node: int) -> NodeConfig:
        """Initial nodes list each other; a replacement (`rejoin`) lists the
        running nodes as seeds and joins."""
        joining = node in self._identity
        peers = {}
        for other in self.node_ids():
            if joining and other != node and not self.alive(other):
                continue
            host = self.network.address(other)
            peer_id = self.identity(other)
            peers[peer_id] = PeerConfig(node_id=peer_id, address=Address(host, PEER_PORT),
                                        client_address=Address(host, CLIENT_PORT),
                                        admin_address=Address(host, ADMIN_PORT))
        own = peers.pop(self.identity(node))
        assert own.client_address is not None
        return NodeConfig(node_id=self.identity(node), client_address=own.client_address,
                          peer_address=own.address, admin_address=own.admin_address,
                          data_dir=self.data_dir(node), peers=peers, fsync=self.fsync,
                          replicas=min(len(self.node_ids()), REPLICAS_MAX), unsafe=self.unsafe,
                          join=joining, admin_networks=(
                              *DEFAULT_ADMIN_NETWORKS,
                              f"{own.address.host.rsplit('.', 1)[0]}.0/24"))

    def config_path(self, node: int) -> Path:
        return self.work_dir / f"n{node}.toml"

    def log_path(self, node: int) -> Path:
        return self.log_dir / f"n{node}.log"

    def start_all(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for node in self.node_ids():
            self.config_path(node).write_text(render_config(self.config(node)))
            self.start(node)
        for node in self.node_ids():
            self.wait_up(node)

    def start(self, node: int) -> None:
        assert not self.alive(node), f"node {node} is running"
        self._close_log(node)
        log = open(self.log_path(node), "ab")  # noqa: SIM115 - closed in _close_log
        self._logs[node] = log
        self.processes[node] = subprocess.Popen(
            [*self.network.exec_prefix(node), sys.executable, "-m", "ringbolt", "serve",
             "--config", str(self.config_path(node))],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.paused.discard(node)

    def alive(self, node: int) -> bool:
        process = self.processes.get(node)
        return process is not None and process.poll() is None

    def status(self, node: int, timeout_s: float = 0.5) -> dict[str, Any]:
        result: dict[str, Any] = fetch_json(self.admin_address(node), "/status", timeout_s)
        return result

    def wait_up(self, node: int, timeout_s: float = limits.node_start_timeout_s) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive(node):
                raise NodeError(f"node {node} exited at startup; see {self.log_path(node)}")
            with contextlib.suppress(OSError, ValueError):
                self.status(node, timeout_s=1.0)
                return
            time.sleep(0.05)
        raise NodeError(f"node {node} not up after {timeout_s:g} s; see {self.log_path(node)}")

    def kill(self, node: int) -> None:
        process = self.processes.get(node)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait(limits.command_timeout_s)
        self.paused.discard(node)
        self._close_log(node)

    def pause(self, node: int) -> None:
        if self.alive(node):
            self.processes[node].send_signal(signal.SIGSTOP)
            self.paused.add(node)

    def resume(self, node: int) -> None:
        if node in self.paused and self.alive(node):
            self.processes[node].send_signal(signal.SIGCONT)
        self.paused.discard(node)

    def stop_all(self) -> None:
        for node in list(self.processes):
            self.resume(node)
            self.kill(node)

    def _close_log(self, node: int) -> None:
        log = self._logs.pop(node, None)
        if log is not None:
            log.close()

    # -- inspection ------------------------------------------------------------

    def leader(self, group: int = 0) -> int | None:
        """The leader of `group` with the highest term among reachable, running nodes."""
        best: tuple[int, int] | None = None
        for node in self.node_ids():
            if not self.alive(node) or node in self.paused:
                continue
            try:
                status = self.status(node)
            except (OSError, ValueError):
                continue
            for entry in status.get("groups", []):
                if (entry["group"] == group and entry["role"] == "leader"
                        and (best is None or entry["term"] > best[0])):
                    best = (entry["term"], node)
        return None if best is None else best[1]

    def converged(self, group: int = 0) -> bool:
        """A leader exists and every node has applied what it had committed."""
        leader = self.leader(group)
        if leader is None:
            return False
        try:
            target = _group(self.status(leader), group)["commit"]
            return all(_group(self.status(n), group)["applied"] >= target
                       for n in self.node_ids())
        except (OSError, ValueError, KeyError):
            return False

    def wait_converged(self, timeout_s: float = limits.converge_timeout_s) -> float:
        """Seconds until converged; raises `NodeError` after `timeout_s`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.converged():
                return time.monotonic() - started
            time.sleep(0.1)
        raise NodeError(f"cluster did not converge within {timeout_s:g} s after healing")


def _group(status: dict[str, Any], group: int) -> dict[str, Any]:
    for entry in status["groups"]:
        if entry["group"] == group:
            return dict(entry)
    raise KeyError(group)
