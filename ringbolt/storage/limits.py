"""Limits of the storage layer. Units last; relationships asserted at import.

The key and value limits come from `ringbolt.limits` (the client-visible
ones); the rest bound what one node buffers, writes and streams.
"""

from __future__ import annotations

from ringbolt import limits as project

KIB = project.KIB
MIB = project.MIB

key_bytes_max = project.key_bytes_max
"""Largest key stored; larger keys are refused with `KeyTooLarge`."""

value_bytes_max = project.value_bytes_max
"""Default largest value (configurable per store up to `value_bytes_ceiling`)."""

value_bytes_ceiling = project.value_bytes_ceiling

record_bytes_max = value_bytes_ceiling + 4 * MIB
"""Largest WAL record (one `append` call). One entry carrying the largest
value must fit, with room for its key and framing; bigger appends must be
split by the caller (the Raft core bounds its append batches well below)."""

segment_bytes_default = 64 * MIB
"""A segment is rotated once it reaches this size. Small enough that
compaction frees space in useful steps, big enough that rotation (two
fsyncs and a directory fsync) is rare."""

segment_bytes_min = 4 * KIB

pending_bytes_max = 256 * MIB
"""Appended-but-unsynced bytes beyond which `append` raises `BacklogFull`:
the event loop must not outrun the disk without bound."""

sync_write_bytes_max = 8 * MIB
"""The sync thread writes its batch in slices of at most this many bytes."""

snapshot_chunk_bytes_max = 1 * MIB
"""Each chunk of a snapshot stream is at most this big (one Raft message)."""

snapshot_spool_memory_bytes_max = 16 * MIB
"""An incoming snapshot is kept in memory up to this size, then spooled to a
temporary file next to the database."""

map_size_bytes_default = 8 * 1024 * MIB
"""LMDB map size: the largest the database may grow (address space, not RAM)."""

groups_per_segment_state_max = 1_000_000
"""Bound on groups carried forward in a segment's opening state record."""

assert key_bytes_max <= value_bytes_max <= value_bytes_ceiling
assert record_bytes_max > value_bytes_ceiling + key_bytes_max
assert segment_bytes_min <= segment_bytes_default
assert sync_write_bytes_max <= pending_bytes_max
assert snapshot_chunk_bytes_max >= 64
