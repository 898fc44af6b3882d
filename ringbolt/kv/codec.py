"""The envelope of a state-machine command: ``[CODEC_VERSION, op, now_ms, *args]``.

Theory of operation
-------------------
Every write that goes through a consensus log is one command, a msgpack array
``[CODEC_VERSION, op, now_ms, *arguments]``. `now_ms` is the clock of the
leader that proposes the entry (the leader stamps it at proposal time,
`ringbolt.kv.commands.stamp`): expiry is decided from it at apply time, so
every replica computes the same result from the same log.

`encode` always writes the header in one fixed form -- a fixarray, the
version and op as positive fixints, now_ms as a msgpack uint64 (0xcf and 8
big-endian bytes) -- so now_ms sits at byte offset `NOW_MS_OFFSET` and can be
replaced without decoding. `decode` accepts now_ms in any integer form, as
logs written before the fixed form carry it.

What each op's arguments are, and what it does: `ringbolt.kv.ops`. Unknown
versions or ops, or garbage, are a peer's fault: `CommandDecodeError`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import msgpack

CODEC_VERSION = 1


class Op(enum.IntEnum):
    PUT = 1
    """args: key, value, expire_at_ms (0 = none), condition (`PutCondition`)[, return_old]."""
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


OP_MIN = min(Op)
OP_MAX = max(Op)
assert [int(op) for op in Op] == list(range(OP_MIN, OP_MAX + 1)), "ops are contiguous"


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


FIXARRAY = 0x90
"""msgpack fixarray header: 0x90 | element count (0..15)."""
UINT64 = 0xCF
HEADER = struct.Struct(">BBBBQ")
"""fixarray header, version, op, 0xcf, now_ms: the fixed header `encode` writes."""
NOW_MS_OFFSET = 4
"""Byte offset of the 8 big-endian bytes of now_ms in an encoded command."""
HEADER_BYTES = HEADER.size
ENVELOPE_FIELDS = 3
"""version, op, now_ms: the elements before the arguments."""
ARGUMENTS_MAX = 15 - ENVELOPE_FIELDS
"""A command is a fixarray, so it carries at most this many arguments."""
NOW_MS_LIMIT = 2**64
assert NOW_MS_OFFSET + 8 == HEADER_BYTES
assert 0 < CODEC_VERSION < 0x80 and 0 < OP_MIN <= OP_MAX < 0x80, "positive fixints"

_pack_header = HEADER.pack
_packb = msgpack.packb


def encode(op: Op, now_ms: int, *args: object) -> bytes:
    """The command in the fixed header form (now_ms at `NOW_MS_OFFSET`)."""
    assert 0 <= now_ms < NOW_MS_LIMIT, f"now_ms {now_ms} is not a uint64"
    assert len(args) <= ARGUMENTS_MAX, f"{len(args)} arguments do not fit a fixarray"
    body: bytes = _packb(list(args), use_bin_type=True)
    assert body[0] == FIXARRAY | len(args)
    return _pack_header(FIXARRAY | (ENVELOPE_FIELDS + len(args)), CODEC_VERSION, Op(op), UINT64,
                        now_ms) + body[1:]


_OP_BY_VALUE: dict[object, Op] = {int(op): op for op in Op}


def decode_envelope(data: bytes) -> tuple[Op, int, list[object]]:
    """(op, now_ms, arguments) of a command (any integer form of now_ms);
    the arguments are checked by their op's parser (`ringbolt.kv.ops`)."""
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except (msgpack.UnpackException, ValueError) as error:
        raise CommandDecodeError(f"undecodable command: {error}") from error
    if type(raw) is not list or len(raw) < ENVELOPE_FIELDS:
        raise CommandDecodeError("command is not a list of [version, op, now_ms, ...]")
    if raw[0] != CODEC_VERSION:
        raise CommandDecodeError(f"unknown command codec version {raw[0]!r}")
    try:
        op = _OP_BY_VALUE[raw[1]]
    except (KeyError, TypeError) as error:
        raise CommandDecodeError(f"unknown op {raw[1]!r}") from error
    now_ms = raw[2]
    if not isinstance(now_ms, int):
        raise CommandDecodeError("now_ms is not an integer")
    return op, now_ms, raw[ENVELOPE_FIELDS:]


def decode(data: bytes) -> Command:
    """`decode_envelope` as a `Command`."""
    op, now_ms, args = decode_envelope(data)
    return Command(op, now_ms, tuple(args))
