"""What the key-value state machine applies to, is given, and returns.

Theory of operation
-------------------
A command is applied to a `KeyValueBackend` (a dict in the simulator and
tests, an LMDB write-transaction overlay on a node) holding `Record`s
``(value, expire_at_ms)`` with 0 meaning "no expiry". Its handler is given
an `ApplyContext`: the index and term of the log entry that carries the
command, and the command's `now_ms` (the proposing leader's clock). Nothing
else may influence the result, so every replica computes the same one.

A user-visible refusal (INCR on a value that is not an integer) is a
`CommandFailed` result and changes nothing; replicas agree on that too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Record = tuple[bytes, int]
"""(value, expire_at_ms), expire_at_ms 0 meaning "no expiry"."""


class KeyValueBackend(Protocol):
    def get(self, key: bytes) -> Record | None:
        """(value, expire_at_ms) with 0 meaning "no expiry", or None."""
        ...

    def put(self, key: bytes, value: bytes, expire_at_ms: int) -> None: ...

    def delete(self, key: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """A deterministic, user-visible refusal (Redis-style message without '-')."""

    message: str


Result = bytes | int | bool | None | list[object] | CommandFailed


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyContext:
    """Where a command is applied: its log entry and the leader's clock.

    `index` and `term` are 0 when the command is applied outside a log (a
    single-node test backend, `apply_command` without an entry)."""

    index: int
    term: int
    now_ms: int

    def __post_init__(self) -> None:
        assert self.index >= 0, self.index
        assert self.term >= 0, self.term


# The apply loop builds one context per general-path entry: through the slot
# descriptors that costs a quarter of the frozen dataclass's generated
# __init__ (keyword parsing, object.__setattr__ per field, __post_init__).
# Valid only while ApplyContext has exactly these fields, asserted here.
assert list(ApplyContext.__dataclass_fields__) == ["index", "term", "now_ms"]
_new_object = object.__new__
_set_index, _set_term, _set_now_ms = (
    getattr(ApplyContext, name).__set__ for name in ("index", "term", "now_ms"))


def new_context(index: int, term: int, now_ms: int) -> ApplyContext:
    """`ApplyContext(index=index, term=term, now_ms=now_ms)`, faster; the
    caller vouches for index >= 0 and term >= 0 (a log entry's)."""
    context = _new_object(ApplyContext)
    _set_index(context, index)
    _set_term(context, term)
    _set_now_ms(context, now_ms)
    return context
