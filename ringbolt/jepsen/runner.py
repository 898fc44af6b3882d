"""One Jepsen run, start to finish, and a series of them.

Theory of operation
-------------------
`run_once(options, seed)`:

1. checks root, removes what crashed earlier runs left (`cleanup_stale`);
2. builds the namespaces and bridge, starts the nodes, waits for a leader;
3. runs the workload's clients for `time_s` while the nemesis thread injects
   faults until `time_s - final_quiet_s`; the nemesis heals everything when
   it stops, killed nodes are restarted;
4. waits (bounded) for the cluster to converge, then does the final reads;
5. checks the history (linearizability; for `set` also lost / unexpected
   elements) and writes the run directory (see `report`).

Teardown (processes, namespaces, bridge, the node data directory) is in a
`finally`, so it runs on errors, on Ctrl-C and, via the handler the CLI
installs, on SIGTERM. One seed draws the workload and every fault; the seed
is printed first and `--seed` replays the same schedule (the cluster's own
timing is real, so replays are similar, not identical).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringbolt.check.linearizability import check_history
from ringbolt.jepsen import limits, report
from ringbolt.jepsen.cluster import NamespaceCluster, NodeError
from ringbolt.jepsen.nemesis import Nemesis, resolve_kinds
from ringbolt.jepsen.netns import TestNetwork, cleanup_stale, new_run_id, require_root
from ringbolt.jepsen.workload import WORKLOADS, Workload


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    nodes: int = 5
    time_s: float = 60.0
    nemesis: str = "all"
    workload: str = "register"
    unsafe: frozenset[str] = frozenset()
    out_dir: Path = Path("runs")
    fsync: bool = True

    def __post_init__(self) -> None:
        assert 1 <= self.nodes <= limits.nodes_max, self.nodes
        assert 0 < self.time_s <= limits.run_time_s_max, self.time_s
        assert self.workload in WORKLOADS, self.workload


def run_once(options: RunOptions, seed: int, log: Any = print) -> dict[str, Any]:
    require_root()
    kinds = resolve_kinds(options.nemesis)
    run_id = new_run_id()
    stale = cleanup_stale(keep_run_id=run_id)
    if stale:
        log(f"removed leftovers of crashed runs: {', '.join(stale)}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir = options.out_dir / f"jepsen-{stamp}-{options.workload}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"seed {seed}: {options.workload} on {options.nodes} nodes for {options.time_s:g} s, "
        f"nemesis {','.join(kinds) or 'none'}"
        f"{', UNSAFE ' + ','.join(sorted(options.unsafe)) if options.unsafe else ''} -> {run_dir}")
    network = TestNetwork(run_id, options.nodes)
    work_dir = Path(tempfile.mkdtemp(prefix=f"rbj-{run_id}-"))
    cluster = NamespaceCluster(network, work_dir, run_dir / "logs", unsafe=options.unsafe,
                               fsync=options.fsync)
    try:
        network.create()
        cluster.start_all()
        _wait_leader(cluster)
        return _exercise(options, seed, kinds, cluster, run_dir, log)
    finally:
        cluster.stop_all()
        network.destroy()
        shutil.rmtree(work_dir, ignore_errors=True)


def _wait_leader(cluster: NamespaceCluster, timeout_s: float = limits.node_start_timeout_s) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cluster.leader() is not None:
            return
        time.sleep(0.1)
    raise NodeError(f"no leader within {timeout_s:g} s")


def _exercise(options: RunOptions, seed: int, kinds: tuple[str, ...],
              cluster: NamespaceCluster, run_dir: Path, log: Any) -> dict[str, Any]:
    started_at = time.monotonic()
    started_at_unix = time.time()  # the same instant on the node logs' clock
    workload: Workload = WORKLOADS[options.workload](seed, started_at)
    nemesis = Nemesis(cluster=cluster, kinds=kinds, rng=random.Random(f"nemesis-{seed}"),
                      started_at=started_at)
    fault_until_s = max(0.0, options.time_s - limits.final_quiet_s)
    thread = threading.Thread(target=nemesis.run, args=(fault_until_s,), daemon=True,
                              name="nemesis")
    addresses = {node: cluster.client_address(node) for node in cluster.node_ids()}
    converge_s: float | None = None
    thread.start()
    try:
        asyncio.run(workload.run_clients(addresses, options.time_s))
    finally:
        nemesis.stop()
        thread.join(limits.converge_timeout_s)
        nemesis.heal_all()
    assert not thread.is_alive(), "the nemesis did not stop"
    for node in cluster.node_ids():
        if not cluster.alive(node):
            cluster.start(node)
            cluster.wait_up(node)
    try:
        converge_s = cluster.wait_converged()
    except NodeError as error:
        log(f"warning: {error}")
    final = asyncio.run(_final(workload, addresses))
    log(f"checking {len(workload.history)} records ...")
    verdict = check_history(workload.history, time_limit_s=limits.check_time_limit_s)
    valid: bool | None = verdict.valid
    if final.lost or final.unexpected:
        valid = False
    elif final.unread and valid:
        valid = None
    recoveries = report.recovery_times(workload.history, nemesis.events)
    rejoins = report.rejoin_times(run_dir / "logs", nemesis.events, started_at_unix)
    for recovery, rejoin_s in zip(recoveries, rejoins, strict=True):
        recovery["rejoin_s"] = rejoin_s
    summary: dict[str, Any] = {
        "valid": valid,
        **report.counts(workload.history),
        "seed": seed,
        "workload": options.workload,
        "nodes": options.nodes,
        "time_s": options.time_s,
        "unsafe": sorted(options.unsafe),
        "nemesis_events": len(nemesis.events),
        "nemesis_errors": nemesis.errors,
        "lost_writes": len(final.lost),
        "lost": final.lost[:50],
        "unexpected": final.unexpected[:50],
        "unread": final.unread[:50],
        "linearizability": verdict.to_dict(),
        "availability": report.availability(workload.history, nemesis.events,
                                            frozenset(workload.answered)),
        "recovery": {**report.recovery_summary(recoveries),
                     **report.rejoin_summary(recoveries)},
        "started_at_unix": round(started_at_unix, 3),
        "recoveries": recoveries,
        "converge_after_heal_s": None if converge_s is None else round(converge_s, 3),
        "node_failures": report.node_failures(run_dir / "logs"),
        "run_dir": str(run_dir),
    }
    for failure in summary["node_failures"]:
        log(f"warning: a node stopped itself: {failure['node_log']}: {failure['line'][:200]}")
    report.write_history(workload.history, run_dir)
    report.write_nemesis_log(nemesis.events, nemesis.errors, run_dir)
    report.write_errors(workload.errors, run_dir)
    warning = report.plot_timeline(workload.history, nemesis.events, run_dir / "timeline.png",
                                   f"{options.workload} seed {seed}: {verdict.verdict}")
    if warning is not None:
        summary["warnings"] = [warning]
        log(f"warning: {warning}")
    report.write_summary(summary, run_dir)
    return summary


async def _final(workload: Workload, addresses: dict[int, tuple[str, int]]) -> Any:
    try:
        return await workload.final_reads(addresses)
    finally:
        await workload.close()


def run_series(options: RunOptions, runs: int, seed: int | None,
               log: Any = print) -> list[dict[str, Any]]:
    """`runs` runs with seeds seed, seed+1, ... (a random first seed when None)."""
    assert 1 <= runs <= limits.runs_max, runs
    first = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
    summaries = []
    for index in range(runs):
        summaries.append(run_once(options, first + index, log))
    return summaries
