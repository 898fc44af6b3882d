"""Test hosts: one network namespace per node, joined by a bridge in the root namespace.

Theory of operation
-------------------
`TestNetwork(run_id, nodes)` builds, for node i (1-based)::

    namespace rbj-<run>-n<i>   eth0 = 10.213.<subnet>.<i>/24   (veth peer rbj<run>v<i>)
    root ns bridge rbj<run>b   10.213.<subnet>.254/24          (the harness and clients)

The harness reaches every node through the bridge; nodes reach each other
through it too, and nothing else (the /24 is private to the run; the subnet
octet is the first one no interface uses yet). Faults act inside the node
namespaces only:

* a *partition* is a set of directed (src, dst) pairs; src's packets to dst
  are dropped by a blackhole route in src's namespace (one-way by nature, a
  two-way cut is both directions);
* a *slow link* is delay + loss on a node's eth0: `tc netem` where the
  kernel has it; otherwise (this container's kernel has no netem, prio or
  sfq) a `tbf` queue of 256 kbit/s whose backlog may reach the delay (queueing
  delay, not a fixed one) plus random loss from an `iptables -m statistic`
  DROP rule on the namespace's OUTPUT chain (skipped, and said so, without
  iptables);
* `destroy()` deletes the namespaces (which takes their veths along) and the
  bridge, and `cleanup_stale()` removes whatever an earlier run left behind
  (node processes in its namespaces, namespaces, links, node data in
  $TMPDIR/rbj-<run>-*): a run id is its harness pid in hex, so a name whose
  pid is dead is stale.

Every command is `ip`/`tc` run with a timeout; a failing command raises
`NetworkError` with its stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ringbolt.jepsen import limits

PREFIX = "rbj"
SUBNET_FIRST = "10.213"


class NetworkError(Exception):
    """An `ip`/`tc` command failed (or the host cannot build test networks)."""


class NotRoot(NetworkError):
    """Network namespaces need root; the message says so in one line."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot("ringbolt jepsen needs root (it creates network namespaces); "
                      "run it as root, e.g. in a disposable container or VM")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        raise NotRoot("ringbolt jepsen needs iproute2 (`ip`, `tc`) on PATH")


def run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True,
                            timeout=limits.command_timeout_s, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def _loss_rule(action: str, loss_percent: float) -> list[str]:
    """Append (-A) or delete (-D) a rule that drops this share of outgoing packets."""
    assert 0 < loss_percent < 100
    return [action, "OUTPUT", "-o", "eth0", "-m", "statistic", "--mode", "random",
            "--probability", f"{loss_percent / 100:.4f}", "-j", "DROP"]


def new_run_id() -> str:
    return f"{os.getpid():x}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    output = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def links() -> list[str]:
    output = run(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in output.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def kill_namespace_processes(namespace: str) -> None:
    """SIGKILL every process inside one of OUR namespaces (node processes we started)."""
    output = run(["ip", "netns", "pids", namespace], check=False).stdout
    for text in output.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(text), 9)


def cleanup_stale(keep_run_id: str | None = None) -> list[str]:
    """Remove namespaces and bridges of earlier runs whose harness is gone; returns their names."""
    removed = []
    for namespace in namespaces():
        match = re.fullmatch(rf"{PREFIX}-([0-9a-f]+)-n\d+", namespace)
        if match is None or match.group(1) == keep_run_id or _pid_alive(int(match.group(1), 16)):
            continue
        kill_namespace_processes(namespace)
        run(["ip", "netns", "del", namespace], check=False)
        removed.append(namespace)
    for link in links():
        match = re.fullmatch(rf"{PREFIX}([0-9a-f]+)[bv]\d*", link)
        if match is None or match.group(1) == keep_run_id or _pid_alive(int(match.group(1), 16)):
            continue
        run(["ip", "link", "del", link], check=False)
        removed.append(link)
    for directory in Path(tempfile.gettempdir()).glob(f"{PREFIX}-*-*"):
        match = re.fullmatch(rf"{PREFIX}-([0-9a-f]+)-.+", directory.name)
        if match is None or match.group(1) == keep_run_id or _pid_alive(int(match.group(1), 16)):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(str(directory))
    return removed


def leftovers(run_id: str) -> list[str]:
    """Namespaces and links of `run_id` that still exist (empty after `destroy`)."""
    found = [n for n in namespaces() if n.startswith(f"{PREFIX}-{run_id}-")]
    found += [link for link in links() if link.startswith(f"{PREFIX}{run_id}")]
    return found


def _free_subnet() -> int:
    used = set(re.findall(r"inet 10\.213\.(\d+)\.", run(["ip", "-4", "addr"]).stdout))
    for octet in range(1, 250):
        if str(octet) not in used:
            return octet
    raise NetworkError("no free 10.213.x.0/24 subnet")


class TestNetwork:
    __test__ = False  # not a pytest class

    def __init__(self, run_id: str, nodes: int) -> None:
        assert 1 <= nodes <= limits.nodes_max
        assert re.fullmatch(r"[0-9a-f]{1,8}", run_id)
        self.run_id = run_id
        self.nodes = nodes
        self.subnet = 0
        self.bridge = f"{PREFIX}{run_id}b"
        assert len(self.bridge) <= 15
        self._cut: set[tuple[int, int]] = set()
        self._slow: set[int] = set()
        self._loss: dict[int, float] = {}

    def node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))

    def namespace(self, node: int) -> str:
        return f"{PREFIX}-{self.run_id}-n{node}"

    def address(self, node: int) -> str:
        assert self.subnet > 0
        return f"{SUBNET_FIRST}.{self.subnet}.{node}"

    def exec_prefix(self, node: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(node)]

    def create(self) -> None:
        self.subnet = _free_subnet()
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", f"{SUBNET_FIRST}.{self.subnet}.254/24", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        for node in self.node_ids():
            namespace, outside = self.namespace(node), f"{PREFIX}{self.run_id}v{node}"
            run(["ip", "netns", "add", namespace])
            run(["ip", "link", "add", outside, "type", "veth", "peer", "name", f"{outside}p"])
            run(["ip", "link", "set", f"{outside}p", "netns", namespace])
            run(["ip", "-n", namespace, "link", "set", f"{outside}p", "name", "eth0"])
            run(["ip", "-n", namespace, "addr", "add", f"{self.address(node)}/24", "dev", "eth0"])
            run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            run(["ip", "link", "set", outside, "master", self.bridge])
            run(["ip", "link", "set", outside, "up"])

    def destroy(self) -> None:
        """Remove everything `create` made (idempotent; never raises for missing parts)."""
        for node in self.node_ids():
            namespace = self.namespace(node)
            if namespace in namespaces():
                kill_namespace_processes(namespace)
                run(["ip", "netns", "del", namespace], check=False)
        for link in links():
            if link.startswith(f"{PREFIX}{self.run_id}"):
                run(["ip", "link", "del", link], check=False)

    # -- faults ------------------------------------------------------------

    def cut(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Drop packets from src to dst for every (src, dst) pair (cumulative)."""
        for src, dst in pairs:
            assert src != dst
            if (src, dst) in self._cut:
                continue
            run(["ip", "-n", self.namespace(src), "route", "add", "blackhole",
                 f"{self.address(dst)}/32"])
            self._cut.add((src, dst))

    def heal_cuts(self) -> None:
        for src, dst in sorted(self._cut):
            run(["ip", "-n", self.namespace(src), "route", "del", "blackhole",
                 f"{self.address(dst)}/32"], check=False)
        self._cut.clear()

    def slow(self, node: int, *, delay_ms: int, loss_percent: float) -> str:
        """Degrade node's eth0; returns what was applied (netem if the kernel has
        it, else a tbf queue plus iptables random loss)."""
        namespace = self.namespace(node)
        netem = run(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "eth0",
                     "root", "netem", "delay", f"{delay_ms}ms", f"{delay_ms // 2}ms",
                     "loss", f"{loss_percent}%"], check=False)
        self._slow.add(node)
        if netem.returncode == 0:
            return f"netem delay {delay_ms}ms loss {loss_percent}%"
        run(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "eth0", "root",
             "tbf", "rate", "256kbit", "burst", "4kb", "latency", f"{delay_ms}ms"])
        applied = f"tbf rate 256kbit latency {delay_ms}ms"
        if shutil.which("iptables") is None:
            return f"{applied}, no loss (no netem in this kernel, no iptables)"
        run(["ip", "netns", "exec", namespace, "iptables", "-w", "5",
             *_loss_rule("-A", loss_percent)])
        self._loss[node] = loss_percent
        return f"{applied} + iptables loss {loss_percent}% (no netem in this kernel)"

    def heal_slow(self) -> None:
        for node in sorted(self._slow):
            run(["ip", "netns", "exec", self.namespace(node), "tc", "qdisc", "del", "dev",
                 "eth0", "root"], check=False)
        for node, loss_percent in sorted(self._loss.items()):
            run(["ip", "netns", "exec", self.namespace(node), "iptables", "-w", "5",
                 *_loss_rule("-D", loss_percent)], check=False)
        self._slow.clear()
        self._loss.clear()

    def heal(self) -> None:
        self.heal_cuts()
        self.heal_slow()

    def statistics(self) -> dict[str, int]:
        return {"cut_pairs": len(self._cut), "slow_nodes": len(self._slow)}
