"""The seam between a node and the consensus protocol it runs.

Theory of operation
-------------------
A driver (the asyncio server, the simulator, a benchmark) never names a
protocol: it gets a `Consensus` from `ringbolt.consensus.registry` and uses
only what is declared here and in `types.py`:

- `make_core(settings, rng, restored)` builds one `ConsensusCore` (types.py)
  from protocol-neutral `CoreSettings`, an injected RNG (a seeded
  `random.Random`; cores see it as a `RandomSource`, since consensus/ imports
  no `random`) and the `PersistentState` to restart from (None: a blank node);
- `codec` turns the core's messages into bytes and back, and answers the two
  questions a node asks about a message without knowing its type;
- `unsafe_mutations` are the test-only mutation names a node config may list.

Every core follows the Ready contract of types.py: persist -> send
`early_messages` -> fsync -> send `messages` -> apply -> advance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from ringbolt.consensus import limits
from ringbolt.consensus.codec import MessageDecodeError
from ringbolt.consensus.types import NO_NODE, ConsensusCore, PersistentState, RandomSource


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreSettings:
    """What every consensus core is configured with; protocol-specific knobs
    stay inside the protocol's own config (see registry.py)."""

    node_id: int
    voters: frozenset[int]
    """Initial membership, used only when the restored state carries none.
    Empty for a node joining an existing group."""
    learners: frozenset[int] = frozenset()
    election_timeout_ticks: int = limits.election_timeout_ticks
    heartbeat_ticks: int = limits.heartbeat_ticks
    unsafe: frozenset[str] = frozenset()
    """TEST-ONLY mutations, a subset of `Consensus.unsafe_mutations`."""
    early_send: bool = False
    """Fill `Ready.early_messages` (messages safe to send before the fsync)."""
    inflight_msgs_max: int = limits.inflight_msgs_max
    """Replication messages in flight per follower (flow control)."""
    entries_per_msg_max: int = limits.entries_per_msg_max
    """Log entries per replication message."""

    def __post_init__(self) -> None:
        assert self.node_id > NO_NODE, "node ids are positive"
        assert NO_NODE not in self.voters
        assert not (self.voters & self.learners), "a node is a voter or a learner, not both"
        assert 1 <= self.heartbeat_ticks < self.election_timeout_ticks
        assert self.inflight_msgs_max >= 1
        assert self.entries_per_msg_max >= 1


CoreFactory: TypeAlias = Callable[[CoreSettings, RandomSource, PersistentState | None],
                                  ConsensusCore]
"""`make_core(settings, rng, restored)`; `rng` is a seeded `random.Random`."""


class MessageCodec(Protocol):
    """Bytes for a protocol's messages, and what a node must know about one."""

    def encode(self, message: object) -> bytes: ...

    def decode(self, payload: bytes) -> Any:
        """The message in `payload` (it has `.sender` and `.recipient`);
        raises `MessageDecodeError` on anything malformed (the peer's fault)."""
        ...

    def wants_replica(self, message: object) -> bool:
        """Sent by a leader or candidate that counts on the recipient hosting
        the group (so a node that does not should create the replica)."""
        ...

    def is_read_request(self, message: object) -> bool:
        """A read-index request that nobody retransmits (a node that drops
        it must tell the requester)."""
        ...


@dataclass(frozen=True, slots=True)
class Consensus:
    """One consensus protocol, as a node uses it."""

    name: str
    make_core: CoreFactory
    codec: MessageCodec
    unsafe_mutations: frozenset[str]
    """Names accepted in the node config's `unsafe` list."""


__all__ = ["Consensus", "CoreFactory", "CoreSettings", "MessageCodec", "MessageDecodeError"]
