"""The consensus protocols a node can run, by name.

Theory of operation
-------------------
`consensus(name)` returns the `Consensus` (interface.py) of a protocol:
its core factory, its message codec and its test-only mutation names. This
is the only module outside the protocol's own modules (raft.py, leader.py,
messages.py, codec.py, ...) that names Raft, so drivers stay protocol-neutral.
`NAMES` lists the choices; an unknown name is our caller's misuse of a
config value and raises `ValueError` naming them.

`make_raft(settings, rng, restored, **raft_options)` is the Raft factory
with Raft-only `RaftConfig` knobs on top of the `CoreSettings` (pre_vote,
check_quorum, read_mode, message byte caps): for tests and benchmarks that
exercise Raft itself. Drivers use `consensus().make_core`.
"""

from __future__ import annotations

from typing import Any

from ringbolt.consensus.codec import decode_message, encode_message
from ringbolt.consensus.interface import Consensus, CoreSettings
from ringbolt.consensus.messages import (
    MESSAGE_TYPES,
    AppendRequest,
    Heartbeat,
    ReadIndexRequest,
    SnapshotChunk,
    VoteRequest,
)
from ringbolt.consensus.raft import UNSAFE_MUTATIONS, Raft, RaftConfig
from ringbolt.consensus.types import PersistentState, RandomSource

_WANTS_REPLICA = (AppendRequest, Heartbeat, SnapshotChunk, VoteRequest)
"""Sent by a leader or candidate that counts on the recipient hosting the group."""


class RaftCodec:
    """`MessageCodec` of Raft: the versioned msgpack codec of codec.py."""

    __slots__ = ()

    def encode(self, message: object) -> bytes:
        assert isinstance(message, MESSAGE_TYPES), f"not a Raft message: {message!r:.80}"
        return encode_message(message)  # type: ignore[arg-type]

    def decode(self, payload: bytes) -> Any:
        return decode_message(payload)

    def wants_replica(self, message: object) -> bool:
        return isinstance(message, _WANTS_REPLICA)

    def is_read_request(self, message: object) -> bool:
        return isinstance(message, ReadIndexRequest)


def make_raft(settings: CoreSettings, rng: RandomSource, restored: PersistentState | None,
              **raft_options: Any) -> Raft:
    """A `Raft` core from `settings`, plus Raft-only `RaftConfig` knobs."""
    config = RaftConfig(
        node_id=settings.node_id,
        voters=settings.voters,
        learners=settings.learners,
        election_timeout_ticks=settings.election_timeout_ticks,
        heartbeat_ticks=settings.heartbeat_ticks,
        unsafe=settings.unsafe,
        early_send=settings.early_send,
        inflight_msgs_max=settings.inflight_msgs_max,
        entries_per_msg_max=settings.entries_per_msg_max,
        **raft_options,
    )
    return Raft(config, rng, restored)


def _make_raft_core(settings: CoreSettings, rng: RandomSource,
                    restored: PersistentState | None) -> Raft:
    return make_raft(settings, rng, restored)


RAFT = Consensus(name="raft", make_core=_make_raft_core, codec=RaftCodec(),
                 unsafe_mutations=UNSAFE_MUTATIONS)

_BY_NAME: dict[str, Consensus] = {RAFT.name: RAFT}
NAMES: tuple[str, ...] = tuple(_BY_NAME)
"""The protocols `consensus()` knows; Multi-Paxos will join Raft here."""


def consensus(name: str = "raft") -> Consensus:
    """The protocol called `name`; `ValueError` naming the choices otherwise."""
    found = _BY_NAME.get(name)
    if found is None:
        raise ValueError(f"unknown consensus {name!r}: choose one of {', '.join(NAMES)}")
    return found


__all__ = ["NAMES", "RAFT", "RaftCodec", "consensus", "make_raft"]
