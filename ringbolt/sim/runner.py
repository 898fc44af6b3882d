"""One seed, start to finish: fault phase, heal, liveness phase, checks.

Theory of operation
-------------------
`run_seed` builds everything from one `random.Random(seed)`: the parameters
(printed first in a trace), the cluster of real Raft cores, the clients and
the nemesis. Then:

1. fault phase: `params.fault_phase_ticks` ticks of client load under the
   seed's faults, with the safety invariants checked on every persist, apply
   and role change (a violation stops the run at once);
2. heal: the network becomes reliable, disks fast, crashed nodes restart;
3. liveness phase: within `liveness_budget_ticks` some node must lead and a
   fresh proposal made there must commit (applied with its own term at its
   index); otherwise the seed fails liveness;
4. the clients stop (outstanding ops become indeterminate) and the history is
   checked for linearizability.

The result carries a digest of the trace and the history, so a test can show
that a seed replays byte for byte.
"""

from __future__ import annotations

import json
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ringbolt.consensus import registry
from ringbolt.consensus.interface import CoreSettings
from ringbolt.consensus.types import ConfState, ConsensusCore, Entry, PersistentState
from ringbolt.kv import commands
from ringbolt.sim.cluster import NEMESIS, Cluster, CoreFactory, SimNode
from ringbolt.sim.invariants import SafetyViolation
from ringbolt.sim.nemesis import Nemesis
from ringbolt.sim.params import TICK_UNITS, SimParams, draw_params, liveness_budget_ticks
from ringbolt.sim.trace import Trace

check_seconds_max = 20.0
"""Wall-clock cap on one seed's linearizability search (a cut-short search is
reported as unknown, never as valid)."""
settle_ticks = 30
"""Ticks of client load after the liveness probe committed, before stopping."""


@dataclass(slots=True, kw_only=True)
class SeedResult:
    seed: int
    params: SimParams
    faults: dict[str, int] = field(default_factory=dict)
    ops_checked: int = 0
    safety_violation: str | None = None
    linearizability_violation: str | None = None
    linearizability_unknown: bool = False
    liveness_ok: bool = False
    liveness_ticks: int = -1
    trace_hash: str = ""
    trace: list[str] = field(default_factory=list)
    statistics: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return (self.safety_violation is not None or self.linearizability_violation is not None
                or not self.liveness_ok)


class _Probe:
    """The liveness probe: a NOOP proposed at a leader must commit."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self.waiting: tuple[int, int, int] | None = None  # node, term, index
        self.committed_at: int | None = None

    def step(self) -> None:
        if self.committed_at is not None:
            return
        for node in self._cluster.leaders():
            if self.waiting is not None and self.waiting[0] == node.node_id \
                    and self.waiting[1] == node.term:
                return

            def propose(core: ConsensusCore, node_id: int = node.node_id) -> None:
                term, index = core.propose(commands.noop())
                self.waiting = (node_id, term, index)  # before the driver applies it

            if self._cluster.try_core(node, propose):
                return

    def on_applied(self, node: SimNode, entry: Entry) -> None:
        waiting = self.waiting
        if waiting is None or waiting[0] != node.node_id or entry.index != waiting[2]:
            return
        if entry.term == waiting[1]:
            self.committed_at = self._cluster.now
        self.waiting = None


def _make_core_factory(params: SimParams, rng: random.Random) -> CoreFactory:
    """Cores of the registry's consensus, with early_send on: the simulator
    checks the same before-the-fsync rule the node uses, under its faults."""
    make_core = registry.consensus("raft").make_core
    voters = frozenset(range(1, params.nodes + 1))
    unsafe = frozenset({params.mutation}) if params.mutation else frozenset()

    def make(node_id: int, restored: PersistentState | None) -> ConsensusCore:
        settings = CoreSettings(node_id=node_id, voters=voters,
                                election_timeout_ticks=params.election_timeout_ticks,
                                heartbeat_ticks=params.heartbeat_ticks,
                                entries_per_msg_max=params.entries_per_msg_max,
                                inflight_msgs_max=params.inflight_msgs_max, unsafe=unsafe,
                                early_send=True)
        return make_core(settings, rng, restored)

    return make


def _apply_conf(conf: ConfState, data: bytes) -> ConfState:
    """The driver's own view of membership after an applied CONFIG entry (it
    goes into the snapshots the driver takes)."""
    from ringbolt.consensus.codec import decode_conf_change
    from ringbolt.consensus.membership import InvalidConfChange, apply_change

    try:
        return apply_change(conf, decode_conf_change(data))
    except InvalidConfChange:
        return conf  # the core treats an invalid change as a no-op too


FactoryMaker = Callable[[SimParams, random.Random], CoreFactory]


def run_seed(seed: int, *, nodes: int, faults: frozenset[str], mutation: str | None = None,
             trace: bool = False, check: bool = True,
             core_factory: FactoryMaker | None = None) -> SeedResult:
    """Run one seed. `core_factory` replaces the real Raft (harness tests only)."""
    rng = random.Random(seed)
    params = draw_params(rng, seed=seed, nodes=nodes, allowed=faults, mutation=mutation)
    log = Trace(enabled=trace)
    log.event(0, f"seed {seed}")
    for line in params.describe():
        log.event(0, line)
    result = SeedResult(seed=seed, params=params)
    make_core = (core_factory or _make_core_factory)(params, rng)
    cluster = Cluster(params, rng, log, make_core, _apply_conf)
    nemesis = Nemesis(cluster, rng, params)
    probe = _Probe(cluster)
    cluster.on_applied = probe.on_applied
    liveness_phase = False

    def on_tick() -> None:
        nemesis.step()
        if liveness_phase:
            probe.step()
        cluster.push(cluster.now + TICK_UNITS, NEMESIS, None)

    cluster.push(TICK_UNITS, NEMESIS, None)
    cluster.clients.start()
    heal_at = params.fault_phase_ticks * TICK_UNITS
    try:
        cluster.run_until(heal_at, on_tick)
        nemesis.heal()
        liveness_phase = True
        for _ in range(liveness_budget_ticks):
            cluster.run_until(cluster.now + TICK_UNITS, on_tick)
            if probe.committed_at is not None:
                break
        if probe.committed_at is not None:
            result.liveness_ok = True
            result.liveness_ticks = (probe.committed_at - heal_at) // TICK_UNITS
            log.event(cluster.now, f"liveness: probe committed {result.liveness_ticks} ticks after heal")
            cluster.run_until(cluster.now + settle_ticks * TICK_UNITS, on_tick)
        else:
            log.event(cluster.now, f"liveness FAILED: nothing committed within "
                      f"{liveness_budget_ticks} ticks of healing")
    except SafetyViolation as violation:
        result.safety_violation = str(violation)
        log.event(cluster.now, f"SAFETY VIOLATION {violation}")
    except AssertionError as error:
        frames = traceback.format_exception(error)[-4:]
        result.safety_violation = f"assertion failed: {error} | {''.join(frames).strip()}"
        log.event(cluster.now, f"ASSERTION {error}")
    cluster.clients.stop()
    ops = cluster.clients.history.ops
    log.feed(json.dumps(ops, sort_keys=True).encode())
    if check and result.safety_violation is None:
        _check_linearizability(result, ops, log, cluster.now)
    result.faults = _fault_counts(cluster, nemesis)
    result.statistics = {**cluster.network.statistics(), **cluster.clients.completed,
                         "invariant_checks": cluster.invariants.checks,
                         "early_messages": cluster.early_messages_sent,
                         "early_messages_before_disk": cluster.early_messages_before_disk,
                         "terms": len(cluster.invariants.leader_of_term),
                         "committed": len(cluster.invariants.committed),
                         "virtual_ticks": cluster.now // TICK_UNITS}
    result.trace_hash = log.hexdigest()
    result.trace = log.lines
    return result


def _check_linearizability(result: SeedResult, ops: list[dict[str, object]], log: Trace,
                           now: int) -> None:
    from ringbolt.check.linearizability import check_history

    outcome = check_history(ops, time_limit_s=check_seconds_max)
    result.ops_checked = outcome.ops_checked
    if outcome.valid is False:
        result.linearizability_violation = "; ".join(
            f"key {v.key}: {v.explanation}" for v in outcome.violations)[:4000]
        log.event(now, f"LINEARIZABILITY VIOLATION {result.linearizability_violation}")
    elif outcome.valid is None:
        result.linearizability_unknown = True
        log.event(now, f"linearizability UNKNOWN (search cut short) for keys {outcome.unknown_keys}")


def _fault_counts(cluster: Cluster, nemesis: Nemesis) -> dict[str, int]:
    counts = dict(nemesis.counts)
    network = cluster.network
    if network.lost:
        counts["loss"] = network.lost
    if network.duplicated:
        counts["duplicate"] = network.duplicated
    if "reorder" in cluster.params.faults:
        counts["reorder"] = network.sent
    if cluster.compactions:
        counts["compaction"] = cluster.compactions
    if cluster.snapshots_installed:
        counts["snapshot_install"] = cluster.snapshots_installed
    return counts
