"""The command dispatcher: arguments in, a reply or a request out, no event loop.

Theory of operation
-------------------
`execute(session, arguments)` looks the command up in `COMMANDS` (name ->
`CommandSpec`: arity, flags, handler), checks arity, authentication, the
`admin` flag and the MULTI state, and calls the handler. A handler returns
a `Reply`: either the encoded bytes (answered now) or a *request* for the
store -- `Write` (a kv command for the shard of its keys), `WriteEach`
(one kv command per shard, results summed by the converter), `Read` (one
or several keys) or `Call` (a service coroutine: SCAN, DBSIZE, CLUSTER
admin) -- together with a converter that turns the store's answer into the
reply bytes. Nothing here touches asyncio: handlers are tested by calling
them and their converters directly (tests/resp/test_dispatch.py); the
asyncio layer (replies.py) submits requests in connection order and keeps
replies in request order.

Every expected failure is a reply with the exact Redis error line and leaves
the connection usable: `CommandError` for ours, `ServiceError` for the
store's. Any other exception is a bug: logged, answered `-ERR internal error`.

MULTI: transactions do not exist yet, so a connection that sends MULTI gets
that refused and every following command refused too (nothing queued,
nothing run) until EXEC (which answers EXECABORT) or DISCARD. A client that
pipelines MULTI ... EXEC (redis-py's `pipeline(transaction=True)`) thus
never sees its writes applied outside a transaction.

Admin commands (flag `admin`, and the CLUSTER subcommands that change the
cluster) need an admin connection: one from a network in the node's
`admin_networks` (loopback by default), or one authenticated with the
node's password.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringbolt.kv.machine import INT64_MAX, INT64_MIN
from ringbolt.server import resp
from ringbolt.server.service import KeyValueService, ServiceError

log = logging.getLogger("ringbolt.server.commands")


class CommandError(Exception):
    """An expected refusal; `str()` is the error line without '-'."""


INTERNAL_ERROR = resp.encode_error("ERR internal error")
NOAUTH = resp.encode_error("NOAUTH Authentication required.")
NOPERM = resp.encode_error(
    "NOPERM this command needs an admin connection: connect from a network in the node's "
    "admin_networks, or AUTH with the node's password")
MULTI_REFUSED = resp.encode_error(
    "ERR MULTI is not supported yet: command refused, nothing queued (send DISCARD or EXEC)")
SYNTAX = "ERR syntax error"
NOT_INTEGER = "ERR value is not an integer or out of range"


class Session:
    """Per-connection state the commands read and change."""

    __slots__ = (
        "service", "registry", "client_id", "address", "name", "protocol", "authenticated",
        "readonly", "closing", "created_ms", "library_name", "library_version", "last_command",
        "pending_writes", "pending_reads", "in_multi", "admin_network",
    )

    def __init__(self, service: KeyValueService, registry: ClientRegistry, client_id: int,
                 address: str) -> None:
        self.service = service
        self.registry = registry
        self.client_id = client_id
        self.address = address
        self.name = b""
        self.protocol = 2
        self.authenticated = service.limits.requirepass is None
        self.readonly = False
        self.closing = False
        self.created_ms = service.now_ms()
        self.library_name = b""
        self.library_version = b""
        self.last_command = b""
        self.pending_writes: list[Any] = []
        self.pending_reads: list[Any] = []
        """This connection's reads and writes still running (futures of the
        asyncio layer): a read waits for the writes before it, a write for
        the reads before it (replies.py)."""
        self.in_multi = False
        """MULTI was sent: refuse everything until EXEC or DISCARD."""
        self.admin_network = service.limits.admin_allowed_from(address)

    @property
    def admin(self) -> bool:
        """May run admin commands (see the module docstring)."""
        return self.admin_network or (
            self.service.limits.requirepass is not None and self.authenticated)


class ClientRegistry:
    """The clients of one server: ids, the session list, counters."""

    def __init__(self, clients_max: int = 10_000) -> None:
        assert clients_max > 0
        self.clients_max = clients_max
        self.sessions: dict[int, Session] = {}
        self._next_id = 1
        self.connections_total = 0
        self.rejected_total = 0
        self.commands_total = 0
        self.pending_peak = 0
        self.protocol_errors_total = 0
        self.internal_errors_total = 0
        self.paused_total = 0
        self.admin_refused_total = 0

    def open(self, service: KeyValueService, address: str) -> Session | None:
        """A new session, or None when `clients_max` are connected."""
        if len(self.sessions) >= self.clients_max:
            self.rejected_total += 1
            return None
        session = Session(service, self, self._next_id, address)
        self._next_id += 1
        self.sessions[session.client_id] = session
        self.connections_total += 1
        return session

    def close(self, session: Session) -> None:
        self.sessions.pop(session.client_id, None)

    def statistics(self) -> dict[str, int]:
        return {
            "connected_clients": len(self.sessions),
            "maxclients": self.clients_max,
            "total_connections_received": self.connections_total,
            "rejected_connections": self.rejected_total,
            "total_commands_processed": self.commands_total,
            "pending_requests_peak": self.pending_peak,
            "protocol_errors": self.protocol_errors_total,
            "internal_errors": self.internal_errors_total,
            "reading_paused": self.paused_total,
            "admin_refused": self.admin_refused_total,
        }


Convert = Callable[[Session, Any, Any], bytes]
"""(session, the store's answer, context) -> reply bytes; may raise CommandError."""


class Write:
    """Replicate `data` (a kv command) in the shard owning `keys`."""

    __slots__ = ("keys", "data", "convert", "context")

    def __init__(self, keys: list[bytes], data: bytes, convert: Convert,
                 context: object = None) -> None:
        self.keys, self.data, self.convert, self.context = keys, data, convert, context


class WriteEach:
    """One kv command per shard (`groups`: keys and command each); the
    converter gets the list of results."""

    __slots__ = ("groups", "convert", "context")

    def __init__(self, groups: list[tuple[list[bytes], bytes]], convert: Convert,
                 context: object = None) -> None:
        self.groups, self.convert, self.context = groups, convert, context


class Read:
    """Linearizable read of one key (`single`: the converter gets its record)
    or of several (it gets the list of records)."""

    __slots__ = ("keys", "single", "convert", "context")

    def __init__(self, keys: list[bytes], convert: Convert, context: object = None, *,
                 single: bool = True) -> None:
        self.keys, self.single, self.convert, self.context = keys, single, convert, context


class Call:
    """A service coroutine (`call(service)`), for the rare commands that need
    several steps (SCAN, DBSIZE, CLUSTER admin)."""

    __slots__ = ("call", "convert", "context")

    def __init__(self, call: Callable[[KeyValueService], Any], convert: Convert,
                 context: object = None) -> None:
        self.call, self.convert, self.context = call, convert, context


Request = Write | WriteEach | Read | Call
Reply = bytes | Request | Any
"""bytes, a `Request`, or (asyncio layer only) a pending reply."""
Handler = Callable[[Session, list[bytes]], Reply]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSpec:
    name: str
    arity: int
    """Redis convention: N > 0 exactly N words with the name; -N at least N."""
    flags: tuple[str, ...]
    handler: Handler
    first_key: int = 0
    last_key: int = 0
    key_step: int = 0

    @property
    def allowed_unauthenticated(self) -> bool:
        return "no-auth" in self.flags


COMMANDS: dict[bytes, CommandSpec] = {}
_MULTI_ENDERS = frozenset({"exec", "discard", "multi", "quit", "reset"})


def execute(session: Session, arguments: list[bytes]) -> Reply:
    """Run one command; never raises for anything a client can send. Checks
    come in Redis' order: unknown command, arity, authentication; then
    admin rights and the MULTI state."""
    assert arguments, "the parser never yields empty commands"
    spec = COMMANDS.get(arguments[0])
    if spec is None:
        spec = COMMANDS.get(arguments[0].upper())
        if spec is None:
            return resp.encode_error(unknown_command_message(arguments))
    session.last_command = arguments[0]
    count = len(arguments)
    if (spec.arity > 0 and count != spec.arity) or count < -spec.arity:
        return resp.encode_error(f"ERR wrong number of arguments for '{spec.name}' command")
    if not session.authenticated and not spec.allowed_unauthenticated:
        return NOAUTH
    if session.in_multi and spec.name not in _MULTI_ENDERS:
        return MULTI_REFUSED
    if "admin" in spec.flags and not session.admin:
        return refuse_admin(session)
    try:
        return spec.handler(session, arguments)
    except Exception as error:  # noqa: BLE001 - every failure becomes a reply
        return failure_reply(session, error, spec.name)


def failure_reply(session: Session, error: Exception, what: str) -> bytes:
    """The reply for a failed command (call inside its `except`): the error
    line of an expected refusal, else a logged bug and `-ERR internal error`."""
    if isinstance(error, (CommandError, ServiceError)):
        return resp.encode_error(str(error))
    log.exception("%s failed", what)
    session.registry.internal_errors_total += 1
    return INTERNAL_ERROR


def refuse_admin(session: Session) -> bytes:
    session.registry.admin_refused_total += 1
    log.warning("admin command %r refused for client %s", session.last_command[:64],
                session.address)
    return NOPERM


def _printable(data: bytes, limit: int) -> str:
    return data[:limit].decode("latin-1").replace("\r", " ").replace("\n", " ")


def printable(data: bytes, limit: int) -> str:
    return _printable(data, limit)


def unknown_command_message(arguments: list[bytes]) -> str:
    shown = ""
    for argument in arguments[1:]:
        if len(shown) >= 128:
            break
        shown += f"'{_printable(argument, 128 - len(shown))}' "
    name = _printable(arguments[0], 128)
    return f"ERR unknown command '{name}', with args beginning with: {shown}"


def command(name: str, arity: int, *flags: str, keys: tuple[int, int, int] = (0, 0, 0)
            ) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        spec = CommandSpec(name=name, arity=arity, flags=flags, handler=handler,
                           first_key=keys[0], last_key=keys[1], key_step=keys[2])
        assert name.encode().upper() not in COMMANDS, f"duplicate command {name}"
        for variant in (name.encode().upper(), name.encode().lower()):
            COMMANDS[variant] = spec
        return handler

    return register


# --- argument parsing ---------------------------------------------------------

_INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")


def parse_integer(raw: bytes, message: str = NOT_INTEGER) -> int:
    """Redis `string2ll`: optional '-', no '+', no spaces, no leading zeros."""
    if _INTEGER.fullmatch(raw) is None:
        raise CommandError(message)
    number = int(raw)
    if not INT64_MIN <= number <= INT64_MAX:
        raise CommandError(message)
    return number


def check_key(session: Session, key: bytes) -> bytes:
    limit = session.service.limits.key_bytes_max
    if len(key) > limit:
        raise CommandError(f"ERR key too large (max {limit} bytes)")
    return key


def check_value(session: Session, value: bytes) -> bytes:
    limit = session.service.limits.value_bytes_max
    if len(value) > limit:
        raise CommandError(f"ERR value too large (max {limit} bytes)")
    return value


def expire_at(session: Session, amount: int, unit_ms: int, absolute: bool, name: str) -> int:
    """Absolute expiry in ms for EX/PX/EXAT/PXAT (and EXPIRE...); never 0,
    which means "no expiry" in the state machine."""
    moment = amount * unit_ms + (0 if absolute else session.service.now_ms())
    if not INT64_MIN <= amount * unit_ms <= INT64_MAX or moment > INT64_MAX:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    return max(moment, 1)


def unknown_subcommand(arguments: list[bytes]) -> Reply:
    name = arguments[0].decode("latin-1").upper()
    sub = arguments[1].decode("latin-1")[:64].replace("\r", " ").replace("\n", " ")
    raise CommandError(f"ERR unknown subcommand or wrong number of arguments for '{sub}'. "
                       f"Try {name} HELP.")
