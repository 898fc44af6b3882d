"""One consensus group on one node: the driver of ONE consensus core.

Theory of operation
-------------------
A `Replica` owns a `ConsensusCore`, the futures of the proposals and reads it
accepted, and the group's slice of the node's WAL and state-machine store.
The node runs the Ready contract for all of its replicas together, in rounds:

1. `issue_reads()` turns the reads submitted since the last round into ONE
   `read_index` call (one quorum round serves a whole batch of reads);
2. `take_ready()` -> `persist(ready)`: append entries / hard state / snapshot
   metadata to the shared WAL (snapshots are installed into the store here);
3. the node sends `ready.early_messages` (the core's choice: a leader's
   appends and heartbeats of a term it made durable) and fdatasyncs the WAL
   ONCE for every replica's Ready of the round (rounds.py);
4. the node sends every replica's `ready.messages`;
5. `apply(ready)`: committed entries go to the store in one LMDB transaction,
   proposal futures complete, read states are served; then `core.advance`.

A proposal is tracked by the (term, index) `propose` returned. When a
committed entry shows up at that index with the same term, the future gets the
state machine's result; with another term, the proposal was lost (a new leader
overwrote it) and the future fails with a definite "not committed, retry".
Proposals and reads that have not completed within `forward_timeout_s` fail
with `Unavailable`; for writes the message says the outcome is unknown.

Compaction has two halves. Every max(`compact_every_entries`, keys in the
group) applied entries the replica hands the core a snapshot image from the
store (`core.compact`), which bounds the in-memory log. Every
`compact_every_entries` applied entries (even under steady load) it fsyncs the store and records snapshot
metadata + checkpoint in the WAL, which may then delete old segments. After a
restart the store may be ahead of the WAL's snapshot: the core re-delivers the
entries in between, the replica skips them (the store has them), and then
replaces the restored snapshot with a fresh image.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ringbolt.consensus.types import (
    ConsensusCore,
    Entry,
    EntryKind,
    NotLeader,
    ProposalDropped,
    Ready,
    Role,
    SnapshotMeta,
    Status,
)
from ringbolt.kv.machine import Result
from ringbolt.server import limits
from ringbolt.server.futures import fail_quietly
from ringbolt.server.service import Busy, ServiceError, Unavailable

ReadValue = tuple[bytes, int] | None
log = logging.getLogger("ringbolt.replica")


def storage_id(group_id: int) -> int:
    """Shards are numbered from 0 (ring, status, CLI); the WAL and the store
    number groups from 1, so shard s is stored as group s + 1."""
    return group_id + 1


class NotCommitted(ServiceError):
    """A definite failure: the entry was replaced by another leader's."""

    prefix = "TRYAGAIN"


class GroupLog(Protocol):
    """The WAL as one replica sees it (the node's shared `WriteAheadLog`)."""

    def append(self, group_id: int, *, entries: list[Entry], hard_state: Any,
               snapshot_meta: Any) -> None: ...

    def compact(self, group_id: int, index: int) -> None: ...


class GroupStore(Protocol):
    """The state-machine store as one replica sees it (the node's LMDB store)."""

    def apply(self, group_id: int, entries: list[Entry]) -> list[Result]: ...

    def applied_index(self, group_id: int) -> int: ...

    def get(self, group_id: int, key: bytes) -> ReadValue: ...

    def snapshot_bytes(self, group_id: int) -> bytes: ...

    def checkpoint(self, group_id: int) -> tuple[int, int]: ...

    def count(self, group_id: int) -> int: ...

    def install_snapshot(self, group_id: int, snapshot: Any) -> None: ...


@dataclass(slots=True)
class Proposal:
    term: int
    future: asyncio.Future[Result]
    deadline: float
    command: bytes
    retry_until: float
    """Until when the node may propose `command` again if it is lost."""
    local_only: bool
    """Forwarded to us: never forward it further when proposing it again."""


LostProposal = Callable[["Replica", Proposal], bool]
"""Called when a new leader overwrote a proposal; True if it took over the
proposal's future (proposing the command again), else the future fails."""


@dataclass(slots=True)
class _ReadBatch:
    reads: list[tuple[bytes, asyncio.Future[ReadValue]]]
    deadline: float
    index: int = -1


class Replica:
    def __init__(self, group_id: int, core: ConsensusCore, log: GroupLog, store: GroupStore,
                 *, clock: Callable[[], float],
                 compact_every_entries: int = limits.compact_every_entries,
                 on_lost: LostProposal | None = None,
                 stamp: Callable[[bytes], bytes] | None = None) -> None:
        self.group_id = group_id
        self.storage_id = storage_id(group_id)
        self.core = core
        self.log = log
        self.store = store
        self.clock = clock
        self.compact_every_entries = compact_every_entries
        self.applied = store.applied_index(self.storage_id)
        status = core.status()
        self.compacted = status.applied
        """Index of the core's latest snapshot (log entries up to it are dropped)."""
        self.checkpointed = status.applied
        """Index of the latest snapshot metadata + checkpoint written to the WAL."""
        self.snapshot_stale = self.applied > status.applied
        """Restored with a snapshot older than the store: replace it once caught up."""
        self.proposals: dict[int, Proposal] = {}
        self.on_lost = on_lost
        """The node's: proposes a lost command again (requests.py)."""
        self.stamp = stamp
        """Puts the proposing leader's time into a command (`kv.commands.stamp`):
        expiry at apply time then follows the leader's clock, not that of
        whichever node a client talked to."""
        self.read_batch: list[tuple[bytes, asyncio.Future[ReadValue]]] = []
        self.reads_waiting: dict[bytes, _ReadBatch] = {}
        """Batches whose ReadIndex round is in flight, by context."""
        self.reads_indexed: list[_ReadBatch] = []
        """Batches with a read index, waiting for apply to reach it."""
        self.unsynced: dict[int, int] = {}
        """Rounds appended to the WAL whose sync has not completed: id(ready) ->
        first index they appended (0 for a snapshot)."""
        self._contexts = itertools.count(int(clock() * 1e9))
        """ReadIndex contexts, unique across restarts of this node: an answer to a
        previous incarnation's read may still arrive and must match nothing."""
        self.leader = 0
        self.role = Role.FOLLOWER
        self.term = 0
        self.stats = {"proposals": 0, "proposals_dropped": 0, "applied_entries": 0,
                      "apply_batches": 0, "reads": 0, "read_batches": 0, "not_committed": 0,
                      "timeouts": 0, "snapshots_taken": 0, "snapshots_installed": 0,
                      "leader_changes": 0}

    # -- submissions (called from client and peer callbacks) --------------------

    def propose(self, command: bytes, *, retry_until: float = 0.0,
                local_only: bool = False) -> asyncio.Future[Result]:
        """Raises `NotLeader` (caller forwards) or `Busy`. If a new leader
        overwrites the entry before `retry_until`, `on_lost` may propose the
        command again under the same future (clients see only latency)."""
        if len(self.proposals) >= limits.proposals_pending_max:
            raise Busy(f"shard {self.group_id} has too many writes in flight; retry")
        try:
            term, index = self.core.propose(command if self.stamp is None else self.stamp(command))
        except ProposalDropped as error:
            self.stats["proposals_dropped"] += 1
            raise Busy(f"shard {self.group_id} refused the write ({error}); "
                       "it was not executed, retry") from None
        assert index not in self.proposals, "the core reused an index it handed out"
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.proposals[index] = Proposal(term, future, self.clock() + limits.forward_timeout_s,
                                         command, retry_until, local_only)
        self.stats["proposals"] += 1
        return future

    def read(self, key: bytes) -> asyncio.Future[ReadValue]:
        pending = len(self.read_batch) + len(self.reads_waiting) + len(self.reads_indexed)
        if pending >= limits.reads_pending_max:
            raise Busy(f"shard {self.group_id} has too many reads in flight; retry")
        future: asyncio.Future[ReadValue] = asyncio.get_running_loop().create_future()
        self.read_batch.append((key, future))
        self.stats["reads"] += 1
        return future

    def read_stale(self, key: bytes) -> ReadValue:
        return self.store.get(self.storage_id, key)

    # -- one round of the Ready contract ----------------------------------------

    def issue_reads(self) -> None:
        if not self.read_batch:
            return
        batch = _ReadBatch(self.read_batch, self.clock() + limits.forward_timeout_s)
        self.read_batch = []
        context = next(self._contexts).to_bytes(8, "big")
        try:
            self.core.read_index(context)
        except NotLeader as error:
            _fail_reads(batch, Unavailable(f"shard {self.group_id} has no leader "
                                           f"(hint: {error.leader_hint or 'none'}); retry"))
            return
        except ProposalDropped as error:
            _fail_reads(batch, Busy(f"shard {self.group_id} refused the read ({error}); retry"))
            return
        self.stats["read_batches"] += 1
        self.reads_waiting[context] = batch

    def take_ready(self) -> Ready | None:
        if not self.core.has_ready():
            return None
        ready = self.core.ready()
        if ready.soft_state is not None:
            if ready.soft_state.leader != self.leader:
                self.stats["leader_changes"] += 1
                self._fail_waiting_reads()
                log.info("shard %d: leader is now %s (term %d, this node %s)", self.group_id,
                         ready.soft_state.leader or "unknown", ready.soft_state.term,
                         ready.soft_state.role.name.lower())
            self.leader = ready.soft_state.leader
            self.role = ready.soft_state.role
            self.term = ready.soft_state.term
        return ready

    def persist(self, ready: Ready) -> None:
        """Step 1 of the contract, without the sync (the node syncs once per round)."""
        snapshot = ready.snapshot
        if snapshot is not None:
            assert snapshot.meta.index > self.applied, "a snapshot must move the group forward"
            self.store.install_snapshot(self.storage_id, snapshot)
            self.applied = max(snapshot.meta.index, self.store.applied_index(self.storage_id))
            self.compacted = self.checkpointed = snapshot.meta.index
            self.stats["snapshots_installed"] += 1
            self._fail_covered(snapshot.meta.index)
        if snapshot is not None:
            self.unsynced[id(ready)] = 0  # nothing is durable-only applied meanwhile
        elif ready.entries:
            self.unsynced[id(ready)] = ready.entries[0].index
        if ready.entries or ready.hard_state is not None or snapshot is not None:
            self.log.append(self.storage_id, entries=ready.entries, hard_state=ready.hard_state,
                            snapshot_meta=None if snapshot is None else snapshot.meta)

    def apply(self, ready: Ready, *, durable_only: bool = False) -> None:
        """Step 3: apply committed entries (one store transaction), answer futures.

        With `durable_only`, apply only committed entries already made durable
        by a completed sync: those below the first entry appended by any round
        whose sync is still running (`unsynced`). The node does that while the
        WAL syncs, so a commit does not wait for an unrelated fsync before the
        client hears about it."""
        entries = [e for e in ready.committed_entries if e.index > self.applied]
        if durable_only:
            floor = min(self.unsynced.values(), default=entries[-1].index + 1 if entries else 0)
            entries = [e for e in entries if e.index < floor]
            if entries and entries[0].index != self.applied + 1:
                return  # an earlier round still has entries to apply after its sync
        else:
            self.unsynced.pop(id(ready), None)  # its sync has completed
        if entries:
            assert entries[0].index == self.applied + 1, "committed entries must be contiguous"
            results = self.store.apply(self.storage_id, entries)
            assert len(results) == len(entries), "the store answers every entry"
            self.applied = entries[-1].index
            self.stats["applied_entries"] += len(entries)
            self.stats["apply_batches"] += 1
            for entry, result in zip(entries, results, strict=True):
                self._complete(entry, result)
        if durable_only:
            return
        for state in ready.read_states:
            batch = self.reads_waiting.pop(state.context, None)
            if batch is not None:
                batch.index = state.index
                self.reads_indexed.append(batch)
        if self.reads_indexed:
            self._serve_reads()

    def advance(self, ready: Ready) -> None:
        """Step 4; then compact if due (the core compacts only what it knows is applied)."""
        self.core.advance(ready)
        status = self.core.status()
        if status.applied < self.applied:
            return  # still replaying entries the store had applied before a restart
        keys = self.store.count(self.storage_id)
        if self.snapshot_stale or self.applied - self.compacted >= max(
                self.compact_every_entries, keys):
            self._compact()
        if self.applied - self.checkpointed >= self.compact_every_entries:
            self._checkpoint(status)

    def _complete(self, entry: Entry, result: Result) -> None:
        proposal = self.proposals.pop(entry.index, None)
        if proposal is None or proposal.future.done():
            return
        if proposal.term != entry.term or entry.kind is not EntryKind.NORMAL:
            self.stats["not_committed"] += 1
            if self.on_lost is not None and self.on_lost(self, proposal):
                return
            fail_quietly(proposal.future, NotCommitted(
                "the write was not committed (leadership changed); retry"))
        else:
            proposal.future.set_result(result)

    def fail_waiting_reads(self) -> None:
        """For the node: the ReadIndex requests of the waiting reads cannot be
        answered (dropped, or their link to the leader closed)."""
        self._fail_waiting_reads()

    def _fail_waiting_reads(self) -> None:
        """ReadIndex rounds in flight went to (or were led by) the previous
        leader and may never be answered: fail them now (reads have no effect,
        so the client may simply retry) rather than at their deadline."""
        for batch in self.reads_waiting.values():
            _fail_reads(batch, Unavailable(f"shard {self.group_id}: the leader changed "
                                           "during the read; retry"))
        self.reads_waiting.clear()

    def _serve_reads(self) -> None:
        waiting: list[_ReadBatch] = []
        for batch in self.reads_indexed:
            if batch.index > self.applied:
                waiting.append(batch)
                continue
            for key, future in batch.reads:
                if not future.done():
                    future.set_result(self.store.get(self.storage_id, key))
        self.reads_indexed = waiting

    def _compact(self) -> None:
        """Hand the core a snapshot at the applied index so it can drop its log
        prefix (and send the image to a follower that fell behind it). The
        interval grows with the group's size (`max(compact_every_entries,
        keys)`), keeping the cost of serializing the image O(1) per entry."""
        self.core.compact(self.applied, self.store.snapshot_bytes(self.storage_id))
        self.compacted = self.applied
        self.snapshot_stale = False
        self.stats["snapshots_taken"] += 1

    def _checkpoint(self, status: Status) -> None:
        """Let the WAL delete old segments: fsync the store, then record the
        snapshot metadata and the checkpoint (both made durable by the next
        round's WAL sync). The log may hold entries past the applied index:
        replay keeps those that follow the checkpoint's (index, term)."""
        index, term = self.store.checkpoint(self.storage_id)
        assert index == self.applied, "the store and the replica disagree on applied"
        meta = SnapshotMeta(index=index, term=term, conf=status.conf)
        self.log.append(self.storage_id, entries=[], hard_state=None, snapshot_meta=meta)
        self.log.compact(self.storage_id, index)
        self.checkpointed = index

    def _fail_covered(self, index: int) -> None:
        """A snapshot replaced the log up to `index`: proposals there are unknown."""
        for proposal_index in [i for i in self.proposals if i <= index]:
            proposal = self.proposals.pop(proposal_index)
            if not proposal.future.done():
                fail_quietly(proposal.future, Unavailable(
                    "the outcome of the write is unknown (replaced by a snapshot)"))

    # -- housekeeping ------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Fail proposals and reads past their deadline (both are kept in deadline order)."""
        while self.proposals:
            index, proposal = next(iter(self.proposals.items()))
            if proposal.deadline > now:
                break
            del self.proposals[index]
            self.stats["timeouts"] += 1
            if not proposal.future.done():
                fail_quietly(proposal.future, Unavailable(
                    f"shard {self.group_id}: no commit within {limits.forward_timeout_s:g} s; "
                    "the outcome of the write is unknown"))
        while self.reads_waiting:
            context, batch = next(iter(self.reads_waiting.items()))
            if batch.deadline > now:
                break
            del self.reads_waiting[context]
            self.stats["timeouts"] += 1
            _fail_reads(batch, Unavailable(f"shard {self.group_id}: read not confirmed by a "
                                           "quorum in time; retry"))
        expired = [b for b in self.reads_indexed if b.deadline <= now]
        if expired:
            self.reads_indexed = [b for b in self.reads_indexed if b.deadline > now]
            for batch in expired:
                _fail_reads(batch, Unavailable(f"shard {self.group_id}: replica too far "
                                               "behind to serve the read in time; retry"))

    def fail_all(self, error: ServiceError) -> None:
        """Shutdown: nothing pending will complete."""
        for proposal in self.proposals.values():
            if not proposal.future.done():
                fail_quietly(proposal.future, error)
        self.proposals.clear()
        batches = [_ReadBatch(self.read_batch, 0.0), *self.reads_waiting.values(),
                   *self.reads_indexed]
        for batch in batches:
            _fail_reads(batch, error)
        self.read_batch = []
        self.reads_waiting.clear()
        self.reads_indexed = []

    def status(self) -> Status:
        return self.core.status()

    def statistics(self) -> dict[str, int]:
        core_stats = getattr(self.core, "statistics", None)
        elections = core_stats().get("elections", 0) if callable(core_stats) else 0
        return {**self.stats, "elections": elections, "proposals_pending": len(self.proposals),
                "reads_pending": len(self.read_batch) + sum(
                    len(b.reads) for b in (*self.reads_waiting.values(), *self.reads_indexed)),
                "applied": self.applied}


def _fail_reads(batch: _ReadBatch, error: ServiceError) -> None:
    for _, future in batch.reads:
        if not future.done():
            fail_quietly(future, error)
