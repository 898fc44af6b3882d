"""The whole command table: the dispatcher with every handler module registered.

Import this (not the handler modules one by one) to see every command the
server answers: `COMMANDS` and the names of the write commands a client
must never retry on an ambiguous failure.
"""

from __future__ import annotations

from ringbolt.server import admin_commands, strings  # noqa: F401 - they register
from ringbolt.server.dispatch import COMMANDS, execute

__all__ = ["COMMANDS", "execute", "write_command_names"]


def write_command_names() -> frozenset[str]:
    """Upper-case names of every registered command with the `write` flag."""
    return frozenset(spec.name.upper() for spec in COMMANDS.values() if "write" in spec.flags)
