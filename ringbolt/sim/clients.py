"""Simulated clients: get/put/cas/delete on a few keys, recorded as a history.

Theory of operation
-------------------
Each client process has at most one operation outstanding and a guess of
which node leads. An operation is recorded (`invoke`) only once it reaches a
running node; then:

- a write (put, cas, delete) is `propose`d there with the `kv.commands`
  codec. The proposal's (term, index) is remembered; when that node applies
  index `index` the op completes: `ok` (or `fail` for a cas whose expected
  value did not hold) if the applied entry has our term, `fail` if another
  term's entry was committed there (a (term, index) pair is proposed once,
  so ours can then never commit). If the node crashes, installs a snapshot
  over the index, or the client times out, the outcome is unknown: `info`.
- a read is registered with `read_index(context)`; once the node emits the
  `ReadState` and has applied up to its index, the value is read from that
  node's state machine: `ok`. A read that does not finish is `fail` (reads
  change nothing, so one that did not return certainly had no effect).
- `NotLeader` / `ProposalDropped` mean the request was refused: `fail`, then
  the client follows the leader hint (or picks a node at random) and issues
  a *new* operation after a bounded backoff.

After an `info` the process retires and a fresh process id takes its place
(its old op stays open forever in the history, as a crashed Jepsen client's).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ringbolt.consensus.types import Entry, NotLeader, ProposalDropped, ReadState
from ringbolt.kv import commands
from ringbolt.kv.machine import DictBackend, Result, live_value
from ringbolt.sim.params import TICK_UNITS, SimParams

if TYPE_CHECKING:
    from ringbolt.sim.cluster import SimNode

from ringbolt.check.history import History

backoff_ticks_max = 8


class ClientHost(Protocol):
    """What clients need from the cluster driver."""

    now: int

    def node(self, node_id: int) -> SimNode | None: ...

    def member_ids(self) -> list[int]: ...

    def wake_client(self, at: int, process: int) -> None: ...

    def wake_timeout(self, at: int, op_id: int) -> None: ...


@dataclass(slots=True)
class Outstanding:
    op_id: int
    process: int
    f: str
    key: str
    node: int
    term: int = 0
    index: int = 0
    context: bytes = b""
    read_index: int = -1


class Clients:
    def __init__(self, rng: random.Random, params: SimParams, host: ClientHost) -> None:
        self._rng = rng
        self._params = params
        self._host = host
        self.history = History()
        self.keys = [f"k{n}" for n in range(params.keys)]
        self.process_of_slot = list(range(params.clients))
        self.target = [rng.choice(host.member_ids()) for _ in range(params.clients)]
        self.by_op: dict[int, Outstanding] = {}
        self.by_process: dict[int, Outstanding] = {}
        self.writes: dict[tuple[int, int], Outstanding] = {}
        self.reads: dict[tuple[int, bytes], Outstanding] = {}
        self.next_value = 0
        self.stopped = False
        self.completed = {"ok": 0, "fail": 0, "info": 0}

    def start(self) -> None:
        for slot in range(self._params.clients):
            self._host.wake_client(self._host.now + self._rng.randint(1, TICK_UNITS * 5), slot)

    # -- issuing -------------------------------------------------------------------
    def act(self, slot: int) -> int | None:
        """Slot `slot` issues its next op; returns the node the driver must drain."""
        process = self.process_of_slot[slot]
        if self.stopped or process in self.by_process:
            return None
        node = self._host.node(self.target[slot])
        if node is None or node.core is None or node.pending is not None:
            self.target[slot] = self._rng.choice(self._host.member_ids())
            self._sleep(slot, backoff=True)
            return None
        f = self._rng.choice(("read", "read", "write", "write", "cas", "delete"))
        key = self._rng.choice(self.keys)
        if f == "read":
            self._read(slot, process, node, key)
        else:
            self._write(slot, process, node, f, key)
        return node.node_id

    def _write(self, slot: int, process: int, node: SimNode, f: str, key: str) -> None:
        self.next_value += 1
        new = f"v{self.next_value}"
        value: object
        if f == "write":
            value, data = new, commands.put(key.encode(), new.encode())
        elif f == "cas":
            expected = self._rng.choice([None, *(f"v{n}" for n in range(max(1, self.next_value - 6), self.next_value))])
            value = [expected, new]
            data = commands.cas(key.encode(), None if expected is None else expected.encode(), new.encode())
        else:
            value, data = None, commands.delete(key.encode())
        op_id = self.history.invoke(process, f, key, value)
        assert node.core is not None
        try:
            term, index = node.core.propose(data)
        except (NotLeader, ProposalDropped) as error:
            self._refused(slot, op_id, error)
            return
        op = Outstanding(op_id, process, f, key, node.node_id, term=term, index=index)
        previous = self.writes.get((node.node_id, index))
        if previous is not None:  # the node re-used an index: the older op was overwritten
            self._finish(previous, "info")
        self.writes[(node.node_id, index)] = op
        self._track(op)

    def _read(self, slot: int, process: int, node: SimNode, key: str) -> None:
        op_id = self.history.invoke(process, "read", key, None)
        context = f"r{op_id}".encode()
        assert node.core is not None
        try:
            node.core.read_index(context)
        except (NotLeader, ProposalDropped) as error:
            self._refused(slot, op_id, error)
            return
        op = Outstanding(op_id, process, "read", key, node.node_id, context=context)
        self.reads[(node.node_id, context)] = op
        self._track(op)

    def _track(self, op: Outstanding) -> None:
        self.by_op[op.op_id] = op
        self.by_process[op.process] = op
        timeout = self._params.client_timeout_ticks * TICK_UNITS
        self._host.wake_timeout(self._host.now + timeout, op.op_id)

    def _refused(self, slot: int, op_id: int, error: Exception) -> None:
        self.history.fail(op_id)
        self.completed["fail"] += 1
        if isinstance(error, NotLeader) and error.leader_hint:
            self.target[slot] = error.leader_hint
        else:
            self.target[slot] = self._rng.choice(self._host.member_ids())
        self._sleep(slot, backoff=True)

    def _sleep(self, slot: int, *, backoff: bool) -> None:
        high = backoff_ticks_max if backoff else self._params.client_think_ticks_max
        self._host.wake_client(self._host.now + self._rng.randint(1, high * TICK_UNITS), slot)

    # -- completions -----------------------------------------------------------------
    def _finish(self, op: Outstanding, outcome: str, value: object = None) -> None:
        assert self.by_op.pop(op.op_id) is op
        assert self.by_process.pop(op.process) is op
        if op.f == "read":
            self.reads.pop((op.node, op.context), None)
        else:
            if self.writes.get((op.node, op.index)) is op:
                del self.writes[(op.node, op.index)]
        if outcome == "ok":
            self.history.ok(op.op_id, value)
        elif outcome == "fail":
            self.history.fail(op.op_id)
        else:
            self.history.info(op.op_id)
        self.completed[outcome] += 1
        slot = self.process_of_slot.index(op.process)
        if outcome == "info":
            self.process_of_slot[slot] = max(self.process_of_slot) + self._params.clients
        self._sleep(slot, backoff=False)

    def on_applied(self, node_id: int, entry: Entry, result: Result) -> None:
        op = self.writes.get((node_id, entry.index))
        if op is None:
            return
        if entry.term != op.term or (op.f == "cas" and result is False):
            self._finish(op, "fail")
        else:
            assert result is not False or op.f == "delete", f"unexpected result {result!r} for {op.f}"
            self._finish(op, "ok")

    def on_read_state(self, node_id: int, read_state: ReadState) -> None:
        op = self.reads.get((node_id, read_state.context))
        if op is not None:
            op.read_index = read_state.index

    def serve_reads(self, node_id: int, applied: int, backend: DictBackend) -> None:
        ready = [op for (node, _), op in self.reads.items()
                 if node == node_id and 0 <= op.read_index <= applied]
        for op in ready:
            value = live_value(backend, op.key.encode(), 0)
            self._finish(op, "ok", None if value is None else value.decode())

    def on_node_lost(self, node_id: int, up_to_index: int | None = None) -> None:
        """The node crashed (`up_to_index` None) or replaced its state machine
        with a snapshot covering `up_to_index`: its pending ops can no longer
        learn their outcome."""
        for op in [op for (node, index), op in self.writes.items()
                   if node == node_id and (up_to_index is None or index <= up_to_index)]:
            self._finish(op, "info")
        if up_to_index is None:
            for op in [op for (node, _), op in self.reads.items() if node == node_id]:
                self._finish(op, "fail")

    def on_timeout(self, op_id: int) -> None:
        op = self.by_op.get(op_id)
        if op is not None:
            self._finish(op, "fail" if op.f == "read" else "info")

    def stop(self) -> None:
        """End of run: everything still outstanding is indeterminate."""
        self.stopped = True
        for op in list(self.by_op.values()):
            self._finish(op, "fail" if op.f == "read" else "info")
