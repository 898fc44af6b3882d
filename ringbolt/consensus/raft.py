"""Raft, as a sans-I/O state machine (modelled on etcd-io/raft).

Theory of operation
-------------------
A `Raft` is driven by `tick()`, `step(message)`, `propose(command)`,
`propose_conf_change(change)`, `read_index(context)`,
`transfer_leadership(target)` and `compact(index, data)`; its outputs come
out of `ready()` (persist, then send, then apply -- see `types.py`) and are
acknowledged with `advance(ready)`. It never does I/O, never reads a clock,
and draws randomness only from the injected `RandomSource`.

Every message first goes through the term rules in `step`: a higher term
turns the node into a follower (except PreVote traffic, which never changes
terms, and vote requests that arrive while we still hear from a leader -- the
leader "lease" that makes CheckQuorum and lease reads sound); a lower term is
ignored (answered, so a stale leader or pre-candidate learns the new term).
Then the role strategy (`_step_follower`, `_step_candidate`, or the
`LeaderRole` in leader.py) handles it. Roles change only in `_become_*`.

Elections: a follower that hears nothing from a leader for a randomized
[T, 2T) ticks first runs a PreVote round (which cannot disturb anyone: no
term changes) and campaigns for real only if a majority would vote for it.
A node that is not a voter (a learner, a removed node, a fresh node with no
configuration yet) never campaigns.

Lease reads (ReadMode.LEASE): a voter that heard from a leader less than T
ticks ago refuses to vote (unless the leader itself asked, via TimeoutNow).
So while a quorum acknowledged a heartbeat sent at leader tick t, no other
leader can exist before that quorum's clocks advance T ticks. The leader
serves reads locally until tick t + T - `lease_clock_drift_ticks`; the bound
assumes no clock runs more than `lease_clock_drift_ticks` ticks apart from
the leader's over T ticks (see docs/raft.md). A leader that sent TimeoutNow
stops for the rest of its term; a restarted voter refuses votes for T ticks.

Invariants asserted: the term never decreases; commit never decreases nor
passes the last index; a committed entry is never overwritten; entries are
appended contiguously; a leader never truncates its own log.

With `RaftConfig.early_send` a leader's appends and heartbeats of a term
whose hard state `advance` made durable come out in `Ready.early_messages`,
which the driver may send before its fsync (rule and safety argument in
early_send.py; `advance` is how the core learns what is durable).

Test-only mutations (`RaftConfig.unsafe`, used by the simulator to prove its
checkers catch real bugs) are marked `# UNSAFE(name)` where they act.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringbolt.consensus import limits
from ringbolt.consensus.codec import decode_bootstrap_conf, decode_conf_change
from ringbolt.consensus.early_send import split_early
from ringbolt.consensus.log import RaftLog
from ringbolt.consensus.membership import ConfHistory, InvalidConfChange, apply_change
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
    VoteRequest,
    VoteResponse,
)
from ringbolt.consensus.quorum import VoteResult, vote_result
from ringbolt.consensus.snapshot_assembly import SnapshotAssembly
from ringbolt.consensus.types import (
    NO_NODE,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    NotLeader,
    PersistentState,
    RandomSource,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
    Status,
)

if TYPE_CHECKING:
    from ringbolt.consensus.leader import LeaderRole, ProgressStatus

UNSAFE_MUTATIONS = frozenset({"commit_old_terms", "vote_without_log_check", "read_without_read_index"})


class ReadMode(enum.Enum):
    SAFE = "safe"
    """ReadIndex: confirm leadership with a heartbeat round per batch of reads."""
    LEASE = "lease"
    """Serve from the leader while its lease holds; needs check_quorum."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    node_id: int
    voters: frozenset[int]
    """Initial membership, used only when the restored state has no snapshot
    and no CONFIG entry. Empty for a node joining an existing group."""
    learners: frozenset[int] = frozenset()
    election_timeout_ticks: int = limits.election_timeout_ticks
    heartbeat_ticks: int = limits.heartbeat_ticks
    pre_vote: bool = True
    check_quorum: bool = True
    read_mode: ReadMode = ReadMode.SAFE
    inflight_msgs_max: int = limits.inflight_msgs_max
    entries_per_msg_max: int = limits.entries_per_msg_max
    bytes_per_msg_max: int = limits.bytes_per_msg_max
    snapshot_chunk_bytes_max: int = limits.snapshot_chunk_bytes_max
    unsafe: frozenset[str] = frozenset()
    """TEST-ONLY mutations that break Raft on purpose; see UNSAFE_MUTATIONS."""
    early_send: bool = False
    """Fill `Ready.early_messages` (sent before the fsync; see early_send.py)."""

    def __post_init__(self) -> None:
        assert self.node_id > NO_NODE
        assert NO_NODE not in self.voters and NO_NODE not in self.learners
        assert not (self.voters & self.learners)
        assert 1 <= self.heartbeat_ticks < self.election_timeout_ticks
        assert limits.lease_clock_drift_ticks < self.election_timeout_ticks
        assert self.inflight_msgs_max >= 1 and self.entries_per_msg_max >= 1
        assert self.bytes_per_msg_max >= 1 and self.snapshot_chunk_bytes_max >= 1
        assert self.unsafe <= UNSAFE_MUTATIONS, f"unknown mutations {self.unsafe - UNSAFE_MUTATIONS}"
        assert self.read_mode != ReadMode.LEASE or self.check_quorum, "lease reads need check_quorum"


class Raft:
    """One member of one Raft group. See the module docstring."""

    __slots__ = (
        "_assembly", "_durable_term", "_prev_hard", "_prev_soft", "_randomized_timeout", "_restart_guard_ticks",
        "_rng", "_votes", "config", "confs", "counters", "election_elapsed", "leader",
        "leader_role", "log", "messages", "node_id", "read_states", "role", "term", "ticks",
        "unsafe_commit_old_terms", "unsafe_read_without_read_index",
        "unsafe_vote_without_log_check", "vote",
    )

    def __init__(
        self, config: RaftConfig, rng: RandomSource, restored: PersistentState | None = None
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self._rng = rng
        self.log = RaftLog()
        self.term = 0
        self.vote = NO_NODE
        self.leader = NO_NODE
        self.role = Role.FOLLOWER
        self.messages: list[Message] = []
        self.read_states: list[ReadState] = []
        self.ticks = 0
        """Ticks since this object was created (a monotonic local clock)."""
        self.election_elapsed = 0
        self._randomized_timeout = config.election_timeout_ticks
        self._votes: dict[int, bool] = {}
        self.leader_role: LeaderRole | None = None
        self._assembly = SnapshotAssembly()
        self.unsafe_commit_old_terms = "commit_old_terms" in config.unsafe
        self.unsafe_vote_without_log_check = "vote_without_log_check" in config.unsafe
        self.unsafe_read_without_read_index = "read_without_read_index" in config.unsafe
        self.counters: dict[str, int] = dict.fromkeys(
            ("elections", "pre_votes", "leaderships", "snapshots_installed", "appends_rejected"), 0
        )
        self.confs = ConfHistory(0, ConfState(voters=config.voters, learners=config.learners))
        self._restart_guard_ticks = 0
        self._durable_term = 0
        """Highest term of a hard state that `advance` (or the restore) made durable."""
        if restored is not None:
            self._restore(restored)
            if config.read_mode is ReadMode.LEASE:
                self._restart_guard_ticks = config.election_timeout_ticks
        self._prev_hard = (self.term, self.vote, self.log.committed)
        self._prev_soft = SoftState(leader=NO_NODE, role=Role.FOLLOWER, term=self.term)
        self._become_follower(self.term, NO_NODE)
        self._prev_soft = self._soft_state()

    def _restore(self, restored: PersistentState) -> None:
        log = self.log
        snapshot = restored.snapshot
        if snapshot is not None:
            meta = snapshot.meta
            log.offset = meta.index
            log.snapshot_term = meta.term
            log.committed = log.applying = log.applied = meta.index
            log.snapshot = snapshot
            self.confs.reset(meta.index, meta.conf)
        entries = [e for e in restored.entries if e.index > log.offset]
        for position, entry in enumerate(entries):
            assert entry.index == log.offset + 1 + position, "restored entries must be contiguous"
        log.entries = entries
        log.stable = log.offered = log.last_index
        hard = restored.hard_state
        self.term, self.vote = hard.term, hard.vote
        self._durable_term = hard.term
        assert hard.commit <= log.last_index, "persisted commit beyond the persisted log"
        log.commit_to(hard.commit)
        self._track_config_entries(entries)

    # --- the ConsensusCore interface ------------------------------------

    @property
    def conf(self) -> ConfState:
        return self.confs.current

    def tick(self) -> None:
        self.ticks += 1
        if self.leader_role is not None:
            self.leader_role.tick()
        else:
            self._tick_election()

    def step(self, message: object) -> None:
        m: Message = message  # type: ignore[assignment]
        assert m.recipient == self.node_id, f"message for {m.recipient} delivered to {self.node_id}"
        kind = type(m)
        if m.term > self.term:
            if kind is VoteRequest:
                assert isinstance(m, VoteRequest)
                if not m.transfer and self._in_leader_lease():
                    return  # we still hear from a leader: refuse to be disrupted
                if not m.pre_vote:
                    self._become_follower(m.term, NO_NODE)
            elif kind is VoteResponse and m.pre_vote and m.granted:  # type: ignore[union-attr]
                pass  # a granted PreVote carries the term we would campaign in
            else:
                heard_leader = kind is AppendRequest or kind is Heartbeat or kind is SnapshotChunk
                self._become_follower(m.term, m.sender if heard_leader else NO_NODE)
        elif m.term < self.term:
            self._answer_stale(m)
            return
        if kind is VoteRequest:
            assert isinstance(m, VoteRequest)
            self._on_vote_request(m)
        elif self.leader_role is not None:
            self.leader_role.step(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def propose(self, command: bytes) -> tuple[int, int]:
        leader_role = self.leader_role
        if leader_role is None:
            raise NotLeader(self.leader)
        return leader_role.propose(command)

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]:
        if self.leader_role is None:
            raise NotLeader(self.leader)
        return self.leader_role.propose_conf_change(change)

    def read_index(self, context: bytes) -> None:
        if self.leader_role is not None:
            self.leader_role.read_index(context, self.node_id)
        elif self.leader == NO_NODE:
            raise NotLeader(NO_NODE)
        else:
            self.messages.append(
                ReadIndexRequest(
                    sender=self.node_id, recipient=self.leader, term=self.term, context=context
                )
            )

    def transfer_leadership(self, target: int) -> None:
        if self.leader_role is None:
            raise NotLeader(self.leader)
        self.leader_role.transfer_leadership(target)

    def compact(self, index: int, data: bytes) -> None:
        log = self.log
        if index <= log.offset:
            return
        assert index <= log.committed, f"compact({index}) beyond commit {log.committed}"
        assert index <= log.stable, f"compact({index}) beyond the persisted log {log.stable}"
        if index > log.applied:  # the driver's state machine is ahead (e.g. after a restart)
            log.applying = max(log.applying, index)
            log.applied = index
        term = log.term(index)
        assert term is not None
        meta = SnapshotMeta(index=index, term=term, conf=self.confs.at(index))
        log.compact(index)
        log.snapshot = Snapshot(meta=meta, data=data)
        self.confs.compact(index)

    def has_ready(self) -> bool:
        leader_role = self.leader_role
        if leader_role is not None and leader_role.send_pending:
            leader_role.flush()
        log = self.log
        return bool(
            self.messages
            or log.offered < log.offset + len(log.entries)
            or log.committed > log.applying
            or self.read_states
            or log.pending_snapshot is not None
            or self._prev_hard != (self.term, self.vote, log.committed)
            or self._soft_state() is not self._prev_soft
        )

    def ready(self) -> Ready:
        leader_role = self.leader_role
        if leader_role is not None and leader_role.send_pending:
            leader_role.flush()
        log = self.log
        hard = (self.term, self.vote, log.committed)
        hard_state = None
        if hard != self._prev_hard:
            self._prev_hard = hard
            hard_state = HardState(term=self.term, vote=self.vote, commit=log.committed)
        soft_state: SoftState | None = self._soft_state()
        if soft_state is self._prev_soft:
            soft_state = None
        else:
            assert soft_state is not None
            self._prev_soft = soft_state
        snapshot = log.pending_snapshot
        log.pending_snapshot = None
        messages: list[object] = self.messages  # type: ignore[assignment]
        early: list[object] = []
        if self.config.early_send and messages and self._may_send_early(hard_state):
            early, messages = split_early(self.messages, self.term)
        self.messages = []
        read_states = self.read_states
        if read_states:
            self.read_states = []
        return Ready(
            hard_state=hard_state,
            snapshot=snapshot,
            entries=log.take_unstable() if log.offered < log.last_index else [],
            messages=messages,
            early_messages=early,
            committed_entries=(
                log.take_committed(limits.committed_entries_per_ready_max)
                if log.committed > log.applying
                else []
            ),
            read_states=read_states if read_states else [],
            soft_state=soft_state,
        )

    def _may_send_early(self, hard_state: HardState | None) -> bool:
        """The node-side conditions of early_send.py's rule."""
        if self.role != Role.LEADER or self._durable_term != self.term:
            return False
        if hard_state is not None and hard_state.term != self.term:
            return False
        leader_role = self.leader_role
        assert leader_role is not None
        own = leader_role.progress.get(self.node_id)
        assert own is None or own.match <= self.log.stable, (
            "the leader counts its own log only once it is durable")
        return True

    def advance(self, ready: Ready) -> None:
        hard = ready.hard_state
        if hard is not None and hard.term > self._durable_term:
            self._durable_term = hard.term
        if ready.entries:
            last = ready.entries[-1]
            self.log.stable_to(last.index, last.term)
            leader_role = self.leader_role
            if leader_role is not None and leader_role.maybe_commit() and (
                    self.leader_role is leader_role):
                leader_role.send_pending = True  # tell the followers the new commit
        if ready.committed_entries:
            self.log.applied_to(ready.committed_entries[-1].index)

    def status(self) -> Status:
        log = self.log
        return Status(
            node_id=self.node_id,
            role=self._reported_role(),
            term=self.term,
            leader=self.leader,
            commit=log.committed,
            applied=log.applied,
            last_index=log.last_index,
            conf=self.conf,
        )

    def progress(self, node: int) -> ProgressStatus | None:
        """The leader's view of `node`'s log (None on a non-leader or an
        unknown node). Drivers promote a learner once its match is close to
        the leader's last index."""
        if self.leader_role is None:
            return None
        return self.leader_role.progress_status(node)

    def statistics(self) -> dict[str, int]:
        log = self.log
        stats = dict(self.counters)
        stats.update(
            term=self.term,
            commit=log.committed,
            applied=log.applied,
            last_index=log.last_index,
            log_entries_in_memory=len(log.entries),
            messages_queued=len(self.messages),
        )
        if self.leader_role is not None:
            stats.update(self.leader_role.statistics())
        return stats

    # --- roles -------------------------------------------------------------

    def _reset(self, term: int) -> None:
        assert term >= self.term, f"term must never decrease ({self.term} -> {term})"
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.leader = NO_NODE
        self.election_elapsed = 0
        timeout = self.config.election_timeout_ticks
        self._randomized_timeout = timeout + self._rng.randrange(0, timeout)
        self._votes = {}
        if self.leader_role is not None:
            self.leader_role.abandon()
            self.leader_role = None

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER

    def step_down(self) -> None:
        """The leader role gives up (CheckQuorum failed, or it removed itself)."""
        assert self.role == Role.LEADER
        self._become_follower(self.term, NO_NODE)

    def _become_pre_candidate(self) -> None:
        assert self.role != Role.LEADER
        self._reset(self.term)  # PreVote changes neither term nor vote
        self.role = Role.PRE_CANDIDATE
        self.counters["pre_votes"] += 1

    def _become_candidate(self) -> None:
        assert self.role != Role.LEADER
        self._reset(self.term + 1)
        self.vote = self.node_id
        self.role = Role.CANDIDATE
        self.counters["elections"] += 1

    def _become_leader(self) -> None:
        from ringbolt.consensus.leader import LeaderRole

        assert self.role == Role.CANDIDATE, "only a candidate becomes leader"
        self._reset(self.term)
        self.leader = self.node_id
        self.role = Role.LEADER
        self.counters["leaderships"] += 1
        self.leader_role = LeaderRole(self)

    # --- elections ---------------------------------------------------------

    def promotable(self) -> bool:
        return self.node_id in self.conf.voters

    def _in_leader_lease(self) -> bool:
        """Do we refuse (pre)votes because a leader may count on us? Also true
        for the first T ticks after a restart in LEASE mode: we may have
        acknowledged a heartbeat just before crashing and forgotten it."""
        timeout = self.config.election_timeout_ticks
        if self.ticks < self._restart_guard_ticks:
            return True
        return self.config.check_quorum and self.leader != NO_NODE and self.election_elapsed < timeout

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self._randomized_timeout and self.promotable():
            self.election_elapsed = 0
            self._campaign(pre_vote=self.config.pre_vote, transfer=False)

    def _campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        """Start a PreVote round or a real election. `transfer` (TimeoutNow)
        asks voters to ignore their leader lease."""
        if not self.promotable():
            return
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        self._votes[self.node_id] = True
        if vote_result(self.conf.voters, self._votes) == VoteResult.WON:
            self._won_vote(pre_vote)
            return
        last_index, last_term = self.log.last_index, self.log.last_term()
        for voter in sorted(self.conf.voters):
            if voter != self.node_id:
                self.messages.append(
                    VoteRequest(
                        sender=self.node_id,
                        recipient=voter,
                        term=term,
                        last_log_index=last_index,
                        last_log_term=last_term,
                        pre_vote=pre_vote,
                        transfer=transfer,
                    )
                )

    def _won_vote(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(pre_vote=False, transfer=False)  # the real election
        else:
            self._become_leader()

    def _on_vote_request(self, m: VoteRequest) -> None:
        can_vote = (
            self.vote == m.sender
            or (self.vote == NO_NODE and self.leader == NO_NODE)
            or (m.pre_vote and m.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(m.last_log_index, m.last_log_term)
        if self.unsafe_vote_without_log_check:  # UNSAFE(vote_without_log_check)
            up_to_date = True
        granted = can_vote and up_to_date
        self.messages.append(
            VoteResponse(
                sender=self.node_id,
                recipient=m.sender,
                term=m.term if granted else self.term,
                granted=granted,
                pre_vote=m.pre_vote,
            )
        )
        if granted and not m.pre_vote:
            self.vote = m.sender
            self.election_elapsed = 0

    def _answer_stale(self, m: Message) -> None:
        """A message from an older term: tell the sender the current term if it
        is a leader or pre-candidate that would otherwise never learn it."""
        kind = type(m)
        if (kind is AppendRequest or kind is Heartbeat) and (
            self.config.check_quorum or self.config.pre_vote
        ):
            self.messages.append(
                AppendResponse(sender=self.node_id, recipient=m.sender, term=self.term, index=0)
            )
        elif kind is VoteRequest and m.pre_vote:  # type: ignore[union-attr]
            self.messages.append(
                VoteResponse(
                    sender=self.node_id,
                    recipient=m.sender,
                    term=self.term,
                    granted=False,
                    pre_vote=True,
                )
            )

    def _step_candidate(self, m: Message) -> None:
        kind = type(m)
        if kind is AppendRequest or kind is Heartbeat or kind is SnapshotChunk:
            self._become_follower(self.term, m.sender)  # a leader won this term
            self._step_follower(m)
        elif kind is VoteResponse:
            assert isinstance(m, VoteResponse)
            pre_vote = self.role == Role.PRE_CANDIDATE
            if m.pre_vote != pre_vote:
                return
            self._votes.setdefault(m.sender, m.granted)
            result = vote_result(self.conf.voters, self._votes)
            if result == VoteResult.WON:
                self._won_vote(pre_vote)
            elif result == VoteResult.LOST:
                self._become_follower(self.term, NO_NODE)

    # --- follower ------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        kind = type(m)
        if kind is AppendRequest:
            assert isinstance(m, AppendRequest)
            self.election_elapsed = 0
            self.leader = m.sender
            self._on_append(m)
        elif kind is Heartbeat:
            assert isinstance(m, Heartbeat)
            self.election_elapsed = 0
            self.leader = m.sender
            self.log.commit_to(min(m.commit, self.log.last_index))
            self.messages.append(
                HeartbeatResponse(
                    sender=self.node_id,
                    recipient=m.sender,
                    term=self.term,
                    read_seq=m.read_seq,
                    lease_tick=m.lease_tick,
                )
            )
        elif kind is SnapshotChunk:
            assert isinstance(m, SnapshotChunk)
            self.election_elapsed = 0
            self.leader = m.sender
            self._on_snapshot_chunk(m)
        elif kind is TimeoutNow:
            self._campaign(pre_vote=False, transfer=True)
        elif kind is ReadIndexResponse:
            assert isinstance(m, ReadIndexResponse)
            self.read_states.append(ReadState(index=m.index, context=m.context))

    def _on_append(self, m: AppendRequest) -> None:
        log = self.log
        if m.prev_log_index < log.committed:
            self._answer_append(m.sender, log.committed)
            return
        first = log.maybe_append(m.prev_log_index, m.prev_log_term, m.entries)
        if first < 0:
            hint_index, hint_term = log.find_conflict_by_term(
                min(m.prev_log_index, log.last_index), m.prev_log_term
            )
            self.counters["appends_rejected"] += 1
            self.messages.append(
                AppendResponse(
                    sender=self.node_id,
                    recipient=m.sender,
                    term=self.term,
                    index=m.prev_log_index,
                    reject=True,
                    hint_index=hint_index,
                    hint_term=hint_term,
                )
            )
            return
        if first > 0:
            if first <= self.confs.last_change_index:
                self.confs.truncate_from(first)
            self._track_config_entries(m.entries)
        last_new = m.prev_log_index + len(m.entries)
        log.commit_to(min(m.commit, last_new))
        self._answer_append(m.sender, last_new)

    def _answer_append(self, leader: int, index: int) -> None:
        self.messages.append(
            AppendResponse(sender=self.node_id, recipient=leader, term=self.term, index=index)
        )

    def _track_config_entries(self, entries: list[Entry]) -> None:
        """Configurations take effect when their entry is appended. Entry 1,
        the first leader's NOOP, carries the group's initial configuration so
        that a node that joins later (and persists nothing else) learns it."""
        config = EntryKind.CONFIG
        last_change = self.confs.last_change_index
        if entries and entries[0].index == 1 and last_change == 0 and entries[0].data:
            assert entries[0].kind == EntryKind.NOOP
            self.confs.append(1, decode_bootstrap_conf(entries[0].data))
        for entry in entries:
            if entry.kind is config and entry.index > last_change:
                self.apply_config_entry(entry)

    def apply_config_entry(self, entry: Entry) -> ConfState:
        try:
            conf = apply_change(self.conf, decode_conf_change(entry.data))
        except InvalidConfChange:
            conf = self.conf  # the leader validated it against the same history
        self.confs.append(entry.index, conf)
        return conf

    def _on_snapshot_chunk(self, m: SnapshotChunk) -> None:
        if m.meta.index <= self.log.committed:  # we already have all of it
            self._assembly.clear()
            self._answer_snapshot(m, offset=m.total_bytes, done=True)
            return
        answer = self._assembly.receive(m)
        if answer.snapshot is not None:
            self._install_snapshot(answer.snapshot)
        self._answer_snapshot(
            m, offset=answer.offset, done=answer.snapshot is not None, reject=answer.reject
        )

    def _install_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        log = self.log
        if log.match_term(meta.index, meta.term):
            log.commit_to(meta.index)  # our log already holds it: keep the suffix
            return
        log.restore(snapshot)
        self.confs.reset(meta.index, meta.conf)
        self.counters["snapshots_installed"] += 1

    def _answer_snapshot(
        self, m: SnapshotChunk, *, offset: int, done: bool, reject: bool = False
    ) -> None:
        self.messages.append(
            SnapshotResponse(
                sender=self.node_id,
                recipient=m.sender,
                term=self.term,
                index=m.meta.index,
                offset=offset,
                done=done,
                reject=reject,
            )
        )

    # --- soft state ------------------------------------------------------------

    def _reported_role(self) -> Role:
        if self.role is Role.FOLLOWER and self.node_id in self.confs.current.learners:
            return Role.LEARNER
        return self.role

    def _soft_state(self) -> SoftState:
        prev = self._prev_soft
        role = self.role
        if role is Role.FOLLOWER and self.node_id in self.confs.current.learners:
            role = Role.LEARNER
        if prev.leader == self.leader and prev.role is role and prev.term == self.term:
            return prev
        return SoftState(leader=self.leader, role=role, term=self.term)


__all__ = ["Raft", "RaftConfig", "ReadMode", "UNSAFE_MUTATIONS"]
