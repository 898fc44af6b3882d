"""Snapshot streams of one group's state, and their verified installation.

Theory of operation
-------------------
A snapshot is a byte stream cut into chunks of at most `chunk_bytes_max`
(chunk boundaries carry no meaning: a record may span chunks)::

    magic  "RBSNAP\\x00\\x01"
    header index u64, term u64, count u64            (big-endian)
    count records: key length u32, value length u32, expire_at_ms u64, key, value
    trailer 0xFFFFFFFF, count u64, CRC32C u32 of every byte before the CRC

The sender reads one LMDB read transaction, so the image is consistent at
(index, term) while writers go on. The receiver spools the stream (memory,
then a temporary file next to the database), checks the CRC and the whole
structure, and only then replaces the group's keys in one write transaction:
a truncated, corrupt or mismatched stream raises `SnapshotInvalid` and leaves
the old state untouched.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import IO

import crc32c

from ringbolt.storage import limits
from ringbolt.storage.errors import SnapshotInvalid

MAGIC = b"RBSNAP\x00\x01"
HEADER = struct.Struct(">QQQ")
RECORD = struct.Struct(">IIQ")
TRAILER_MARK = 0xFFFFFFFF
TRAILER = struct.Struct(">IQ")
CRC = struct.Struct(">I")


def write_stream(
    items: Iterable[tuple[bytes, bytes, int]],
    *,
    index: int,
    term: int,
    count: int,
    chunk_bytes_max: int = limits.snapshot_chunk_bytes_max,
) -> Iterator[bytes]:
    """Encode (key, value, expire_at_ms) items as chunks of bounded size."""
    assert chunk_bytes_max >= 64
    buffer = bytearray(MAGIC + HEADER.pack(index, term, count))
    crc = 0
    written = 0
    for key, value, expire_at_ms in items:
        assert len(key) < TRAILER_MARK
        buffer += RECORD.pack(len(key), len(value), expire_at_ms)
        buffer += key
        buffer += value
        written += 1
        while len(buffer) >= chunk_bytes_max:
            chunk = bytes(buffer[:chunk_bytes_max])
            del buffer[:chunk_bytes_max]
            crc = crc32c.crc32c(chunk, crc)
            yield chunk
    assert written == count, f"snapshot of {written} keys, count says {count}"
    buffer += TRAILER.pack(TRAILER_MARK, written)
    crc = crc32c.crc32c(bytes(buffer), crc)
    buffer += CRC.pack(crc)
    while buffer:
        chunk = bytes(buffer[:chunk_bytes_max])
        del buffer[:chunk_bytes_max]
        yield chunk


class SpooledStream:
    """A received snapshot stream, verified; iterate `items()` to install."""

    def __init__(self, spool: IO[bytes], size_bytes: int) -> None:
        """Use `SpooledStream.receive`."""
        self._spool = spool
        self._size_bytes = size_bytes
        self.index = 0
        self.term = 0
        self.count = 0

    @classmethod
    def receive(cls, chunks: Iterable[bytes], *, directory: str | None = None) -> SpooledStream:
        import tempfile  # only receivers need it (and it is slow to import)

        spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - owned by the stream
            max_size=limits.snapshot_spool_memory_bytes_max, dir=directory
        )
        stream = cls(spool, 0)
        try:
            stream._spool_and_verify(chunks)
        except BaseException:
            spool.close()
            raise
        return stream

    def _spool_and_verify(self, chunks: Iterable[bytes]) -> None:
        crc = 0
        held_back = b""  # the last CRC.size bytes seen: maybe the stored CRC
        for chunk in chunks:
            if not chunk:
                continue
            data = held_back + bytes(chunk)
            crc = crc32c.crc32c(data[: -CRC.size], crc)
            held_back = data[-CRC.size :]
            self._spool.write(chunk)
            self._size_bytes += len(chunk)
        if len(held_back) < CRC.size or CRC.unpack(held_back)[0] != crc:
            raise SnapshotInvalid("snapshot checksum mismatch or stream truncated")
        self._check_structure()

    def _read_exact(self, size: int) -> bytes:
        data = self._spool.read(size)
        if len(data) != size:
            raise SnapshotInvalid("snapshot stream ends inside a record")
        return data

    def _check_structure(self) -> None:
        self._spool.seek(0)
        if self._read_exact(len(MAGIC)) != MAGIC:
            raise SnapshotInvalid("not a ringbolt snapshot (bad magic)")
        self.index, self.term, self.count = HEADER.unpack(self._read_exact(HEADER.size))
        position = len(MAGIC) + HEADER.size
        for _ in range(self.count):
            key_bytes, value_bytes, _ = RECORD.unpack(self._read_exact(RECORD.size))
            if key_bytes == TRAILER_MARK:
                raise SnapshotInvalid("snapshot has fewer records than its header says")
            position += RECORD.size + key_bytes + value_bytes
            self._spool.seek(position)
        mark, count = TRAILER.unpack(self._read_exact(TRAILER.size))
        if mark != TRAILER_MARK or count != self.count:
            raise SnapshotInvalid("snapshot trailer does not match its header")
        if position + TRAILER.size + CRC.size != self._size_bytes:
            raise SnapshotInvalid("snapshot has trailing bytes after its trailer")

    def check_matches(self, index: int, term: int) -> None:
        if (self.index, self.term) != (index, term):
            raise SnapshotInvalid(
                f"snapshot covers index {self.index} term {self.term}, "
                f"expected index {index} term {term}"
            )

    def items(self) -> Iterator[tuple[bytes, bytes, int]]:
        self._spool.seek(len(MAGIC) + HEADER.size)
        for _ in range(self.count):
            key_bytes, value_bytes, expire_at_ms = RECORD.unpack(self._read_exact(RECORD.size))
            key = self._read_exact(key_bytes)
            yield key, self._read_exact(value_bytes), expire_at_ms

    def __enter__(self) -> SpooledStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._spool.close()
