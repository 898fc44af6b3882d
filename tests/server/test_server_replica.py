"""Replica bookkeeping against a scripted core: futures, batching, deadlines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ringbolt.consensus.types import (
    ConfState,
    Entry,
    HardState,
    NotLeader,
    ReadState,
    Ready,
    Role,
    SoftState,
    Status,
)
from ringbolt.kv import commands
from ringbolt.kv.machine import DictBackend, Result, apply_command
from ringbolt.server.replica import NotCommitted, Replica
from ringbolt.server.service import Unavailable


class ScriptedCore:
    """Hands out (term, index) like a leader and whatever Readys the test queues."""

    node_id = 1

    def __init__(self) -> None:
        self.term = 1
        self.last = 0
        self.readies: list[Ready] = []
        self.read_contexts: list[bytes] = []
        self.advanced: list[Ready] = []
        self.leader = True

    def propose(self, command: bytes) -> tuple[int, int]:
        if not self.leader:
            raise NotLeader(2)
        self.last += 1
        return self.term, self.last

    def read_index(self, context: bytes) -> None:
        self.read_contexts.append(context)

    def has_ready(self) -> bool:
        return bool(self.readies)

    def ready(self) -> Ready:
        return self.readies.pop(0)

    def advance(self, ready: Ready) -> None:
        self.advanced.append(ready)

    def compact(self, index: int, data: bytes) -> None:
        pass

    def status(self) -> Status:
        return Status(node_id=1, role=Role.LEADER, term=self.term, leader=1, commit=0,
                      applied=self.advanced[-1].committed_entries[-1].index
                      if self.advanced and self.advanced[-1].committed_entries else 0,
                      last_index=self.last, conf=ConfState(voters=frozenset({1})))


class MemoryStore:
    def __init__(self) -> None:
        self.backend = DictBackend()
        self.applied = 0

    def apply(self, group_id: int, entries: list[Entry]) -> list[Result]:
        results = []
        for entry in entries:
            results.append(apply_command(self.backend, entry.data))
            self.applied = entry.index
        return results

    def applied_index(self, group_id: int) -> int:
        return self.applied

    def get(self, group_id: int, key: bytes) -> tuple[bytes, int] | None:
        return self.backend.get(key)

    def count(self, group_id: int) -> int:
        return len(self.backend.data)

    def snapshot_bytes(self, group_id: int) -> bytes:
        return b""

    def checkpoint(self, group_id: int) -> tuple[int, int]:
        return self.applied, 1

    def install_snapshot(self, group_id: int, snapshot: Any) -> None:
        raise AssertionError("not in these tests")


class MemoryLog:
    def __init__(self) -> None:
        self.appends: list[tuple[int, list[Entry], Any]] = []

    def append(self, group_id: int, *, entries: list[Entry], hard_state: Any,
               snapshot_meta: Any) -> None:
        self.appends.append((group_id, entries, hard_state))

    def compact(self, group_id: int, index: int) -> None:
        pass


def put(key: bytes, value: bytes) -> bytes:
    return commands.put(key, value)


def run_round(replica: Replica) -> None:
    replica.issue_reads()
    ready = replica.take_ready()
    assert ready is not None
    replica.persist(ready)
    replica.apply(ready, durable_only=True)
    replica.apply(ready)
    replica.advance(ready)


def make(now: list[float]) -> tuple[Replica, ScriptedCore, MemoryLog]:
    core, log = ScriptedCore(), MemoryLog()
    replica = Replica(0, core, log, MemoryStore(), clock=lambda: now[0])  # type: ignore[arg-type]
    return replica, core, log


def test_proposals_complete_with_results_or_not_committed() -> None:
    async def scenario() -> None:
        now = [0.0]
        replica, core, log = make(now)
        first = replica.propose(put(b"a", b"1"))
        second = replica.propose(put(b"b", b"2"))
        entries = [Entry(term=1, index=1, data=put(b"a", b"1")),
                   Entry(term=1, index=2, data=put(b"b", b"2"))]
        core.readies.append(Ready(entries=entries, hard_state=HardState(term=1, commit=0),
                                  soft_state=SoftState(leader=1, role=Role.LEADER, term=1)))
        run_round(replica)
        assert log.appends == [(1, entries, HardState(term=1, commit=0))]  # shard 0 -> group 1
        assert not first.done()
        # index 1 commits with our term; index 2 was replaced by another leader's entry
        core.readies.append(Ready(committed_entries=[
            entries[0], Entry(term=2, index=2, data=put(b"b", b"other"))]))
        run_round(replica)
        assert first.result() is True  # PUT applied
        with pytest.raises(NotCommitted, match="not committed"):
            second.result()
        assert replica.role is Role.LEADER and replica.leader == 1

    asyncio.run(scenario())


def test_a_lost_proposal_goes_to_the_node_with_its_command_and_retry_bounds() -> None:
    """`on_lost` sees the overwritten proposal (command, retry deadline, whether
    it was forwarded to us); when it takes over, the client's future stays
    pending for the new attempt instead of failing."""
    async def scenario() -> None:
        lost: list[tuple[bytes, float, bool]] = []
        take_over = [True]

        def on_lost(replica: Replica, proposal: Any) -> bool:
            lost.append((proposal.command, proposal.retry_until, proposal.local_only))
            return take_over[0]

        core, log = ScriptedCore(), MemoryLog()
        replica = Replica(0, core, log, MemoryStore(), clock=lambda: 0.0,  # type: ignore[arg-type]
                          on_lost=on_lost)
        first = replica.propose(put(b"a", b"1"), retry_until=5.0, local_only=True)
        second = replica.propose(put(b"b", b"2"), retry_until=7.0)
        take_over[0] = True
        core.readies.append(Ready(committed_entries=[
            Entry(term=2, index=1, data=put(b"a", b"other"))]))
        run_round(replica)
        assert lost == [(put(b"a", b"1"), 5.0, True)]
        assert not first.done()  # the node proposes it again under the same future
        take_over[0] = False
        core.readies.append(Ready(committed_entries=[
            Entry(term=2, index=2, data=put(b"b", b"other"))]))
        run_round(replica)
        assert lost[1] == (put(b"b", b"2"), 7.0, False)
        with pytest.raises(NotCommitted, match="not committed"):
            second.result()

    asyncio.run(scenario())


def test_committed_entries_below_the_new_append_apply_before_the_sync() -> None:
    async def scenario() -> None:
        replica, core, _ = make([0.0])
        future = replica.propose(put(b"a", b"1"))
        core.propose(b"")  # index 2, appended in the same Ready as index 1's commit
        ready = Ready(entries=[Entry(term=1, index=2, data=put(b"b", b"2"))],
                      committed_entries=[Entry(term=1, index=1, data=put(b"a", b"1")),
                                         Entry(term=1, index=2, data=put(b"b", b"2"))])
        replica.persist(ready)
        replica.apply(ready, durable_only=True)
        assert future.done()  # index 1 was persisted by an earlier round
        assert replica.applied == 1  # index 2 waits for this round's sync
        replica.apply(ready)
        assert replica.applied == 2

    asyncio.run(scenario())


def test_reads_are_batched_into_one_read_index_and_wait_for_apply() -> None:
    async def scenario() -> None:
        replica, core, _ = make([0.0])
        replica.store.apply(0, [Entry(term=1, index=1, data=put(b"k", b"old"))])
        replica.applied = 1
        reads = [replica.read(b"k") for _ in range(3)]
        core.readies.append(Ready())
        run_round(replica)
        assert len(core.read_contexts) == 1
        context = core.read_contexts[0]
        core.readies.append(Ready(read_states=[ReadState(index=2, context=context)]))
        run_round(replica)
        assert not any(r.done() for r in reads)  # applied 1 < read index 2
        core.readies.append(Ready(committed_entries=[Entry(term=1, index=2,
                                                           data=put(b"k", b"new"))]))
        run_round(replica)
        assert [r.result() for r in reads] == [(b"new", 0)] * 3

    asyncio.run(scenario())


def test_deadlines_fail_writes_as_unknown_and_reads_as_retry() -> None:
    async def scenario() -> None:
        now = [0.0]
        replica, core, _ = make(now)
        write = replica.propose(put(b"a", b"1"))
        read = replica.read(b"a")
        replica.issue_reads()
        now[0] = 4.0
        replica.expire(now[0])
        assert not write.done() and not read.done()
        now[0] = 10.0
        replica.expire(now[0])
        with pytest.raises(Unavailable, match="outcome of the write is unknown"):
            write.result()
        with pytest.raises(Unavailable, match="retry"):
            read.result()

    asyncio.run(scenario())


def test_not_leader_propagates_for_forwarding() -> None:
    async def scenario() -> None:
        replica, core, _ = make([0.0])
        core.leader = False
        with pytest.raises(NotLeader):
            replica.propose(put(b"a", b"1"))
        assert replica.proposals == {}

    asyncio.run(scenario())
