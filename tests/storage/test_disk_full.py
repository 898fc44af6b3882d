"""A full disk: typed errors, nothing corrupted, reads keep working, and the
log resumes (with nothing lost) once space returns."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringbolt.consensus.types import Entry, HardState
from ringbolt.kv.commands import Op, encode
from ringbolt.storage.engine import StateMachineStore
from ringbolt.storage.errors import StorageFull
from ringbolt.storage.wal import WriteAheadLog

ENTRY_BYTES = 32 * 1024


def entry(index: int) -> Entry:
    return Entry(term=1, index=index, data=bytes([index % 251]) * ENTRY_BYTES)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (the RLIMIT_FSIZE test covers this case)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.system(f"mount -t tmpfs -o size=2m tmpfs {mount_point} 2>/dev/null") != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        yield mount_point
    finally:
        assert os.system(f"umount {mount_point}") == 0


def fill_until_full(wal: WriteAheadLog, group_id: int) -> int:
    """Append and sync one entry at a time until the disk is full; return the
    index of the entry whose sync failed."""
    for index in range(1, 1000):
        wal.append(group_id, entries=[entry(index)], hard_state=HardState(term=1, commit=index))
        try:
            wal.sync()
        except StorageFull:
            return index
    raise AssertionError("the small disk never filled up")


def test_disk_full_fails_typed_keeps_reads_and_resumes(small_disk: Path) -> None:
    store = StateMachineStore.open(small_disk / "state", map_size_bytes=64 * 1024 * 1024)
    store.apply(1, [Entry(term=1, index=1, data=encode(Op.PUT, 0, b"key", b"value", 0, 0))])
    store.sync()
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (256 * 1024))
    wal = WriteAheadLog.open(small_disk / "wal")
    failed_index = fill_until_full(wal, 1)
    assert failed_index > 5
    statistics = wal.statistics()
    assert statistics["space_failures"] == 1
    assert statistics["pending_records"] == 1  # the failed batch is kept, not dropped
    assert statistics["failed"] == 0
    assert store.get(1, b"key") == (b"value", 0)  # reads keep working
    big = Entry(term=1, index=2, data=encode(Op.PUT, 0, b"big", b"v" * 900_000, 0, 0))
    with pytest.raises(StorageFull):
        store.apply(1, [big])
    assert store.applied_index(1) == 1  # the failed transaction changed nothing
    assert store.get(1, b"big") is None
    with pytest.raises(StorageFull):
        wal.sync()  # still full: still a clean, typed refusal
    filler.unlink()  # space returns
    wal.append(1, entries=[entry(failed_index + 1)])
    wal.sync()
    assert wal.statistics()["pending_records"] == 0
    wal.close()
    recovered = WriteAheadLog.open(small_disk / "wal")
    entries = recovered.recovered()[1].entries
    assert [e.index for e in entries] == list(range(1, failed_index + 2))
    assert entries == [entry(i) for i in range(1, failed_index + 2)]
    recovered.close()
    store.close()


_RLIMIT_SCRIPT = """
import resource, sys
from ringbolt.consensus.types import Entry
from ringbolt.storage.errors import StorageFull
from ringbolt.storage.wal import WriteAheadLog
wal = WriteAheadLog.open(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
index = 0
try:
    for index in range(1, 1000):
        wal.append(1, entries=[Entry(term=1, index=index, data=b"x" * 30_000)])
        wal.sync()
except StorageFull as error:
    print("FULL", index, wal.statistics()["pending_records"], wal.statistics()["failed"])
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
wal.sync()
wal.close()
print("RECOVERED", [e.index for e in WriteAheadLog.open(sys.argv[1]).recovered()[1].entries][-1])
"""


def test_file_size_limit_fails_typed_and_resumes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _RLIMIT_SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    full_line, recovered_line = result.stdout.split("\n")[:2]
    _, index, pending, failed = full_line.split()
    assert int(index) > 3
    assert (pending, failed) == ("1", "0")
    assert recovered_line == f"RECOVERED {index}"
