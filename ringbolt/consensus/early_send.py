"""Which of a Raft leader's messages may leave before its own fsync.

Theory of operation
-------------------
With `RaftConfig.early_send` the core splits each Ready's messages in two:
`Ready.early_messages` may be sent right after the driver *wrote* the Ready
(before the fsync), `Ready.messages` only after it is durable. The driver
contract becomes persist -> send early_messages -> fsync -> send messages ->
apply -> advance, so the followers' fsyncs overlap the leader's.

A message qualifies only when all of these hold:

- it is an `AppendRequest` or a `Heartbeat` of the current term;
- the node is the leader of that term;
- a Ready carrying a hard state of the current term has been advanced (made
  durable): the term, and the node's vote for itself in it, survive a crash,
  so the node can never vote for -- or be -- another leader of this term;
- the Ready's own hard state is None or of the current term (it changes at
  most the commit index).

Why this is safe (Raft thesis 10.2.1): an AppendRequest promises nothing
about the leader's own log. The leader counts its own log toward a commit
only up to `log.stable`, which only `advance` moves (`LeaderRole.maybe_commit`,
asserted in `Raft.ready`), so an entry is never committed on fewer durable
copies than a quorum. A leader that crashes before its fsync loses at most
entries nobody was told are committed; it restarts in the same durable term,
already voted, and cannot lead that term again. Votes, vote and append
responses, snapshot traffic and everything of a new term wait for the fsync:
they do promise something about this node's durable state.
"""

from __future__ import annotations

from ringbolt.consensus.messages import AppendRequest, Heartbeat, Message

EARLY_KINDS = (AppendRequest, Heartbeat)
"""Message classes that may leave before the sender's fsync."""


def split_early(messages: list[Message], term: int) -> tuple[list[object], list[object]]:
    """(early, rest) of a qualifying leader's `messages`; each keeps its order."""
    assert term > 0, "no leader exists in term 0"
    early: list[object] = []
    rest: list[object] = []
    for message in messages:
        if isinstance(message, EARLY_KINDS) and message.term == term:
            early.append(message)
        else:
            rest.append(message)
    return early, rest


__all__ = ["EARLY_KINDS", "split_early"]
