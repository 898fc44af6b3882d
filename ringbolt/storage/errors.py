"""Typed errors of the storage layer.

Theory of operation
-------------------
Two families, kept apart as everywhere in ringbolt:

* `StorageError` and its subclasses are *expected* outcomes an operator or a
  caller must handle: the disk is full, the data directory is missing, a
  value is too large, the log on disk is corrupt. They carry enough context
  (file, offset, sizes) to act on without reading the code.
* Broken invariants inside this package (an entry index gap handed to
  `apply`, a sync of a closed log) are bugs and raise `AssertionError`.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every expected storage failure."""


class StorageDirectoryError(StorageError):
    """The data directory is missing, not a directory, or not writable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"storage directory {path!r}: {reason}")
        self.path = path
        self.reason = reason


class StorageLocked(StorageError):
    """Another process holds the write-ahead log of this directory."""


class StorageFull(StorageError):
    """The device has no space left (ENOSPC/EDQUOT/EFBIG). Nothing buffered is
    lost: the failed batch stays pending and the next `sync()` retries it."""


class StorageFailed(StorageError):
    """An fdatasync or write failed in a way that cannot be retried safely
    (EIO): the log refuses further work; restart the node to recover from disk."""


class WalCorruption(StorageError):
    """A record in the middle of the log failed verification. Startup stops and
    nothing is modified unless the log is opened with ``repair=True``."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(
            f"write-ahead log corrupt in {path} at offset {offset}: {reason}; "
            "refusing to start (open with repair=True / --repair to truncate "
            "the log from this point, losing every later record)"
        )
        self.path = path
        self.offset = offset
        self.reason = reason


class SnapshotInvalid(StorageError):
    """A snapshot stream is truncated, malformed or fails its checksum; the
    receiver's state is unchanged."""


class LimitExceeded(StorageError):
    """A key, value or record is larger than configured; nothing was written."""

    def __init__(self, what: str, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"{what} is {size_bytes} bytes, larger than the limit of {limit_bytes} bytes")
        self.what = what
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class KeyTooLarge(LimitExceeded):
    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__("key", size_bytes, limit_bytes)


class ValueTooLarge(LimitExceeded):
    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__("value", size_bytes, limit_bytes)


class RecordTooLarge(LimitExceeded):
    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__("write-ahead log record", size_bytes, limit_bytes)


class BacklogFull(StorageError):
    """Too many bytes are appended but not yet synced; sync before appending."""
