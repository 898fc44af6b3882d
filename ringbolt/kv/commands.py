"""State-machine commands of the key-value store: how to write one.

Theory of operation
-------------------
Every write that goes through a consensus log is one command, encoded with
msgpack as ``[CODEC_VERSION, op, now_ms, *arguments]`` (`ringbolt.kv.codec`;
each op's arguments, keys and effect: `ringbolt.kv.ops`). The helpers here
(`put`, `delete`, `cas`, ...) build a command from its op's argument tuple,
so the wire order of the arguments is declared once, in `ringbolt.kv.ops`.

`now_ms` is stamped by the leader that proposes the entry: the leader calls
`stamp(data, now_ms)` with its clock at proposal time, which replaces the
fixed-width now_ms in place (a byte splice, no decode). Expiry is decided
from that stamp at apply time, so every replica computes the same result
from the same log and apply never reads a local clock. The `now_ms` a
helper is given is what the command carries until it is stamped. Commands
are applied by `ringbolt.kv.machine.apply_entry` against any
`KeyValueBackend` (a dict in the simulator, LMDB on a node).

`stamp` leaves anything that is not a command of this codec unchanged
(split records, cluster-map commands): it checks the fixarray header
against the op's argument count, the version byte, the op byte, the uint64
marker of now_ms, and that the first argument is a bin or an array.

Unknown versions or ops are a peer's fault and raise `CommandDecodeError`.
"""

from __future__ import annotations

from ringbolt.kv.codec import (
    CODEC_VERSION,
    ENVELOPE_FIELDS,
    FIXARRAY,
    HEADER_BYTES,
    NOW_MS_LIMIT,
    NOW_MS_OFFSET,
    OP_MAX,
    OP_MIN,
    UINT64,
    Command,
    CommandDecodeError,
    Op,
    PutCondition,
    decode,
    encode,
)
from ringbolt.kv.ops import (
    OPS,
    AppendArgs,
    CasArgs,
    DeleteArgs,
    ExpireArgs,
    GetsetArgs,
    IncrbyArgs,
    MputArgs,
    NoopArgs,
    PurgeExpiredArgs,
    PutArgs,
)

__all__ = [
    "CODEC_VERSION", "Command", "CommandDecodeError", "Op", "PutCondition", "append", "cas",
    "decode", "delete", "encode", "expire", "getset", "incrby", "mput", "noop", "purge_expired",
    "put", "stamp",
]


def put(key: bytes, value: bytes, *, now_ms: int = 0, expire_at_ms: int = 0,
        condition: PutCondition = PutCondition.ALWAYS, return_old: bool = False) -> bytes:
    return encode(Op.PUT, now_ms, *PutArgs(key, value, expire_at_ms, PutCondition(condition),
                                              return_old))


def delete(*keys: bytes, now_ms: int = 0) -> bytes:
    return encode(Op.DELETE, now_ms, *DeleteArgs(list(keys)))


def cas(key: bytes, expected: bytes | None, new: bytes, *, now_ms: int = 0) -> bytes:
    return encode(Op.CAS, now_ms, *CasArgs(key, expected, new))


def incrby(key: bytes, delta: int, *, now_ms: int = 0) -> bytes:
    return encode(Op.INCRBY, now_ms, *IncrbyArgs(key, delta))


def append(key: bytes, suffix: bytes, *, now_ms: int = 0) -> bytes:
    return encode(Op.APPEND, now_ms, *AppendArgs(key, suffix))


def expire(key: bytes, expire_at_ms: int, *, now_ms: int = 0) -> bytes:
    return encode(Op.EXPIRE, now_ms, *ExpireArgs(key, expire_at_ms))


def mput(pairs: list[tuple[bytes, bytes]], *, now_ms: int = 0) -> bytes:
    return encode(Op.MPUT, now_ms, *MputArgs([(k, v) for k, v in pairs]))


def getset(key: bytes, value: bytes, *, now_ms: int = 0) -> bytes:
    return encode(Op.GETSET, now_ms, *GetsetArgs(key, value))


def noop(*, now_ms: int = 0) -> bytes:
    return encode(Op.NOOP, now_ms, *NoopArgs())


def purge_expired(keys: list[bytes], *, now_ms: int) -> bytes:
    return encode(Op.PURGE_EXPIRED, now_ms, *PurgeExpiredArgs(keys))


# --- stamping ---------------------------------------------------------------------------

_HEADS: tuple[frozenset[int], ...] = tuple(
    frozenset(FIXARRAY | (ENVELOPE_FIELDS + count) for count in OPS[Op(op)].arguments)
    if OP_MIN <= op <= OP_MAX else frozenset()
    for op in range(OP_MAX + 1)
)
"""By op byte: the fixarray headers a command of that op may start with."""
_NO_ARGUMENTS_HEAD = FIXARRAY | ENVELOPE_FIELDS
_FIRST_ARGUMENT_BYTES = frozenset(
    [*range(FIXARRAY, FIXARRAY + 16), 0xDC, 0xDD,  # array
     0xC4, 0xC5, 0xC6])  # bin
"""Every op's first argument is a key (bin) or a list (array)."""
assert all(spec.arguments.start >= 1 or spec.arguments.stop == 1 for spec in OPS.values())


def stamp(data: bytes, now_ms: int) -> bytes:
    """`data` with its now_ms replaced by `now_ms`, if `data` is a command of
    this codec in the fixed header form (as `encode` writes every command);
    else `data` itself, unchanged: other payloads, garbage, and commands in
    an older header form (now_ms not a uint64), which keep their own now_ms."""
    assert 0 <= now_ms < NOW_MS_LIMIT, f"now_ms {now_ms} is not a uint64"
    if (len(data) < HEADER_BYTES or data[1] != CODEC_VERSION or data[3] != UINT64
            or not OP_MIN <= data[2] <= OP_MAX or data[0] not in _HEADS[data[2]]):
        return data
    if data[0] == _NO_ARGUMENTS_HEAD:
        if len(data) != HEADER_BYTES:
            return data
    elif len(data) == HEADER_BYTES or data[HEADER_BYTES] not in _FIRST_ARGUMENT_BYTES:
        return data
    stamped = data[:NOW_MS_OFFSET] + now_ms.to_bytes(8, "big") + data[HEADER_BYTES:]
    assert len(stamped) == len(data)
    return stamped
