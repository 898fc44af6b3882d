"""Limits of one node process. Units last in every name; relationships asserted below.

Each number bounds a queue or a window so that overload becomes an explicit
refusal (`Busy`, `Unavailable`, a dropped Raft message) rather than unbounded
memory. The reasoning sits next to each value.
"""

from __future__ import annotations

from ringbolt import limits as project

tick_ms_default = 10
"""One Raft tick. Heartbeats and election timeouts are counted in ticks."""

election_timeout_ticks_default = 20
"""Base election timeout; Raft randomizes it in [base, 2 * base). With 10 ms
ticks that is 200-400 ms: above the stalls a busy Python event loop sees on a
loaded 2-core machine (so no spurious elections under benchmark load), and
short enough that a failover takes well under a second."""

heartbeat_ticks_default = 2
"""Leader heartbeat interval (20 ms with the default tick): a tenth of the
election timeout, so several heartbeats may be lost before followers campaign."""

frame_bytes_max = project.value_bytes_ceiling + 16 * project.MIB
"""Largest peer frame accepted. One frame may carry a whole Raft append with a
maximal value; a larger length prefix is a peer's fault and closes the link."""

peer_queue_msgs_max = 20_000
"""Raft messages queued for one peer between two flushes (or while it is
unreachable). Past it, Raft messages are dropped (Raft tolerates loss) and
client forwards are refused with BUSY."""

peer_write_buffer_bytes_high = 32 * project.MIB
"""Above this many bytes waiting in the socket buffer a peer is considered
slow: we stop writing to it and let its queue fill (then drop)."""

frame_msgs_max = 4_096
"""Raft messages + forwards packed into one frame; a flush writes several
frames when more are queued."""

forwards_inflight_max = 4_096
"""Client writes this node has forwarded to leaders and not yet heard back on."""

forward_timeout_s = 5.0
"""A forwarded write, a proposal or a read that has not completed after this
long fails with TRYAGAIN; for writes the outcome is then unknown."""

proposals_pending_max = 50_000
"""Proposals one replica (group) waits to see applied."""

reads_pending_max = 50_000
"""Linearizable reads one replica holds (batched, waiting for ReadIndex or apply)."""

compact_every_entries = 10_000
"""A replica takes a state-machine snapshot and lets its log be compacted
after applying this many entries since the previous one."""

reconnect_backoff_initial_s = 0.05
reconnect_backoff_max_s = 2.0
"""Bounded exponential backoff (with jitter) for re-dialling a peer."""

rounds_inflight_max = 2
"""Driver rounds prepared (appended to the WAL, sync requested) but not yet
finished (sent, applied). Two lets the next round's appends queue behind the
running fdatasync instead of waiting for the whole previous round."""

scan_cursors_max = 4_096
"""SCAN cursors a node remembers (oldest forgotten first)."""

shards_max = 1_024
peers_max = 64

assert frame_msgs_max <= peer_queue_msgs_max
assert frame_bytes_max > project.value_bytes_ceiling
assert reconnect_backoff_initial_s < reconnect_backoff_max_s
assert heartbeat_ticks_default < election_timeout_ticks_default

leaderless_writes_max = 4_096
"""Writes a node holds while one of its shards has no known leader (an
election is in progress); past this they are refused with BUSY."""

leaderless_wait_s = 2.0
"""How long such a write waits for a leader before it fails as "not executed,
retry" (ten default election timeouts: elections settle well within it)."""


peer_silence_max_s = 1.0
"""A peer from which no byte has arrived for this long is presumed cut off: the
transport closes its links and re-dials (TCP alone would wait for its
retransmission backoff, seconds to minutes after a partition heals). Idle
links send a keep-alive every quarter of it, so silence means a dead path, not
a quiet one. A few election timeouts: long enough that a slow peer is not
mistaken for a cut one (and a stalled watchdog judges nothing), short enough
that a healed peer is re-dialled soon after (re-dial backoff is capped at a
quarter of it; one dial is bounded by it). Nodes may pass a value derived
from their election timeout."""

assert peer_silence_max_s > reconnect_backoff_initial_s

gc_thresholds = (20_000, 20, 100)
"""CPython's cyclic collector thresholds for a node process (default 700, 10,
10). A node allocates a few short-lived objects per request and keeps many
long-lived ones (the in-memory Raft log, pending futures, connections): with
the defaults the leader ran ~2,700 young and ~20 full collections per second
under pipelined writes, ~15% of its time. Reference counting frees almost
everything at once; cycles (futures, exceptions) are still collected, every
20,000 net allocations. Measured in docs/benchmarks.md."""
