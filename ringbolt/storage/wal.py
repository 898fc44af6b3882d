"""The node's write-ahead log: one segmented, checksummed log for every group.

Theory of operation
-------------------
One node hosts many Raft groups and owns ONE log, so one fdatasync makes the
writes of every group durable at once (group commit). `append()` encodes a
record (entries, hard state and/or snapshot meta of one group) into a bounded
in-memory buffer and returns: cheap, callable from the event loop. `sync()`
(blocking, run in one worker thread) takes the whole buffer, writes it at the
end of the active segment, fdatasyncs once, and only then publishes the
records' effects. Appends made while a sync runs wait for the next one.

Segments are files ``<seq:020d>.wal`` in the data directory. Each starts with
a magic and a STATE record carrying every group's hard state, snapshot meta
and checkpoint, so that a prefix of old segments can be deleted without
losing them. A new segment is created under a temporary name, synced, renamed
and the directory synced: a segment name always points at a complete header.

`compact(group, index)` records that the group's state machine is durable up
to `index`. A segment (never the active one) is deleted, oldest first, when
for every group it holds entries of, its highest entry index is at or below
min(checkpoint, snapshot meta index) of that group: recovery then needs
nothing from it.

Recovery (`open`) reads every segment before touching anything:
* an invalid record at the end of the LAST segment, with no valid record
  after it, is a torn tail (the crash interrupted an unsynced write): it is
  truncated away;
* anything else (bad record in an older segment, a valid record after a bad
  one, a missing segment) is corruption: `WalCorruption` names the file and
  offset and no file is modified, unless `repair=True`, which truncates the
  log at the corruption (deleting later segments).

Write failures: ENOSPC/EDQUOT/EFBIG undo the partial write, keep the batch
pending and raise `StorageFull` (the next sync retries). Any other write or
fdatasync failure poisons the log (`StorageFailed`): after a failed fsync the
page cache cannot be trusted, so the node must restart and recover from disk.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ringbolt.consensus.types import Entry, HardState, PersistentState, Snapshot, SnapshotMeta
from ringbolt.storage import limits
from ringbolt.storage.errors import (
    BacklogFull,
    RecordTooLarge,
    StorageDirectoryError,
    StorageFailed,
    StorageFull,
    StorageLocked,
    WalCorruption,
)
from ringbolt.storage.records import (
    SEGMENT_MAGIC,
    AppendRecord,
    CheckpointRecord,
    GroupState,
    Record,
    StateRecord,
    decode,
    encode,
    scan_segment,
)

SEGMENT_SUFFIX = ".wal"
TEMPORARY_SUFFIX = ".wal.tmp"
_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def segment_name(seq: int) -> str:
    return f"{seq:020d}{SEGMENT_SUFFIX}"


@dataclass(slots=True)
class _Segment:
    seq: int
    path: str
    entry_index_max: dict[int, int] = field(default_factory=dict)
    """Per group, the highest entry index written in this segment."""


@dataclass(slots=True)
class _Pending:
    framed: bytes
    group_id: int
    entry_index_max: int
    hard_state: HardState | None
    snapshot_meta: SnapshotMeta | None
    checkpoint: int


@dataclass(slots=True)
class _Group:
    hard_state: HardState = field(default_factory=HardState)
    snapshot_meta: SnapshotMeta | None = None
    checkpoint: int = 0

    def floor(self) -> int:
        """Entries at or below this index are never needed again."""
        snapshot_index = 0 if self.snapshot_meta is None else self.snapshot_meta.index
        return min(self.checkpoint, snapshot_index)


@dataclass(slots=True)
class _Replay:
    """Per-group state rebuilt while reading the log at startup."""

    group: _Group = field(default_factory=_Group)
    entries: list[Entry] = field(default_factory=list)

    def apply(self, record: Record) -> None:
        if isinstance(record, CheckpointRecord):
            self.group.checkpoint = max(self.group.checkpoint, record.index)
            return
        assert isinstance(record, AppendRecord)
        if record.snapshot_meta is not None:
            self.install(record.snapshot_meta)
        if record.entries:
            first = record.entries[0].index
            while self.entries and self.entries[-1].index >= first:
                self.entries.pop()
            self.entries.extend(record.entries)
        if record.hard_state is not None:
            self.group.hard_state = record.hard_state

    def install(self, meta: SnapshotMeta) -> None:
        self.group.snapshot_meta = meta
        kept = [e for e in self.entries if e.index >= meta.index]
        if kept and kept[0].index == meta.index and kept[0].term == meta.term:
            self.entries = kept[1:]
        else:
            self.entries = []

    def persistent_state(self) -> PersistentState:
        meta = self.group.snapshot_meta
        low = 0 if meta is None else meta.index
        entries = [e for e in self.entries if e.index > low]
        snapshot = None if meta is None else Snapshot(meta=meta, data=b"")
        return PersistentState(hard_state=self.group.hard_state, snapshot=snapshot, entries=entries)


def prepare_directory(directory: str) -> None:
    """Create `directory` if its parent exists (never a whole missing path: a
    missing parent usually means a wrong or unmounted data path), then check
    it is a writable directory. Raises `StorageDirectoryError`."""
    parent = os.path.dirname(os.path.abspath(directory))
    if not os.path.isdir(parent):
        raise StorageDirectoryError(directory, f"parent directory {parent!r} does not exist")
    if not os.path.exists(directory):
        try:
            os.mkdir(directory, 0o755)
        except OSError as error:
            raise StorageDirectoryError(directory, f"cannot create it: {error.strerror}") from None
    if not os.path.isdir(directory):
        raise StorageDirectoryError(directory, "is not a directory")
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        raise StorageDirectoryError(directory, "is not readable and writable by this process")


class WriteAheadLog:
    """See the module docstring. Thread model: `append`/`compact` from any
    thread (normally the event loop), `sync` from one thread at a time."""

    def __init__(self, directory: str, dir_fd: int, segment_bytes_max: int) -> None:
        """Use `WriteAheadLog.open`."""
        self._directory = directory
        self._dir_fd = dir_fd
        self._segment_bytes_max = segment_bytes_max
        self._segments: list[_Segment] = []
        self._active_fd = -1
        self._active_bytes = 0
        self._groups: dict[int, _Group] = {}
        """Durable (written and synced) state; touched by the sync thread only."""
        self._recovered: dict[int, PersistentState] = {}
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._appended_last_index: dict[int, int] = {}
        self._failure: StorageFailed | None = None
        self._closed = False
        self._statistics = dict.fromkeys(
            (
                "appends", "syncs", "records_written", "bytes_written", "batch_records_max",
                "segments_created", "segments_deleted", "space_failures", "rotation_failures",
                "torn_tail_bytes_truncated",
            ),
            0,
        )  # fmt: skip

    # -- opening and recovery -------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_bytes_max: int = limits.segment_bytes_default,
        repair: bool = False,
    ) -> WriteAheadLog:
        """Open (and recover) the log in `directory` (created if only the leaf
        is missing). Raises `StorageDirectoryError`, `StorageLocked` or
        `WalCorruption`."""
        assert segment_bytes_max >= limits.segment_bytes_min
        directory = os.fspath(directory)
        prepare_directory(directory)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(dir_fd)
            raise StorageLocked(f"{directory} is in use by another process") from None
        wal = cls(directory, dir_fd, segment_bytes_max)
        try:
            wal._recover(repair)
        except BaseException:
            wal._release()
            raise
        return wal

    def _segment_files(self) -> list[tuple[int, str]]:
        found = []
        for name in os.listdir(self._directory):
            stem = name[: -len(SEGMENT_SUFFIX)]
            if name.endswith(SEGMENT_SUFFIX) and stem.isdigit() and len(stem) == 20:
                found.append((int(stem), os.path.join(self._directory, name)))
        found.sort()
        for (seq, _), (next_seq, path) in zip(found, found[1:], strict=False):
            if next_seq != seq + 1:
                raise WalCorruption(path, 0, f"segment {segment_name(seq + 1)} is missing")
        return found

    def _recover(self, repair: bool) -> None:
        files = self._segment_files()
        replays: dict[int, _Replay] = {}
        tail_truncate: tuple[str, int] | None = None
        for position, (seq, path) in enumerate(files):
            with open(path, "rb") as handle:
                data = handle.read()
            is_last = position == len(files) - 1
            try:
                valid_bytes = self._replay_segment(seq, path, data, is_last, replays)
            except WalCorruption as corruption:
                if not repair:
                    raise
                self._repair(files[position:], corruption)
                break
            if valid_bytes < len(data):
                tail_truncate = (path, valid_bytes)
                self._statistics["torn_tail_bytes_truncated"] = len(data) - valid_bytes
        self._recovered = {g: r.persistent_state() for g, r in replays.items()}
        self._groups = {g: r.group for g, r in replays.items()}
        for group_id, state in self._recovered.items():
            last = state.entries[-1].index if state.entries else 0
            snapshot_index = 0 if state.snapshot is None else state.snapshot.meta.index
            self._appended_last_index[group_id] = max(last, snapshot_index)
        self._remove_temporary_files()
        if tail_truncate is not None:
            os.truncate(tail_truncate[0], tail_truncate[1])
        if not self._segments:
            self._create_segment(0)
        else:
            self._open_active()

    def _replay_segment(
        self, seq: int, path: str, data: bytes, is_last: bool, replays: dict[int, _Replay]
    ) -> int:
        """Replay one segment; return how many of its bytes are valid. Raises
        `WalCorruption` after replaying the records before the corruption
        (kept only by a repair)."""
        scan = scan_segment(data)
        corruption: WalCorruption | None = None
        if scan.problem is not None and (not is_last or scan.valid_record_follows or not scan.records):
            corruption = WalCorruption(path, scan.valid_bytes, scan.problem)
        segment = _Segment(seq=seq, path=path)
        self._segments.append(segment)
        for number, (offset, payload) in enumerate(scan.records):
            try:
                record = decode(payload)
                if number == 0 and not (isinstance(record, StateRecord) and record.segment_seq == seq):
                    raise ValueError("segment does not open with its state record")
            except ValueError as error:
                raise WalCorruption(path, offset, str(error)) from None
            if isinstance(record, StateRecord):
                for group_id, state in record.groups.items():
                    replay = replays.setdefault(group_id, _Replay())
                    replay.group.hard_state = state.hard_state
                    replay.group.checkpoint = max(replay.group.checkpoint, state.checkpoint)
                    if state.snapshot_meta is not None and replay.group.snapshot_meta != state.snapshot_meta:
                        replay.install(state.snapshot_meta)
                continue
            replays.setdefault(record.group_id, _Replay()).apply(record)
            if isinstance(record, AppendRecord) and record.entries:
                top = segment.entry_index_max.get(record.group_id, 0)
                segment.entry_index_max[record.group_id] = max(top, record.entries[-1].index)
        if corruption is not None:
            raise corruption
        return scan.valid_bytes

    def _repair(self, files: Sequence[tuple[int, str]], corruption: WalCorruption) -> None:
        """Truncate the log at `corruption`: the bad segment keeps its valid
        prefix (or goes, if that prefix lacks even its state record) and every
        later segment is deleted."""
        bad_path = corruption.path
        for _, path in files:
            if path != bad_path:
                os.unlink(path)
        keep = corruption.offset > len(SEGMENT_MAGIC)
        if keep:
            os.truncate(bad_path, corruption.offset)
        else:
            os.unlink(bad_path)
            self._segments = [s for s in self._segments if s.path != bad_path]
        os.fsync(self._dir_fd)

    def _remove_temporary_files(self) -> None:
        for name in os.listdir(self._directory):
            if name.endswith(TEMPORARY_SUFFIX):
                os.unlink(os.path.join(self._directory, name))

    def _open_active(self) -> None:
        path = self._segments[-1].path
        self._active_fd = os.open(path, os.O_WRONLY)
        self._active_bytes = os.fstat(self._active_fd).st_size
        os.fdatasync(self._active_fd)  # the truncated tail, durably

    def recovered(self) -> dict[int, PersistentState]:
        """Per group, what it persisted before the last shutdown or crash."""
        return dict(self._recovered)

    def checkpoint_index(self, group_id: int) -> int:
        group = self._groups.get(group_id)
        return 0 if group is None else group.checkpoint

    # -- appending ------------------------------------------------------------

    def append(
        self,
        group_id: int,
        *,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot_meta: SnapshotMeta | None = None,
    ) -> None:
        """Buffer one record (not yet durable). `entries` may start at or
        below the group's last index: that conflicting suffix is replaced."""
        assert group_id > 0
        assert entries or hard_state is not None or snapshot_meta is not None
        for previous, entry in zip(entries, entries[1:], strict=False):
            assert entry.index == previous.index + 1, "entries must be contiguous"
        record = AppendRecord(
            group_id=group_id, entries=list(entries), hard_state=hard_state, snapshot_meta=snapshot_meta
        )
        data_bytes = sum(len(e.data) for e in entries)
        if data_bytes > limits.record_bytes_max:  # refuse before paying for the encoding
            raise RecordTooLarge(data_bytes, limits.record_bytes_max)
        framed = encode(record)
        if len(framed) > limits.record_bytes_max:
            raise RecordTooLarge(len(framed), limits.record_bytes_max)
        index_max = entries[-1].index if entries else 0
        with self._lock:
            self._check_appendable(len(framed))
            last = self._appended_last_index.get(group_id, 0)
            if snapshot_meta is not None:
                # A checkpoint below the log's end keeps the suffix (replay keeps
                # entries after a snapshot whose index/term they match); an
                # installed snapshot ahead of it moves the end forward.
                last = max(last, snapshot_meta.index)
            if entries:
                assert entries[0].index >= 1
                assert entries[0].index <= last + 1, f"gap: group {group_id} last {last}, got {entries[0].index}"
                last = index_max
            self._appended_last_index[group_id] = last
            self._push(_Pending(framed, group_id, index_max, hard_state, snapshot_meta, 0))
            self._statistics["appends"] += 1

    def compact(self, group_id: int, index: int) -> None:
        """The group's state machine is durable up to `index`: once this
        record is synced, segments needed only below it may be deleted."""
        assert group_id > 0
        assert index >= 0
        framed = encode(CheckpointRecord(group_id=group_id, index=index))
        with self._lock:
            self._check_appendable(len(framed))
            self._push(_Pending(framed, group_id, 0, None, None, index))

    def _check_appendable(self, size_bytes: int) -> None:
        assert not self._closed, "append to a closed write-ahead log"
        if self._failure is not None:
            raise self._failure
        if self._pending_bytes + size_bytes > limits.pending_bytes_max:
            raise BacklogFull(f"{self._pending_bytes} bytes await sync; sync before appending")

    def _push(self, pending: _Pending) -> None:
        self._pending.append(pending)
        self._pending_bytes += len(pending.framed)

    # -- syncing --------------------------------------------------------------

    def sync(self) -> None:
        """Write every buffered record, fdatasync, then publish. Blocking."""
        with self._sync_lock:
            if self._failure is not None:
                raise self._failure
            with self._lock:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
            if not batch:
                return
            self._write_durably(batch)
            self._publish(batch)
            rotated = self._active_bytes >= self._segment_bytes_max and self._rotate()
            if rotated or any(p.checkpoint or p.snapshot_meta for p in batch):
                self._delete_obsolete_segments()

    def _write_durably(self, batch: list[_Pending]) -> None:
        start = self._active_bytes
        data = b"".join(p.framed for p in batch)
        try:
            self._write_at(self._active_fd, data, start)
        except OSError as error:
            self._undo_write(batch, start)
            if error.errno in _SPACE_ERRNOS:
                self._statistics["space_failures"] += 1
                raise StorageFull(f"write-ahead log write failed: {error}") from error
            raise self._fail(f"write-ahead log write failed: {error}") from error
        try:
            os.fdatasync(self._active_fd)
        except OSError as error:
            raise self._fail(f"fdatasync of the write-ahead log failed: {error}") from error
        self._active_bytes = start + len(data)

    @staticmethod
    def _write_at(fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        written = 0
        while written < len(view):
            chunk = view[written : written + limits.sync_write_bytes_max]
            count = os.pwrite(fd, chunk, offset + written)
            assert count > 0
            written += count

    def _undo_write(self, batch: list[_Pending], start: int) -> None:
        """Cut the partial write and put the batch back in front of newer appends."""
        try:
            os.ftruncate(self._active_fd, start)
        except OSError as error:
            raise self._fail(f"cannot undo a failed write-ahead log write: {error}") from error
        with self._lock:
            self._pending[:0] = batch
            self._pending_bytes += sum(len(p.framed) for p in batch)

    def _fail(self, message: str) -> StorageFailed:
        self._failure = StorageFailed(message + "; restart the node to recover from disk")
        return self._failure

    def _publish(self, batch: list[_Pending]) -> None:
        segment = self._segments[-1]
        for pending in batch:
            group = self._groups.setdefault(pending.group_id, _Group())
            if pending.snapshot_meta is not None:
                group.snapshot_meta = pending.snapshot_meta
            if pending.hard_state is not None:
                group.hard_state = pending.hard_state
            group.checkpoint = max(group.checkpoint, pending.checkpoint)
            if pending.entry_index_max:
                top = segment.entry_index_max.get(pending.group_id, 0)
                segment.entry_index_max[pending.group_id] = max(top, pending.entry_index_max)
        self._statistics["syncs"] += 1
        self._statistics["records_written"] += len(batch)
        self._statistics["bytes_written"] += sum(len(p.framed) for p in batch)
        self._statistics["batch_records_max"] = max(self._statistics["batch_records_max"], len(batch))

    def _rotate(self) -> bool:
        seq = self._segments[-1].seq + 1
        try:
            new_fd = self._create_segment_file(seq)
        except OSError:
            self._statistics["rotation_failures"] += 1
            return False  # keep appending to the current segment; retried next sync
        os.close(self._active_fd)
        self._active_fd = new_fd
        self._active_bytes = os.fstat(new_fd).st_size
        return True

    def _create_segment(self, seq: int) -> None:
        try:
            self._active_fd = self._create_segment_file(seq)
        except OSError as error:
            raise StorageDirectoryError(self._directory, f"cannot create a segment: {error}") from error
        self._active_bytes = os.fstat(self._active_fd).st_size

    def _create_segment_file(self, seq: int) -> int:
        """Create segment `seq` atomically (temp file, sync, rename, dir sync)."""
        assert len(self._groups) <= limits.groups_per_segment_state_max
        states = {
            g: GroupState(hard_state=s.hard_state, snapshot_meta=s.snapshot_meta, checkpoint=s.checkpoint)
            for g, s in self._groups.items()
        }
        header = SEGMENT_MAGIC + encode(StateRecord(segment_seq=seq, groups=states))
        final = os.path.join(self._directory, segment_name(seq))
        temporary = final[: -len(SEGMENT_SUFFIX)] + TEMPORARY_SUFFIX
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._write_at(fd, header, 0)
            os.fdatasync(fd)
            os.rename(temporary, final)
            os.fsync(self._dir_fd)
        except OSError:
            os.close(fd)
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        self._segments.append(_Segment(seq=seq, path=final))
        self._statistics["segments_created"] += 1
        return fd

    def _delete_obsolete_segments(self) -> None:
        deleted = 0
        while len(self._segments) > 1:
            oldest = self._segments[0]
            needed = any(
                index > self._groups[g].floor() for g, index in oldest.entry_index_max.items()
            )
            if needed:
                break
            try:
                os.unlink(oldest.path)
            except OSError:
                break
            self._segments.pop(0)
            deleted += 1
        if deleted:
            self._statistics["segments_deleted"] += deleted
            os.fsync(self._dir_fd)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Sync what is pending (unless the log failed), then release."""
        if self._closed:
            return
        try:
            if self._failure is None:
                self.sync()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        if self._active_fd >= 0:
            os.close(self._active_fd)
            self._active_fd = -1
        if self._dir_fd >= 0:
            fcntl.flock(self._dir_fd, fcntl.LOCK_UN)
            os.close(self._dir_fd)
            self._dir_fd = -1

    def statistics(self) -> dict[str, int]:
        with self._lock:
            pending_records, pending_bytes = len(self._pending), self._pending_bytes
        return {
            **self._statistics,
            "pending_records": pending_records,
            "pending_bytes": pending_bytes,
            "segments": len(self._segments),
            "active_segment_bytes": self._active_bytes,
            "groups": len(self._groups),
            "failed": int(self._failure is not None),
        }


def __getattr__(name: str) -> Any:
    """`GroupCommitter` is re-exported lazily: it pulls in asyncio, which
    processes that only use the log (the crash-test writer) do not need."""
    if name == "GroupCommitter":
        from ringbolt.storage.group_commit import GroupCommitter

        return GroupCommitter
    raise AttributeError(name)
