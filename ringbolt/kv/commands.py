"""State-machine commands of the key-value store, and their wire codec.

Theory of operation
-------------------
Every write that goes through a consensus log is one `Command`, encoded with
msgpack as ``[CODEC_VERSION, op, now_ms, *arguments]``. `now_ms` is the
proposing leader's wall clock: expiry is decided from it at apply time, so
every replica computes the same result from the same log (apply never reads a
local clock). Commands are applied by `ringbolt.kv.machine.apply_command`
against any `KeyValueBackend` (a dict in the simulator, LMDB on a node).

Unknown versions or ops are a peer's fault and raise `CommandDecodeError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

CODEC_VERSION = 1


class Op(enum.IntEnum):
    PUT = 1
    """args: key, value, expire_at_ms (0 = none), condition (see `PutCondition`)."""
    DELETE = 2
    """args: keys (list)."""
    CAS = 3
    """args: key, expected (None = key must be absent), new value."""
    INCRBY = 4
    """args: key, delta."""
    APPEND = 5
    """args: key, suffix."""
    EXPIRE = 6
    """args: key, expire_at_ms (0 = persist)."""
    MPUT = 7
    """args: list of [key, value]; atomic."""
    GETSET = 8
    """args: key, value; returns the old value."""
    NOOP = 9
    """No arguments: a barrier."""
    PURGE_EXPIRED = 10
    """args: keys; deletes those that have expired by now_ms."""


class PutCondition(enum.IntEnum):
    ALWAYS = 0
    IF_ABSENT = 1  # NX
    IF_PRESENT = 2  # XX


class CommandDecodeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Command:
    op: Op
    now_ms: int
    args: tuple[object, ...]


def encode(op: Op, now_ms: int, *args: object) -> bytes:
    return msgpack.packb([CODEC_VERSION, int(op), now_ms, *args], use_bin_type=True)


def decode(data: bytes) -> Command:
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except (msgpack.UnpackException, ValueError) as error:
        raise CommandDecodeError(f"undecodable command: {error}") from error
    if not isinstance(raw, list) or len(raw) < 3:
        raise CommandDecodeError("command is not a list of [version, op, now_ms, ...]")
    if raw[0] != CODEC_VERSION:
        raise CommandDecodeError(f"unknown command codec version {raw[0]!r}")
    try:
        op = Op(raw[1])
    except ValueError as error:
        raise CommandDecodeError(f"unknown op {raw[1]!r}") from error
    if not isinstance(raw[2], int):
        raise CommandDecodeError("now_ms is not an integer")
    return Command(op, raw[2], tuple(raw[3:]))


def put(key: bytes, value: bytes, *, now_ms: int = 0, expire_at_ms: int = 0,
        condition: PutCondition = PutCondition.ALWAYS, return_old: bool = False) -> bytes:
    return encode(Op.PUT, now_ms, key, value, expire_at_ms, int(condition), return_old)


def delete(*keys: bytes, now_ms: int = 0) -> bytes:
    return encode(Op.DELETE, now_ms, list(keys))


def cas(key: bytes, expected: bytes | None, new: bytes, *, now_ms: int = 0) -> bytes:
    return encode(Op.CAS, now_ms, key, expected, new)


def incrby(key: bytes, delta: int, *, now_ms: int = 0) -> bytes:
    return encode(Op.INCRBY, now_ms, key, delta)


def append(key: bytes, suffix: bytes, *, now_ms: int = 0) -> bytes:
    return encode(Op.APPEND, now_ms, key, suffix)


def expire(key: bytes, expire_at_ms: int, *, now_ms: int = 0) -> bytes:
    return encode(Op.EXPIRE, now_ms, key, expire_at_ms)


def mput(pairs: list[tuple[bytes, bytes]], *, now_ms: int = 0) -> bytes:
    return encode(Op.MPUT, now_ms, [[k, v] for k, v in pairs])


def getset(key: bytes, value: bytes, *, now_ms: int = 0) -> bytes:
    return encode(Op.GETSET, now_ms, key, value)


def noop(*, now_ms: int = 0) -> bytes:
    return encode(Op.NOOP, now_ms)


def purge_expired(keys: list[bytes], *, now_ms: int) -> bytes:
    return encode(Op.PURGE_EXPIRED, now_ms, keys)
