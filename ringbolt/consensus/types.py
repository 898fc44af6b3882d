"""Types shared by every consensus core and every driver of one.

Theory of operation
-------------------
A consensus core (Raft, Multi-Paxos) is a pure state machine. A driver (the
asyncio runtime, the deterministic simulator, a benchmark) feeds it inputs --
`tick()`, `step(message)`, `propose(command)`, `read_index(context)` -- and
drains its outputs with `ready()`. A `Ready` must be handled in this order:

1. persist `snapshot` (if any), then `entries` (an append that may first
   truncate a conflicting suffix starting at `entries[0].index`), then
   `hard_state` (if any);
2. send `early_messages` -- these may leave before the fsync of step 3;
3. make step 1 durable (fdatasync);
4. send `messages`;
5. apply `committed_entries` to the state machine, in order, and answer
   `read_states` once the state machine has applied up to their index;
6. call `advance(ready)` -- only after step 3: `advance` is how the core
   learns that the Ready's entries and hard state are durable.

In short: persist -> send early_messages -> fsync -> send messages -> apply
-> advance. `early_messages` is filled only by a core configured with
`early_send` (a leader's appends and heartbeats of a term whose hard state a
previous `advance` made durable; see consensus/early_send.py); otherwise it
is empty and the order is the classic persist+fsync -> send -> apply ->
advance. A driver that ignores the distinction and sends `early_messages`
after its fsync, together with `messages`, is correct too, just slower.

A core never performs I/O, reads a clock or draws from a global RNG: time is
ticks and randomness is an injected `random.Random`.

A node that crashes keeps exactly what it persisted from Readys and restarts
with `PersistentState`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ringbolt.consensus.leader import ProgressStatus

NO_NODE = 0
"""Node ids are positive integers; 0 means "none" (no vote, no leader)."""


class RandomSource(Protocol):
    """What a core needs of an RNG; drivers hand in a seeded `random.Random`."""

    def randrange(self, start: int, stop: int) -> int: ...


class EntryKind(enum.IntEnum):
    NORMAL = 0
    """`data` is an opaque state-machine command."""
    CONFIG = 1
    """`data` is an encoded `ConfChange` (see `ringbolt.consensus.codec`)."""
    NOOP = 2
    """Appended by a new leader to commit entries of earlier terms."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


# Hot paths (a leader's propose, a follower's decode, WAL replay) build
# entries through the slot descriptors: a frozen dataclass's generated
# __init__ costs ~2.5x as much (keyword parsing, then object.__setattr__ by
# name per field). Valid only while Entry has exactly these fields and no
# __post_init__, which is asserted here.
assert list(Entry.__dataclass_fields__) == ["term", "index", "kind", "data"]
assert not hasattr(Entry, "__post_init__")
_new_object = object.__new__
_set_term, _set_index, _set_kind, _set_data = (
    getattr(Entry, name).__set__ for name in ("term", "index", "kind", "data"))


def new_entry(term: int, index: int, kind: EntryKind, data: bytes) -> Entry:
    """`Entry(term=term, index=index, kind=kind, data=data)`, faster."""
    entry = _new_object(Entry)
    _set_term(entry, term)
    _set_index(entry, index)
    _set_kind(entry, kind)
    _set_data(entry, data)
    return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class HardState:
    """What must survive a crash besides the log (Raft: currentTerm, votedFor)."""

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfState:
    """Group membership. Learners receive the log but neither vote nor count."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        assert not (self.voters & self.learners), "a node is a voter or a learner, not both"
        assert NO_NODE not in self.voters
        assert NO_NODE not in self.learners

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners


class ConfChangeKind(enum.IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfChange:
    """One-server-at-a-time membership change (Ongaro's thesis, section 4.1)."""

    kind: ConfChangeKind
    node_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A state-machine image covering the log up to and including `meta.index`."""

    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadState:
    """A read registered with `read_index(context)` may be served once the
    local state machine has applied up to `index`."""

    index: int
    context: bytes


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3
    LEARNER = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftState:
    """Volatile facts a driver may want (for routing and status); never persisted."""

    leader: int
    role: Role
    term: int


@dataclass(slots=True, kw_only=True)
class Ready:
    """One batch of a core's output. Handle it in this order (module docstring):
    persist (snapshot, entries, hard state) -> send `early_messages` -> fsync
    -> send `messages` -> apply `committed_entries` / answer `read_states` ->
    `advance(ready)`. `early_messages` may be sent before the fsync because
    they promise nothing about this node's unsynced state: the core counts
    its own log toward a commit only once `advance` says it is durable (Raft
    thesis 10.2.1). Each list keeps the core's relative order."""

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[object] = field(default_factory=list)
    early_messages: list[object] = field(default_factory=list)
    """Messages that may leave before this Ready is durable (see above)."""
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    soft_state: SoftState | None = None

    def must_sync(self) -> bool:
        return self.hard_state is not None or self.snapshot is not None or bool(self.entries)

    def is_empty(self) -> bool:
        return not (
            self.must_sync()
            or self.messages
            or self.early_messages
            or self.committed_entries
            or self.read_states
            or self.soft_state is not None
        )


@dataclass(slots=True, kw_only=True)
class PersistentState:
    """What a node restarts from: everything its Readys persisted."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    node_id: int
    role: Role
    term: int
    leader: int
    commit: int
    applied: int
    last_index: int
    conf: ConfState


class ConsensusError(Exception):
    """Expected, typed outcomes of driving a core (not bugs)."""


class NotLeader(ConsensusError):
    def __init__(self, leader_hint: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ProposalDropped(ConsensusError):
    """The proposal was refused (e.g. a leadership transfer or a membership
    change is in progress, or the in-flight window is full)."""


@runtime_checkable
class ConsensusCore(Protocol):
    """The interface every driver uses; Raft and Multi-Paxos both implement it."""

    node_id: int

    def tick(self) -> None: ...

    def step(self, message: object) -> None: ...

    def propose(self, command: bytes) -> tuple[int, int]:
        """Append `command`; return its (term, index). It is committed iff a
        committed entry later shows up with that same term at that index.
        Raises `NotLeader` or `ProposalDropped`."""
        ...

    def propose_conf_change(self, change: ConfChange) -> tuple[int, int]: ...

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a `ReadState` with this context comes
        out of a later Ready (or `NotLeader` is raised now)."""
        ...

    def transfer_leadership(self, target: int) -> None: ...

    def compact(self, index: int, data: bytes) -> None:
        """The driver took a state-machine snapshot covering `index` (which it
        has applied); the core may drop log entries up to it."""
        ...

    def has_ready(self) -> bool: ...

    def ready(self) -> Ready: ...

    def advance(self, ready: Ready) -> None: ...

    def status(self) -> Status: ...

    def progress(self, node: int) -> ProgressStatus | None:
        """The leader's view of `node`'s log (None on a non-leader or for an
        unknown node); drivers promote a learner once its match is close."""
        ...

    def statistics(self) -> dict[str, int]:
        """Counters and gauges for the metrics endpoint."""
        ...
