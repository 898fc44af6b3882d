"""A follower's assembly of one snapshot from InstallSnapshot chunks.

Theory of operation
-------------------
The leader sends a snapshot as chunks `[offset, offset + len(data))` of an
image `total_bytes` long, stop-and-wait: it sends the next chunk when the
follower acknowledges the previous one, and retransmits from the
acknowledged offset on heartbeats. The follower keeps at most one partial
image (bounded by the announced `total_bytes`) and answers every chunk with
the number of bytes it holds; that answer is the truth the leader resumes
from, whatever was lost, duplicated or reordered. A chunk at offset 0 of a
*different* snapshot starts over; a chunk that does not continue the image
gets the held offset back (or a reject, meaning "restart from 0", when
nothing of this snapshot is held). Only the last chunk, once the byte count
matches exactly, yields a `Snapshot` -- the driver then installs it whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringbolt.consensus.messages import SnapshotChunk
from ringbolt.consensus.types import Snapshot, SnapshotMeta


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkAnswer:
    offset: int
    """Bytes of the snapshot held after this chunk."""
    reject: bool = False
    """Nothing usable is held: the leader should restart from offset 0."""
    snapshot: Snapshot | None = None
    """The complete snapshot, when this chunk finished it."""


class SnapshotAssembly:
    __slots__ = ("_meta", "_buffer")

    def __init__(self) -> None:
        self._meta: SnapshotMeta | None = None
        self._buffer = bytearray()

    @property
    def held_bytes(self) -> int:
        return len(self._buffer)

    def clear(self) -> None:
        self._meta = None
        self._buffer = bytearray()

    def receive(self, chunk: SnapshotChunk) -> ChunkAnswer:
        if chunk.offset == 0 and self._meta != chunk.meta:
            self._meta = chunk.meta  # a new transfer
            self._buffer = bytearray()
        if self._meta != chunk.meta:
            return ChunkAnswer(offset=0, reject=True)
        buffer = self._buffer
        if chunk.offset != len(buffer):  # lost, duplicated or reordered
            return ChunkAnswer(offset=len(buffer), reject=not buffer)
        buffer += chunk.data
        total = chunk.total_bytes
        if len(buffer) > total or (chunk.done and len(buffer) != total):
            self.clear()  # inconsistent with what the leader announced
            return ChunkAnswer(offset=0, reject=True)
        if not chunk.done:
            return ChunkAnswer(offset=len(buffer))
        snapshot = Snapshot(meta=chunk.meta, data=bytes(buffer))
        self.clear()
        return ChunkAnswer(offset=total, snapshot=snapshot)
