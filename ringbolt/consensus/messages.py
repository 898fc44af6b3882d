"""The messages Raft peers exchange.

Theory of operation
-------------------
One `MessageKind` per message type. Every message is a frozen, slotted,
keyword-only dataclass carrying `sender`, `recipient` and `term` (drivers and
the simulator route on `recipient`; the core checks `term` first, before any
role-specific handling). Messages are values: the core never mutates one after
handing it out, and it never keeps a reference to a received one beyond the
step that handles it (an AppendRequest's entry list is copied into the log).

`ringbolt.consensus.codec` turns these into versioned msgpack bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from ringbolt.consensus.types import Entry, SnapshotMeta


class MessageKind(enum.IntEnum):
    VOTE = 1
    VOTE_RESPONSE = 2
    PRE_VOTE = 3
    PRE_VOTE_RESPONSE = 4
    APPEND = 5
    APPEND_RESPONSE = 6
    HEARTBEAT = 7
    HEARTBEAT_RESPONSE = 8
    SNAPSHOT = 9
    SNAPSHOT_RESPONSE = 10
    READ_INDEX = 11
    READ_INDEX_RESPONSE = 12
    TIMEOUT_NOW = 13


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteRequest:
    """RequestVote, or PreVote when `pre_vote` (then `term` is the term the
    sender *would* campaign in; nobody changes term for a PreVote).
    `transfer` marks a campaign started by TimeoutNow: voters then ignore
    their leader lease, because the current leader asked for it."""

    sender: int
    recipient: int
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False

    @property
    def kind(self) -> MessageKind:
        return MessageKind.PRE_VOTE if self.pre_vote else MessageKind.VOTE


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteResponse:
    sender: int
    recipient: int
    term: int
    granted: bool
    pre_vote: bool = False

    @property
    def kind(self) -> MessageKind:
        return MessageKind.PRE_VOTE_RESPONSE if self.pre_vote else MessageKind.VOTE_RESPONSE


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRequest:
    """AppendEntries: `entries` follow (prev_log_index, prev_log_term)."""

    KIND: ClassVar[MessageKind] = MessageKind.APPEND
    sender: int
    recipient: int
    term: int
    prev_log_index: int
    prev_log_term: int
    commit: int
    entries: list[Entry] = field(default_factory=list)

    @property
    def kind(self) -> MessageKind:
        return self.KIND


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResponse:
    """Accepted: `index` is the follower's last index matching the leader.
    Rejected: `index` is the rejected prev_log_index and (hint_index,
    hint_term) is the follower's last entry that might match: the largest
    index <= min(prev_log_index, last) whose term <= prev_log_term. The
    leader skips every index in between in one round trip."""

    KIND: ClassVar[MessageKind] = MessageKind.APPEND_RESPONSE
    sender: int
    recipient: int
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0

    @property
    def kind(self) -> MessageKind:
        return self.KIND


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """`commit` is min(leader commit, follower match). `read_seq` is the latest
    ReadIndex round; `lease_tick` is the leader's tick count when sent."""

    KIND: ClassVar[MessageKind] = MessageKind.HEARTBEAT
    sender: int
    recipient: int
    term: int
    commit: int
    read_seq: int = 0
    lease_tick: int = 0

    @property
    def kind(self) -> MessageKind:
        return self.KIND


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse:
    """Echoes `read_seq` and `lease_tick` of the heartbeat it answers."""

    KIND: ClassVar[MessageKind] = MessageKind.HEARTBEAT_RESPONSE
    sender: int
    recipient: int
    term: int
    read_seq: int = 0
    lease_tick: int = 0

    @property
    def kind(self) -> MessageKind:
        return self.KIND


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotChunk:
    """Bytes [offset, offset + len(data)) of the snapshot described by `meta`,
    whose image is `total_bytes` long. The chunk with `done` is the last one."""

    KIND: ClassVar[MessageKind] = MessageKind.SNAPSHOT
    sender: int
    recipient: int
    term: int
    meta: SnapshotMeta
    offset: int
    total_bytes: int
    data: bytes
    done: bool

    @property
    def kind(self) -> MessageKind:
        return self.KIND


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotResponse:
    """The follower holds bytes [0, offset) of the snapshot at `index`; when
    `done`, it has installed it (or already had the log up to `index`).
    `reject` asks the leader to restart the transfer from offset 0."""

    KIND: ClassVar[MessageKind] = MessageKind.SNAPSHOT_RESPONSE
    sender: int
    recipient: int
    term: int
    index: int
    offset: int
    done: bool = False
    reject: bool = False

    @property
    def kind(self) -> MessageKind:
        return self.KIND


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexRequest:
    """A follower forwards a linearizable read to its leader."""

    KIND: ClassVar[MessageKind] = MessageKind.READ_INDEX
    sender: int
    recipient: int
    term: int
    context: bytes

    @property
    def kind(self) -> MessageKind:
        return self.KIND


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexResponse:
    KIND: ClassVar[MessageKind] = MessageKind.READ_INDEX_RESPONSE
    sender: int
    recipient: int
    term: int
    index: int
    context: bytes

    @property
    def kind(self) -> MessageKind:
        return self.KIND


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Leadership transfer: campaign now, without PreVote."""

    KIND: ClassVar[MessageKind] = MessageKind.TIMEOUT_NOW
    sender: int
    recipient: int
    term: int

    @property
    def kind(self) -> MessageKind:
        return self.KIND


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | SnapshotChunk
    | SnapshotResponse
    | ReadIndexRequest
    | ReadIndexResponse
    | TimeoutNow
)
"""Any Raft message."""

MESSAGE_TYPES: tuple[type, ...] = (
    VoteRequest,
    VoteResponse,
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    SnapshotChunk,
    SnapshotResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNow,
)
