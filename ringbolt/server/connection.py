"""One client connection: pipelined, bounded, answered in order.

Theory of operation
-------------------
`ClientConnection` is an `asyncio.Protocol`. `data_received` feeds the
sans-I/O `RequestParser` and executes every complete command at once
(`dispatch.execute`, then `replies.start` for a request to the store). A
reply is either bytes or a `Pending` (a service future); replies leave in request order: while the head of the queue waits,
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

The commands themselves are loop-free (dispatch.py and the handler
modules strings.py, admin_commands.py); replies.py turns their requests
into service futures.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any, cast

from ringbolt.server import resp
from ringbolt.server.dispatch import ClientRegistry, Reply, Session, execute
from ringbolt.server.replies import Pending, start
from ringbolt.server.service import KeyValueService

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
        if isinstance(peer, tuple):
            host = str(peer[0])
            address = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
        else:
            address = str(peer)
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
                    reply = start(session, reply)  # type: ignore[arg-type]
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
