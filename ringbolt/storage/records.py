"""Write-ahead log records: framing, payload codec, and segment scanning.

Theory of operation
-------------------
A segment file is an 8-byte magic followed by records. A record is::

    length: u32 little-endian   (payload bytes, 1 .. record_bytes_max)
    crc:    u32 little-endian   (CRC32C of the 4 length bytes + payload)
    payload: kind (1 byte) + msgpack body

The CRC covers the length too, so a flipped bit in a length field is caught
like one in a payload. Scanning (`scan_segment`) is pure: it takes the bytes
of a segment and reports the valid records and, if the bytes stop making
sense, where and why. Deciding whether that point is a torn tail (recover) or
corruption (refuse) is the log's job (`ringbolt.storage.wal`), with one piece
of evidence computed here: whether any valid record follows the bad spot.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c
import msgpack

from ringbolt.consensus.types import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from ringbolt.storage import limits

SEGMENT_MAGIC = b"RBWAL\x00v1"
HEADER = struct.Struct("<II")
HEADER_BYTES = HEADER.size


class RecordKind(enum.IntEnum):
    APPEND = 1
    """[group, entries, hard_state | None, snapshot_meta | None]"""
    CHECKPOINT = 2
    """[group, index]: the group's state machine is durable up to index."""
    STATE = 3
    """[segment_seq, [[group, hard_state, snapshot_meta | None, checkpoint], ...]]:
    opens every segment so that older segments can be deleted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRecord:
    group_id: int
    entries: list[Entry]
    hard_state: HardState | None
    snapshot_meta: SnapshotMeta | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointRecord:
    group_id: int
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupState:
    hard_state: HardState
    snapshot_meta: SnapshotMeta | None
    checkpoint: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StateRecord:
    segment_seq: int
    groups: dict[int, GroupState]


Record = AppendRecord | CheckpointRecord | StateRecord


def frame(payload: bytes) -> bytes:
    length = len(payload)
    assert 0 < length < 2**32  # the log refuses records above record_bytes_max
    length_bytes = struct.pack("<I", length)
    crc = crc32c.crc32c(payload, crc32c.crc32c(length_bytes))
    return length_bytes + struct.pack("<I", crc) + payload


def _hard_state_out(state: HardState) -> list[int]:
    return [state.term, state.vote, state.commit]


def _hard_state_in(raw: list[int]) -> HardState:
    return HardState(term=raw[0], vote=raw[1], commit=raw[2])


def _meta_out(meta: SnapshotMeta | None) -> list[object] | None:
    if meta is None:
        return None
    return [meta.index, meta.term, sorted(meta.conf.voters), sorted(meta.conf.learners)]


def _meta_in(raw: list[object] | None) -> SnapshotMeta | None:
    if raw is None:
        return None
    index, term, voters, learners = raw
    assert isinstance(index, int) and isinstance(term, int)
    assert isinstance(voters, list) and isinstance(learners, list)
    conf = ConfState(voters=frozenset(voters), learners=frozenset(learners))
    return SnapshotMeta(index=index, term=term, conf=conf)


def encode(record: Record) -> bytes:
    """The framed bytes of one record."""
    if isinstance(record, AppendRecord):
        body: list[object] = [
            record.group_id,
            [[e.term, e.index, int(e.kind), e.data] for e in record.entries],
            None if record.hard_state is None else _hard_state_out(record.hard_state),
            _meta_out(record.snapshot_meta),
        ]
        kind = RecordKind.APPEND
    elif isinstance(record, CheckpointRecord):
        body = [record.group_id, record.index]
        kind = RecordKind.CHECKPOINT
    else:
        groups = [
            [g, _hard_state_out(s.hard_state), _meta_out(s.snapshot_meta), s.checkpoint]
            for g, s in sorted(record.groups.items())
        ]
        body = [record.segment_seq, groups]
        kind = RecordKind.STATE
    return frame(bytes([kind]) + msgpack.packb(body, use_bin_type=True))


def decode(payload: bytes) -> Record:
    """Decode a payload whose CRC already matched. A CRC-valid payload that
    does not decode was written by a buggy or foreign writer: ValueError."""
    try:
        kind = RecordKind(payload[0])
        body = msgpack.unpackb(payload[1:], raw=False, use_list=True)
        if kind is RecordKind.APPEND:
            group_id, raw_entries, raw_hard, raw_meta = body
            entries = [
                Entry(term=t, index=i, kind=EntryKind(k), data=d) for t, i, k, d in raw_entries
            ]
            hard = None if raw_hard is None else _hard_state_in(raw_hard)
            return AppendRecord(
                group_id=group_id, entries=entries, hard_state=hard, snapshot_meta=_meta_in(raw_meta)
            )
        if kind is RecordKind.CHECKPOINT:
            group_id, index = body
            return CheckpointRecord(group_id=group_id, index=index)
        segment_seq, raw_groups = body
        groups = {
            g: GroupState(hard_state=_hard_state_in(h), snapshot_meta=_meta_in(m), checkpoint=c)
            for g, h, m, c in raw_groups
        }
        return StateRecord(segment_seq=segment_seq, groups=groups)
    except (ValueError, TypeError, IndexError, AssertionError, msgpack.UnpackException) as error:
        raise ValueError(f"undecodable record payload: {error!r}") from error


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult:
    records: list[tuple[int, bytes]]
    """(offset, payload) of each valid record, in order."""
    valid_bytes: int
    """Offset just past the last valid record (where a torn tail starts)."""
    problem: str | None = None
    """Why the bytes at `valid_bytes` are not a valid record (None: clean end)."""
    valid_record_follows: bool = False
    """A CRC-valid record starts somewhere after the problem: the damage is
    not a torn tail but corruption in the middle of the log."""


def _record_at(data: memoryview, offset: int) -> tuple[bytes | None, str]:
    """The payload of a valid record at offset, or (None, reason)."""
    if len(data) - offset < HEADER_BYTES:
        return None, "incomplete record header"
    length, crc = HEADER.unpack_from(data, offset)
    if length == 0 or length > limits.record_bytes_max:
        return None, f"implausible record length {length}"
    end = offset + HEADER_BYTES + length
    if end > len(data):
        return None, f"record of {length} bytes runs past the end of the file"
    payload = bytes(data[offset + HEADER_BYTES : end])
    actual = crc32c.crc32c(payload, crc32c.crc32c(data[offset : offset + 4]))
    if actual != crc:
        return None, f"checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
    return payload, ""


def _any_valid_record_after(data: memoryview, start: int) -> bool:
    for offset in range(start, len(data) - HEADER_BYTES + 1):
        payload, _ = _record_at(data, offset)
        if payload is not None:
            return True
    return False


def scan_segment(data: bytes) -> ScanResult:
    """Parse a whole segment (magic included)."""
    view = memoryview(data)
    if bytes(view[: len(SEGMENT_MAGIC)]) != SEGMENT_MAGIC:
        return ScanResult(records=[], valid_bytes=0, problem="bad segment magic")
    records: list[tuple[int, bytes]] = []
    offset = len(SEGMENT_MAGIC)
    while offset < len(view):
        payload, reason = _record_at(view, offset)
        if payload is None:
            follows = _any_valid_record_after(view, offset + 1)
            return ScanResult(
                records=records, valid_bytes=offset, problem=reason, valid_record_follows=follows
            )
        records.append((offset, payload))
        offset += HEADER_BYTES + len(payload)
    assert offset == len(view)
    return ScanResult(records=records, valid_bytes=offset)


def iter_decoded(records: list[tuple[int, bytes]]) -> Iterator[tuple[int, Record]]:
    for offset, payload in records:
        yield offset, decode(payload)
