"""The key-value state machine, one layer for writes and reads.

- `ringbolt.kv.codec`: the envelope ``[CODEC_VERSION, op, now_ms, *args]``;
- `ringbolt.kv.ops`: every operation declared once (`OpSpec` in `OPS`):
  arguments, keys, handler, fast path; `command_keys`, `fast_put`;
- `ringbolt.kv.commands`: the encode helpers and `stamp`;
- `ringbolt.kv.machine`: `apply_entry` / `apply_command`;
- `ringbolt.kv.reads`: what a read answers from a stored record;
- `ringbolt.kv.types`: backend protocol, `ApplyContext`, results.
"""

from ringbolt.kv.commands import stamp
from ringbolt.kv.machine import apply_command, apply_entry
from ringbolt.kv.ops import OPS, OpSpec, command_keys, fast_put, parse_command
from ringbolt.kv.types import ApplyContext, CommandFailed, KeyValueBackend, Result

__all__ = [
    "OPS", "ApplyContext", "CommandFailed", "KeyValueBackend", "OpSpec", "Result",
    "apply_command", "apply_entry", "command_keys", "fast_put", "parse_command", "stamp",
]
