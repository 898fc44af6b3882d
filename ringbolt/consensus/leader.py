"""The leader role of Raft: replication, commitment, reads, transfer, membership.

Theory of operation
-------------------
A `LeaderRole` exists exactly while its `Raft` leads a term; it is created in
`Raft._become_leader` and abandoned when the node steps down, so no leader
state can leak into another role. On creation it appends a NOOP entry: the
leader may only count replicas of entries of its own term (Figure 8), so it
needs one to commit everything its predecessors left behind.

Replication is lazy and batched: `propose` only appends to the log and marks
`send_pending`; `flush` (called by `Raft.ready`/`has_ready`) then sends each
follower as many AppendEntries as its progress allows -- one probe in PROBE
state, up to `inflight_msgs_max` pipelined batches of up to
`entries_per_msg_max` entries / `bytes_per_msg_max` bytes in REPLICATE
state, snapshot chunks (stop-and-wait) in SNAPSHOT state. Many proposals made
between two Readys therefore travel in one message. The commit index reaches
followers with the next AppendEntries or the next periodic heartbeat, never
in a message of its own (`Progress.commit_sent` tracks what each was told;
docs/raft.md says why).

ReadIndex: a read records the commit index when it arrives and waits for
the next heartbeat round (`read_seq`) to be acknowledged by a quorum, which
proves nobody else led at the time of the read. At most one round is in
flight; every read arriving meanwhile joins the next round, so one round
serves any number of reads. Reads arriving before the leader committed an
entry of its term wait for it (the commit index may be stale until then).

Leadership transfer: proposals are refused while it lasts; once the target's
log matches ours it gets TimeoutNow; after an election timeout we give up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringbolt.consensus import limits
from ringbolt.consensus.codec import encode_bootstrap_conf, encode_conf_change
from ringbolt.consensus.membership import apply_change
from ringbolt.consensus.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotChunk,
    SnapshotResponse,
    TimeoutNow,
)
from ringbolt.consensus.progress import Progress, ProgressState
from ringbolt.consensus.raft import ReadMode
from ringbolt.consensus.types import (
    NO_NODE,
    ConfChange,
    Entry,
    EntryKind,
    ProposalDropped,
    ReadState,
    Snapshot,
    new_entry,
)

if TYPE_CHECKING:
    from ringbolt.consensus.raft import Raft

_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
_SNAPSHOT = ProgressState.SNAPSHOT
_NORMAL = EntryKind.NORMAL



@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressStatus:
    """A leader's view of one follower, for drivers (e.g. learner promotion)."""

    node_id: int
    match: int
    next: int
    state: ProgressState
    recent_active: bool
    learner: bool
    inflight_msgs: int


class LeaderRole:
    __slots__ = (
        "_bytes_max", "_entries_max", "_followers", "_self_progress", "_voters",
        "committed_in_term", "deferred_reads", "heartbeat_elapsed", "log", "node_id",
        "pending_conf_index", "progress", "raft", "read_confirmed", "read_rounds", "read_seq",
        "reads", "send_pending", "term", "timeout_now_sent", "transferee",
    )

    def __init__(self, raft: Raft) -> None:
        self.raft = raft
        self.log = raft.log
        self.node_id = raft.node_id
        self.term = raft.term
        config = raft.config
        self._entries_max = config.entries_per_msg_max
        self._bytes_max = config.bytes_per_msg_max
        self.progress: dict[int, Progress] = {}
        self._followers: list[tuple[int, Progress]] = []
        self._voters: list[int] = []
        self._self_progress: Progress | None = None
        self.transferee = NO_NODE
        self.timeout_now_sent = False
        """Set for the rest of the term once a TimeoutNow went out: no more lease reads."""
        self.heartbeat_elapsed = 0
        self.send_pending = False
        self.committed_in_term = False
        self.read_seq = 0
        self.read_confirmed = 0
        self.reads: deque[tuple[int, int, bytes, int]] = deque()
        """(round, index, context, requester), oldest first."""
        self.deferred_reads: list[tuple[bytes, int]] = []
        self.read_rounds = 0
        self.sync_progress()
        self.pending_conf_index = self.log.last_index
        bootstrap = b""
        if self.log.last_index == 0:  # the group's first entry: record its configuration
            bootstrap = encode_bootstrap_conf(raft.confs.at(0))
        self._append(EntryKind.NOOP, bootstrap)

    # --- membership -----------------------------------------------------------

    def sync_progress(self) -> None:
        """Track exactly the current members (called whenever the conf changes)."""
        conf = self.raft.conf
        members = conf.members
        progress = self.progress
        for node in list(progress):
            if node not in members:
                del progress[node]
        for node in members:
            pr = progress.get(node)
            if pr is None:
                pr = progress[node] = Progress(
                    next_index=self.log.last_index + 1,
                    inflight_msgs_max=self.raft.config.inflight_msgs_max,
                    learner=node in conf.learners,
                )
            pr.learner = node in conf.learners
        self._self_progress = progress.get(self.node_id)
        if self._self_progress is not None:
            self._self_progress.match = self.log.stable
            self._self_progress.recent_active = True
        self._followers = [(n, progress[n]) for n in sorted(members) if n != self.node_id]
        self._voters = sorted(conf.voters)
        if self.transferee not in conf.voters:
            self.transferee = NO_NODE

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        log = self.log
        if self.pending_conf_index > log.committed:
            raise ProposalDropped("a membership change is already in progress")
        if not self.committed_in_term:
            raise ProposalDropped("the leader has not committed an entry of its term yet")
        conf = apply_change(self.raft.conf, change)  # InvalidConfChange is a ProposalDropped
        term, index = self._append(EntryKind.CONFIG, encode_conf_change(change))
        self.pending_conf_index = index
        self.raft.confs.append(index, conf)  # takes effect now, when appended
        self.sync_progress()
        self.maybe_commit()
        return term, index

    # --- proposals and replication --------------------------------------------

    def propose(self, command: bytes) -> tuple[int, int]:
        """The hot path: one Entry and one list append; sending waits for `flush`."""
        if self.transferee != NO_NODE:
            raise ProposalDropped("leadership transfer in progress")
        log = self.log
        entries = log.entries
        index = log.offset + len(entries) + 1
        if index - log.committed > limits.uncommitted_entries_max:
            raise ProposalDropped("too many uncommitted entries")
        term = self.term
        entries.append(new_entry(term, index, _NORMAL, command))
        self.send_pending = True
        return term, index

    def _append(self, kind: EntryKind, data: bytes) -> tuple[int, int]:
        if self.transferee != NO_NODE:
            raise ProposalDropped("leadership transfer in progress")
        log = self.log
        index = log.last_index + 1
        if index - log.committed > limits.uncommitted_entries_max:
            raise ProposalDropped("too many uncommitted entries")
        log.entries.append(Entry(term=self.term, index=index, kind=kind, data=data))
        self.send_pending = True
        return self.term, index

    def flush(self) -> None:
        """Send every follower what its progress allows. A follower that gets
        no entries learns a new commit index from the next heartbeat."""
        self.send_pending = False
        if len(self._voters) == 1:
            self.maybe_commit()  # nobody else to wait for
        self._maybe_start_read_round()
        send = self._send_append
        for node, pr in self._followers:
            while send(node, pr, False):
                pass

    def _send_append(self, to: int, pr: Progress, send_if_empty: bool) -> bool:
        """Send one AppendEntries; True if the caller may send another at once."""
        if pr.is_paused():
            return False
        log = self.log
        next_index = pr.next
        prev_term = log.term(next_index - 1)
        if prev_term is None:
            self._send_snapshot(to, pr)
            return False
        entries = log.slice(next_index, next_index + self._entries_max, self._bytes_max)
        if not entries and not send_if_empty:
            return False
        committed = log.committed
        self.raft.messages.append(
            AppendRequest(
                sender=self.node_id,
                recipient=to,
                term=self.term,
                prev_log_index=next_index - 1,
                prev_log_term=prev_term,
                commit=committed,
                entries=entries,
            )
        )
        pr.commit_sent = min(committed, next_index - 1 + len(entries))
        if pr.state == _REPLICATE and entries:
            last = entries[-1].index
            pr.next = last + 1
            pr.inflights.add(last)
            return True
        pr.probe_sent = True
        return False

    def _send_snapshot(self, to: int, pr: Progress) -> None:
        snapshot = self.log.snapshot
        assert snapshot is not None, "the log was compacted without a snapshot"
        if pr.state != _SNAPSHOT or pr.snapshot_index != snapshot.meta.index:
            pr.become_snapshot(snapshot.meta.index)
        self._send_chunk(to, pr, snapshot)

    def _send_chunk(self, to: int, pr: Progress, snapshot: Snapshot) -> None:
        if snapshot.meta.index != pr.snapshot_index:  # compacted again meanwhile
            pr.become_snapshot(snapshot.meta.index)
        offset = pr.snapshot_offset
        chunk = snapshot.data[offset : offset + self.raft.config.snapshot_chunk_bytes_max]
        total = len(snapshot.data)
        self.raft.messages.append(
            SnapshotChunk(
                sender=self.node_id,
                recipient=to,
                term=self.term,
                meta=snapshot.meta,
                offset=offset,
                total_bytes=total,
                data=chunk,
                done=offset + len(chunk) >= total,
            )
        )

    def maybe_commit(self) -> bool:
        """Advance commit to the quorum match index -- only over an entry of
        this term (Raft Figure 8): older entries commit along with it."""
        log = self.log
        own = self._self_progress
        if own is not None:
            # our own log counts once the driver has persisted it (`advance`),
            # so the driver may send AppendEntries before its own fsync: an
            # entry is never committed on fewer durable copies than a quorum
            own.match = log.stable
            own.next = log.last_index + 1
        progress = self.progress
        matches = [progress[v].match for v in self._voters]
        if not matches:
            return False
        matches.sort(reverse=True)
        index = matches[len(matches) // 2]
        if index <= log.committed:
            return False
        if log.term(index) != self.term and not self.raft.unsafe_commit_old_terms:
            return False  # UNSAFE(commit_old_terms) skips this check
        log.commit_to(index)
        self._after_commit()
        return True

    def _after_commit(self) -> None:
        log = self.log
        if not self.committed_in_term and log.term(log.committed) == self.term:
            self.committed_in_term = True
            deferred, self.deferred_reads = self.deferred_reads, []
            for context, requester in deferred:
                self._register_read(context, requester)
        raft = self.raft
        if self.node_id not in raft.conf.voters and log.committed >= raft.confs.last_change_index:
            raft.step_down()  # our own removal committed: leave it to the others

    # --- messages ------------------------------------------------------------------

    def step(self, m: Message) -> None:
        kind = type(m)
        assert kind is not AppendRequest and kind is not SnapshotChunk, "two leaders in one term"
        if kind is AppendResponse:
            self._on_append_response(m)  # type: ignore[arg-type]
        elif kind is HeartbeatResponse:
            self._on_heartbeat_response(m)  # type: ignore[arg-type]
        elif kind is SnapshotResponse:
            self._on_snapshot_response(m)  # type: ignore[arg-type]
        elif kind is ReadIndexRequest:
            assert isinstance(m, ReadIndexRequest)
            if m.sender in self.progress:
                self.read_index(m.context, m.sender)

    def _on_append_response(self, m: AppendResponse) -> None:
        pr = self.progress.get(m.sender)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            hint = m.hint_index
            if m.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease_to(m.index, hint):
                if pr.state == _REPLICATE:
                    pr.become_probe()
                self._send_append(m.sender, pr, True)
            return
        was_probe = pr.state == _PROBE
        if not pr.maybe_update(m.index) and not (was_probe and pr.match == m.index):
            return
        if pr.state == _REPLICATE:
            pr.inflights.free_through(m.index)
        elif was_probe:
            pr.become_replicate()
        elif pr.match >= pr.snapshot_index:
            pr.become_probe()
        if self.maybe_commit() and self.raft.leader_role is not self:
            return
        if m.sender == self.transferee and pr.match == self.log.last_index:
            self._send_timeout_now(m.sender)
        self.send_pending = True

    def _on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self.progress.get(m.sender)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if m.lease_tick > pr.lease_tick:
            pr.lease_tick = m.lease_tick
        if pr.state == _SNAPSHOT:
            snapshot = self.log.snapshot
            assert snapshot is not None
            self._send_chunk(m.sender, pr, snapshot)  # retransmit the unacknowledged chunk
        elif pr.match < self.log.last_index:
            if pr.state == _REPLICATE and pr.inflights.full():
                pr.inflights.free_first()
            self._send_append(m.sender, pr, True)
        if m.read_seq > pr.read_seq and not pr.learner:
            pr.read_seq = m.read_seq
            self._advance_reads()

    def _on_snapshot_response(self, m: SnapshotResponse) -> None:
        pr = self.progress.get(m.sender)
        if pr is None:
            return
        pr.recent_active = True
        if m.done:
            pr.maybe_update(m.index)
            if pr.state == _SNAPSHOT:
                pr.become_probe()
            self.send_pending = True
            return
        if pr.state != _SNAPSHOT or m.index != pr.snapshot_index:
            return
        snapshot = self.log.snapshot
        assert snapshot is not None
        offset = 0 if m.reject else m.offset
        if offset == pr.snapshot_offset:
            return  # a duplicate: that chunk is in flight; heartbeats retransmit it
        pr.snapshot_offset = offset  # the follower's word wins, even going back
        self._send_chunk(m.sender, pr, snapshot)

    # --- ticks ------------------------------------------------------------

    def tick(self) -> None:
        raft = self.raft
        raft.election_elapsed += 1
        if raft.election_elapsed >= raft.config.election_timeout_ticks:
            raft.election_elapsed = 0
            keep_leading = self._check_active() or not raft.config.check_quorum
            if raft.unsafe_read_without_read_index:  # UNSAFE(read_without_read_index)
                keep_leading = True
            if not keep_leading:
                raft.step_down()
                return
            self.transferee = NO_NODE  # a transfer that took this long failed
        self.heartbeat_elapsed += 1
        if self.heartbeat_elapsed >= raft.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _check_active(self) -> bool:
        """Did a quorum talk to us since the last check? Resets the marks."""
        active = 0
        for node in self._voters:
            pr = self.progress[node]
            if node == self.node_id or pr.recent_active:
                active += 1
        for _, pr in self._followers:
            pr.recent_active = False
        return active >= len(self._voters) // 2 + 1

    def _broadcast_heartbeat(self) -> None:
        stamp = self.raft.ticks + 1  # 0 means "never acknowledged"
        for node, pr in self._followers:
            self._send_heartbeat(node, pr, stamp)

    def _send_heartbeat(self, to: int, pr: Progress, stamp: int) -> None:
        commit = min(pr.match, self.log.committed)
        pr.commit_sent = commit
        self.raft.messages.append(
            Heartbeat(
                sender=self.node_id,
                recipient=to,
                term=self.term,
                commit=commit,
                read_seq=self.read_seq,
                lease_tick=stamp,
            )
        )

    # --- reads -------------------------------------------------------------

    def read_index(self, context: bytes, requester: int) -> None:
        if self.raft.unsafe_read_without_read_index:  # UNSAFE(read_without_read_index)
            self._answer_read(requester, self.log.committed, context)
            return
        if len(self.reads) + len(self.deferred_reads) >= limits.read_index_pending_max:
            if requester == self.node_id:
                raise ProposalDropped("too many pending reads")
            return  # a forwarded read: the follower's client times out
        if not self.committed_in_term:
            self.deferred_reads.append((context, requester))
            return
        self._register_read(context, requester)

    def _register_read(self, context: bytes, requester: int) -> None:
        index = self.log.committed
        if self._voters == [self.node_id] or (
            self.raft.config.read_mode is ReadMode.LEASE and self.lease_valid()
        ):
            self._answer_read(requester, index, context)
            return
        self.reads.append((self.read_seq + 1, index, context, requester))
        self.send_pending = True  # `flush` starts the round with all reads made until then

    def _maybe_start_read_round(self) -> None:
        """Start the next round if reads wait for it and none is in flight. Reads
        registered before the round's heartbeats leave (at the next Ready) join it."""
        if self.reads and self.read_confirmed == self.read_seq:
            assert self.reads[-1][0] == self.read_seq + 1
            self.read_seq += 1
            self.read_rounds += 1
            self._broadcast_heartbeat()

    def _advance_reads(self) -> None:
        acknowledged = sorted(
            (self.read_seq if v == self.node_id else self.progress[v].read_seq)
            for v in self._voters
        )
        confirmed = acknowledged[(len(acknowledged) - 1) // 2]  # the quorum's lowest
        if confirmed <= self.read_confirmed:
            return
        self.read_confirmed = confirmed
        reads = self.reads
        while reads and reads[0][0] <= confirmed:
            _, index, context, requester = reads.popleft()
            self._answer_read(requester, index, context)
        if reads:
            self.send_pending = True

    def _answer_read(self, requester: int, index: int, context: bytes) -> None:
        if requester == self.node_id:
            self.raft.read_states.append(ReadState(index=index, context=context))
        else:
            self.raft.messages.append(
                ReadIndexResponse(
                    sender=self.node_id,
                    recipient=requester,
                    term=self.term,
                    index=index,
                    context=context,
                )
            )

    def lease_valid(self) -> bool:
        """Has a quorum acknowledged a heartbeat sent less than
        election_timeout - lease_clock_drift ticks ago (and no transfer runs)?"""
        if self.transferee != NO_NODE or self.timeout_now_sent or not self.committed_in_term:
            return False  # a TimeoutNow, however late, lets its target bypass leases
        now = self.raft.ticks + 1
        stamps = sorted(
            (now if v == self.node_id else self.progress[v].lease_tick) for v in self._voters
        )
        quorum_stamp = stamps[(len(stamps) - 1) // 2]
        lease_ticks = self.raft.config.election_timeout_ticks - limits.lease_clock_drift_ticks
        return quorum_stamp > 0 and now - quorum_stamp < lease_ticks

    # --- leadership transfer -----------------------------------------------

    def transfer_leadership(self, target: int) -> None:
        if target == self.node_id or target == self.transferee:
            return
        if target not in self.raft.conf.voters:
            raise ProposalDropped(f"node {target} is not a voter")
        self.transferee = target
        self.raft.election_elapsed = 0  # abort after one election timeout
        if self.progress[target].match == self.log.last_index:
            self._send_timeout_now(target)
        else:
            self.send_pending = True

    def _send_timeout_now(self, target: int) -> None:
        self.timeout_now_sent = True
        self.raft.messages.append(TimeoutNow(sender=self.node_id, recipient=target, term=self.term))

    # --- introspection ---------------------------------------------------------

    def abandon(self) -> None:
        """We stepped down: pending reads are dropped (their clients time out)."""
        self.reads.clear()
        self.deferred_reads.clear()

    def progress_status(self, node: int) -> ProgressStatus | None:
        pr = self.progress.get(node)
        if pr is None:
            return None
        return ProgressStatus(
            node_id=node,
            match=pr.match,
            next=pr.next,
            state=pr.state,
            recent_active=pr.recent_active,
            learner=pr.learner,
            inflight_msgs=len(pr.inflights),
        )

    def statistics(self) -> dict[str, int]:
        return {
            "reads_pending": len(self.reads) + len(self.deferred_reads),
            "read_rounds": self.read_rounds,
            "inflight_msgs": sum(len(pr.inflights) for _, pr in self._followers),
            "transferring_to": self.transferee,
        }
