"""The replicated state machine's store: every group's keyspace in one LMDB.

Theory of operation
-------------------
`apply(group, entries)` applies a batch of committed entries in ONE LMDB
write transaction and stores the group's applied index (and term) in that
same transaction, so the database is always exactly "the state after entry
N" for some N, and replaying the log after a crash skips entries <= N
(idempotent). NORMAL entries run `ringbolt.kv.machine.apply_entry` (given the
entry's index and term) against a per-entry overlay: its writes reach the
transaction only if the whole command succeeded and every key and value is
within limits, so a malformed
or oversized command changes nothing and yields a `CommandFailed` result --
the same on every replica. NOOP and CONFIG entries only advance the index.

LMDB runs with ``sync=False, metasync=False``: a commit reaches the page cache
(surviving a process crash) but not necessarily the disk. Durability is the
WAL's job; the store is made durable only at a checkpoint:

1. ``index, term = store.checkpoint(group)`` -- fsyncs LMDB and returns the
   group's applied index and term;
2. ``wal.append(group, snapshot_meta=SnapshotMeta(index=index, term=term, conf=...))``;
3. ``wal.compact(group, index)`` and sync the WAL.

After a machine crash the store may be behind (never ahead of) what the WAL
covers above the checkpoint; restarting replays the committed WAL entries
above `applied_index(group)`. Installing a snapshot fsyncs the store before
returning, for the same reason.

Layout of keys and values: `ringbolt.storage.keyspace`. Snapshot streams:
`ringbolt.storage.snapshot`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, cast

import lmdb

from ringbolt.consensus.types import Entry, EntryKind, Snapshot, SnapshotMeta
from ringbolt.kv.codec import CommandDecodeError
from ringbolt.kv.machine import CommandFailed, Result, apply_entry
from ringbolt.kv.ops import fast_put
from ringbolt.storage import keyspace, limits
from ringbolt.storage.errors import (
    KeyTooLarge,
    StorageDirectoryError,
    StorageError,
    StorageFailed,
    StorageFull,
    ValueTooLarge,
)
from ringbolt.storage.snapshot import SpooledStream, write_stream

if TYPE_CHECKING:
    from lmdb import _Database
else:
    _Database = object

APPLIED = struct.Struct(">QQ")
_EXPIRE_LIMIT = 2**63
_LOW_SPACE_BYTES = 4 * 1024 * 1024
_EXPIRE_PACK = keyspace.EXPIRE.pack
_NO_EXPIRY = _EXPIRE_PACK(0)
"""The stored-value header of an inline key without expiry (most SETs)."""
assert keyspace.stored_value(b"k", b"v", 0) == _NO_EXPIRY + b"v"
COUNT = struct.Struct(">Q")
_APPLIED_TAG = b"a"
_COUNT_TAG = b"c"


def check_key(key: bytes, key_bytes_max: int = limits.key_bytes_max) -> None:
    """Raise `KeyTooLarge` for a key beyond the limit (use before proposing)."""
    if len(key) > key_bytes_max:
        raise KeyTooLarge(len(key), key_bytes_max)


def check_value(value: bytes, value_bytes_max: int = limits.value_bytes_max) -> None:
    if len(value) > value_bytes_max:
        raise ValueTooLarge(len(value), value_bytes_max)


class _EntryOverlay:
    """A `KeyValueBackend` buffering one entry's writes over the write txn."""

    __slots__ = ("txn", "db", "prefix", "changes")

    def __init__(self, txn: lmdb.Transaction, db: _Database, prefix: bytes) -> None:
        self.txn = txn
        self.db = db
        self.prefix = prefix
        self.changes: dict[bytes, tuple[bytes, int] | None] = {}

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        if key in self.changes:
            return self.changes[key]
        return _read(self.txn, self.db, self.prefix, key)

    def put(self, key: bytes, value: bytes, expire_at_ms: int) -> None:
        self.changes[key] = (value, expire_at_ms)

    def delete(self, key: bytes) -> bool:
        existed = self.get(key) is not None
        self.changes[key] = None
        return existed


def _read(txn: lmdb.Transaction, db: _Database, prefix: bytes, key: bytes) -> tuple[bytes, int] | None:
    stored = cast(bytes | None, txn.get(keyspace.stored_key(prefix, key), db=db))
    if stored is None:
        return None
    inline = len(key) <= keyspace.INLINE_KEY_BYTES_MAX
    value, full_key, expire_at_ms = keyspace.parse_value(stored, inline)
    if full_key is not None and full_key != key:
        return None  # a different key with the same 128-bit hash: not ours
    return value, expire_at_ms


class StateMachineStore:
    """See the module docstring. Single writer thread; reads from any thread."""

    def __init__(self, env: lmdb.Environment, path: str, value_bytes_max: int) -> None:
        """Use `StateMachineStore.open`."""
        self._env = env
        self.path = path
        self.value_bytes_max = value_bytes_max
        self.key_bytes_max = limits.key_bytes_max
        self._data = env.open_db(b"data")
        self._meta = env.open_db(b"meta")
        self._statistics = dict.fromkeys(
            ("apply_batches", "entries_applied", "entries_skipped", "commands_failed",
             "snapshots_taken", "snapshots_installed", "checkpoints"),
            0,
        )  # fmt: skip

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        map_size_bytes: int = limits.map_size_bytes_default,
        value_bytes_max: int = limits.value_bytes_max,
    ) -> StateMachineStore:
        """Open the store in directory `path` (created if only the leaf is
        missing). Raises `StorageDirectoryError`."""
        assert 0 < value_bytes_max <= limits.value_bytes_ceiling
        from ringbolt.storage.wal import prepare_directory

        path = os.fspath(path)
        prepare_directory(path)
        try:
            env = lmdb.open(
                path, map_size=map_size_bytes, max_dbs=4, sync=False, metasync=False,
                readahead=False, max_readers=126, lock=True,
            )  # fmt: skip
        except lmdb.Error as error:
            raise StorageDirectoryError(path, f"cannot open the LMDB environment: {error}") from None
        return cls(env, path, value_bytes_max)

    # -- applying -------------------------------------------------------------

    def apply(self, group_id: int, entries: list[Entry]) -> list[Result]:
        """Apply committed entries; one result per entry (None for entries at
        or below the applied index, which are skipped)."""
        prefix = keyspace.group_prefix(group_id)
        try:
            with self._env.begin(write=True) as txn:
                applied, term = self._applied(txn, prefix)
                results, applied, term, count_delta = self._apply_batch(
                    _EntryOverlay(txn, self._data, prefix), entries, applied, term
                )
                self._set_applied(txn, prefix, applied, term)
                if count_delta:
                    self._set_count(txn, prefix, self._count(txn, prefix) + count_delta)
        except lmdb.Error as error:
            raise self._write_error(error) from error
        self._statistics["apply_batches"] += 1
        self._statistics["entries_applied"] += len(entries)
        return results

    def _write_error(self, error: lmdb.Error) -> StorageError:
        """A failed LMDB write transaction changed nothing; classify why. LMDB
        reports ENOSPC at commit as a bare I/O error, so the free space of
        the device decides between "full" (retry later) and "failed"."""
        if isinstance(error, lmdb.MapFullError):
            return StorageFull(f"state machine store {self.path} reached its map size: {error}")
        device = os.statvfs(self.path)
        if device.f_bavail * device.f_frsize < _LOW_SPACE_BYTES:
            return StorageFull(f"state machine store {self.path}: device full ({error})")
        return StorageFailed(f"state machine store {self.path}: write failed ({error})")

    def _apply_batch(
        self, overlay: _EntryOverlay, entries: list[Entry], applied: int, term: int
    ) -> tuple[list[Result], int, int, int]:
        """The apply loop, with the hot path inlined: a plain SET (PUT without
        NX/XX/GET), which `ringbolt.kv.ops.fast_put` recognises from the bytes,
        needs no read, so it skips the overlay and goes straight into the
        transaction if the key is stored inline and the value and expiry are
        within limits. Anything else takes the general path through
        `ringbolt.kv.machine.apply_entry`; `tests/storage/test_engine.py`
        checks both agree on random commands."""
        results: list[Result] = []
        append = results.append
        count_delta = 0
        replace, db, inline_prefix = overlay.txn.replace, self._data, overlay.prefix + keyspace.INLINE
        value_bytes_max, normal = self.value_bytes_max, EntryKind.NORMAL
        inline_key_bytes_max = keyspace.INLINE_KEY_BYTES_MAX
        for entry in entries:
            index = entry.index
            if index <= applied:
                append(None)
                self._statistics["entries_skipped"] += 1
                continue
            assert index == applied + 1, f"gap: applied {applied}, got {index}"
            applied, term = index, entry.term
            if entry.kind is not normal:
                append(None)
                continue
            write = fast_put(entry.data)
            if write is not None:
                key, value, expire_at_ms = write
                if len(key) <= inline_key_bytes_max and len(value) <= value_bytes_max and (
                        not expire_at_ms or 0 < expire_at_ms < _EXPIRE_LIMIT):
                    stored = (_NO_EXPIRY + value if not expire_at_ms
                              else _EXPIRE_PACK(expire_at_ms) + value)
                    if replace(inline_prefix + key, stored, db=db) is None:
                        count_delta += 1
                    append(True)
                    continue
            result, delta = self._apply_general(overlay, entry)
            append(result)
            count_delta += delta
        return results, applied, term, count_delta

    def _apply_general(self, overlay: _EntryOverlay, entry: Entry) -> tuple[Result, int]:
        """(result, change in key count) of one NORMAL entry."""
        overlay.changes.clear()
        try:
            result = apply_entry(overlay, entry.data, entry.index, entry.term)
        except CommandDecodeError as error:
            self._statistics["commands_failed"] += 1
            return CommandFailed(f"ERR malformed command: {error}"), 0
        if not overlay.changes:
            return result, 0
        for key, record in overlay.changes.items():
            if record is not None and not 0 <= record[1] < _EXPIRE_LIMIT:
                self._statistics["commands_failed"] += 1
                return CommandFailed("ERR invalid expire time"), 0
            if len(key) > self.key_bytes_max:
                self._statistics["commands_failed"] += 1
                return CommandFailed(f"ERR {KeyTooLarge(len(key), self.key_bytes_max)}"), 0
            if record is not None and len(record[0]) > self.value_bytes_max:
                self._statistics["commands_failed"] += 1
                return CommandFailed(f"ERR {ValueTooLarge(len(record[0]), self.value_bytes_max)}"), 0
        return result, self._flush(overlay)

    def _flush(self, overlay: _EntryOverlay) -> int:
        txn, db, prefix = overlay.txn, self._data, overlay.prefix
        delta = 0
        for key, record in overlay.changes.items():
            stored_key = keyspace.stored_key(prefix, key)
            if record is None:
                delta -= txn.delete(stored_key, db=db)
                continue
            old = txn.replace(stored_key, keyspace.stored_value(key, record[0], record[1]), db=db)
            delta += old is None
        return delta

    # -- metadata -------------------------------------------------------------

    def _applied(self, txn: lmdb.Transaction, prefix: bytes) -> tuple[int, int]:
        raw = txn.get(_APPLIED_TAG + prefix, db=self._meta)
        return (0, 0) if raw is None else APPLIED.unpack(raw)

    def _set_applied(self, txn: lmdb.Transaction, prefix: bytes, index: int, term: int) -> None:
        txn.put(_APPLIED_TAG + prefix, APPLIED.pack(index, term), db=self._meta)

    def _count(self, txn: lmdb.Transaction, prefix: bytes) -> int:
        raw = txn.get(_COUNT_TAG + prefix, db=self._meta)
        return 0 if raw is None else COUNT.unpack(raw)[0]

    def _set_count(self, txn: lmdb.Transaction, prefix: bytes, count: int) -> None:
        assert count >= 0
        txn.put(_COUNT_TAG + prefix, COUNT.pack(count), db=self._meta)

    def applied_index(self, group_id: int) -> int:
        return self.applied(group_id)[0]

    def applied(self, group_id: int) -> tuple[int, int]:
        """(applied index, term of that entry)."""
        with self._env.begin() as txn:
            return self._applied(txn, keyspace.group_prefix(group_id))

    def checkpoint(self, group_id: int) -> tuple[int, int]:
        """Make the store durable; return the group's (applied index, term),
        which the WAL may now record as the group's snapshot and compact to."""
        self._env.sync(True)
        self._statistics["checkpoints"] += 1
        return self.applied(group_id)

    def sync(self) -> None:
        self._env.sync(True)

    # -- reads ----------------------------------------------------------------

    def get(self, group_id: int, key: bytes) -> tuple[bytes, int] | None:
        """(value, expire_at_ms) -- expiry is not filtered here -- or None."""
        with self._env.begin() as txn:
            return _read(txn, self._data, keyspace.group_prefix(group_id), key)

    def count(self, group_id: int) -> int:
        """Stored keys of the group (expired but not yet purged ones included)."""
        with self._env.begin() as txn:
            return self._count(txn, keyspace.group_prefix(group_id))

    def scan(self, group_id: int, cursor: bytes, count: int) -> tuple[bytes, list[bytes]]:
        """Up to `count` keys from the opaque `cursor` (b"" to start); returns
        (next cursor, keys), next cursor b"" when the scan is complete. Keys
        present for the whole scan are returned exactly once."""
        assert count > 0
        prefix = keyspace.group_prefix(group_id)
        keys: list[bytes] = []
        with self._env.begin() as txn, txn.cursor(db=self._data) as lmdb_cursor:
            found = lmdb_cursor.set_range(prefix + cursor)
            while found:
                stored_key = cast(bytes, lmdb_cursor.key())
                if not stored_key.startswith(prefix):
                    break
                if len(keys) == count:
                    return stored_key[len(prefix) :], keys
                keys.append(keyspace.user_key(stored_key, cast(bytes, lmdb_cursor.value())))
                found = lmdb_cursor.next()
        return b"", keys

    # -- snapshots ------------------------------------------------------------

    def snapshot_chunks(
        self, group_id: int, *, chunk_bytes_max: int = limits.snapshot_chunk_bytes_max
    ) -> Iterator[bytes]:
        """Stream the group's state from one consistent read transaction."""
        prefix = keyspace.group_prefix(group_id)
        self._statistics["snapshots_taken"] += 1
        with self._env.begin() as txn:
            index, term = self._applied(txn, prefix)
            count = self._count(txn, prefix)
            with txn.cursor(db=self._data) as cursor:
                yield from write_stream(
                    _group_items(cursor, prefix), index=index, term=term, count=count,
                    chunk_bytes_max=chunk_bytes_max,
                )  # fmt: skip

    def snapshot_bytes(self, group_id: int) -> bytes:
        return b"".join(self.snapshot_chunks(group_id))

    def install_snapshot(
        self,
        group_id: int,
        source: Snapshot | bytes | Iterable[bytes],
        meta: SnapshotMeta | None = None,
    ) -> None:
        """Replace the group's state with a snapshot stream, atomically: the old
        state stays unless the whole stream arrived and verified. Raises
        `SnapshotInvalid`. Fsyncs the store before returning."""
        if isinstance(source, Snapshot):
            meta = source.meta if meta is None else meta
            chunks: Iterable[bytes] = [source.data]
        elif isinstance(source, bytes | bytearray | memoryview):
            chunks = [bytes(source)]
        else:
            chunks = source
        prefix = keyspace.group_prefix(group_id)
        with SpooledStream.receive(chunks, directory=self.path) as stream:
            if meta is not None:
                stream.check_matches(meta.index, meta.term)
            try:
                with self._env.begin(write=True) as txn:
                    self._replace_group(txn, prefix, stream)
            except lmdb.Error as error:
                raise self._write_error(error) from error
        self._env.sync(True)
        self._statistics["snapshots_installed"] += 1

    def _replace_group(self, txn: lmdb.Transaction, prefix: bytes, stream: SpooledStream) -> None:
        with txn.cursor(db=self._data) as cursor:
            found = cursor.set_range(prefix)
            while found and cast(bytes, cursor.key()).startswith(prefix):
                found = cursor.delete()
        stored = 0
        for key, value, expire_at_ms in stream.items():
            stored_key = keyspace.stored_key(prefix, key)
            txn.put(stored_key, keyspace.stored_value(key, value, expire_at_ms), db=self._data)
            stored += 1
        assert stored == stream.count
        self._set_count(txn, prefix, stored)
        self._set_applied(txn, prefix, stream.index, stream.term)

    # -- splitting a group ----------------------------------------------------

    def split_off(self, parent: int, child: int, belongs_to_child: Callable[[bytes], bool],
                  *, parent_applied: tuple[int, int], child_applied: tuple[int, int],
                  records: dict[int, list[tuple[bytes, bytes]]], keep_child: bool = False) -> int:
        """Move every key of `parent` for which `belongs_to_child(key)` holds
        into the (emptied) keyspace of `child`, in ONE write transaction that
        also sets both groups' applied (index, term) and writes `records`
        (group -> [(key, value)] without expiry, e.g. each group's key range).
        Returns the number of keys moved. Idempotent after a crash: the parent
        replays the entry and the child keyspace is rebuilt from scratch. With
        `keep_child` (this node already has the child's state from elsewhere)
        the keys are only dropped from the parent; the child is not touched."""
        parent_prefix, child_prefix = keyspace.group_prefix(parent), keyspace.group_prefix(child)
        moved = 0
        try:
            with self._env.begin(write=True) as txn:
                with txn.cursor(db=self._data) as cursor:
                    found = not keep_child and cursor.set_range(child_prefix)
                    while found and cast(bytes, cursor.key()).startswith(child_prefix):
                        found = cursor.delete()
                    found = cursor.set_range(parent_prefix)
                    while found:
                        stored_key = cast(bytes, cursor.key())
                        if not stored_key.startswith(parent_prefix):
                            break
                        stored = cast(bytes, cursor.value())
                        if belongs_to_child(keyspace.user_key(stored_key, stored)):
                            if not keep_child:
                                txn.put(child_prefix + stored_key[len(parent_prefix):], stored,
                                        db=self._data)
                            found = cursor.delete()
                            moved += 1
                        else:
                            found = cursor.next()
                count = self._count(txn, parent_prefix) - moved
                child_count = moved
                for group, pairs in records.items():
                    prefix = keyspace.group_prefix(group)
                    for key, value in pairs:
                        stored_key = keyspace.stored_key(prefix, key)
                        fresh = txn.get(stored_key, db=self._data) is None
                        txn.put(stored_key, keyspace.stored_value(key, value, 0), db=self._data)
                        if fresh and group == parent:
                            count += 1
                        elif fresh and group == child:
                            child_count += 1
                self._set_count(txn, parent_prefix, count)
                self._set_applied(txn, parent_prefix, *parent_applied)
                if not keep_child:
                    self._set_count(txn, child_prefix, child_count)
                    self._set_applied(txn, child_prefix, *child_applied)
        except lmdb.Error as error:
            raise self._write_error(error) from error
        return moved

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Sync and close (a clean shutdown leaves the store durable)."""
        self._env.sync(True)
        self._env.close()

    def statistics(self) -> dict[str, int]:
        info = self._env.info()
        stat = self._env.stat()
        return {
            **self._statistics,
            "map_size_bytes": info["map_size"],
            "used_bytes": (info["last_pgno"] + 1) * stat["psize"],
            "readers": info["num_readers"],
        }


def _group_items(cursor: lmdb.Cursor, prefix: bytes) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, value, expire_at_ms) of a group, in stored order."""
    found = cursor.set_range(prefix)
    while found:
        stored_key = cast(bytes, cursor.key())
        if not stored_key.startswith(prefix):
            return
        inline = stored_key[len(prefix) : len(prefix) + 1] == keyspace.INLINE
        value, full_key, expire_at_ms = keyspace.parse_value(cast(bytes, cursor.value()), inline)
        key = stored_key[len(prefix) + 1 :] if inline else full_key
        assert key is not None
        yield key, value, expire_at_ms
        found = cursor.next()
