"""The command table: what each client command does against a KeyValueService.

Theory of operation
-------------------
`execute(session, arguments)` looks the command up in `COMMANDS` (name ->
`CommandSpec`: arity, flags, handler), checks arity and authentication, and
calls the handler. A handler returns a `Reply`: either the encoded bytes
(answered now) or a `Pending` (a service future plus a function that turns its
result into bytes). The connection keeps replies in request order; nothing
here creates a task per request, except for the rare commands whose service
call is a coroutine (DBSIZE, SCAN).

Writes are encoded with `ringbolt.kv.commands` carrying `service.now_ms()`
and go through `service.submit_write(keys, command)`; their `Result` (see
`ringbolt.kv.machine`) becomes the reply, `CommandFailed` an error. Reads go
through `service.submit_read(key, stale=session.readonly)` and hide values
whose expiry has passed by `service.now_ms()`.

Every expected failure is a reply with the exact Redis error line and leaves
the connection usable: `CommandError` for ours, `ServiceError` for the
store's. Any other exception is a bug: logged, answered `-ERR internal error`.
Connection and introspection commands (HELLO, AUTH, CLIENT, CONFIG, INFO,
COMMAND, CLUSTER) follow the data commands.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ringbolt.kv import commands as kv
from ringbolt.kv.machine import INT64_MAX, INT64_MIN, CommandFailed, Result
from ringbolt.server import resp
from ringbolt.server.service import CrossShard, KeyValueService, ServiceError

log = logging.getLogger(__name__)

ScanResult = tuple[int, list[bytes]]


class CommandError(Exception):
    """An expected refusal; `str()` is the error line without '-'."""


INTERNAL_ERROR = resp.encode_error("ERR internal error")
NOAUTH = resp.encode_error("NOAUTH Authentication required.")
SYNTAX = "ERR syntax error"
NOT_INTEGER = "ERR value is not an integer or out of range"


class Session:
    """Per-connection state the commands read and change."""

    __slots__ = (
        "service", "registry", "client_id", "address", "name", "protocol", "authenticated",
        "readonly", "closing", "created_ms", "library_name", "library_version", "last_command",
        "pending_writes", "pending_reads",
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
        self.pending_writes: list[asyncio.Future[Any]] = []
        self.pending_reads: list[asyncio.Future[Any]] = []
        """This connection's reads and writes still running: a read waits for
        the writes before it, a write for the reads before it (`_in_order`)."""


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
        }


Convert = Callable[[Session, Any, Any], bytes]


class Pending:
    """A reply that waits for a service future."""

    __slots__ = ("future", "convert", "context")

    def __init__(self, future: asyncio.Future[Any], convert: Convert, context: object) -> None:
        self.future = future
        self.convert = convert
        self.context = context

    def reply(self, session: Session) -> bytes:
        assert self.future.done()
        return _resolve(session, self.future, self.convert, self.context)


Reply = bytes | Pending
Handler = Callable[[Session, list[bytes]], Reply]


def _resolve(session: Session, future: asyncio.Future[Any], convert: Convert,
             context: object) -> bytes:
    try:
        result = future.result()
        return convert(session, result, context)
    except (ServiceError, CommandError) as error:
        return resp.encode_error(str(error))
    except asyncio.CancelledError:
        return resp.encode_error("TRYAGAIN request cancelled")
    except Exception:
        log.exception("command failed")
        session.registry.internal_errors_total += 1
        return INTERNAL_ERROR


def defer(session: Session, future: asyncio.Future[Any], convert: Convert,
          context: object = None) -> Reply:
    """The reply now if `future` is already done, else a `Pending`."""
    if future.done():
        return _resolve(session, future, convert, context)
    return Pending(future, convert, context)


def defer_coroutine(session: Session, coroutine: Coroutine[Any, Any, Any], convert: Convert,
                    context: object = None) -> Reply:
    return Pending(asyncio.ensure_future(coroutine), convert, context)


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


def execute(session: Session, arguments: list[bytes]) -> Reply:
    """Run one command; never raises for anything a client can send. Checks
    come in Redis' order: unknown command, arity, authentication."""
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
    try:
        return spec.handler(session, arguments)
    except (CommandError, ServiceError) as error:
        return resp.encode_error(str(error))
    except Exception:
        log.exception("command %r failed", spec.name)
        session.registry.internal_errors_total += 1
        return INTERNAL_ERROR


def _printable(data: bytes, limit: int) -> str:
    return data[:limit].decode("latin-1").replace("\r", " ").replace("\n", " ")


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


def live(session: Session, record: tuple[bytes, int] | None) -> bytes | None:
    if record is None:
        return None
    if record[1] != 0 and record[1] <= session.service.now_ms():
        return None
    return record[0]


# --- result converters (module functions: no closure per request) -----------

def _bulk_or_null(session: Session, result: Result, context: object) -> bytes:
    if isinstance(result, CommandFailed):
        raise CommandError(result.message)
    if result is None:
        return resp.encode_null(session.protocol)
    assert isinstance(result, bytes)
    return resp.encode_bulk(result)


def _read_value(session: Session, record: tuple[bytes, int] | None, context: object) -> bytes:
    value = live(session, record)
    if value is None:
        return resp.encode_null(session.protocol)
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _ok_or_null(session: Session, result: Result, context: object) -> bytes:
    if isinstance(result, CommandFailed):
        raise CommandError(result.message)
    return resp.OK if result else resp.encode_null(session.protocol)


def _ok(session: Session, result: Result, context: object) -> bytes:
    if isinstance(result, CommandFailed):
        raise CommandError(result.message)
    return resp.OK


def _integer(session: Session, result: Result, context: object) -> bytes:
    if isinstance(result, CommandFailed):
        raise CommandError(result.message)
    assert isinstance(result, int)  # bool is an int: True -> 1
    return resp.encode_integer(int(result))


def write(session: Session, keys: list[bytes], data: bytes, convert: Convert,
          context: object = None) -> Reply:
    if session.pending_reads:  # the submit may be deferred: CROSSSHARD now, not later
        session.service.group_of(keys)
    future = _in_order(session, session.pending_reads, session.pending_writes,
                       session.service.submit_write, keys, data)
    return defer(session, future, convert, context)


def read(session: Session, key: bytes) -> asyncio.Future[Any]:
    """Submit a read of `key` once this connection's earlier writes are done,
    so that a pipelined GET sees the SET before it and not a SET after it:
    the commands of one Redis connection take effect in order (replies come
    back in order anyway). Costs nothing when no write is pending."""
    service, stale = session.service, session.readonly
    return _in_order(session, session.pending_writes, session.pending_reads,
                     lambda: service.submit_read(key, stale=stale))


_PRUNE_AT = 64


def _in_order(session: Session, before: list[asyncio.Future[Any]],
              mine: list[asyncio.Future[Any]],
              submit: Callable[..., asyncio.Future[Any]], *args: Any) -> asyncio.Future[Any]:
    """`submit(*args)` now if nothing of the other kind is pending on the
    connection, else once all of it is done; the future joins `mine`. Both
    lists are bounded by the connection's pending-replies bound. (The
    arguments come separately so that a SET, the hot path, builds no
    closure.)"""
    if before:
        before[:] = [future for future in before if not future.done()]
    if len(mine) > _PRUNE_AT:  # amortized: not a list copy per request
        mine[:] = [future for future in mine if not future.done()]
    if not before:
        future = submit(*args)
    else:
        future = asyncio.get_running_loop().create_future()
        waiting = list(before)

        def go(_: asyncio.Future[Any]) -> None:
            if future.done() or not all(f.done() for f in waiting):
                return
            try:
                inner = submit(*args)
            except ServiceError as error:
                future.set_exception(error)
                return
            inner.add_done_callback(lambda done: _copy_future(done, future))

        for prerequisite in waiting:
            prerequisite.add_done_callback(go)
    mine.append(future)
    return future


def _copy_future(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


# --- string commands ------------------------------------------------------------

@command("get", 2, "readonly", "fast", keys=(1, 1, 1))
def _get(session: Session, arguments: list[bytes]) -> Reply:
    key = check_key(session, arguments[1])
    future = read(session, key)
    return defer(session, future, _read_value)


@command("set", -3, "write", keys=(1, 1, 1))
def _set(session: Session, arguments: list[bytes]) -> Reply:
    key, value = check_key(session, arguments[1]), check_value(session, arguments[2])
    condition = kv.PutCondition.ALWAYS
    expire_at_ms = 0
    return_old = False
    seen: set[bytes] = set()
    index = 3
    while index < len(arguments):
        option = arguments[index].upper()
        if option in seen and option not in (b"GET",):
            raise CommandError(SYNTAX)
        seen.add(option)
        if option == b"NX" and b"XX" not in seen:
            condition = kv.PutCondition.IF_ABSENT
        elif option == b"XX" and b"NX" not in seen:
            condition = kv.PutCondition.IF_PRESENT
        elif option == b"GET":
            return_old = True
        elif option == b"KEEPTTL":
            raise CommandError("ERR KEEPTTL is not supported")
        elif option in _EXPIRY_UNITS and index + 1 < len(arguments) and len(seen & _EXPIRY_SET) == 1:
            unit_ms, absolute = _EXPIRY_UNITS[option]
            amount = parse_integer(arguments[index + 1])
            if amount <= 0:
                raise CommandError("ERR invalid expire time in 'set' command")
            expire_at_ms = expire_at(session, amount, unit_ms, absolute, "set")
            index += 1
        else:
            raise CommandError(SYNTAX)
        index += 1
    data = kv.put(key, value, now_ms=session.service.now_ms(), expire_at_ms=expire_at_ms,
                  condition=condition, return_old=return_old)
    return write(session, [key], data, _bulk_or_null if return_old else _ok_or_null)


_EXPIRY_UNITS = {b"EX": (1000, False), b"PX": (1, False), b"EXAT": (1000, True), b"PXAT": (1, True)}
_EXPIRY_SET = frozenset(_EXPIRY_UNITS)


@command("setnx", 3, "write", "fast", keys=(1, 1, 1))
def _setnx(session: Session, arguments: list[bytes]) -> Reply:
    key, value = check_key(session, arguments[1]), check_value(session, arguments[2])
    data = kv.put(key, value, now_ms=session.service.now_ms(),
                  condition=kv.PutCondition.IF_ABSENT)
    return write(session, [key], data, _integer)


def _set_with_expiry(session: Session, arguments: list[bytes], *, unit_ms: int,
                     name: str) -> Reply:
    """SETEX / PSETEX key amount value."""
    key, value = check_key(session, arguments[1]), check_value(session, arguments[3])
    amount = parse_integer(arguments[2])
    if amount <= 0:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    data = kv.put(key, value, now_ms=session.service.now_ms(),
                  expire_at_ms=expire_at(session, amount, unit_ms, False, name))
    return write(session, [key], data, _ok)


for _name, _unit_ms in (("setex", 1000), ("psetex", 1)):
    command(_name, 4, "write", keys=(1, 1, 1))(
        functools.partial(_set_with_expiry, unit_ms=_unit_ms, name=_name))


@command("getset", 3, "write", "fast", keys=(1, 1, 1))
def _getset(session: Session, arguments: list[bytes]) -> Reply:
    key, value = check_key(session, arguments[1]), check_value(session, arguments[2])
    return write(session, [key], kv.getset(key, value, now_ms=session.service.now_ms()),
                 _bulk_or_null)


@command("del", -2, "write", keys=(1, -1, 1))
def _del(session: Session, arguments: list[bytes]) -> Reply:
    """Keys of one shard are deleted atomically; keys of several shards are
    deleted shard by shard (one write each, concurrently) and the counts
    added -- not atomic across shards (docs/protocol.md)."""
    keys = [check_key(session, key) for key in arguments[1:]]
    service = session.service
    now_ms = service.now_ms()
    try:
        return write(session, keys, kv.delete(*keys, now_ms=now_ms), _integer)
    except CrossShard:
        pass
    by_shard: dict[int, list[bytes]] = {}
    for key in keys:
        by_shard.setdefault(service.group_of([key]), []).append(key)
    deleted = _in_order(session, session.pending_reads, session.pending_writes, lambda: _gathered(
        [service.submit_write(group, kv.delete(*group, now_ms=now_ms))
         for group in by_shard.values()]))
    return defer(session, deleted, _deleted_sum)


def _deleted_sum(session: Session, results: list[Result], context: object) -> bytes:
    for result in results:
        if isinstance(result, CommandFailed):
            raise CommandError(result.message)
    return resp.encode_integer(sum(int(r) for r in results if isinstance(r, int)))


COMMANDS[b"UNLINK"] = COMMANDS[b"unlink"] = CommandSpec(
    name="unlink", arity=-2, flags=("write", "fast"), handler=_del,
    first_key=1, last_key=-1, key_step=1)


def _gathered(futures: list[asyncio.Future[Any]]) -> asyncio.Future[Any]:
    if all(future.done() for future in futures):
        loop = futures[0].get_loop()
        done: asyncio.Future[Any] = loop.create_future()
        if any(future.cancelled() for future in futures):
            done.cancel()
            return done
        errors = [error for f in futures if not f.cancelled() and (error := f.exception())]
        if errors:
            done.set_exception(errors[0])
        else:
            done.set_result([future.result() for future in futures])
        return done
    return asyncio.gather(*futures, return_exceptions=False)


def _reads(session: Session, keys: list[bytes]) -> asyncio.Future[Any]:
    return _gathered([read(session, check_key(session, key)) for key in keys])


def _mget_reply(session: Session, records: list[tuple[bytes, int] | None], context: object
                ) -> bytes:
    return resp.encode_bulk_array([live(session, record) for record in records], session.protocol)


def _exists_reply(session: Session, records: list[tuple[bytes, int] | None], context: object
                  ) -> bytes:
    return resp.encode_integer(sum(live(session, record) is not None for record in records))


@command("mget", -2, "readonly", "fast", keys=(1, -1, 1))
def _mget(session: Session, arguments: list[bytes]) -> Reply:
    return defer(session, _reads(session, arguments[1:]), _mget_reply)


@command("exists", -2, "readonly", "fast", keys=(1, -1, 1))
def _exists(session: Session, arguments: list[bytes]) -> Reply:
    return defer(session, _reads(session, arguments[1:]), _exists_reply)


@command("mset", -3, "write", keys=(1, -1, 2))
def _mset(session: Session, arguments: list[bytes]) -> Reply:
    if len(arguments) % 2 == 0:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    pairs = [(check_key(session, arguments[i]), check_value(session, arguments[i + 1]))
             for i in range(1, len(arguments), 2)]
    keys = [key for key, _ in pairs]
    return write(session, keys, kv.mput(pairs, now_ms=session.service.now_ms()), _ok)


def _incrby(session: Session, arguments: list[bytes], *, sign: int) -> Reply:
    """INCR/DECR (sign +1/-1, no delta argument) and INCRBY/DECRBY."""
    key = check_key(session, arguments[1])
    delta = parse_integer(arguments[2]) if len(arguments) == 3 else 1
    if sign < 0 and delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    command_data = kv.incrby(key, sign * delta, now_ms=session.service.now_ms())
    return write(session, [key], command_data, _integer)


for _name, _arity, _sign in (("incr", 2, 1), ("decr", 2, -1), ("incrby", 3, 1), ("decrby", 3, -1)):
    command(_name, _arity, "write", "fast", keys=(1, 1, 1))(
        functools.partial(_incrby, sign=_sign))


@command("append", 3, "write", "fast", keys=(1, 1, 1))
def _append(session: Session, arguments: list[bytes]) -> Reply:
    key, suffix = check_key(session, arguments[1]), check_value(session, arguments[2])
    return write(session, [key], kv.append(key, suffix, now_ms=session.service.now_ms()), _integer)


def _strlen_reply(session: Session, record: tuple[bytes, int] | None, context: object) -> bytes:
    value = live(session, record)
    return resp.encode_integer(0 if value is None else len(value))


@command("strlen", 2, "readonly", "fast", keys=(1, 1, 1))
def _strlen(session: Session, arguments: list[bytes]) -> Reply:
    future = read(session, check_key(session, arguments[1]))
    return defer(session, future, _strlen_reply)


def _type_reply(session: Session, record: tuple[bytes, int] | None, context: object) -> bytes:
    return b"+none\r\n" if live(session, record) is None else b"+string\r\n"


@command("type", 2, "readonly", "fast", keys=(1, 1, 1))
def _type(session: Session, arguments: list[bytes]) -> Reply:
    future = read(session, check_key(session, arguments[1]))
    return defer(session, future, _type_reply)


# --- expiry ---------------------------------------------------------------------

def _expire(session: Session, arguments: list[bytes], *, unit_ms: int, absolute: bool,
            name: str) -> Reply:
    key = check_key(session, arguments[1])
    amount = parse_integer(arguments[2])
    if len(arguments) > 3:
        raise CommandError(f"ERR unsupported option {_printable(arguments[3], 32)}")
    moment = expire_at(session, amount, unit_ms, absolute, name)
    return write(session, [key], kv.expire(key, moment, now_ms=session.service.now_ms()), _integer)


for _name, _unit_ms, _absolute in (("expire", 1000, False), ("pexpire", 1, False),
                                     ("expireat", 1000, True), ("pexpireat", 1, True)):
    command(_name, -3, "write", "fast", keys=(1, 1, 1))(
        functools.partial(_expire, unit_ms=_unit_ms, absolute=_absolute, name=_name))


@command("persist", 2, "write", "fast", keys=(1, 1, 1))
def _persist(session: Session, arguments: list[bytes]) -> Reply:
    key = check_key(session, arguments[1])
    return write(session, [key], kv.expire(key, 0, now_ms=session.service.now_ms()), _integer)


def _ttl_reply(session: Session, record: tuple[bytes, int] | None, unit_ms: object) -> bytes:
    assert isinstance(unit_ms, int)
    if live(session, record) is None:
        return resp.encode_integer(-2)
    assert record is not None
    if record[1] == 0:
        return resp.encode_integer(-1)
    remaining_ms = record[1] - session.service.now_ms()
    return resp.encode_integer((remaining_ms + unit_ms // 2) // unit_ms)


def _ttl(session: Session, arguments: list[bytes], *, unit_ms: int) -> Reply:
    future = read(session, check_key(session, arguments[1]))
    return defer(session, future, _ttl_reply, unit_ms)


command("ttl", 2, "readonly", "fast", keys=(1, 1, 1))(functools.partial(_ttl, unit_ms=1000))
command("pttl", 2, "readonly", "fast", keys=(1, 1, 1))(functools.partial(_ttl, unit_ms=1))


# --- ringbolt extension: compare-and-swap -------------------------------------------

@command("cas", -3, "write", "fast", keys=(1, 1, 1))
def _cas(session: Session, arguments: list[bytes]) -> Reply:
    """CAS key expected new -> 1 if the live value equalled `expected` and was
    replaced; CAS key new -> 1 if the key was absent and is now set; else 0."""
    if len(arguments) > 4:
        raise CommandError("ERR wrong number of arguments for 'cas' command")
    key = check_key(session, arguments[1])
    expected = check_value(session, arguments[2]) if len(arguments) == 4 else None
    new = check_value(session, arguments[-1])
    return write(session, [key], kv.cas(key, expected, new, now_ms=session.service.now_ms()),
                 _integer)


# --- keyspace -------------------------------------------------------------------------

SCAN_COUNT_MAX = 10_000
"""Keys one SCAN call may ask a service for (bounds the reply and the work)."""


def _dbsize_reply(session: Session, count: int, context: object) -> bytes:
    return resp.encode_integer(count)


@command("dbsize", 1, "readonly", "fast")
def _dbsize(session: Session, arguments: list[bytes]) -> Reply:
    return defer_coroutine(session, session.service.dbsize(), _dbsize_reply)


def _scan_reply(session: Session, result: ScanResult, context: object) -> bytes:
    cursor, keys = result
    match, type_ok = context if isinstance(context, tuple) else (None, True)
    if not type_ok:
        keys = []
    elif match is not None:
        keys = [key for key in keys if match(key)]
    return b"*2\r\n" + resp.encode_bulk(b"%d" % cursor) + resp.encode_bulk_array(keys, 2)


@command("scan", -2, "readonly")
def _scan(session: Session, arguments: list[bytes]) -> Reply:
    cursor_text = arguments[1]
    if not cursor_text.isdigit() or int(cursor_text) >= 1 << 64:
        raise CommandError("ERR invalid cursor")
    count, match, type_ok = 10, None, True
    index = 2
    while index < len(arguments):
        option = arguments[index].upper()
        if index + 1 >= len(arguments):
            raise CommandError(SYNTAX)
        value = arguments[index + 1]
        if option == b"COUNT":
            count = parse_integer(value)
            if count < 1:
                raise CommandError(SYNTAX)
        elif option == b"MATCH":
            match = None if value == b"*" else compile_glob(value)
        elif option == b"TYPE":
            type_ok = value.lower() == b"string"
        else:
            raise CommandError(SYNTAX)
        index += 2
    coroutine = session.service.scan(int(cursor_text), min(count, SCAN_COUNT_MAX))
    return defer_coroutine(session, coroutine, _scan_reply, (match, type_ok))


# --- Redis glob patterns (SCAN MATCH) -------------------------------------------------

_ANY_BYTE = frozenset(range(256))
GlobToken = frozenset[int] | None  # None is '*'


def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """Redis `stringmatchlen` semantics: * ? [abc] [^a-z] and backslash
    escapes. Matching is O(len(pattern) * len(key)), never exponential."""
    tokens: list[GlobToken] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == 0x2A:  # '*'
            if not tokens or tokens[-1] is not None:
                tokens.append(None)
        elif char == 0x3F:  # '?'
            tokens.append(_ANY_BYTE)
        elif char == 0x5B:  # '['
            index = _glob_class(pattern, index + 1, tokens)
        elif char == 0x5C and index + 1 < len(pattern):  # backslash
            index += 1
            tokens.append(frozenset((pattern[index],)))
        else:
            tokens.append(frozenset((char,)))
        index += 1
    return functools.partial(_glob_match, tokens)


def _glob_class(pattern: bytes, index: int, tokens: list[GlobToken]) -> int:
    negate = index < len(pattern) and pattern[index] == 0x5E  # '^'
    index += negate
    members: set[int] = set()
    while index < len(pattern) and pattern[index] != 0x5D:  # ']'
        if pattern[index] == 0x5C and index + 1 < len(pattern):
            index += 1
            members.add(pattern[index])
        elif index + 2 < len(pattern) and pattern[index + 1] == 0x2D and pattern[index + 2] != 0x5D:
            low, high = sorted((pattern[index], pattern[index + 2]))
            members.update(range(low, high + 1))
            index += 2
        else:
            members.add(pattern[index])
        index += 1
    tokens.append(_ANY_BYTE - members if negate else frozenset(members))
    return index  # at ']' (or past the end when unterminated, like Redis)


def _glob_match(tokens: list[GlobToken], key: bytes) -> bool:
    token_index = key_index = 0
    star_token, star_key = -1, 0
    while key_index < len(key):
        if token_index < len(tokens):
            token = tokens[token_index]
            if token is None:
                star_token, star_key = token_index, key_index
                token_index += 1
                continue
            if key[key_index] in token:
                token_index += 1
                key_index += 1
                continue
        if star_token < 0:
            return False
        star_key += 1
        key_index = star_key
        token_index = star_token + 1
    return all(token is None for token in tokens[token_index:])
