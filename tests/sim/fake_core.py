"""A one-node stand-in core for harness tests: commits what it persists.

It is deliberately trivial -- it lets tests exercise the simulator's client,
history, apply and compaction paths independently of the real Raft; it can
also be told to lie (serve stale reads) so the harness can prove it notices.
"""

from __future__ import annotations

import random

from ringbolt.consensus.types import (
    ConfChange,
    ConfState,
    Entry,
    HardState,
    PersistentState,
    ReadState,
    Ready,
    Role,
    Status,
)


class SoloCore:
    def __init__(self, node_id: int, restored: PersistentState | None, *, stale_reads: bool = False) -> None:
        self.node_id = node_id
        self.term = 1 if restored is None else max(1, restored.hard_state.term)
        self.log: list[Entry] = [] if restored is None else list(restored.entries)
        snapshot_index = 0 if restored is None or restored.snapshot is None else restored.snapshot.meta.index
        self.offset = snapshot_index
        self.commit = self.last_index()
        self.applied = snapshot_index
        self.stale_reads = stale_reads
        self.unpersisted: list[Entry] = []
        self.reads: list[ReadState] = []
        self.hard_dirty = restored is None

    def last_index(self) -> int:
        return self.log[-1].index if self.log else self.offset

    def tick(self) -> None:
        pass

    def step(self, message: object) -> None:
        raise AssertionError("a solo core gets no messages")

    def propose(self, command: bytes) -> tuple[int, int]:
        entry = Entry(term=self.term, index=self.last_index() + 1, data=command)
        self.log.append(entry)
        self.unpersisted.append(entry)
        return entry.term, entry.index

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        raise AssertionError("not supported")

    def read_index(self, context: bytes) -> None:
        index = 0 if self.stale_reads else self.last_index()
        self.reads.append(ReadState(index=index, context=context))

    def transfer_leadership(self, target: int) -> None:
        pass

    def compact(self, index: int, data: bytes) -> None:
        self.log = [e for e in self.log if e.index > index]
        self.offset = index

    def has_ready(self) -> bool:
        return bool(self.unpersisted or self.reads or self.hard_dirty or self.applied < self.commit)

    def ready(self) -> Ready:
        committed = [e for e in self.log if self.applied < e.index <= self.commit]
        new_commit = self.last_index()
        committed += list(self.unpersisted)
        return Ready(hard_state=HardState(term=self.term, vote=self.node_id, commit=new_commit),
                     entries=list(self.unpersisted), committed_entries=committed,
                     read_states=list(self.reads))

    def advance(self, ready: Ready) -> None:
        self.unpersisted = []
        self.reads = []
        self.hard_dirty = False
        if ready.committed_entries:
            self.applied = ready.committed_entries[-1].index
        self.commit = max(self.commit, self.applied)

    def status(self) -> Status:
        return Status(node_id=self.node_id, role=Role.LEADER, term=self.term, leader=self.node_id,
                      commit=self.commit, applied=self.applied, last_index=self.last_index(),
                      conf=ConfState(voters=frozenset({self.node_id})))

    def progress(self, node: int) -> None:
        return None  # no followers

    def statistics(self) -> dict[str, int]:
        return {"term": self.term, "commit": self.commit, "applied": self.applied}


def solo_factory(*, stale_reads: bool = False):  # type: ignore[no-untyped-def]
    def maker(params: object, rng: random.Random):  # type: ignore[no-untyped-def]
        def make(node_id: int, restored: PersistentState | None) -> SoloCore:
            return SoloCore(node_id, restored, stale_reads=stale_reads)
        return make
    return maker
