"""The key-value state machine: applying one committed command.

Theory of operation
-------------------
`apply_entry(backend, data, index, term)` decodes one committed command,
checks its arguments (`ringbolt.kv.ops`, where each operation is declared
once) and runs its handler against a `KeyValueBackend` (a dict in the
simulator and tests, an LMDB write-transaction overlay on a node) with the
entry's `ApplyContext`. It is deterministic: its only inputs are the
backend's contents, the command bytes (including the leader's `now_ms`) and
the entry's index and term, so every replica that applies the same log
reaches the same state. `apply_command(backend, data)` is the same for
callers without a log entry (index and term 0).

A command that cannot be applied for a user-visible reason (INCR on a value
that is not an integer) changes nothing and returns a `CommandFailed` result;
the caller turns it into a client error. Replicas agree on that too. Garbage
raises `CommandDecodeError` before the handler runs, so it changes nothing.

Reads (`is_live`, `live_value`, `read_*`): `ringbolt.kv.reads`.
"""

from __future__ import annotations

from ringbolt.kv.codec import Command, CommandDecodeError
from ringbolt.kv.ops import OPS, parse_command
from ringbolt.kv.reads import is_live, live_value
from ringbolt.kv.types import (
    INT64_MAX,
    INT64_MIN,
    ApplyContext,
    CommandFailed,
    KeyValueBackend,
    Record,
    Result,
    new_context,
)

__all__ = [
    "INT64_MAX", "INT64_MIN", "ApplyContext", "CommandFailed", "DictBackend", "KeyValueBackend",
    "Record", "Result", "apply_command", "apply_decoded", "apply_entry", "is_live", "live_value",
]


def apply_entry(backend: KeyValueBackend, data: bytes, index: int, term: int) -> Result:
    """Apply the command of the log entry at (`index`, `term`); raises
    `CommandDecodeError` on garbage."""
    assert index >= 0, index
    assert term >= 0, term
    spec, now_ms, args = parse_command(data)
    return spec.handler(backend, new_context(index, term, now_ms), args)


def apply_command(backend: KeyValueBackend, data: bytes) -> Result:
    """Apply one encoded command outside a log (index 0, term 0); raises
    `CommandDecodeError` on garbage."""
    return apply_entry(backend, data, 0, 0)


def apply_decoded(backend: KeyValueBackend, command: Command,
                  context: ApplyContext | None = None) -> Result:
    """Apply a decoded command; `context` defaults to index 0, term 0 and the
    command's now_ms (which must then match it)."""
    spec = OPS.get(command.op)
    if spec is None:
        raise CommandDecodeError(f"no handler for op {command.op!r}")
    if len(command.args) not in spec.arguments:
        raise CommandDecodeError(f"{command.op.name}: {len(command.args)} arguments")
    if context is None:
        context = ApplyContext(index=0, term=0, now_ms=command.now_ms)
    assert context.now_ms == command.now_ms, "the context carries the command's clock"
    return spec.handler(backend, context, spec.parse(command.args))


class DictBackend:
    """An in-memory backend for the simulator and tests."""

    def __init__(self) -> None:
        self.data: dict[bytes, Record] = {}

    def get(self, key: bytes) -> Record | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, expire_at_ms: int) -> None:
        self.data[key] = (value, expire_at_ms)

    def delete(self, key: bytes) -> bool:
        return self.data.pop(key, None) is not None
