"""The round loop of one node: every hosted core's Ready, one WAL sync, in order.

Theory of operation
-------------------
Submissions, peer messages and ticks only touch the cores and set the
registry's `work` event; the round is prepared on the next loop iteration,
so everything that arrived in one iteration is handled together:

1. every replica's Ready is appended to the shared WAL (`Replica.persist`);
2. the messages each core marked as safe before its own fsync
   (`Ready.early_messages`: a leader's appends and heartbeats) leave at once,
   so the followers' fsyncs overlap ours;
3. ONE fdatasync makes the whole round durable (group commit: the
   `GroupCommitter` of storage/group_commit.py) -- meanwhile commits that
   earlier syncs already made durable are applied;
4. the rest of the messages are sent (one write per peer), every group
   applies its committed entries in one store transaction and advances.

A round whose Ready only moves the commit index costs no sync (`needs_sync`).

The fdatasync runs on the loop's own thread (`GroupCommitter.sync_inline`):
measured on a 2-core machine with three nodes it beats handing it to a worker
thread at every load (docs/benchmarks.md) -- the hop costs more than the
~0.1-0.3 ms sync, and a busy loop builds bigger batches meanwhile. A sync that
fails (a full disk) goes to the worker thread and is retried there; while such
a round waits, the next one may be prepared (`rounds_inflight_max` = 2) and
rounds finish strictly in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ringbolt.consensus.interface import MessageCodec
from ringbolt.consensus.types import Ready
from ringbolt.server import limits
from ringbolt.server.registry import ReplicaRegistry
from ringbolt.server.replica import Replica
from ringbolt.storage.errors import StorageFailed
from ringbolt.storage.group_commit import GroupCommitter

log = logging.getLogger("ringbolt.node")

Round = list[tuple[Replica, Ready]]


class RaftLinks(Protocol):
    """What the driver needs of the transport."""

    def send_raft(self, peer: int, group_id: int, payload: bytes) -> bool: ...

    def flush(self) -> None: ...


class RoundDriver:
    """Drives every hosted replica through the Ready contract (module docstring)."""

    def __init__(self, node_id: int, registry: ReplicaRegistry, links: RaftLinks,
                 codec: MessageCodec, *, fsync: bool,
                 on_failure: Callable[[BaseException | None], None]) -> None:
        self.node_id = node_id
        self.registry = registry
        self.links = links
        self.codec = codec
        self.fsync = fsync
        self.on_failure = on_failure
        """Called when a round cannot complete (the WAL failed): the node stops."""
        self.committer: GroupCommitter | None = None
        self.finishing: collections.deque[asyncio.Future[None]] = collections.deque()
        self._background_sync: asyncio.Future[None] | None = None
        self._durable_votes: dict[int, tuple[int, int]] = {}
        """(term, vote) of each group's latest hard state that was synced (or is
        in the sync of a round that finishes before any later one sends)."""
        self.batch_sizes: list[int] = []
        self.stats = {"rounds": 0, "fsyncs": 0, "fsyncs_inline": 0, "readies": 0,
                      "round_entries_max": 0, "messages_sent": 0, "messages_dropped": 0,
                      "messages_early": 0}

    def attach(self, committer: GroupCommitter) -> None:
        self.committer = committer

    @property
    def fsync_seconds(self) -> float:
        return self.committer.sync_seconds if self.committer is not None else 0.0

    async def drive(self) -> None:
        """Prepare a round as soon as there is work, even while earlier rounds
        wait for their fsync (at most `rounds_inflight_max` in flight); rounds
        finish -- send, apply, advance -- strictly in order."""
        finishing = self.finishing
        work = self.registry.work
        while True:
            await work.wait()
            while finishing and finishing[0].done():
                finishing.popleft().result()  # a failed round stops the node
            if len(finishing) >= limits.rounds_inflight_max:
                await asyncio.wait([finishing[0]])
                continue  # `work` is still set
            work.clear()
            prepared = self.prepare()
            if prepared is None:
                continue
            readies, syncing = prepared
            if syncing is None and not finishing:
                self.complete(readies)  # durable already: no task, no wait
                continue
            previous = finishing[-1] if finishing else None
            task = asyncio.ensure_future(self._finish(readies, syncing, previous))
            task.add_done_callback(self._round_ended)
            finishing.append(task)

    def _round_ended(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.on_failure(task.exception())

    def prepare(self) -> tuple[Round, asyncio.Future[None] | None] | None:
        """Take every replica's Ready, append them all to the WAL, start ONE
        sync for all of them, and apply what was already durable meanwhile."""
        readies = []
        for replica in self.registry.hosted.values():
            replica.issue_reads()
            ready = replica.take_ready()
            if ready is not None:
                readies.append((replica, ready))
        if not readies:
            return None
        stats = self.stats
        stats["rounds"] += 1
        stats["readies"] += len(readies)
        must_sync = False
        appended = 0
        for replica, ready in readies:
            replica.persist(ready)
            must_sync = self.needs_sync(replica.group_id, ready) or must_sync
            appended += len(ready.entries)
            if ready.early_messages:  # before our own fsync
                stats["messages_early"] += len(ready.early_messages)
                for message in ready.early_messages:
                    self.send(replica.group_id, message)
        if appended:
            self.batch_sizes.append(appended)
            del self.batch_sizes[:-1000]
            stats["round_entries_max"] = max(stats["round_entries_max"], appended)
        syncing: asyncio.Future[None] | None = None
        if must_sync:
            if self.fsync:
                if self.finishing or not self._sync_inline():
                    syncing = asyncio.ensure_future(self._sync())
            elif self._background_sync is None or self._background_sync.done():
                self._background_sync = asyncio.ensure_future(self._sync())
        for replica, ready in readies:
            replica.apply(ready, durable_only=True)  # while the WAL syncs
        return readies, syncing

    def needs_sync(self, group_id: int, ready: Ready) -> bool:
        """Entries, a snapshot, or a new term or vote must be on disk before
        the round's messages leave; a hard state that only moves the commit
        index need not be (after a crash the node learns the commit index
        again from the leader), so it rides along with the next sync instead
        of costing one -- the leader's second fsync per write at low load."""
        if ready.entries or ready.snapshot is not None:
            return True
        hard = ready.hard_state
        if hard is None:
            return False
        vote = (hard.term, hard.vote)
        if self._durable_votes.get(group_id) == vote:
            return False
        self._durable_votes[group_id] = vote
        return True

    async def _finish(self, readies: Round, syncing: asyncio.Future[None] | None,
                      previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            await previous
        if syncing is not None:
            await syncing
        self.complete(readies)

    def complete(self, readies: Round) -> None:
        """The round is durable: send its messages, apply, advance. The
        messages leave before the apply (a follower's acknowledgement is on
        the write's critical path; the apply is not)."""
        sent = False
        for replica, ready in readies:
            for message in ready.messages:
                self.send(replica.group_id, message)
                sent = True
        if sent:
            self.links.flush()
        for replica, ready in readies:
            replica.apply(ready)
            replica.advance(ready)
        if any(r.core.has_ready() for r in self.registry.hosted.values()):
            self.registry.work.set()

    def _sync_inline(self) -> bool:
        """Sync on the loop's own thread (see the module docstring). The early
        messages are flushed first, so the followers' fsyncs overlap ours."""
        assert self.committer is not None, "storage is not open"
        self.links.flush()
        if not self.committer.sync_inline():
            return False
        self.stats["fsyncs"] += 1
        self.stats["fsyncs_inline"] += 1
        return True

    async def _sync(self) -> None:
        """ONE fdatasync for every group's appends of the round (worker thread).
        A full disk is retried; any other failure stops the node, and this
        round never sends or applies its unsynced state."""
        assert self.committer is not None, "storage is not open"
        try:
            await self.committer.sync_retrying()
        except StorageFailed as error:
            log.critical("WAL failed, stopping the node: %s", error)
            self.on_failure(None)
            await asyncio.Event().wait()  # never send or apply unsynced state
        self.stats["fsyncs"] += 1

    def send(self, group_id: int, message: Any) -> None:
        recipient = message.recipient
        assert recipient != self.node_id, "a core addressed a message to itself"
        if self.links.send_raft(recipient, group_id, self.codec.encode(message)):
            self.stats["messages_sent"] += 1
            return
        self.stats["messages_dropped"] += 1
        if self.codec.is_read_request(message):
            # nobody retransmits a read-index request: fail its reads now, so
            # they are issued again on the next tick (requests.py)
            replica = self.registry.hosted.get(group_id)
            if replica is not None:
                replica.fail_waiting_reads()

    async def wait_finishing(self, timeout_s: float) -> None:
        """Shutdown: let the rounds in flight finish (bounded by their sync)."""
        if self.finishing:
            await asyncio.wait_for(asyncio.gather(*self.finishing), timeout_s)
