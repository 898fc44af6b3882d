"""The simulated cluster: nodes running real cores, driven in virtual time.

Theory of operation
-------------------
One event heap orders everything by (virtual time, sequence number): message
deliveries, node ticks, disk completions, client wake-ups and timeouts, and
the nemesis' per-tick step. Ties are broken by insertion order, and every
random choice comes from the run's single `random.Random`, so a seed replays
identically.

Each `SimNode` is a core plus what a real node would have: `DurableStorage`
(exactly what Readys persisted) and an in-memory state machine
(`DictBackend`). The driver follows the Ready contract to the letter:

1. persist snapshot, entries (truncating a suffix), hard state -- on a slow
   disk the whole Ready waits for the disk; meanwhile the node is stalled:
   it neither ticks nor steps (arriving messages queue in a bounded inbox),
   and a crash before the disk finishes loses the Ready, messages included
   -- except `early_messages`, which leave at once, before the disk delay
   (the core's rule for what may be sent before the fsync is thus exercised
   under crashes: the followers may hold entries the leader loses);
2. send messages; 3. apply committed entries (restoring the state machine
   from a snapshot first) and answer read states once applied; 4. advance.

Durability choice: the state machine is *volatile*. A restarted node rebuilds
it from its persisted snapshot, then re-applies the committed log the core
hands out again (the core restarts with applied = snapshot index). Local
compaction stores a snapshot image of the state machine (sorted msgpack) in
`DurableStorage` and tells the core via `compact`.

The safety checker observes every persist, apply, snapshot and role change.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable

import msgpack

from ringbolt.consensus.types import (
    ConfState,
    ConsensusCore,
    ConsensusError,
    Entry,
    EntryKind,
    PersistentState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from ringbolt.kv.machine import DictBackend, apply_entry
from ringbolt.sim.clients import Clients
from ringbolt.sim.invariants import InvariantChecker
from ringbolt.sim.network import Network
from ringbolt.sim.params import TICK_UNITS, SimParams
from ringbolt.sim.storage import DurableStorage
from ringbolt.sim.trace import Trace

inbox_msgs_max = 2_000
ready_rounds_max = 64
"""Readys drained per node per event; a core that always has more is a bug."""

DELIVER, TICK, DISK, CLIENT, TIMEOUT, NEMESIS, RESTART, ACTION = range(8)
"""Event kinds; an ACTION's payload is a zero-argument callable."""

CoreFactory = Callable[[int, PersistentState | None], ConsensusCore]
ConfApplier = Callable[[ConfState, bytes], ConfState]


def snapshot_image(backend: DictBackend) -> bytes:
    return msgpack.packb(sorted([k, v, e] for k, (v, e) in backend.data.items()), use_bin_type=True)


def restore_image(data: bytes) -> DictBackend:
    backend = DictBackend()
    for key, value, expire_at_ms in msgpack.unpackb(data, raw=False, use_list=True):
        backend.data[key] = (value, expire_at_ms)
    return backend


class SimNode:
    def __init__(self, node_id: int, initial_conf: ConfState) -> None:
        self.node_id = node_id
        self.storage = DurableStorage()
        self.core: ConsensusCore | None = None
        self.backend = DictBackend()
        self.applied = 0
        self.applied_term = 0
        self.initial_conf = initial_conf
        self.conf = initial_conf
        self.pending: Ready | None = None
        self.inbox: deque[object] = deque()
        self.incarnation = 0
        self.disk_delay_units = 0
        self.role = Role.FOLLOWER
        self.term = 0
        self.leader = 0
        self.commit = 0

    def reset_volatile(self) -> None:
        """Rebuild the in-memory state machine from what is on disk."""
        snapshot = self.storage.snapshot
        if snapshot is None:
            self.backend, self.applied, self.applied_term, self.conf = (
                DictBackend(), 0, 0, self.initial_conf)
        else:
            self.backend = restore_image(snapshot.data)
            self.applied, self.applied_term = snapshot.meta.index, snapshot.meta.term
            self.conf = snapshot.meta.conf
        self.pending = None
        self.inbox.clear()
        self.role, self.leader, self.commit = Role.FOLLOWER, 0, 0


class Cluster:
    def __init__(self, params: SimParams, rng: random.Random, trace: Trace,
                 make_core: CoreFactory, apply_conf: ConfApplier) -> None:
        self.params = params
        self.rng = rng
        self.trace = trace
        self.now = 0
        self._make_core = make_core
        self._apply_conf = apply_conf
        self._heap: list[tuple[int, int, int, object]] = []
        self._sequence = 0
        initial = ConfState(voters=frozenset(range(1, params.nodes + 1)))
        self.nodes = {i: SimNode(i, initial) for i in range(1, params.nodes + 1)}
        self.network = Network(rng, params, self._schedule_delivery)
        self.invariants = InvariantChecker()
        self.clients = Clients(rng, params, self)
        self.compactions = 0
        self.snapshots_installed = 0
        self.early_messages_sent = 0
        """Messages the cores let out before their Ready was durable."""
        self.early_messages_before_disk = 0
        """Of those, the ones that left while a slow disk had the Ready."""
        self.crashed: set[int] = set()
        self.on_applied: Callable[[SimNode, Entry], None] | None = None
        self.on_new_leader: Callable[[SimNode], None] | None = None
        self.on_leader_commit: Callable[[SimNode], None] | None = None
        for node in self.nodes.values():
            self.start(node)

    # -- events ------------------------------------------------------------------------
    def push(self, at: int, kind: int, payload: object) -> None:
        assert at >= self.now, "scheduling into the past"
        self._sequence += 1
        heapq.heappush(self._heap, (at, self._sequence, kind, payload))

    def _schedule_delivery(self, at: int, message: object) -> None:
        self.push(at, DELIVER, message)

    def wake_client(self, at: int, process: int) -> None:
        self.push(at, CLIENT, process)

    def wake_timeout(self, at: int, op_id: int) -> None:
        self.push(at, TIMEOUT, op_id)

    def node(self, node_id: int) -> SimNode | None:
        return self.nodes.get(node_id)

    def member_ids(self) -> list[int]:
        return list(self.nodes)

    def run_until(self, end: int, on_nemesis: Callable[[], None]) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end:
            at, _, kind, payload = heapq.heappop(heap)
            self.now = at
            if kind == DELIVER:
                self._deliver(payload)
            elif kind == TICK:
                self._tick(payload)  # type: ignore[arg-type]
            elif kind == DISK:
                self._disk_done(payload)  # type: ignore[arg-type]
            elif kind == CLIENT:
                touched = self.clients.act(payload)  # type: ignore[arg-type]
                if touched is not None:
                    self.drain(self.nodes[touched])
            elif kind == TIMEOUT:
                self.clients.on_timeout(payload)  # type: ignore[arg-type]
            elif kind == NEMESIS:
                on_nemesis()
            elif kind == RESTART:
                self.restart(self.nodes[payload])  # type: ignore[index]
            elif kind == ACTION:
                payload()  # type: ignore[operator]
        self.now = end

    def _deliver(self, message: object) -> None:
        if not self.network.arrive(message):
            return
        node = self.nodes.get(message.recipient)  # type: ignore[attr-defined]
        if node is None or node.core is None:
            return
        if self.trace.enabled:
            self.trace.detail(self.now, f"deliver {message!r}")
        if node.pending is not None:
            if len(node.inbox) < inbox_msgs_max:
                node.inbox.append(message)
            return
        node.core.step(message)
        self.drain(node)

    def _tick(self, payload: tuple[int, int]) -> None:
        node_id, incarnation = payload
        node = self.nodes[node_id]
        if node.incarnation != incarnation or node.core is None:
            return
        self.push(self.now + TICK_UNITS, TICK, payload)
        if node.pending is None:
            node.core.tick()
            self.drain(node)

    def _disk_done(self, payload: tuple[int, int]) -> None:
        node_id, incarnation = payload
        node = self.nodes[node_id]
        if node.incarnation != incarnation or node.pending is None:
            return
        ready, node.pending = node.pending, None
        self._handle(node, ready)
        self.drain(node)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, node: SimNode) -> None:
        assert node.core is None
        storage = node.storage
        blank = storage.snapshot is None and not storage.entries and storage.writes == 0
        node.reset_volatile()
        node.core = self._make_core(node.node_id, None if blank else storage.persistent_state())
        node.incarnation += 1
        self.crashed.discard(node.node_id)
        self.push(self.now + self.rng.randint(1, TICK_UNITS), TICK, (node.node_id, node.incarnation))

    def crash(self, node: SimNode) -> None:
        assert node.core is not None
        lost = "an unpersisted Ready" if node.pending is not None else "nothing unpersisted"
        self.trace.event(self.now, f"crash node {node.node_id} (loses {lost})")
        node.core = None
        node.incarnation += 1
        node.reset_volatile()
        self.crashed.add(node.node_id)
        self.invariants.observe_crash(node.node_id)
        self.clients.on_node_lost(node.node_id)

    def restart(self, node: SimNode) -> None:
        if node.core is not None:
            return
        self.trace.event(self.now, f"restart node {node.node_id} at term "
                         f"{node.storage.hard_state.term} log {node.storage.snapshot_index}.."
                         f"{node.storage.last_index}")
        self.start(node)

    # -- the Ready contract --------------------------------------------------------------
    def drain(self, node: SimNode) -> None:
        for _ in range(ready_rounds_max):
            core = node.core
            if core is None or node.pending is not None:
                return
            while node.inbox:
                core.step(node.inbox.popleft())
            if not core.has_ready():
                return
            ready = core.ready()
            if ready.must_sync() and node.disk_delay_units > 0:
                self.early_messages_before_disk += len(ready.early_messages)
                self._send_early(ready)  # before the (slow) fsync
                node.pending = ready
                at = self.now + self.rng.randint(1, node.disk_delay_units)
                self.push(at, DISK, (node.node_id, node.incarnation))
                return
            self._handle(node, ready)
        raise AssertionError(f"node {node.node_id} still has a Ready after {ready_rounds_max} rounds")

    def _handle(self, node: SimNode, ready: Ready) -> None:
        core = node.core
        assert core is not None
        node.storage.persist(ready.snapshot, ready.entries, ready.hard_state)
        if ready.snapshot is not None:
            self._install_snapshot(node, ready.snapshot)
        if ready.entries:
            self.invariants.observe_persisted(node.node_id, node.storage, ready.entries)
        self._send_early(ready)  # no-op if the disk-delay path sent them already
        for message in ready.messages:
            self.network.send(message, self.now)
        for entry in ready.committed_entries:
            self._apply(node, entry)
        for read_state in ready.read_states:
            self.clients.on_read_state(node.node_id, read_state)
        self.clients.serve_reads(node.node_id, node.applied, node.backend)
        core.advance(ready)
        self._observe_role(node, core)
        self._maybe_compact(node, core)

    def _send_early(self, ready: Ready) -> None:
        """Send the messages the core allows out before the fsync, once."""
        if ready.early_messages:
            for message in ready.early_messages:
                self.network.send(message, self.now)
            self.early_messages_sent += len(ready.early_messages)
            ready.early_messages = []

    def _install_snapshot(self, node: SimNode, snapshot: Snapshot) -> None:
        self.invariants.observe_snapshot(node.node_id, snapshot)
        self.snapshots_installed += 1
        self.trace.event(self.now, f"node {node.node_id} installs snapshot at index "
                         f"{snapshot.meta.index} term {snapshot.meta.term}")
        assert snapshot.meta.index >= node.applied, "a snapshot behind the applied index"
        node.backend = restore_image(snapshot.data)
        node.applied, node.applied_term = snapshot.meta.index, snapshot.meta.term
        node.conf = snapshot.meta.conf
        self.clients.on_node_lost(node.node_id, snapshot.meta.index)

    def _apply(self, node: SimNode, entry: Entry) -> None:
        assert entry.index == node.applied + 1, (
            f"node {node.node_id} applies index {entry.index} after {node.applied}")
        node.applied, node.applied_term = entry.index, entry.term
        self.invariants.observe_applied(node.node_id, entry)
        result = None
        if entry.kind == EntryKind.NORMAL and entry.data:
            result = apply_entry(node.backend, entry.data, entry.index, entry.term)
        elif entry.kind == EntryKind.CONFIG:
            node.conf = self._apply_conf(node.conf, entry.data)
            self.trace.event(self.now, f"node {node.node_id} applies conf at {entry.index}: "
                             f"voters {sorted(node.conf.voters)} learners {sorted(node.conf.learners)}")
        self.clients.on_applied(node.node_id, entry, result)
        if self.on_applied is not None:
            self.on_applied(node, entry)

    def _storages(self) -> dict[int, DurableStorage]:
        return {i: n.storage for i, n in self.nodes.items() if n.core is not None}

    def _observe_role(self, node: SimNode, core: ConsensusCore) -> None:
        status = core.status()
        is_leader = status.role == Role.LEADER
        new_leader = is_leader and (node.role != Role.LEADER or node.term != status.term)
        new_commit = is_leader and not new_leader and status.commit > node.commit
        node.role, node.term, node.leader = status.role, status.term, status.leader
        node.commit = status.commit
        if new_leader:
            self.trace.event(self.now, f"node {node.node_id} leads term {status.term}")
            if self.on_new_leader is not None:
                self.on_new_leader(node)
        elif new_commit and self.on_leader_commit is not None:
            self.on_leader_commit(node)
        self.invariants.observe_role(node.node_id, is_leader, status.term, status.commit,
                                     node.storage, self._storages() if is_leader else {})

    def _maybe_compact(self, node: SimNode, core: ConsensusCore) -> None:
        every = self.params.compaction_entries
        if not every or node.applied - node.storage.snapshot_index < every:
            return
        if node.storage.term_at(node.applied) != node.applied_term:
            return  # applied entries not all in this node's log (cannot happen; be safe)
        meta = SnapshotMeta(index=node.applied, term=node.applied_term, conf=node.conf)
        snapshot = Snapshot(meta=meta, data=snapshot_image(node.backend))
        self.invariants.observe_snapshot(node.node_id, snapshot)
        try:
            core.compact(node.applied, snapshot.data)
        except ConsensusError:
            return
        node.storage.compact(snapshot)
        self.compactions += 1

    # -- helpers for the nemesis -----------------------------------------------------------
    def running(self) -> list[SimNode]:
        return [node for node in self.nodes.values() if node.core is not None]

    def leaders(self) -> list[SimNode]:
        return [node for node in self.running()
                if node.role == Role.LEADER and node.pending is None]

    def try_core(self, node: SimNode, action: Callable[[ConsensusCore], object]) -> bool:
        """Run `action` on a running, non-stalled node's core; False if refused."""
        if node.core is None or node.pending is not None:
            return False
        try:
            action(node.core)
        except ConsensusError:
            return False
        self.drain(node)
        return True
