"""Jepsen harness: short real runs in network namespaces (root only), plus its pure parts."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ringbolt.check.history import History
from ringbolt.jepsen import cluster as cluster_module
from ringbolt.jepsen import nemesis, report
from ringbolt.jepsen.netns import (
    NotRoot,
    TestNetwork,
    cleanup_stale,
    leftovers,
    new_run_id,
    require_root,
    run,
)
from ringbolt.jepsen.runner import RunOptions, run_once
from ringbolt.server.config import load_config, render_config


def _root_problem() -> str | None:
    try:
        require_root()
    except NotRoot as error:
        return str(error)
    return None


needs_root = pytest.mark.skipif(_root_problem() is not None, reason=_root_problem() or "")


def _our_node_processes(run_id: str) -> list[int]:
    """Pids whose command line names this run's namespaces or data directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"rbj-{run_id}-" in command:
            found.append(int(entry.name))
    return found


def _assert_clean() -> None:
    run_id = new_run_id()
    assert leftovers(run_id) == []
    assert _our_node_processes(run_id) == []


@needs_root
@pytest.mark.timeout(120)
@pytest.mark.parametrize("workload", ["register", "set"])
def test_short_run_is_valid_and_cleans_up(workload: str, tmp_path: Path) -> None:
    options = RunOptions(nodes=5, time_s=14.0, nemesis="all", workload=workload,
                         out_dir=tmp_path, fsync=False)
    summary = run_once(options, seed=7, log=lambda text: None)
    assert summary["valid"] is True, summary["linearizability"]["violations"][:1]
    assert summary["lost_writes"] == 0
    assert summary["unexpected"] == []
    assert summary["node_failures"] == []
    assert summary["ok"] > 100
    assert summary["nemesis_events"] >= 1
    run_dir = Path(summary["run_dir"])
    for name in ("history.jsonl", "nemesis.jsonl", "summary.json", "errors.jsonl"):
        assert (run_dir / name).is_file(), name
    assert len(History.from_jsonl(run_dir / "history.jsonl")) == 2 * summary["ops"]
    assert (run_dir / "logs" / "n1.log").stat().st_size > 0
    _assert_clean()


@needs_root
@pytest.mark.timeout(180)
def test_membership_changes_and_splits_during_the_run(tmp_path: Path) -> None:
    """Nodes are replaced (drain, remove, a new node with a new id in the same
    namespace, rebalance) and shards split while clients run: still valid."""
    options = RunOptions(nodes=5, time_s=30.0, nemesis="membership", workload="register",
                         out_dir=tmp_path, fsync=False)
    summary = run_once(options, seed=7, log=lambda text: None)
    assert summary["valid"] is True, summary["linearizability"]["violations"][:1]
    assert summary["lost_writes"] == 0 and summary["nemesis_errors"] == []
    events = [json.loads(line) for line in
              (Path(summary["run_dir"]) / "nemesis.jsonl").read_text().splitlines()]
    kinds = {event["kind"] for event in events}
    assert kinds == {"replace", "split"}, events
    assert any("new shard" in event["detail"] for event in events)
    logs = "".join(path.read_text() for path in (Path(summary["run_dir"]) / "logs").iterdir())
    assert "add_learner" in logs and "remove_node" in logs  # replicas really moved
    _assert_clean()


@needs_root
@pytest.mark.timeout(60)
def test_failed_startup_still_removes_namespaces_and_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Any, node: int, timeout_s: float = 0.0) -> None:
        raise cluster_module.NodeError(f"node {node} refused by the test")

    monkeypatch.setattr(cluster_module.NamespaceCluster, "wait_up", refuse)
    with pytest.raises(cluster_module.NodeError, match="refused by the test"):
        run_once(RunOptions(nodes=3, time_s=5.0, out_dir=tmp_path), seed=1,
                 log=lambda text: None)
    _assert_clean()


@needs_root
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_unsafe_reads_are_reported_invalid_within_five_runs(tmp_path: Path) -> None:
    options = RunOptions(nodes=5, time_s=15.0, nemesis="partition-leader", workload="register",
                         unsafe=frozenset({"read_without_read_index"}), out_dir=tmp_path,
                         fsync=False)
    verdicts = []
    for seed in range(1, 6):
        verdicts.append(run_once(options, seed=seed, log=lambda text: None)["valid"])
        if verdicts[-1] is False:
            break
    assert False in verdicts, verdicts
    _assert_clean()


@needs_root
def test_leftovers_of_a_crashed_run_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_id = f"{dead.pid:x}"
    network = TestNetwork(run_id, 2)
    network.create()
    try:
        assert len(leftovers(run_id)) == 2 + 1 + 2  # namespaces, bridge, root-side veths
        removed = cleanup_stale(keep_run_id=new_run_id())
        assert network.namespace(1) in removed
        assert leftovers(run_id) == []
    finally:
        network.destroy()


def test_not_root_is_refused_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NotRoot, match="needs root"):
        require_root()


def test_nemesis_names_resolve_to_kinds() -> None:
    assert nemesis.resolve_kinds("all") == tuple(sorted(nemesis.FAULTS))
    assert nemesis.resolve_kinds("none") == ()
    assert nemesis.resolve_kinds("kill,slow") == ("kill", "kill-leader", "slow")
    with pytest.raises(ValueError, match="unknown nemesis"):
        nemesis.resolve_kinds("meteor")


class _FakeNetwork:
    def __init__(self) -> None:
        self.pairs: set[tuple[int, int]] = set()

    def cut(self, pairs: list[tuple[int, int]]) -> None:
        self.pairs.update(pairs)

    def heal_cuts(self) -> None:
        self.pairs.clear()


class _FakeCluster:
    def __init__(self, nodes: int) -> None:
        self.network = _FakeNetwork()
        self.nodes = nodes

    def node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))


@pytest.mark.parametrize("nodes", [3, 5, 7])
@pytest.mark.parametrize("kind", ["partition-ring", "partition-bridge", "partition-halves"])
def test_partitions_leave_the_shape_they_promise(nodes: int, kind: str) -> None:
    fake = _FakeCluster(nodes)
    context = nemesis.FaultContext(cluster=fake)  # type: ignore[arg-type]
    for seed in range(20):
        targets, _, heal = nemesis.FAULTS[kind](context, random.Random(seed))
        pairs = fake.network.pairs
        assert all((b, a) in pairs for a, b in pairs)  # two-way cuts
        sees = {n: {m for m in fake.node_ids() if (n, m) not in pairs} for n in fake.node_ids()}
        majority = nodes // 2 + 1
        if kind == "partition-ring":
            assert all(len(seen) >= majority for seen in sees.values())
            if nodes >= 5:
                assert len({frozenset(s) for s in sees.values()}) == nodes
        elif kind == "partition-bridge":
            (bridge,) = targets
            assert sees[bridge] == set(fake.node_ids())
            assert sum(len(s) >= majority for s in sees.values()) >= 1
        else:
            assert sum(len(s) >= majority for s in sees.values()) == nodes - len(targets)
            assert pairs
        heal()
        assert not fake.network.pairs


def test_availability_and_recovery_come_from_the_history() -> None:
    history = History()
    a = history.invoke(0, "write", "k", "v1", time=1000)
    history.ok(a, time=1010)
    b = history.invoke(0, "write", "k", "v2", time=2000)  # during the fault
    history.info(b, time=4000)
    c = history.invoke(1, "read", "k", time=2500)  # during the fault
    history.ok(c, "v1", time=2600)
    d = history.invoke(1, "read", "k", time=5200)  # after the heal at 5.0 s
    history.ok(d, "v2", time=5450)
    event = nemesis.NemesisEvent(kind="pause", targets=(1,), detail="", start_s=1.5, stop_s=5.0)
    table = report.availability(history, [event])
    assert table == {"none": {"ops": 2, "ok": 2, "percent_ok": 100.0},
                     "pause": {"ops": 2, "ok": 1, "percent_ok": 50.0}}
    (recovery,) = report.recovery_times(history, [event])
    assert recovery["first_ok_s"] == pytest.approx(0.45)
    assert recovery["all_clients_s"] is None  # process 0 had no ok op after the heal
    e = history.invoke(0, "cas", "k", ["v1", "v3"], time=5500)
    history.fail(e, time=5600)
    (recovery,) = report.recovery_times(history, [event])
    assert recovery["all_clients_s"] is None  # a failed CAS is no ok op
    assert report.availability(history, [event], frozenset({e}))["none"]["ok"] == 3
    assert report.availability(history, [event])["none"]["ok"] == 2
    assert report.counts(history) == {"ops": 5, "ok": 3, "fail": 1, "info": 1}


def test_unsafe_switch_is_written_into_every_node_config(tmp_path: Path) -> None:
    network = TestNetwork("0", 3)
    network.subnet = 1  # addresses only; nothing is created
    unsafe = frozenset({"read_without_read_index"})
    cluster = cluster_module.NamespaceCluster(network, tmp_path, tmp_path / "logs", unsafe=unsafe)
    for node in network.node_ids():
        text = render_config(cluster.config(node))
        assert 'unsafe = ["read_without_read_index"]' in text
        path = tmp_path / f"n{node}.toml"
        path.write_text(text)
        assert load_config(path).unsafe == unsafe
    safe = cluster_module.NamespaceCluster(network, tmp_path, tmp_path / "logs")
    assert "unsafe =" not in render_config(safe.config(1))


def test_every_node_replicates_the_shard_up_to_the_config_limit(tmp_path: Path) -> None:
    for nodes, replicas in ((3, 3), (5, 5), (9, cluster_module.REPLICAS_MAX)):
        network = TestNetwork("0", nodes)
        network.subnet = 1  # addresses only; nothing is created
        cluster = cluster_module.NamespaceCluster(network, tmp_path, tmp_path / "logs")
        config = cluster.config(1)
        assert config.replicas == replicas
        path = tmp_path / "n1.toml"
        path.write_text(render_config(config))
        assert load_config(path).replicas == replicas


@needs_root
@pytest.mark.timeout(60)
def test_slow_link_degrades_eth0_and_heals() -> None:
    network = TestNetwork(new_run_id(), 1)
    network.create()
    namespace = network.namespace(1)

    def shown() -> str:
        qdisc = run(["ip", "netns", "exec", namespace, "tc", "qdisc", "show", "dev", "eth0"])
        rules = run(["ip", "netns", "exec", namespace, "iptables", "-w", "5", "-S", "OUTPUT"],
                    check=False)
        return qdisc.stdout + rules.stdout

    try:
        applied = network.slow(1, delay_ms=50, loss_percent=5.0)
        state = shown()
        if applied.startswith("netem"):
            assert "netem" in state
        else:
            assert "tbf" in state
            if shutil.which("iptables") is not None:
                assert "iptables loss 5.0%" in applied
                assert "-m statistic --mode random --probability 0.0499" in state
        network.heal_slow()
        state = shown()
        assert "netem" not in state and "tbf" not in state and "statistic" not in state
    finally:
        network.destroy()


def test_help_lists_every_nemesis_and_bad_names_are_refused() -> None:
    from click.testing import CliRunner

    from ringbolt.jepsen.cli import jepsen

    runner = CliRunner()
    text = " ".join(runner.invoke(jepsen, ["--help"]).output.split())
    for name in [*nemesis.GROUPS, *nemesis.FAULTS]:
        assert name in text.replace("- ", "-"), name  # help wraps at hyphens
    refused = runner.invoke(jepsen, ["--nemesis", "meteor"])
    assert refused.exit_code == 2
    assert "unknown nemesis 'meteor'" in refused.output


def test_only_clean_heals_count_towards_recovery() -> None:
    history = History()
    for process, invoked, done in ((0, 5100, 5200), (1, 5300, 5400),  # back before 6.0 s
                                   (0, 9100, 9150), (1, 12000, 12100),  # 1 back after 11.0
                                   (0, 11600, 11650)):
        op = history.invoke(process, "read", "k", time=invoked)
        history.ok(op, None, time=done)
    events = [nemesis.NemesisEvent(kind="pause", targets=(1,), detail="", start_s=1.0, stop_s=5.0),
              nemesis.NemesisEvent(kind="kill", targets=(2,), detail="", start_s=6.0, stop_s=9.0),
              nemesis.NemesisEvent(kind="slow", targets=(2,), detail="", start_s=11.0,
                                   stop_s=11.5)]
    first, second, third = report.recovery_times(history, events)
    assert first["clean"] is True and first["all_clients_s"] == pytest.approx(0.4)
    assert second["clean"] is False  # process 1 was back only after the next fault began
    assert second["all_clients_s"] == pytest.approx(3.1)
    assert third["clean"] is True and third["all_clients_s"] == pytest.approx(0.6)
    summary = report.recovery_summary([first, second, third])
    assert summary["clean_heals"] == 2
    assert summary["all_clients_s_max"] == pytest.approx(0.6)


def test_rejoin_times_come_from_the_node_logs(tmp_path: Path) -> None:
    import datetime

    start = datetime.datetime(2026, 1, 2, 3, 4, 5)

    def line(at_s: float, node: int, text: str) -> str:
        stamp = (start + datetime.timedelta(seconds=at_s)).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        return f"{stamp} node{node} INFO {text}\n"

    (tmp_path / "n1.log").write_text(
        line(0.1, 1, "ringbolt.replica: shard 0: leader is now 2 (term 1, this node follower)")
        + line(2.0, 1, "ringbolt.replica: shard 0: leader is now unknown (term 1, pre_candidate)")
        + line(2.5, 1, "ringbolt.replica: shard 1000000: leader is now 3 (term 1, follower)")
        + line(5.7, 1, "ringbolt.replica: shard 0: leader is now 3 (term 2, this node follower)"))
    (tmp_path / "n2.log").write_text(
        line(0.1, 2, "ringbolt.replica: shard 0: leader is now 2 (term 1, this node leader)")
        + line(7.9, 2, "ringbolt.node: node 2 up: clients ...")  # restarted: not known yet
        + line(8.25, 2, "ringbolt.replica: shard 0: leader is now 3 (term 2, this node follower)")
        + line(10.0, 2, "ringbolt.node: node 2 up: clients ...")  # restarted, before the heal
        + line(10.2, 2, "ringbolt.replica: shard 0: leader is now 3 (term 2, this node follower)")
        + line(12.0, 2, "ringbolt.replica: shard 0: leader is now unknown (term 2, candidate)")
        + line(14.0, 2, "ringbolt.replica: shard 0: leader is now 3 (term 3, this node follower)"))
    events = [nemesis.NemesisEvent(kind="partition-halves", targets=(1,), detail="",
                                   start_s=1.5, stop_s=5.0),
              nemesis.NemesisEvent(kind="slow", targets=(2,), detail="", start_s=5.5, stop_s=6.0),
              nemesis.NemesisEvent(kind="kill", targets=(2,), detail="", start_s=6.5, stop_s=7.5),
              nemesis.NemesisEvent(kind="kill", targets=(3,), detail="", start_s=8.0, stop_s=9.0),
              nemesis.NemesisEvent(kind="kill", targets=(2,), detail="", start_s=9.0,
                                   stop_s=10.5)]
    rejoins = report.rejoin_times(tmp_path, events, start.timestamp())
    assert rejoins == [pytest.approx(0.7), 0.0, pytest.approx(0.75), None, 0.0]
    summary = report.rejoin_summary([{"rejoin_s": r} for r in rejoins])
    assert summary["rejoin_s_max"] == pytest.approx(0.75)


def test_membership_faults_are_healed_after_the_network_and_the_processes() -> None:
    """Finishing a node replacement needs a connected cluster: a partition
    started BEFORE it (so normally healed after it) is healed first."""
    calls: list[str] = []

    class Network:
        def heal(self) -> None:
            calls.append("network")

    class Cluster:
        network = Network()

        def node_ids(self) -> list[int]:
            return [1, 2, 3]

        def resume(self, node: int) -> None:
            calls.append(f"resume {node}")

    chaos = nemesis.Nemesis(cluster=Cluster(), kinds=("partition-halves", "replace"),  # type: ignore[arg-type]
                            rng=random.Random(1), started_at=0.0)
    chaos._active = [("partition-halves", (1,), "", lambda: calls.append("partition"), 1.0),
                     ("replace", (2,), "", lambda: calls.append("replace"), 2.0),
                     ("kill", (3,), "", lambda: calls.append("kill"), 3.0)]
    chaos.heal_all()
    assert calls.index("replace") > calls.index("network") > calls.index("partition")
    assert calls.index("replace") > calls.index("kill")
    assert [e.kind for e in chaos.events][-1] == "replace"


def test_a_node_that_stopped_itself_is_reported(tmp_path: Path) -> None:
    """A CRITICAL line in a node log (a failed driver task, a failed WAL) is a
    node failure in the run's summary, even when the history is valid."""
    (tmp_path / "n1.log").write_text("2026-11-29 04:51:35,100 node1 INFO ringbolt.transport: "
                                     "lost connection to peer 2\n")
    (tmp_path / "n3.log").write_text(
        "2026-11-29 04:51:35,101 node3 CRITICAL ringbolt.node: node 3: <Task finished "
        "name='Task-11'> failed, stopping\nTraceback (most recent call last):\n")
    (tmp_path / "notes.log").write_text("x CRITICAL y\n")  # not a node log
    failures = report.node_failures(tmp_path)
    assert [f["node_log"] for f in failures] == ["n3.log"]
    assert "failed, stopping" in failures[0]["line"]
    assert report.node_failures(tmp_path / "missing") == []
