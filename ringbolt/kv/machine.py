"""The key-value state machine: what each command does, written once.

Theory of operation
-------------------
`apply_command(backend, data)` decodes one committed command and applies it
to a `KeyValueBackend` (a dict in the simulator and tests, an LMDB write
transaction on a node). It is deterministic: its only inputs are the backend's
contents and the command bytes (including the leader's `now_ms`), so every
replica that applies the same log reaches the same state.

A command that cannot be applied for a user-visible reason (INCR on a value
that is not an integer) changes nothing and returns a `CommandFailed` result;
the caller turns it into a client error. Replicas agree on that too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ringbolt.kv.commands import Command, CommandDecodeError, Op, PutCondition, decode

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class KeyValueBackend(Protocol):
    def get(self, key: bytes) -> tuple[bytes, int] | None:
        """(value, expire_at_ms) with 0 meaning "no expiry", or None."""
        ...

    def put(self, key: bytes, value: bytes, expire_at_ms: int) -> None: ...

    def delete(self, key: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """A deterministic, user-visible refusal (Redis-style message without '-')."""

    message: str


Result = bytes | int | bool | None | list[object] | CommandFailed


def is_live(record: tuple[bytes, int] | None, now_ms: int) -> bool:
    return record is not None and (record[1] == 0 or record[1] > now_ms)


def live_value(backend: KeyValueBackend, key: bytes, now_ms: int) -> bytes | None:
    record = backend.get(key)
    if record is None:
        return None
    if record[1] != 0 and record[1] <= now_ms:
        return None
    return record[0]


def apply_command(backend: KeyValueBackend, data: bytes) -> Result:
    """Apply one encoded command; raises `CommandDecodeError` on garbage."""
    return apply_decoded(backend, decode(data))


def apply_decoded(backend: KeyValueBackend, command: Command) -> Result:
    handler = _HANDLERS.get(command.op)
    if handler is None:
        raise CommandDecodeError(f"no handler for op {command.op!r}")
    try:
        return handler(backend, command.now_ms, command.args)
    except (TypeError, ValueError, IndexError) as error:
        raise CommandDecodeError(f"malformed {command.op.name} arguments: {error}") from error


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return value


def _put(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    key, value = _bytes(args[0]), _bytes(args[1])
    expire_at_ms = int(args[2])  # type: ignore[call-overload]
    condition = PutCondition(int(args[3]))  # type: ignore[call-overload]
    return_old = bool(args[4]) if len(args) > 4 else False
    old = live_value(backend, key, now_ms)
    if condition is PutCondition.IF_ABSENT and old is not None:
        return old if return_old else False
    if condition is PutCondition.IF_PRESENT and old is None:
        return None if return_old else False
    backend.put(key, value, expire_at_ms)
    return old if return_old else True


def _delete(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    keys = args[0]
    assert isinstance(keys, list)
    deleted = 0
    for key in keys:
        record = backend.get(_bytes(key))
        if record is None:
            continue
        backend.delete(key)
        if is_live(record, now_ms):
            deleted += 1
    return deleted


def _cas(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    key, expected, new = _bytes(args[0]), args[1], _bytes(args[2])
    current = live_value(backend, key, now_ms)
    if current != expected:
        return False
    record = backend.get(key)
    keep_expiry = record[1] if record is not None and current is not None else 0
    backend.put(key, new, keep_expiry)
    return True


def _incrby(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    key, delta = _bytes(args[0]), args[1]
    if not isinstance(delta, int):
        raise TypeError("delta is not an integer")
    record = backend.get(key)
    live = is_live(record, now_ms)
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
    result = current + delta
    if not INT64_MIN <= result <= INT64_MAX:
        return CommandFailed("ERR increment or decrement would overflow")
    backend.put(key, str(result).encode(), record[1] if live and record is not None else 0)
    return result


def _append(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    key, suffix = _bytes(args[0]), _bytes(args[1])
    record = backend.get(key)
    if is_live(record, now_ms):
        assert record is not None
        value, expire_at_ms = record[0] + suffix, record[1]
    else:
        value, expire_at_ms = suffix, 0
    backend.put(key, value, expire_at_ms)
    return len(value)


def _expire(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    key, expire_at_ms = _bytes(args[0]), int(args[1])  # type: ignore[call-overload]
    record = backend.get(key)
    if not is_live(record, now_ms):
        return False
    assert record is not None
    if expire_at_ms != 0 and expire_at_ms <= now_ms:
        backend.delete(key)
        return True
    if expire_at_ms == 0 and record[1] == 0:
        return False  # PERSIST on a key without expiry
    backend.put(key, record[0], expire_at_ms)
    return True


def _mput(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    pairs = args[0]
    assert isinstance(pairs, list)
    checked = [(_bytes(pair[0]), _bytes(pair[1])) for pair in pairs]
    for key, value in checked:
        backend.put(key, value, 0)
    return True


def _getset(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    key, value = _bytes(args[0]), _bytes(args[1])
    old = live_value(backend, key, now_ms)
    backend.put(key, value, 0)
    return old


def _noop(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    return None


def _purge_expired(backend: KeyValueBackend, now_ms: int, args: tuple[object, ...]) -> Result:
    keys = args[0]
    assert isinstance(keys, list)
    purged = 0
    for key in keys:
        record = backend.get(_bytes(key))
        if record is not None and not is_live(record, now_ms):
            backend.delete(key)
            purged += 1
    return purged


_HANDLERS = {
    Op.PUT: _put,
    Op.DELETE: _delete,
    Op.CAS: _cas,
    Op.INCRBY: _incrby,
    Op.APPEND: _append,
    Op.EXPIRE: _expire,
    Op.MPUT: _mput,
    Op.GETSET: _getset,
    Op.NOOP: _noop,
    Op.PURGE_EXPIRED: _purge_expired,
}


class DictBackend:
    """An in-memory backend for the simulator and tests."""

    def __init__(self) -> None:
        self.data: dict[bytes, tuple[bytes, int]] = {}

    def get(self, key: bytes) -> tuple[bytes, int] | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, expire_at_ms: int) -> None:
        self.data[key] = (value, expire_at_ms)

    def delete(self, key: bytes) -> bool:
        return self.data.pop(key, None) is not None
