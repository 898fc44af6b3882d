"""Every state-machine operation, each declared once.

Theory of operation
-------------------
An operation is one `OpSpec` in `OPS`, and everything about it is written in
its section of this module:

- `args`: a NamedTuple whose field order IS the wire order of the arguments
  after the envelope (`ringbolt.kv.codec`); fields with defaults are optional
  trailing arguments. The encode helpers of `ringbolt.kv.commands` build it.
- `parse`: checks the decoded wire arguments (their number already checked
  against `args`) and returns `args`, or raises `CommandDecodeError` (a
  peer's garbage). Once parsed, a handler does not fail on types: a
  `TypeError` in a handler is our bug, and crashes.
- `keys`: the keys the command reads or writes (shard fencing, splits, and
  later intents and locks).
- `handler`: what it does to a `KeyValueBackend`, given the entry's
  `ApplyContext`; deterministic, with `CommandFailed` for refusals.
- `fast_path` (optional): recognises from the encoded bytes alone the
  commands of the op that need no read, for the store's apply loop
  (`fast_put`: a plain SET). It must agree with `handler` on those;
  `tests/kv/test_ops.py` and `tests/storage/test_engine.py` check it on
  random commands.

`command_keys(data)` answers for an encoded command; `parse_command(data)`
decodes one to its spec and checked arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import msgpack

from ringbolt.kv.codec import (
    ARGUMENTS_MAX,
    CODEC_VERSION,
    ENVELOPE_FIELDS,
    FIXARRAY,
    NOW_MS_OFFSET,
    UINT64,
    CommandDecodeError,
    Op,
    PutCondition,
    decode_envelope,
)
from ringbolt.kv.reads import is_live, live_value
from ringbolt.kv.types import (
    INT64_MAX,
    INT64_MIN,
    ApplyContext,
    CommandFailed,
    KeyValueBackend,
    Result,
)

ArgsT = TypeVar("ArgsT", bound=tuple[Any, ...])

FastPut = tuple[bytes, bytes, int]
"""(key, value, expire_at_ms) of a write that needs no read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpSpec(Generic[ArgsT]):
    op: Op
    args: type[ArgsT]
    parse: Callable[[Sequence[object]], ArgsT]
    keys: Callable[[ArgsT], list[bytes]]
    handler: Callable[[KeyValueBackend, ApplyContext, ArgsT], Result]
    fast_path: Callable[[bytes], FastPut | None] | None = None
    arguments: range = range(0)
    """Derived from `args`: how many wire arguments the op takes (its fields;
    those with a default may be left off the end). `parse_command` checks
    it before `parse` runs."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "arguments", arguments_range(self.args))


def arguments_range(args: type[tuple[Any, ...]]) -> range:
    fields: tuple[str, ...] = args._fields  # type: ignore[attr-defined]
    defaults: dict[str, object] = args._field_defaults  # type: ignore[attr-defined]
    return range(len(fields) - len(defaults), len(fields) + 1)


# --- argument checks ------------------------------------------------------------------

_new_tuple = tuple.__new__
"""`_new_tuple(Args, (a, b))` is `Args(a, b)` for a NamedTuple without its
Python-level __new__ (half the cost); the parsers on the apply path use it."""

def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise CommandDecodeError(f"{what}: expected bytes, got {type(value).__name__}")
    return value


def _integer(value: object, what: str) -> int:
    """An integer argument; like the codec always did, anything `int()` takes."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError) as error:
        raise CommandDecodeError(f"{what}: {error}") from error


def _key_list(value: object, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise CommandDecodeError(f"{what}: expected a list, got {type(value).__name__}")
    return [_bytes(key, what) for key in value]


def _one_key(args: Any) -> list[bytes]:
    key: bytes = args.key
    return [key]


# --- PUT ------------------------------------------------------------------------------

class PutArgs(NamedTuple):
    key: bytes
    value: bytes
    expire_at_ms: int
    """0 = no expiry."""
    condition: PutCondition
    return_old: bool = False


_CONDITIONS = {int(condition): condition for condition in PutCondition}


def _parse_put(raw: Sequence[object]) -> PutArgs:
    # The general path's most common command (SET NX/XX/GET): the usual
    # types are checked inline, anything else goes through the helpers.
    key, value, expire_at_ms, condition = raw[0], raw[1], raw[2], raw[3]
    if type(key) is not bytes:
        key = _bytes(key, "key")
    if type(value) is not bytes:
        value = _bytes(value, "value")
    if type(expire_at_ms) is not int:
        expire_at_ms = _integer(expire_at_ms, "expire_at_ms")
    checked = _CONDITIONS.get(condition) if type(condition) is int else None
    if checked is None:
        try:
            checked = PutCondition(_integer(condition, "condition"))
        except ValueError as error:
            raise CommandDecodeError(f"PUT condition: {error}") from error
    return_old = bool(raw[4]) if len(raw) > 4 else False
    return _new_tuple(PutArgs, (key, value, expire_at_ms, checked, return_old))


def _put(backend: KeyValueBackend, context: ApplyContext, args: PutArgs) -> Result:
    old = live_value(backend, args.key, context.now_ms)
    if args.condition is PutCondition.IF_ABSENT and old is not None:
        return old if args.return_old else False
    if args.condition is PutCondition.IF_PRESENT and old is None:
        return None if args.return_old else False
    backend.put(args.key, args.value, args.expire_at_ms)
    return old if args.return_old else True


_PUT_ARGUMENTS = arguments_range(PutArgs)
_PUT_HEAD_FULL = bytes((FIXARRAY | (ENVELOPE_FIELDS + _PUT_ARGUMENTS[-1]), CODEC_VERSION, Op.PUT,
                        UINT64))
"""A PUT in the fixed header form, with return_old ..."""
_PUT_HEAD_SHORT = bytes((FIXARRAY | (ENVELOPE_FIELDS + _PUT_ARGUMENTS[0]), CODEC_VERSION, Op.PUT,
                         UINT64))
"""... and without (as written before return_old existed)."""
assert len(_PUT_ARGUMENTS) == 2
assert len(_PUT_HEAD_FULL) == len(_PUT_HEAD_SHORT) == NOW_MS_OFFSET
assert PutArgs._fields == ("key", "value", "expire_at_ms", "condition", "return_old"), (
    "fast_put reads the fields at positions 3..7")
_unpackb = msgpack.unpackb
_ALWAYS = int(PutCondition.ALWAYS)


def fast_put(data: bytes) -> FastPut | None:
    """(key, value, expire_at_ms) of a plain SET -- PUT ALWAYS without
    return_old, which reads nothing and answers True -- else None (any other
    command, garbage, or a PUT in an older header form: the general path
    decides those). Only the caller's storage limits remain to check."""
    head = data[:NOW_MS_OFFSET]
    if head == _PUT_HEAD_FULL:
        try:
            _, _, _, key, value, expire_at_ms, condition, return_old = _unpackb(data)
        except Exception:  # noqa: BLE001 - the general path reports the error
            return None
        if return_old is not False:
            return None
    elif head == _PUT_HEAD_SHORT:
        try:
            _, _, _, key, value, expire_at_ms, condition = _unpackb(data)
        except Exception:  # noqa: BLE001 - the general path reports the error
            return None
    else:
        return None
    if (type(key) is bytes and type(value) is bytes and type(expire_at_ms) is int
            and condition == _ALWAYS):
        return key, value, expire_at_ms
    return None


PUT = OpSpec(op=Op.PUT, args=PutArgs, parse=_parse_put, keys=_one_key, handler=_put,
             fast_path=fast_put)


# --- DELETE ---------------------------------------------------------------------------

class DeleteArgs(NamedTuple):
    keys: list[bytes]


def _parse_delete(raw: Sequence[object]) -> DeleteArgs:
    return _new_tuple(DeleteArgs, (_key_list(raw[0], "keys"),))


def _delete_keys(args: DeleteArgs) -> list[bytes]:
    return list(args.keys)


def _delete(backend: KeyValueBackend, context: ApplyContext, args: DeleteArgs) -> Result:
    deleted = 0
    for key in args.keys:
        record = backend.get(key)
        if record is None:
            continue
        backend.delete(key)
        if is_live(record, context.now_ms):
            deleted += 1
    return deleted


DELETE = OpSpec(op=Op.DELETE, args=DeleteArgs, parse=_parse_delete, keys=_delete_keys,
                handler=_delete)


# --- CAS ------------------------------------------------------------------------------

class CasArgs(NamedTuple):
    key: bytes
    expected: bytes | None
    """None: the key must be absent."""
    new: bytes


def _parse_cas(raw: Sequence[object]) -> CasArgs:
    expected = raw[1]
    if expected is not None:
        expected = _bytes(expected, "expected")
    return _new_tuple(CasArgs, (_bytes(raw[0], "key"), expected, _bytes(raw[2], "new")))


def _cas(backend: KeyValueBackend, context: ApplyContext, args: CasArgs) -> Result:
    current = live_value(backend, args.key, context.now_ms)
    if current != args.expected:
        return False
    record = backend.get(args.key)
    keep_expiry = record[1] if record is not None and current is not None else 0
    backend.put(args.key, args.new, keep_expiry)
    return True


CAS = OpSpec(op=Op.CAS, args=CasArgs, parse=_parse_cas, keys=_one_key, handler=_cas)


# --- INCRBY ---------------------------------------------------------------------------

class IncrbyArgs(NamedTuple):
    key: bytes
    delta: int


def _parse_incrby(raw: Sequence[object]) -> IncrbyArgs:
    delta = raw[1]
    if not isinstance(delta, int):
        raise CommandDecodeError("INCRBY delta is not an integer")
    return _new_tuple(IncrbyArgs, (_bytes(raw[0], "key"), delta))


def _incrby(backend: KeyValueBackend, context: ApplyContext, args: IncrbyArgs) -> Result:
    record = backend.get(args.key)
    live = is_live(record, context.now_ms)
    current = 0
    if live:
        assert record is not None
        try:
            text = record[0].decode("ascii")
            if text != text.strip() or not text:
                raise ValueError
            current = int(text)
        except (UnicodeDecodeError, ValueError):
            return CommandFailed("ERR value is not an integer or out of range")
    result = current + args.delta
    if not INT64_MIN <= result <= INT64_MAX:
        return CommandFailed("ERR increment or decrement would overflow")
    backend.put(args.key, str(result).encode(), record[1] if live and record is not None else 0)
    return result


INCRBY = OpSpec(op=Op.INCRBY, args=IncrbyArgs, parse=_parse_incrby, keys=_one_key,
                handler=_incrby)


# --- APPEND ---------------------------------------------------------------------------

class AppendArgs(NamedTuple):
    key: bytes
    suffix: bytes


def _parse_append(raw: Sequence[object]) -> AppendArgs:
    return _new_tuple(AppendArgs, (_bytes(raw[0], "key"), _bytes(raw[1], "suffix")))


def _append(backend: KeyValueBackend, context: ApplyContext, args: AppendArgs) -> Result:
    record = backend.get(args.key)
    if is_live(record, context.now_ms):
        assert record is not None
        value, expire_at_ms = record[0] + args.suffix, record[1]
    else:
        value, expire_at_ms = args.suffix, 0
    backend.put(args.key, value, expire_at_ms)
    return len(value)


APPEND = OpSpec(op=Op.APPEND, args=AppendArgs, parse=_parse_append, keys=_one_key,
                handler=_append)


# --- EXPIRE ---------------------------------------------------------------------------

class ExpireArgs(NamedTuple):
    key: bytes
    expire_at_ms: int
    """0 = persist."""


def _parse_expire(raw: Sequence[object]) -> ExpireArgs:
    return _new_tuple(ExpireArgs, (_bytes(raw[0], "key"), _integer(raw[1], "expire_at_ms")))


def _expire(backend: KeyValueBackend, context: ApplyContext, args: ExpireArgs) -> Result:
    key, expire_at_ms = args.key, args.expire_at_ms
    record = backend.get(key)
    if not is_live(record, context.now_ms):
        return False
    assert record is not None
    if expire_at_ms != 0 and expire_at_ms <= context.now_ms:
        backend.delete(key)
        return True
    if expire_at_ms == 0 and record[1] == 0:
        return False  # PERSIST on a key without expiry
    backend.put(key, record[0], expire_at_ms)
    return True


EXPIRE = OpSpec(op=Op.EXPIRE, args=ExpireArgs, parse=_parse_expire, keys=_one_key,
                handler=_expire)


# --- MPUT -----------------------------------------------------------------------------

class MputArgs(NamedTuple):
    pairs: list[tuple[bytes, bytes]]
    """On the wire: a list of [key, value]."""


def _parse_mput(raw: Sequence[object]) -> MputArgs:
    pairs = raw[0]
    if not isinstance(pairs, list):
        raise CommandDecodeError("MPUT pairs: expected a list")
    checked: list[tuple[bytes, bytes]] = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise CommandDecodeError("MPUT pair: expected [key, value]")
        checked.append((_bytes(pair[0], "key"), _bytes(pair[1], "value")))
    return _new_tuple(MputArgs, (checked,))


def _mput_keys(args: MputArgs) -> list[bytes]:
    return [key for key, _ in args.pairs]


def _mput(backend: KeyValueBackend, context: ApplyContext, args: MputArgs) -> Result:
    for key, value in args.pairs:
        backend.put(key, value, 0)
    return True


MPUT = OpSpec(op=Op.MPUT, args=MputArgs, parse=_parse_mput, keys=_mput_keys, handler=_mput)


# --- GETSET ---------------------------------------------------------------------------

class GetsetArgs(NamedTuple):
    key: bytes
    value: bytes


def _parse_getset(raw: Sequence[object]) -> GetsetArgs:
    return _new_tuple(GetsetArgs, (_bytes(raw[0], "key"), _bytes(raw[1], "value")))


def _getset(backend: KeyValueBackend, context: ApplyContext, args: GetsetArgs) -> Result:
    old = live_value(backend, args.key, context.now_ms)
    backend.put(args.key, args.value, 0)
    return old


GETSET = OpSpec(op=Op.GETSET, args=GetsetArgs, parse=_parse_getset, keys=_one_key,
                handler=_getset)


# --- NOOP -----------------------------------------------------------------------------

class NoopArgs(NamedTuple):
    pass


def _parse_noop(raw: Sequence[object]) -> NoopArgs:
    return _new_tuple(NoopArgs, ())


def _no_keys(args: NoopArgs) -> list[bytes]:
    return []


def _noop(backend: KeyValueBackend, context: ApplyContext, args: NoopArgs) -> Result:
    return None


NOOP = OpSpec(op=Op.NOOP, args=NoopArgs, parse=_parse_noop, keys=_no_keys, handler=_noop)


# --- PURGE_EXPIRED --------------------------------------------------------------------

class PurgeExpiredArgs(NamedTuple):
    keys: list[bytes]


def _parse_purge_expired(raw: Sequence[object]) -> PurgeExpiredArgs:
    return _new_tuple(PurgeExpiredArgs, (_key_list(raw[0], "keys"),))


def _purge_keys(args: PurgeExpiredArgs) -> list[bytes]:
    return list(args.keys)


def _purge_expired(backend: KeyValueBackend, context: ApplyContext,
                   args: PurgeExpiredArgs) -> Result:
    purged = 0
    for key in args.keys:
        record = backend.get(key)
        if record is not None and not is_live(record, context.now_ms):
            backend.delete(key)
            purged += 1
    return purged


PURGE_EXPIRED = OpSpec(op=Op.PURGE_EXPIRED, args=PurgeExpiredArgs, parse=_parse_purge_expired,
                       keys=_purge_keys, handler=_purge_expired)


# --- the registry ---------------------------------------------------------------------

OPS: dict[Op, OpSpec[Any]] = {spec.op: spec for spec in (
    PUT, DELETE, CAS, INCRBY, APPEND, EXPIRE, MPUT, GETSET, NOOP, PURGE_EXPIRED)}
assert set(OPS) == set(Op), "every op is declared"
assert all(op is spec.op for op, spec in OPS.items())
assert all(spec.arguments.stop - 1 <= ARGUMENTS_MAX for spec in OPS.values())


def parse_command(data: bytes) -> tuple[OpSpec[Any], int, tuple[Any, ...]]:
    """(spec, now_ms, checked arguments) of an encoded command; raises
    `CommandDecodeError` on garbage."""
    op, now_ms, raw = decode_envelope(data)
    spec = OPS[op]
    if len(raw) not in spec.arguments:
        allowed = spec.arguments
        raise CommandDecodeError(f"{op.name} takes {allowed.start}..{allowed.stop - 1} "
                                 f"arguments, got {len(raw)}")
    return spec, now_ms, spec.parse(raw)


def command_keys(data: bytes) -> list[bytes]:
    """The keys an encoded command touches ([] for keyless or undecodable ones)."""
    try:
        spec, _, args = parse_command(data)
    except CommandDecodeError:
        return []
    return spec.keys(args)
