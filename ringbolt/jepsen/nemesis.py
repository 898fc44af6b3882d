"""Nemeses: faults drawn from one seeded RNG, each started, held, healed and logged.

Theory of operation
-------------------
A fault kind is a function ``start(context, rng) -> (targets, detail, heal)``
in `FAULTS`; `heal()` undoes exactly what `start` did. The `Nemesis` thread
loops until its deadline: a quiet gap, then one fault (or, one time in four,
two of different families at once: composition), held for a drawn time,
then healed. Every fault becomes a `NemesisEvent` with its start and stop
times (seconds since the run began) in the log. `heal_all()` (also used on
error and at the end) heals whatever is still active, so every fault is
healed before the final reads.

Kinds: partition-halves, partition-leader (isolate the leader),
partition-ring (each node sees a majority, no two the same), partition-bridge
(two halves joined by one node), partition-oneway (one node cannot send to
the others), kill / kill-leader (SIGKILL, restart at heal), pause /
pause-leader (SIGSTOP, SIGCONT at heal), slow (delay + loss on some nodes),
replace (drain a node; at heal remove it and add a new node in its place)
and split (split a shard) -- the last two in membership.py. More kinds plug
in through `register_fault`.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ringbolt.jepsen import limits, membership
from ringbolt.jepsen.cluster import NamespaceCluster

Heal = Callable[[], None]
Start = Callable[["FaultContext", random.Random], tuple[tuple[int, ...], str, Heal]]


@dataclass(frozen=True, slots=True, kw_only=True)
class NemesisEvent:
    kind: str
    targets: tuple[int, ...]
    detail: str
    start_s: float
    stop_s: float

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "targets": list(self.targets), "detail": self.detail,
                "start_s": round(self.start_s, 3), "stop_s": round(self.stop_s, 3)}


@dataclass(slots=True, kw_only=True)
class FaultContext:
    cluster: NamespaceCluster

    @property
    def nodes(self) -> list[int]:
        return self.cluster.node_ids()

    def leader_or_random(self, rng: random.Random) -> tuple[int, bool]:
        leader = self.cluster.leader()
        if leader is not None:
            return leader, True
        return rng.choice(self.nodes), False


def _cut_between(context: FaultContext, groups: list[list[int]]) -> None:
    pairs = [(a, b) for g in groups for h in groups if g is not h for a in g for b in h]
    context.cluster.network.cut(pairs)


def _halves(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
    nodes = context.nodes[:]
    rng.shuffle(nodes)
    small, large = sorted(nodes[:len(nodes) // 2]), sorted(nodes[len(nodes) // 2:])
    _cut_between(context, [small, large])
    return tuple(small), f"{small} | {large}", context.cluster.network.heal_cuts


def _isolate_leader(context: FaultContext,
                    rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
    target, is_leader = context.leader_or_random(rng)
    rest = [n for n in context.nodes if n != target]
    _cut_between(context, [[target], rest])
    what = "leader" if is_leader else "no leader known; random node"
    return (target,), f"isolate {target} ({what})", context.cluster.network.heal_cuts


def _ring(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
    nodes = context.nodes[:]
    rng.shuffle(nodes)
    count = len(nodes)
    reach = (count // 2 + 1) // 2  # neighbours on each side: self + 2*reach >= majority
    pairs = []
    for i, a in enumerate(nodes):
        for j, b in enumerate(nodes):
            distance = min((i - j) % count, (j - i) % count)
            if a != b and distance > reach:
                pairs.append((a, b))
    context.cluster.network.cut(pairs)
    return tuple(nodes), f"ring {nodes}, each sees {reach} per side", \
        context.cluster.network.heal_cuts


def _bridge(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
    nodes = context.nodes[:]
    rng.shuffle(nodes)
    bridge = nodes[0]
    rest = nodes[1:]
    left, right = sorted(rest[:len(rest) // 2]), sorted(rest[len(rest) // 2:])
    _cut_between(context, [left, right])
    return (bridge,), f"{left} <- {bridge} -> {right}", context.cluster.network.heal_cuts


def _oneway(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
    target, is_leader = context.leader_or_random(rng)
    rest = [n for n in context.nodes if n != target]
    inbound = rng.random() < 0.5
    pairs = [(n, target) for n in rest] if inbound else [(target, n) for n in rest]
    context.cluster.network.cut(pairs)
    direction = "cannot receive" if inbound else "cannot send"
    role = " (leader)" if is_leader else ""
    return (target,), f"{target}{role} {direction}", context.cluster.network.heal_cuts


def _kill(leader: bool) -> Start:
    def start(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
        if leader:
            target, is_leader = context.leader_or_random(rng)
        else:
            target, is_leader = rng.choice(context.nodes), False
        cluster = context.cluster
        cluster.kill(target)

        def heal() -> None:
            if not cluster.alive(target):
                cluster.start(target)
                cluster.wait_up(target)

        return (target,), f"SIGKILL {target}{' (leader)' if is_leader else ''}", heal
    return start


def _pause(leader: bool) -> Start:
    def start(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
        if leader:
            target, is_leader = context.leader_or_random(rng)
        else:
            target, is_leader = rng.choice(context.nodes), False
        cluster = context.cluster
        cluster.pause(target)
        return (target,), f"SIGSTOP {target}{' (leader)' if is_leader else ''}", \
            lambda: cluster.resume(target)
    return start


def _slow(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
    count = rng.randint(1, len(context.nodes))
    targets = sorted(rng.sample(context.nodes, count))
    delay_ms = rng.choice((20, 50, 100))
    loss = rng.choice((1.0, 5.0, 20.0))
    applied = ""
    for node in targets:
        applied = context.cluster.network.slow(node, delay_ms=delay_ms, loss_percent=loss)
    return tuple(targets), f"{targets}: {applied}", context.cluster.network.heal_slow


FAULTS: dict[str, Start] = {
    "partition-halves": _halves,
    "partition-leader": _isolate_leader,
    "partition-ring": _ring,
    "partition-bridge": _bridge,
    "partition-oneway": _oneway,
    "kill": _kill(leader=False),
    "kill-leader": _kill(leader=True),
    "pause": _pause(leader=False),
    "pause-leader": _pause(leader=True),
    "slow": _slow,
    "replace": membership.replace,
    "split": membership.split,
}

GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(FAULTS),
    "none": (),
    "partition": tuple(k for k in FAULTS if k.startswith("partition")),
    "kill": ("kill", "kill-leader"),
    "pause": ("pause", "pause-leader"),
    "leader": ("partition-leader", "kill-leader", "pause-leader"),
    "membership": ("replace", "split"),
}
MEMBERSHIP_KINDS = frozenset(GROUPS["membership"])


def register_fault(kind: str, start: Start) -> None:
    """The hook for later faults (membership changes, shard moves, bank-specific ones)."""
    assert kind not in FAULTS, kind
    FAULTS[kind] = start


def resolve_kinds(spec: str) -> tuple[str, ...]:
    """'all', a group name, a kind, or a comma-separated mix -> sorted distinct kinds."""
    kinds: set[str] = set()
    for word in (w.strip() for w in spec.split(",") if w.strip()):
        if word in GROUPS:
            kinds.update(GROUPS[word])
        elif word in FAULTS:
            kinds.add(word)
        else:
            raise ValueError(f"unknown nemesis {word!r}; choose from "
                             f"{', '.join(sorted({*GROUPS, *FAULTS}))}")
    return tuple(sorted(kinds))


def _family(kind: str) -> str:
    return kind.split("-")[0]


@dataclass(slots=True, kw_only=True)
class Nemesis:
    cluster: NamespaceCluster
    kinds: tuple[str, ...]
    rng: random.Random
    started_at: float
    """time.monotonic() of the run's start: event times are relative to it."""
    events: list[NemesisEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _active: list[tuple[str, tuple[int, ...], str, Heal, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now_s(self) -> float:
        return time.monotonic() - self.started_at

    def run(self, until_s: float) -> None:
        """Inject faults until `until_s` (run-relative), then heal everything."""
        context = FaultContext(cluster=self.cluster)
        try:
            while self.kinds and not self._stop.is_set():
                if self._stop.wait(self.rng.uniform(*limits.quiet_s)):
                    break
                hold_s = self.rng.uniform(*limits.fault_hold_s)
                if self.now_s() + hold_s > until_s:
                    break
                for kind in self._draw():
                    self._start(kind, context)
                self._stop.wait(hold_s)
                self.heal_all()
        finally:
            self.heal_all()

    def stop(self) -> None:
        self._stop.set()

    def _draw(self) -> list[str]:
        first = self.rng.choice(self.kinds)
        others = [k for k in self.kinds if _family(k) != _family(first)]
        if others and self.rng.random() < 0.25:
            return [first, self.rng.choice(others)]
        return [first]

    def _start(self, kind: str, context: FaultContext) -> None:
        started = self.now_s()
        try:
            targets, detail, heal = FAULTS[kind](context, self.rng)
        except Exception as error:  # noqa: BLE001 - logged; the run goes on
            self.errors.append(f"{started:.3f} start {kind}: {error}")
            return
        with self._lock:
            self._active.append((kind, targets, detail, heal, started))

    def heal_all(self) -> None:
        """Heal network, process and pause faults first (newest first), then
        membership faults: finishing a membership change needs a cluster
        whose nodes can reach each other."""
        with self._lock:
            active, self._active = self._active, []
        late = [fault for fault in active if fault[0] in MEMBERSHIP_KINDS]
        for kind, targets, detail, heal, started in reversed(
                [fault for fault in active if fault[0] not in MEMBERSHIP_KINDS]):
            self._heal(kind, targets, detail, heal, started)
        with contextlib.suppress(Exception):
            self.cluster.network.heal()
        for node in self.cluster.node_ids():
            self.cluster.resume(node)
        for kind, targets, detail, heal, started in late:
            self._heal(kind, targets, detail, heal, started)

    def _heal(self, kind: str, targets: tuple[int, ...], detail: str, heal: Heal,
              started: float) -> None:
        try:
            heal()
        except Exception as error:  # noqa: BLE001 - logged; keep healing the rest
            self.errors.append(f"{self.now_s():.3f} heal {kind}: {error}")
        self.events.append(NemesisEvent(kind=kind, targets=targets, detail=detail,
                                        start_s=started, stop_s=self.now_s()))
