"""Reads of the key-value store, decided in one place.

Theory of operation
-------------------
A read takes a backend `Record` ``(value, expire_at_ms) | None`` -- as a
store returns it, expiry not filtered -- and the reader's `now_ms`, and
answers what a client sees: the live value, whether the key exists, its
length, its type, its time to live. Writes decide liveness with the same
`is_live` (`ringbolt.kv.ops`), so a read and a write at the same `now_ms`
agree on whether a key is there. Later kinds of record state (intents,
locks) are to be honoured here, once, for every read command.

A key is live while it has no expiry (0) or its expiry lies after now_ms.
"""

from __future__ import annotations

from ringbolt.kv.types import KeyValueBackend, Record

TTL_MISSING = -2
"""`read_ttl` of a key that does not exist (or has expired)."""
TTL_PERSISTENT = -1
"""`read_ttl` of a key without expiry."""
TYPE_STRING = "string"
TYPE_NONE = "none"


def is_live(record: Record | None, now_ms: int) -> bool:
    return record is not None and (record[1] == 0 or record[1] > now_ms)


def read_value(record: Record | None, now_ms: int) -> bytes | None:
    """GET: the value, or None for a missing or expired key."""
    if record is None:
        return None
    if record[1] != 0 and record[1] <= now_ms:
        return None
    return record[0]


def live_value(backend: KeyValueBackend, key: bytes, now_ms: int) -> bytes | None:
    """`read_value` of `key` in `backend`."""
    return read_value(backend.get(key), now_ms)


def read_exists(record: Record | None, now_ms: int) -> bool:
    """EXISTS (per key)."""
    return is_live(record, now_ms)


def read_strlen(record: Record | None, now_ms: int) -> int:
    """STRLEN: the value's length in bytes, 0 for a missing key."""
    value = read_value(record, now_ms)
    return 0 if value is None else len(value)


def read_type(record: Record | None, now_ms: int) -> str:
    """TYPE: "string" for a live key (the only type there is), else "none"."""
    return TYPE_STRING if is_live(record, now_ms) else TYPE_NONE


def read_ttl(record: Record | None, now_ms: int, unit_ms: int = 1) -> int:
    """TTL (unit_ms=1000) / PTTL (unit_ms=1): the time left, rounded to the
    nearest unit; `TTL_MISSING` for a missing key, `TTL_PERSISTENT` for a
    key without expiry."""
    assert unit_ms > 0, unit_ms
    if not is_live(record, now_ms):
        return TTL_MISSING
    assert record is not None
    if record[1] == 0:
        return TTL_PERSISTENT
    remaining_ms = record[1] - now_ms
    assert remaining_ms > 0
    return (remaining_ms + unit_ms // 2) // unit_ms
