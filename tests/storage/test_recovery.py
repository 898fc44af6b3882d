"""Exact outcomes of damaged logs: torn tails recover, corruption refuses."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbolt.consensus.types import Entry, HardState
from ringbolt.storage import limits
from ringbolt.storage.errors import WalCorruption
from ringbolt.storage.records import HEADER_BYTES, SEGMENT_MAGIC, scan_segment
from ringbolt.storage.wal import WriteAheadLog, segment_name


def entry(index: int, size: int = 40) -> Entry:
    return Entry(term=1, index=index, data=bytes([index % 251]) * size)


def write_log(directory: Path, count: int, segment_bytes_max: int = 1 << 20) -> list[int]:
    """`count` synced records (one entry each); returns their offsets in the
    last segment."""
    wal = WriteAheadLog.open(directory, segment_bytes_max=segment_bytes_max)
    for index in range(1, count + 1):
        wal.append(1, entries=[entry(index)], hard_state=HardState(term=1, commit=index))
        wal.sync()
    wal.close()
    last = sorted(directory.glob("*.wal"))[-1]
    return [offset for offset, _ in scan_segment(last.read_bytes()).records][1:]  # not the state record


def fingerprint(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
    }


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def recovered_indices(directory: Path, **options: bool) -> list[int]:
    wal = WriteAheadLog.open(directory, **options)  # type: ignore[arg-type]
    try:
        state = wal.recovered().get(1)
        return [] if state is None else [e.index for e in state.entries]
    finally:
        wal.close()


def test_every_truncation_of_the_last_record_recovers_the_rest(tmp_path: Path) -> None:
    offsets = write_log(tmp_path, 5)
    path = tmp_path / segment_name(0)
    whole = path.read_bytes()
    for cut in range(offsets[-1] + 1, len(whole)):
        path.write_bytes(whole[:cut])
        assert recovered_indices(tmp_path) == [1, 2, 3, 4]
        assert path.stat().st_size == offsets[-1]  # the torn tail was cut off
    path.write_bytes(whole)
    assert recovered_indices(tmp_path) == [1, 2, 3, 4, 5]


def test_flipped_byte_in_the_last_record_recovers(tmp_path: Path) -> None:
    offsets = write_log(tmp_path, 5)
    path = tmp_path / segment_name(0)
    for offset in (offsets[-1], offsets[-1] + 5, offsets[-1] + HEADER_BYTES + 3, path.stat().st_size - 1):
        write_log_again = tmp_path / "again"
        write_log_again.mkdir()
        write_log(write_log_again, 5)
        damaged = write_log_again / segment_name(0)
        flip(damaged, offset)
        assert recovered_indices(write_log_again) == [1, 2, 3, 4]
        assert damaged.stat().st_size == offsets[-1]
        for child in write_log_again.iterdir():
            child.unlink()
        write_log_again.rmdir()


def test_flipped_byte_mid_log_refuses_and_touches_nothing(tmp_path: Path) -> None:
    offsets = write_log(tmp_path, 5)
    path = tmp_path / segment_name(0)
    flip(path, offsets[2] + HEADER_BYTES + 4)
    before = fingerprint(tmp_path)
    with pytest.raises(WalCorruption) as caught:
        WriteAheadLog.open(tmp_path)
    assert caught.value.path == str(path)
    assert caught.value.offset == offsets[2]
    assert str(path) in str(caught.value)
    assert f"offset {offsets[2]}" in str(caught.value)
    assert "checksum mismatch" in str(caught.value)
    assert fingerprint(tmp_path) == before


def test_flipped_length_field_mid_log_is_not_mistaken_for_a_torn_tail(tmp_path: Path) -> None:
    offsets = write_log(tmp_path, 5)
    path = tmp_path / segment_name(0)
    data = bytearray(path.read_bytes())
    data[offsets[1] + 2] = 0x7F  # the length now runs past the end of the file
    path.write_bytes(bytes(data))
    before = fingerprint(tmp_path)
    with pytest.raises(WalCorruption) as caught:
        WriteAheadLog.open(tmp_path)
    assert caught.value.offset == offsets[1]
    assert fingerprint(tmp_path) == before


def test_corruption_in_an_older_segment_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, 200, segment_bytes_max=limits.segment_bytes_min)
    segments = sorted(tmp_path.glob("*.wal"))
    assert len(segments) >= 3
    older = segments[1]
    flip(older, older.stat().st_size - 1)  # its last record: a tail only in the last segment
    before = fingerprint(tmp_path)
    with pytest.raises(WalCorruption) as caught:
        WriteAheadLog.open(tmp_path)
    assert caught.value.path == str(older)
    assert fingerprint(tmp_path) == before


def test_missing_segment_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, 200, segment_bytes_max=limits.segment_bytes_min)
    segments = sorted(tmp_path.glob("*.wal"))
    segments[2].unlink()
    before = fingerprint(tmp_path)
    with pytest.raises(WalCorruption, match="is missing"):
        WriteAheadLog.open(tmp_path)
    assert fingerprint(tmp_path) == before


def test_repair_truncates_from_the_corruption(tmp_path: Path) -> None:
    offsets = write_log(tmp_path, 5)
    path = tmp_path / segment_name(0)
    flip(path, offsets[2] + HEADER_BYTES + 4)
    assert recovered_indices(tmp_path, repair=True) == [1, 2]
    assert path.stat().st_size == offsets[2]
    assert recovered_indices(tmp_path) == [1, 2]
    wal = WriteAheadLog.open(tmp_path)
    wal.append(1, entries=[entry(3)])
    wal.sync()
    wal.close()
    assert recovered_indices(tmp_path) == [1, 2, 3]


def test_repair_in_an_older_segment_drops_later_segments(tmp_path: Path) -> None:
    write_log(tmp_path, 200, segment_bytes_max=limits.segment_bytes_min)
    segments = sorted(tmp_path.glob("*.wal"))
    middle = segments[len(segments) // 2]
    records = scan_segment(middle.read_bytes()).records
    flip(middle, records[3][0] + HEADER_BYTES)
    indices = recovered_indices(tmp_path, repair=True)
    assert indices == list(range(1, len(indices) + 1))
    assert 0 < len(indices) < 200
    assert sorted(tmp_path.glob("*.wal"))[-1] == middle


def test_garbage_segment_magic_refuses(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    path = tmp_path / segment_name(0)
    data = path.read_bytes()
    path.write_bytes(b"X" + data[1:])
    assert data.startswith(SEGMENT_MAGIC)
    with pytest.raises(WalCorruption, match="magic"):
        WriteAheadLog.open(tmp_path)


def test_leftover_temporary_segment_is_removed(tmp_path: Path) -> None:
    write_log(tmp_path, 3)
    leftover = tmp_path / (segment_name(1)[: -len(".wal")] + ".wal.tmp")
    leftover.write_bytes(b"half a segment")
    assert recovered_indices(tmp_path) == [1, 2, 3]
    assert not leftover.exists()
    assert not os.path.exists(tmp_path / segment_name(1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(min_value=0.0, max_value=0.9999), mask=st.integers(min_value=1, max_value=255))
def test_any_damaged_byte_is_refused_or_costs_only_the_damaged_tail(
    tmp_path_factory: pytest.TempPathFactory, position: float, mask: int
) -> None:
    """Whatever byte is damaged, the log either refuses to open (touching
    nothing) or recovers exactly the records before the damaged one."""
    directory = tmp_path_factory.mktemp("damage")
    offsets = write_log(directory, 8)
    path = directory / segment_name(0)
    data = bytearray(path.read_bytes())
    offset = len(SEGMENT_MAGIC) + int(position * (len(data) - len(SEGMENT_MAGIC)))
    data[offset] ^= mask
    path.write_bytes(bytes(data))
    before = fingerprint(directory)
    damaged_record = sum(1 for start in offsets if start <= offset)  # 0: the state record
    try:
        indices = recovered_indices(directory)
    except WalCorruption as error:
        assert error.offset <= offset
        assert fingerprint(directory) == before
        return
    assert damaged_record == len(offsets)  # only damage to the last record is a torn tail
    assert indices == list(range(1, damaged_record))
