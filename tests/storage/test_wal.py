"""The write-ahead log: appends, recovery, truncation, rotation and compaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringbolt.consensus.types import ConfState, Entry, HardState, SnapshotMeta
from ringbolt.storage import limits
from ringbolt.storage.errors import (
    BacklogFull,
    RecordTooLarge,
    StorageDirectoryError,
    StorageLocked,
)
from ringbolt.storage.wal import WriteAheadLog, segment_name

CONF = ConfState(voters=frozenset({1, 2, 3}))


def entry(index: int, term: int = 1, size: int = 10) -> Entry:
    return Entry(term=term, index=index, data=bytes([index % 251]) * size)


def reopen(wal: WriteAheadLog, directory: Path, **options: int) -> WriteAheadLog:
    wal.close()
    return WriteAheadLog.open(directory, **options)  # type: ignore[arg-type]


def test_appends_survive_reopen_for_every_group(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    for index in range(1, 11):
        wal.append(1, entries=[entry(index)], hard_state=HardState(term=1, vote=2, commit=index - 1))
        wal.append(7, entries=[entry(index, term=3)])
    wal.sync()
    wal = reopen(wal, tmp_path)
    recovered = wal.recovered()
    assert set(recovered) == {1, 7}
    assert recovered[1].entries == [entry(i) for i in range(1, 11)]
    assert recovered[1].hard_state == HardState(term=1, vote=2, commit=9)
    assert recovered[7].entries == [entry(i, term=3) for i in range(1, 11)]
    assert recovered[7].hard_state == HardState()
    assert recovered[1].snapshot is None
    wal.close()


def test_unsynced_appends_are_not_durable_until_sync(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    wal.append(1, entries=[entry(1)])
    assert wal.statistics()["pending_records"] == 1
    size_before = sum(p.stat().st_size for p in tmp_path.iterdir())
    wal.sync()
    assert wal.statistics()["pending_records"] == 0
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) > size_before
    wal.close()


def test_conflicting_suffix_is_replaced(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    wal.append(1, entries=[entry(i) for i in range(1, 6)])
    wal.sync()
    wal.append(1, entries=[entry(3, term=2), entry(4, term=2)])
    wal.sync()
    wal = reopen(wal, tmp_path)
    assert wal.recovered()[1].entries == [entry(1), entry(2), entry(3, term=2), entry(4, term=2)]
    wal.close()


def test_gap_in_entries_is_a_bug(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    wal.append(1, entries=[entry(1)])
    with pytest.raises(AssertionError):
        wal.append(1, entries=[entry(3)])
    wal.close()


def test_snapshot_meta_replaces_covered_entries(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    wal.append(1, entries=[entry(i) for i in range(1, 6)])
    wal.append(1, snapshot_meta=SnapshotMeta(index=3, term=1, conf=CONF))
    wal.append(2, entries=[entry(i) for i in range(1, 4)])
    wal.append(2, snapshot_meta=SnapshotMeta(index=9, term=4, conf=CONF))
    wal.sync()
    wal = reopen(wal, tmp_path)
    recovered = wal.recovered()
    snapshot = recovered[1].snapshot
    assert snapshot is not None
    assert snapshot.meta == SnapshotMeta(index=3, term=1, conf=CONF)
    assert snapshot.data == b""
    assert recovered[1].entries == [entry(4), entry(5)]
    assert recovered[2].entries == []  # a snapshot beyond the log discards it
    wal.append(2, entries=[entry(10, term=4)])
    wal.close()


def test_rotation_and_compaction_keep_what_recovery_needs(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, segment_bytes_max=limits.segment_bytes_min)
    for index in range(1, 201):
        wal.append(1, entries=[entry(index, size=100)], hard_state=HardState(term=1, commit=index))
        wal.append(2, entries=[entry(index, size=100)])
        wal.sync()
    segments_before = len(list(tmp_path.glob("*.wal")))
    assert segments_before > 5
    wal.append(1, snapshot_meta=SnapshotMeta(index=150, term=1, conf=CONF))
    wal.compact(1, 150)
    wal.sync()
    assert len(list(tmp_path.glob("*.wal"))) == segments_before  # group 2 still needs them
    wal.append(2, snapshot_meta=SnapshotMeta(index=190, term=1, conf=CONF))
    wal.compact(2, 190)
    wal.sync()
    remaining = sorted(tmp_path.glob("*.wal"))
    assert len(remaining) < segments_before / 2
    assert remaining[0].name != segment_name(0)
    assert wal.statistics()["segments_deleted"] == segments_before - len(remaining)
    wal = reopen(wal, tmp_path, segment_bytes_max=limits.segment_bytes_min)
    recovered = wal.recovered()
    assert recovered[1].entries == [entry(i, size=100) for i in range(151, 201)]
    assert recovered[1].hard_state == HardState(term=1, commit=200)
    assert recovered[2].entries == [entry(i, size=100) for i in range(191, 201)]
    assert wal.checkpoint_index(1) == 150
    wal.close()


def test_compaction_without_snapshot_meta_keeps_segments(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, segment_bytes_max=limits.segment_bytes_min)
    for index in range(1, 101):
        wal.append(1, entries=[entry(index, size=100)])
        wal.sync()
    segments = len(list(tmp_path.glob("*.wal")))
    wal.compact(1, 100)
    wal.sync()
    assert len(list(tmp_path.glob("*.wal"))) == segments
    wal.close()


def test_record_too_large_writes_nothing(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    huge = Entry(term=1, index=1, data=b"x" * (limits.record_bytes_max + 1))
    with pytest.raises(RecordTooLarge):
        wal.append(1, entries=[huge])
    assert wal.statistics()["pending_records"] == 0
    wal.close()


def test_backlog_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "pending_bytes_max", 1000)
    wal = WriteAheadLog.open(tmp_path)
    wal.append(1, entries=[entry(1, size=600)])
    with pytest.raises(BacklogFull):
        wal.append(1, entries=[entry(2, size=600)])
    wal.sync()
    wal.append(1, entries=[entry(2, size=600)])
    wal.close()


def test_missing_parent_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageDirectoryError, match="does not exist"):
        WriteAheadLog.open(tmp_path / "absent" / "wal")
    assert not (tmp_path / "absent").exists()


def test_directory_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "wal").write_bytes(b"")
    with pytest.raises(StorageDirectoryError, match="not a directory"):
        WriteAheadLog.open(tmp_path / "wal")


def test_missing_leaf_directory_is_created(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path / "wal")
    assert (tmp_path / "wal" / segment_name(0)).exists()
    wal.close()


def test_second_opener_is_refused(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    with pytest.raises(StorageLocked):
        WriteAheadLog.open(tmp_path)
    wal.close()
    WriteAheadLog.open(tmp_path).close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a read-only tmpfs")
def test_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    if os.system(f"mount -t tmpfs -o ro,size=1m tmpfs {mount_point} 2>/dev/null") != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        with pytest.raises(StorageDirectoryError, match="not readable and writable"):
            WriteAheadLog.open(mount_point)
        with pytest.raises(StorageDirectoryError, match="cannot create"):
            WriteAheadLog.open(mount_point / "wal")
    finally:
        assert os.system(f"umount {mount_point}") == 0


def test_unwritable_directory_as_unprivileged_user(tmp_path: Path) -> None:
    directory = tmp_path / "locked"
    directory.mkdir(mode=0o500)
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits (covered by the read-only mount test)")
    with pytest.raises(StorageDirectoryError):
        WriteAheadLog.open(directory)


def test_record_just_over_the_limit_is_refused_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "record_bytes_max", 10_000)
    wal = WriteAheadLog.open(tmp_path)
    exactly = Entry(term=1, index=1, data=b"x" * limits.record_bytes_max)  # framing tips it over
    with pytest.raises(RecordTooLarge):
        wal.append(1, entries=[exactly])
    wal.append(1, entries=[entry(1)])
    wal.close()


def test_checkpointed_active_segment_is_deleted_once_it_rotates(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path, segment_bytes_max=limits.segment_bytes_min)
    for index in range(1, 61):
        wal.append(1, entries=[entry(index, size=100)])
        wal.sync()
    wal.append(1, snapshot_meta=SnapshotMeta(index=60, term=1, conf=CONF))
    wal.compact(1, 60)
    wal.sync()
    assert len(list(tmp_path.glob("*.wal"))) == 1  # only the active one is left
    first_active = sorted(tmp_path.glob("*.wal"))[0]
    for commit in range(1, 200):  # hard states only (votes, commits) fill it up
        wal.append(1, hard_state=HardState(term=2, vote=1, commit=commit))
        wal.sync()
    assert not first_active.exists()
    assert wal.statistics()["segments_created"] >= 2
    wal = reopen(wal, tmp_path, segment_bytes_max=limits.segment_bytes_min)
    state = wal.recovered()[1]
    assert state.hard_state == HardState(term=2, vote=1, commit=199)
    assert state.entries == []
    assert state.snapshot is not None and state.snapshot.meta.index == 60
    wal.close()


def test_checkpoint_below_the_log_end_keeps_appending_under_load(tmp_path: Path) -> None:
    """A checkpoint taken while the log runs ahead of the applied index (steady
    load) neither trips the gap check nor loses the suffix, and lets old
    segments go."""
    wal = WriteAheadLog.open(tmp_path, segment_bytes_max=limits.segment_bytes_min)
    for index in range(1, 301):
        wal.append(1, entries=[entry(index, size=100)])
        if index % 50 == 0:  # applied lags the log by 20 entries when checkpointing
            wal.append(1, snapshot_meta=SnapshotMeta(index=index - 20, term=1, conf=CONF))
            wal.compact(1, index - 20)
        wal.sync()
    assert wal.statistics()["segments_deleted"] > 0
    wal = reopen(wal, tmp_path, segment_bytes_max=limits.segment_bytes_min)
    recovered = wal.recovered()[1]
    assert recovered.snapshot is not None
    assert recovered.snapshot.meta.index == 280
    assert recovered.entries == [entry(i, size=100) for i in range(281, 301)]
    wal.append(1, entries=[entry(301, size=100)])
    wal.close()
