"""How user keys and values of each group are laid out in LMDB.

Theory of operation
-------------------
All groups share one LMDB sub-database, ``data``; a group's keyspace is the
key prefix ``group_id`` (8 bytes, big-endian), so a group's keys are one
contiguous B-tree range (scan, count, snapshot and replace-on-install are
range operations) and the number of groups is not bounded by LMDB's
``max_dbs``. LMDB keys are at most 511 bytes, user keys up to 64 KiB, hence
two forms after the group prefix:

* ``0x00 + key`` when that fits (keys up to `INLINE_KEY_BYTES_MAX`): ordered;
* ``0x01 + blake2b-128(key)`` for longer keys; the full key is stored in the
  value, checked on every read.

Values are ``expire_at_ms (u64 BE) + value`` for inline keys and
``expire_at_ms (u64 BE) + key length (u32 BE) + key + value`` for hashed ones.
"""

from __future__ import annotations

import hashlib
import struct

GROUP_PREFIX = struct.Struct(">Q")
EXPIRE = struct.Struct(">Q")
EXPIRE_AND_LENGTH = struct.Struct(">QI")
LMDB_KEY_BYTES_MAX = 511
INLINE = b"\x00"
HASHED = b"\x01"
INLINE_KEY_BYTES_MAX = LMDB_KEY_BYTES_MAX - GROUP_PREFIX.size - 1


def group_prefix(group_id: int) -> bytes:
    assert group_id > 0
    return GROUP_PREFIX.pack(group_id)


def stored_key(prefix: bytes, key: bytes) -> bytes:
    if len(key) <= INLINE_KEY_BYTES_MAX:
        return prefix + INLINE + key
    return prefix + HASHED + hashlib.blake2b(key, digest_size=16).digest()


def stored_value(key: bytes, value: bytes, expire_at_ms: int) -> bytes:
    if len(key) <= INLINE_KEY_BYTES_MAX:
        return EXPIRE.pack(expire_at_ms) + value
    return EXPIRE_AND_LENGTH.pack(expire_at_ms, len(key)) + key + value


def parse_value(stored: bytes, inline: bool) -> tuple[bytes, bytes | None, int]:
    """(value, full key if hashed else None, expire_at_ms)."""
    if inline:
        return stored[EXPIRE.size :], None, EXPIRE.unpack_from(stored)[0]
    expire_at_ms, length = EXPIRE_AND_LENGTH.unpack_from(stored)
    start = EXPIRE_AND_LENGTH.size
    return stored[start + length :], stored[start : start + length], expire_at_ms


def user_key(stored_key_bytes: bytes, stored: bytes) -> bytes:
    """The user key of a stored (key, value) pair."""
    if stored_key_bytes[GROUP_PREFIX.size : GROUP_PREFIX.size + 1] == INLINE:
        return stored_key_bytes[GROUP_PREFIX.size + 1 :]
    _, key, _ = parse_value(stored, inline=False)
    assert key is not None
    return key
