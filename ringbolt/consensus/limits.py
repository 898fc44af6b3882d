"""Limits of the Raft core. Units last in every name; relationships asserted below.

Every queue and batch in `ringbolt.consensus` is bounded by one of these.
They are the *defaults* of `RaftConfig`; a driver may lower or raise them per
group, and `RaftConfig.__post_init__` re-checks the same relationships.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

election_timeout_ticks = 10
"""A follower that hears nothing from a leader for a random number of ticks in
[T, 2T) campaigns. With a 100 ms tick, T = 1 s: long enough to ride out a GC
pause or a slow fsync, short enough to fail over within a few seconds."""

heartbeat_ticks = 1
"""The leader heartbeats every tick; must be well below the election timeout so
that a few lost heartbeats never cause an election."""

inflight_msgs_max = 256
"""AppendEntries messages a leader may have unacknowledged per follower in the
replicate state. Bounds the memory a slow follower can pin at the leader
(inflight_msgs_max * bytes_per_msg_max) while letting a fast link pipeline."""

entries_per_msg_max = 4096
"""Entries in one AppendEntries; with bytes_per_msg_max it bounds one message."""

bytes_per_msg_max = 1 * MIB
"""Payload bytes (sum of entry data) in one AppendEntries. One entry larger than
this is still sent, alone, so a big value cannot wedge replication."""

snapshot_chunk_bytes_max = 256 * KIB
"""One InstallSnapshot chunk. The follower assembles chunks in memory and hands
the whole snapshot to its driver only when the last chunk has arrived."""

uncommitted_entries_max = 65536
"""Entries a leader accepts beyond its commit index before `propose` refuses
with ProposalDropped: a leader that cannot commit must not grow without end."""

committed_entries_per_ready_max = 8192
"""Committed entries handed to the driver in one Ready; the rest follow in the
next one, so one Ready never holds an unbounded apply batch."""

read_index_pending_max = 8192
"""Linearizable reads a leader holds while it confirms its leadership."""

lease_clock_drift_ticks = 2
"""Lease reads (ReadMode.LEASE) assume no node's tick rate differs from the
leader's by more than this many ticks over one election timeout. The lease
lasts election_timeout_ticks - lease_clock_drift_ticks ticks from the *send*
time of the last heartbeat a quorum acknowledged."""

assert heartbeat_ticks < election_timeout_ticks
assert 0 < lease_clock_drift_ticks < election_timeout_ticks
assert inflight_msgs_max >= 1
assert entries_per_msg_max >= 1
assert snapshot_chunk_bytes_max <= bytes_per_msg_max
assert uncommitted_entries_max >= entries_per_msg_max
