"""One client connection: pipelined, bounded, answered in order.

Theory of operation
-------------------
`ClientConnection` is an `asyncio.Protocol`. `data_received` feeds the
sans-I/O `RequestParser` and executes every complete command at once
(`commands.execute`). A reply is either bytes or a `Pending` (a service
future); replies leave in request order: while the head of the queue waits,
later replies queue behind it, and a done-callback on each pending future
drains the head as far as it can with ONE `transport.write`. Futures that are
already resolved (LocalService, cached reads) are answered without queueing.
There is no task per request.

Bounds: at most `pending_requests_max` replies wait per connection; past it
the connection stops taking commands out of the parser and pauses reading
until the queue is back under half. The parser caps buffered input; when the
socket's write buffer fills (the client does not read), reading pauses too.
A protocol error is answered after every earlier reply, then the connection
closes; no exception from a client's bytes escapes this class.

This module also holds the connection-level and introspection commands
(HELLO, AUTH, CLIENT, RESET, INFO, CONFIG, COMMAND, CLUSTER, PING...).
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any, cast

from ringbolt.server import resp
from ringbolt.server.commands import (
    COMMANDS,
    SYNTAX,
    ClientRegistry,
    CommandError,
    Pending,
    Reply,
    Session,
    command,
    compile_glob,
    defer_coroutine,
    execute,
    parse_integer,
)
from ringbolt.server.service import KeyValueService, ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    pending_requests_max: int = 1_024
    """Replies one connection may owe before it stops reading."""
    write_batch_bytes: int = 256 * 1024
    """Replies are gathered up to this size before one transport.write."""
    parser: resp.ParserLimits = resp.DEFAULT_LIMITS
    parser_unauthenticated: resp.ParserLimits = resp.UNAUTHENTICATED_LIMITS
    """Caps before AUTH (when the service requires a password); until then
    requests are also parsed one at a time, so AUTH lifts them for the next."""

    def __post_init__(self) -> None:
        assert self.pending_requests_max >= 2
        assert self.write_batch_bytes > 0


DEFAULT_CONNECTION_LIMITS = ConnectionLimits()
MAX_CLIENTS_ERROR = resp.encode_error("ERR max number of clients reached")


class ClientConnection(asyncio.Protocol):
    def __init__(self, service: KeyValueService, registry: ClientRegistry,
                 limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS) -> None:
        self._service = service
        self._registry = registry
        self._limits = limits
        self._parser = resp.RequestParser(limits.parser)
        self._queue: collections.deque[Reply] = collections.deque()
        # Commands taken from the parser but not yet executed (the socket's
        # write buffer filled up in the middle of a batch).
        self._backlog: list[list[bytes]] = []
        self._transport: asyncio.Transport | None = None
        self._session: Session | None = None
        self._paused_for_queue = False
        self._paused_for_writes = False
        self._closing = False
        self._eof = False
        self._parser_authenticated = True
        self.commands_total = 0
        self.pending_peak = 0

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._session = self._registry.open(self._service, address)
        if self._session is None:
            self._transport.write(MAX_CLIENTS_ERROR)
            self._close()
        elif not self._session.authenticated:
            self._update_parser_limits(self._session)

    def connection_lost(self, error: Exception | None) -> None:
        self._closing = True
        for reply in self._queue:
            if type(reply) is Pending:  # nobody will read these outcomes now
                reply.future.add_done_callback(_forget_outcome)
        self._queue.clear()
        self._backlog = []
        if self._session is not None:
            self._registry.close(self._session)
            self._session = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed(data)
        except resp.ProtocolError as error:
            self._protocol_error(error)
            return
        self._process()

    def eof_received(self) -> bool:
        """The client half-closed: answer everything it sent, then close."""
        self._eof = True
        self._process()
        return True  # we close the transport ourselves once answered

    def pause_writing(self) -> None:
        self._paused_for_writes = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_for_writes = False
        self._update_reading()
        if not self._closing:
            self._process()

    def statistics(self) -> dict[str, int]:
        return {
            "commands_total": self.commands_total,
            "pending_requests": len(self._queue),
            "pending_requests_peak": self.pending_peak,
            "buffered_request_bytes": self._parser.buffered_bytes(),
        }

    # --- the pipeline -------------------------------------------------------------

    def _process(self) -> None:
        """Execute buffered commands while the queue and the socket allow."""
        session = self._session
        if session is None or self._transport is None:
            return
        queue = self._queue
        out: list[bytes] = []
        out_bytes = 0
        limit_bytes = self._limits.write_batch_bytes
        input_empty = False
        executed = 0
        while not (self._closing or self._paused_for_writes):
            room = self._limits.pending_requests_max - len(queue)
            if room <= 0:
                break
            if not self._parser_authenticated:
                room = 1  # AUTH must change the caps before the next request is parsed
            batch, self._backlog = self._backlog, []
            if not batch:
                try:
                    batch = self._parser.commands(room)
                except resp.ProtocolError as error:
                    self._flush(out)
                    self._protocol_error(error)
                    return
            if not batch:
                input_empty = True
                break
            for index, arguments in enumerate(batch):
                if self._paused_for_writes:  # the client is not reading: stop here
                    self._backlog = batch[index:]
                    break
                executed += 1
                reply = execute(session, arguments)
                if session.authenticated is not self._parser_authenticated:
                    self._update_parser_limits(session)
                if type(reply) is not bytes:
                    assert type(reply) is Pending
                    if queue or not reply.future.done():
                        self._enqueue(reply)
                        continue
                    reply = reply.reply(session)
                if queue:
                    self._enqueue(reply)
                else:
                    out.append(reply)
                    out_bytes += len(reply)
                if session.closing:
                    self._closing = True
                    break
                if out_bytes >= limit_bytes:
                    self._flush(out)  # may call pause_writing()
                    out_bytes = 0
        self.commands_total += executed
        self._registry.commands_total += executed
        self._flush(out)
        if not queue and (self._closing or (self._eof and input_empty)):
            self._close()
        self._update_reading()

    def _update_parser_limits(self, session: Session) -> None:
        self._parser_authenticated = session.authenticated
        self._parser.set_limits(self._limits.parser if session.authenticated
                                else self._limits.parser_unauthenticated)

    def _enqueue(self, reply: Reply) -> None:
        queue = self._queue
        queue.append(reply)
        if type(reply) is Pending:
            reply.future.add_done_callback(self._on_reply_ready)
        if len(queue) > self.pending_peak:
            self.pending_peak = len(queue)
            if self.pending_peak > self._registry.pending_peak:
                self._registry.pending_peak = self.pending_peak

    def _on_reply_ready(self, future: asyncio.Future[Any]) -> None:
        if self._session is not None:
            self._drain()

    def _drain(self) -> None:
        """Write every reply at the head of the queue that is ready."""
        queue = self._queue
        session = self._session
        assert session is not None
        out: list[bytes] = []
        while queue:
            head = queue[0]
            if type(head) is Pending:
                if not head.future.done():
                    break
                out.append(head.reply(session))
            else:
                assert type(head) is bytes
                out.append(head)
            queue.popleft()
        self._flush(out)
        if self._closing:
            if not queue:
                self._close()
        elif (self._eof and not queue) or (
                self._paused_for_queue and len(queue) <= self._limits.pending_requests_max // 2):
            self._process()

    def _flush(self, out: list[bytes]) -> None:
        if not out or self._transport is None:
            return
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        queue_full = len(self._queue) >= self._limits.pending_requests_max
        if queue_full and not self._paused_for_queue:
            self._registry.paused_total += 1
        self._paused_for_queue = queue_full or (
            self._paused_for_queue and len(self._queue) > self._limits.pending_requests_max // 2)
        should_pause = self._paused_for_queue or self._paused_for_writes or self._closing
        if should_pause and transport.is_reading():
            transport.pause_reading()
        elif not should_pause and not transport.is_reading():
            transport.resume_reading()

    def _protocol_error(self, error: resp.ProtocolError) -> None:
        self._registry.protocol_errors_total += 1
        self._closing = True
        self._queue.append(resp.encode_error(str(error)))
        if len(self._queue) == 1:
            self._drain()
        self._update_reading()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


def _forget_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # mark it retrieved: no "never retrieved" warning


async def serve_clients(service: KeyValueService, host: str, port: int, *,
                        registry: ClientRegistry | None = None,
                        limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
                        backlog: int = 1024) -> asyncio.Server:
    """Listen for RESP clients on host:port (port 0 picks a free one)."""
    clients = registry if registry is not None else ClientRegistry()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: ClientConnection(service, clients, limits),
                                    host, port, backlog=backlog, reuse_address=True)


# --- connection commands ------------------------------------------------------------

@command("ping", -1, "fast", "stale")
def _ping(session: Session, arguments: list[bytes]) -> Reply:
    if len(arguments) > 2:
        raise CommandError("ERR wrong number of arguments for 'ping' command")
    return resp.PONG if len(arguments) == 1 else resp.encode_bulk(arguments[1])


@command("echo", 2, "fast", "stale")
def _echo(session: Session, arguments: list[bytes]) -> Reply:
    return resp.encode_bulk(arguments[1])


@command("quit", -1, "fast", "no-auth", "stale")
def _quit(session: Session, arguments: list[bytes]) -> Reply:
    session.closing = True
    return resp.OK


@command("select", 2, "fast", "stale")
def _select(session: Session, arguments: list[bytes]) -> Reply:
    if parse_integer(arguments[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    return resp.OK


@command("readonly", 1, "fast", "stale")
def _readonly(session: Session, arguments: list[bytes]) -> Reply:
    session.readonly = True
    return resp.OK


@command("readwrite", 1, "fast", "stale")
def _readwrite(session: Session, arguments: list[bytes]) -> Reply:
    session.readonly = False
    return resp.OK


@command("time", 1, "fast", "stale")
def _time(session: Session, arguments: list[bytes]) -> Reply:
    seconds, milliseconds = divmod(session.service.now_ms(), 1000)
    return resp.encode_bulk_array([b"%d" % seconds, b"%d" % (milliseconds * 1000)], 2)


def _authenticate(session: Session, user: bytes, password: bytes) -> bool:
    expected = session.service.limits.requirepass
    if user != b"default":
        return False
    if expected is not None and not hmac.compare_digest(password, expected.encode()):
        return False
    session.authenticated = True
    return True


@command("auth", -2, "fast", "no-auth", "stale")
def _auth(session: Session, arguments: list[bytes]) -> Reply:
    if len(arguments) > 3:
        raise CommandError(SYNTAX)
    if len(arguments) == 2 and session.service.limits.requirepass is None:
        raise CommandError(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?")
    user = arguments[1] if len(arguments) == 3 else b"default"
    if not _authenticate(session, user, arguments[-1]):
        raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    return resp.OK


def _check_client_name(name: bytes) -> bytes:
    if any(byte <= 0x20 or byte >= 0x7F for byte in name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters.")
    return name


@command("hello", -1, "fast", "no-auth", "stale")
def _hello(session: Session, arguments: list[bytes]) -> Reply:
    protocol = session.protocol
    if len(arguments) > 1:
        protocol = parse_integer(
            arguments[1], "ERR Protocol version is not an integer or out of range")
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    index, name = 2, None
    while index < len(arguments):
        option = arguments[index].upper()
        if option == b"AUTH" and index + 2 < len(arguments):
            if not _authenticate(session, arguments[index + 1], arguments[index + 2]):
                raise CommandError(
                    "WRONGPASS invalid username-password pair or user is disabled.")
            index += 3
        elif option == b"SETNAME" and index + 1 < len(arguments):
            name = _check_client_name(arguments[index + 1])
            index += 2
        else:
            option_text = arguments[index].decode("latin-1")[:64]
            raise CommandError(f"ERR Syntax error in HELLO option '{option_text}'")
    if not session.authenticated:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise "
            "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
            "client and select the RESP protocol version at the same time")
    session.protocol = protocol
    if name is not None:
        session.name = name
    reply = {"server": "ringbolt", "version": "7.0.0", "proto": protocol,
             "id": session.client_id, "mode": "standalone", "role": "master", "modules": []}
    return resp.encode_value(reply, protocol)


@command("reset", 1, "fast", "no-auth", "stale")
def _reset(session: Session, arguments: list[bytes]) -> Reply:
    session.protocol = 2
    session.name = b""
    session.readonly = False
    session.authenticated = session.service.limits.requirepass is None
    return b"+RESET\r\n"


def _client_line(session: Session, now_ms: int) -> str:
    return (f"id={session.client_id} addr={session.address} "
            f"name={session.name.decode('latin-1')} age={(now_ms - session.created_ms) // 1000} "
            f"db=0 flags={'R' if session.readonly else 'N'} "
            f"cmd={session.last_command.decode('latin-1').lower()} user=default "
            f"resp={session.protocol} lib-name={session.library_name.decode('latin-1')} "
            f"lib-ver={session.library_version.decode('latin-1')}\n")


@command("client", -2, "stale")
def _client(session: Session, arguments: list[bytes]) -> Reply:
    sub = arguments[1].upper()
    count = len(arguments)
    if sub == b"ID" and count == 2:
        return resp.encode_integer(session.client_id)
    if sub == b"GETNAME" and count == 2:
        return resp.encode_bulk(session.name) if session.name else resp.encode_null(
            session.protocol)
    if sub == b"SETNAME" and count == 3:
        session.name = _check_client_name(arguments[2])
        return resp.OK
    if sub == b"SETINFO" and count == 4:
        attribute = arguments[2].upper()
        if attribute == b"LIB-NAME":
            session.library_name = _check_client_name(arguments[3])
        elif attribute == b"LIB-VER":
            session.library_version = _check_client_name(arguments[3])
        else:
            raise CommandError(f"ERR Unrecognized option '{arguments[2].decode('latin-1')}'")
        return resp.OK
    now_ms = session.service.now_ms()
    if sub == b"INFO" and count == 2:
        return resp.encode_value(resp.Verbatim(_client_line(session, now_ms)), session.protocol)
    if sub == b"LIST":
        sessions = list(session.registry.sessions.values())[:10_000]
        text = "".join(_client_line(other, now_ms) for other in sessions)
        return resp.encode_value(resp.Verbatim(text), session.protocol)
    if sub in (b"NO-EVICT", b"NO-TOUCH") and count == 3:
        return resp.OK
    return _unknown_subcommand(arguments)


def _unknown_subcommand(arguments: list[bytes]) -> Reply:
    name = arguments[0].decode("latin-1").upper()
    sub = arguments[1].decode("latin-1")[:64].replace("\r", " ").replace("\n", " ")
    raise CommandError(f"ERR unknown subcommand or wrong number of arguments for '{sub}'. "
                       f"Try {name} HELP.")


# --- introspection --------------------------------------------------------------------------

def _plain(value: object, depth: int = 0) -> object:
    """A cluster/INFO value reduced to what the RESP encoder accepts."""
    if depth > 8:
        return str(value)
    if isinstance(value, dict):
        return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item, depth + 1) for item in value]
    if value is None or isinstance(value, (bytes, str, int, float)):
        return value
    return str(value)


def _info_text(session: Session, wanted: set[str]) -> str:
    sections: dict[str, dict[str, object]] = dict(session.service.info())
    sections["clients"] = {**sections.get("clients", {}), **session.registry.statistics()}
    everything = not wanted or wanted & {"all", "everything", "default"}
    lines: list[str] = []
    for name, fields in sections.items():
        if not everything and name.lower() not in wanted:
            continue
        if lines:
            lines.append("")
        lines.append(f"# {name.capitalize()}")
        for key, value in fields.items():
            if isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in value.items())
            lines.append(f"{key}:{value}".replace("\r", " ").replace("\n", " "))
    return "\r\n".join(lines) + "\r\n"


@command("info", -1, "stale")
def _info(session: Session, arguments: list[bytes]) -> Reply:
    wanted = {argument.decode("latin-1").lower() for argument in arguments[1:]}
    return resp.encode_value(resp.Verbatim(_info_text(session, wanted)), session.protocol)


def _config_parameters(session: Session) -> dict[str, str]:
    limits = session.service.limits
    return {
        "appendonly": "no", "save": "", "databases": "1", "maxmemory": "0", "timeout": "0",
        "maxclients": str(session.registry.clients_max),
        "proto-max-bulk-len": str(limits.value_bytes_max),
        "ringbolt-key-bytes-max": str(limits.key_bytes_max),
        "ringbolt-value-bytes-max": str(limits.value_bytes_max),
    }


@command("config", -2, "admin", "stale")
def _config(session: Session, arguments: list[bytes]) -> Reply:
    sub = arguments[1].upper()
    if sub == b"GET" and len(arguments) >= 3:
        parameters = _config_parameters(session)
        found: dict[str, str] = {}
        for pattern in arguments[2:]:
            match = compile_glob(pattern.lower())
            found.update((k, v) for k, v in parameters.items() if match(k.encode()))
        return resp.encode_value(found, session.protocol)
    if sub == b"SET" and len(arguments) >= 4:
        raise CommandError("ERR CONFIG SET is not supported: ringbolt is configured by its "
                           "node configuration file")
    if sub == b"RESETSTAT" and len(arguments) == 2:
        return resp.OK
    return _unknown_subcommand(arguments)


def _command_info(name: str) -> list[object]:
    spec = COMMANDS[name.encode()]
    flags = {resp.SimpleString(flag) for flag in spec.flags}
    return [spec.name, spec.arity, flags, spec.first_key, spec.last_key, spec.key_step,
            [], [], [], []]


@command("command", -1, "stale")
def _command(session: Session, arguments: list[bytes]) -> Reply:
    names = sorted({spec.name for spec in COMMANDS.values()})
    if len(arguments) == 1:
        return resp.encode_value([_command_info(name) for name in names], session.protocol)
    sub = arguments[1].upper()
    if sub == b"COUNT" and len(arguments) == 2:
        return resp.encode_integer(len(names))
    if sub == b"DOCS":
        return resp.encode_value({}, session.protocol)
    if sub == b"LIST" and len(arguments) == 2:
        return resp.encode_value(names, session.protocol)
    if sub == b"INFO":
        wanted = [argument.decode("latin-1").lower() for argument in arguments[2:]]
        return resp.encode_value(
            [_command_info(name) if name.encode() in COMMANDS else None for name in wanted],
            session.protocol)
    return _unknown_subcommand(arguments)


def _cluster_nodes_text(description: dict[str, object]) -> str:
    groups = description.get("groups")
    leads: dict[str, list[str]] = {}
    for group in groups if isinstance(groups, list) else []:
        if isinstance(group, dict) and group.get("leader") is not None:
            leads.setdefault(str(group["leader"]), []).append(str(group.get("id")))
    lines = []
    nodes = description.get("nodes")
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        node_id = str(node.get("id"))
        fields = [f"{key}={value}" for key, value in sorted(node.items())
                  if key not in ("id", "address") and not isinstance(value, (dict, list))]
        fields.append(f"leader_of={','.join(leads.get(node_id, [])) or '-'}")
        lines.append(" ".join([node_id, str(node.get("address", "-")), *fields]) + "\n")
    return "".join(lines)


def _cluster_info_text(description: dict[str, object]) -> str:
    lines = [f"{key}:{value}" for key, value in description.items()
             if isinstance(value, (str, int, float)) or value is None]
    nodes, groups = description.get("nodes"), description.get("groups")
    if isinstance(nodes, list):
        lines.append(f"cluster_known_nodes:{len(nodes)}")
    if isinstance(groups, list):
        led = sum(1 for g in groups if isinstance(g, dict) and g.get("leader") is not None)
        lines.append(f"cluster_groups:{len(groups)}")
        lines.append(f"cluster_groups_with_leader:{led}")
    return "".join(line.replace("\r", " ").replace("\n", " ") + "\r\n" for line in lines)


def _cluster_transfer(session: Session, arguments: list[bytes]) -> Reply:
    try:
        group_id, target = int(arguments[2]), int(arguments[3])
    except ValueError:
        return resp.encode_error("ERR value is not an integer or out of range")
    try:
        session.service.transfer_leadership(group_id, target)
    except ServiceError as error:
        return resp.encode_error(str(error))
    return resp.encode_simple("OK")


_CLUSTER_ADMIN = frozenset({b"MAP", b"ADDNODE", b"DRAINNODE", b"REMOVENODE", b"REBALANCE",
                            b"SPLIT"})


def _admin_reply(session: Session, result: bytes, context: object) -> bytes:
    return resp.encode_value(result, session.protocol)


@command("cluster", -2, "stale")
def _cluster(session: Session, arguments: list[bytes]) -> Reply:
    if len(arguments) == 4 and arguments[1].upper() == b"TRANSFER":
        return _cluster_transfer(session, arguments)
    if arguments[1].upper() in _CLUSTER_ADMIN:
        admin = getattr(session.service, "cluster_admin", None)
        if admin is None:
            return resp.encode_error("ERR this server has no cluster map")
        return defer_coroutine(session, admin(arguments[1:]), _admin_reply)
    if len(arguments) != 2:
        return _unknown_subcommand(arguments)
    sub = arguments[1].upper()
    if sub == b"DESCRIBE":
        return resp.encode_value(json.dumps(session.service.cluster_description(),
                                            sort_keys=True, default=str).encode(), session.protocol)
    description = _plain(session.service.cluster_description())
    assert isinstance(description, dict)
    groups = description.get("groups", [])
    protocol = session.protocol
    if sub == b"INFO":
        return resp.encode_value(resp.Verbatim(_cluster_info_text(description)), protocol)
    if sub == b"NODES":
        return resp.encode_value(resp.Verbatim(_cluster_nodes_text(description)), protocol)
    if sub in (b"GROUPS", b"SHARDS"):
        return resp.encode_value(groups if isinstance(groups, list) else [], protocol)
    if sub == b"LEADERS":
        leaders = {str(g.get("id")): g.get("leader") for g in groups if isinstance(g, dict)}
        return resp.encode_value(leaders, protocol)
    if sub == b"MYID":
        return resp.encode_value(str(description.get("node_id", "")), protocol)
    return _unknown_subcommand(arguments)
