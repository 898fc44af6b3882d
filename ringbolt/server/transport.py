"""Peer links between nodes: persistent TCP, length-prefixed msgpack frames, batched.

Theory of operation
-------------------
Every node dials every peer once (an *outbound* link it only writes to) and
accepts the peers' dials (*inbound* links it only reads from); so each pair of
nodes shares two TCP connections, one per direction, and no connection ever
needs de-duplication.

A frame is a 4-byte big-endian length followed by a msgpack array
``[WIRE_VERSION, kind, body]``. The first frame on a connection is HELLO
(the dialler's node id); every later frame is a BATCH carrying, for one peer,
all Raft messages of every group queued since the previous flush
(``[group_id, encoded message]`` pairs), forwarded client writes
(`ForwardRequest`) and their answers (`ForwardResponse`).

Queueing a message schedules ONE flush for the next event-loop iteration, so
everything produced in one iteration goes out in one write per peer.

Bounds: each peer has a queue of at most `peer_queue_msgs_max` messages. When
it is full -- or the peer is unreachable, or its socket buffer is above
`peer_write_buffer_bytes_high` -- Raft messages are dropped (Raft retransmits)
while forwards are refused with `Busy`/`Unavailable` so that clients learn the
outcome at once. A frame longer than `frame_bytes_max`, an undecodable frame
or an unknown kind is the peer's fault: that connection is closed with one
log line and the node carries on.

Outbound links reconnect forever with bounded exponential backoff and jitter
drawn from an injected `random.Random`; a dial that has not completed after
`silence_max_s` is abandoned (a SYN into a cut network would otherwise wait
for the kernel's retries, minutes).

Liveness: TCP alone cannot tell a dead path from a quiet one, and after a
partition heals the kernel's retransmission backoff (up to minutes) decides
when a stuck connection carries frames again. So every outbound link that has
sent nothing for a quarter of `silence_max_s` sends a keep-alive -- an empty
BATCH, which every wire version-1 peer already accepts -- and silence means a
dead path. A watchdog, every quarter of `silence_max_s`:
* closes an inbound connection that has delivered no byte for `silence_max_s`
  (the peer's next frames go to a fresh dial);
* closes (and so re-dials) the outbound link to a peer from which no inbound
  connection has delivered a byte for `silence_max_s` since that link
  connected; `on_peer_lost` fires as for any lost link.
And when the path towards a peer is dead while the one back from it works
(a connection of ours stuck in retransmission after a heal, while the peer's
fresh dial reaches us), the kernel aborts ours: outbound sockets get
TCP_USER_TIMEOUT = `silence_max_s` (keep-alives keep data in flight).
If the watchdog itself ran late (our own event loop stalled, or the process
was stopped), silence is counted again from that moment: unread bytes may be
waiting, and peers that gave up on us need time to re-dial. Re-dial backoff is
capped at a quarter of `silence_max_s` (a failed dial is one cheap syscall),
so a healed path carries frames again within about that long; and a link
that is down dials at once when bytes from its peer arrive (the path works).

Membership: `set_peer` adds a peer or moves it to a new address (a fresh link
dials it); `remove_peer` closes its links, drops its queue and reports it lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import msgpack

from ringbolt.server import limits
from ringbolt.server.config import Address
from ringbolt.server.service import Busy, Unavailable

log = logging.getLogger("ringbolt.transport")

WIRE_VERSION = 1
_HEADER_BYTES = 4


class FrameKind(enum.IntEnum):
    HELLO = 1
    BATCH = 2


class ForwardStatus(enum.IntEnum):
    OK = 0
    """`payload` is the state machine's result."""
    COMMAND_FAILED = 1
    """`payload` is the `CommandFailed` message (the command was applied as a no-op)."""
    ERROR = 2
    """`payload` is a full error line (prefix + message) of a `ServiceError`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardRequest:
    request_id: int
    group_id: int
    command: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardResponse:
    request_id: int
    status: ForwardStatus
    payload: Any


class MalformedFrame(Exception):
    """A peer sent something we cannot decode; its connection is closed."""


class TransportHandler(Protocol):
    def on_raft(self, sender: int, group_id: int, payload: bytes) -> None:
        """Raises `MalformedFrame` when `payload` does not decode."""
        ...

    def on_forward_request(self, sender: int, request: ForwardRequest) -> None: ...

    def on_forward_response(self, sender: int, response: ForwardResponse) -> None: ...

    def on_peer_lost(self, peer_id: int) -> None:
        """Our link to `peer_id` closed: whatever it had not answered may never be."""
        ...


def encode_frame(kind: FrameKind, body: object) -> bytes:
    payload = msgpack.packb([WIRE_VERSION, int(kind), body], use_bin_type=True)
    assert len(payload) <= limits.frame_bytes_max, "frame larger than a peer accepts"
    return len(payload).to_bytes(_HEADER_BYTES, "big") + payload


def decode_frame(payload: bytes) -> tuple[FrameKind, Any]:
    try:
        raw = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False)
    except (msgpack.UnpackException, ValueError) as error:
        raise MalformedFrame(f"undecodable frame: {error}") from None
    if not isinstance(raw, list) or len(raw) != 3:
        raise MalformedFrame("frame is not [version, kind, body]")
    if raw[0] != WIRE_VERSION:
        raise MalformedFrame(f"unknown wire version {raw[0]!r}")
    try:
        kind = FrameKind(raw[1])
    except ValueError:
        raise MalformedFrame(f"unknown frame kind {raw[1]!r}") from None
    return kind, raw[2]


_KEEPALIVE_FRAME = encode_frame(FrameKind.BATCH, [[], [], []])
"""An empty BATCH: carries nothing, proves the path is alive (wire version 1)."""


class PeerLink:
    """The outbound side towards one peer: a bounded queue and a reconnecting socket."""

    def __init__(self, owner: Transport, peer_id: int, address: Address) -> None:
        self.owner = owner
        self.peer_id = peer_id
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.raft: list[list[object]] = []
        self.requests: list[list[object]] = []
        self.responses: list[list[object]] = []
        self.closed: asyncio.Event = asyncio.Event()
        self.reachable: asyncio.Event = asyncio.Event()
        """Set when the peer reached us while we were not connected: dial it now."""
        self.task: asyncio.Task[None] | None = None
        self.connected_at = 0.0
        """Loop time of the current connection (a new link gets a full silence bound)."""
        self.sent_at = 0.0
        """Loop time of the last write on the current connection."""
        self.stats = {"frames_sent": 0, "msgs_sent": 0, "bytes_sent": 0, "dropped": 0,
                      "connects": 0, "queue_peak": 0, "keepalives_sent": 0,
                      "silence_closes": 0, "connect_timeouts": 0}

    @property
    def queued(self) -> int:
        return len(self.raft) + len(self.requests) + len(self.responses)

    @property
    def up(self) -> bool:
        """Connected, and the connection is not closing: between an abort (the
        watchdog, a reset by the peer) and `run` noticing the loss, the
        transport is still set but writing to it fails (uvloop raises)."""
        return self.transport is not None and not self.transport.is_closing()

    def writable(self) -> bool:
        transport = self.transport
        return (transport is not None and not transport.is_closing()
                and transport.get_write_buffer_size() < limits.peer_write_buffer_bytes_high)

    def flush(self) -> None:
        if not self.queued:
            return
        self.stats["queue_peak"] = max(self.stats["queue_peak"], self.queued)
        if not self.up:
            self.stats["dropped"] += len(self.raft) + len(self.responses)
            self.raft.clear()
            self.responses.clear()
            self.requests.clear()  # refused when queued; only races with a disconnect
            return
        if not self.writable():
            return  # keep the queue; `enqueue` drops once it is full
        assert self.transport is not None
        chunks: list[bytes] = []
        step = limits.frame_msgs_max
        while self.queued:
            raft, self.raft = self.raft[:step], self.raft[step:]
            requests, self.requests = self.requests[:step], self.requests[step:]
            responses, self.responses = self.responses[:step], self.responses[step:]
            frame = encode_frame(FrameKind.BATCH, [raft, requests, responses])
            chunks.append(frame)
            self.stats["frames_sent"] += 1
            self.stats["msgs_sent"] += len(raft) + len(requests) + len(responses)
            self.stats["bytes_sent"] += len(frame)
        self.transport.writelines(chunks)
        self.sent_at = asyncio.get_running_loop().time()

    def keep_alive(self, now: float, idle_s: float) -> None:
        """Send an empty BATCH if the link is up and has written nothing for `idle_s`."""
        if self.transport is None or not self.writable() or now - self.sent_at < idle_s:
            return
        self.transport.write(_KEEPALIVE_FRAME)
        self.sent_at = now
        self.stats["keepalives_sent"] += 1
        self.stats["bytes_sent"] += len(_KEEPALIVE_FRAME)

    def close_if_silent(self, now: float, heard_at: float, silence_max_s: float) -> bool:
        """Close the connection (the run loop re-dials) when the peer has been silent
        for `silence_max_s` since we connected; True if it was closed."""
        if self.transport is None:
            return False
        silent_s = now - max(heard_at, self.connected_at)
        if silent_s <= silence_max_s:
            return False
        log.warning("nothing from peer %d for %.2f s; re-dialling %s",
                    self.peer_id, silent_s, self.address)
        self.stats["silence_closes"] += 1
        self.transport.abort()
        return True

    async def run(self) -> None:
        """Dial the peer forever with bounded exponential backoff."""
        loop = asyncio.get_running_loop()
        backoff_max_s = min(limits.reconnect_backoff_max_s, self.owner.silence_max_s / 4)
        backoff = limits.reconnect_backoff_initial_s
        while True:
            if await self._connect(loop):
                await self.closed.wait()
                self.transport = None
                log.info("lost connection to peer %d", self.peer_id)
                self.owner.handler.on_peer_lost(self.peer_id)
                if loop.time() - self.connected_at > self.owner.silence_max_s:
                    backoff = limits.reconnect_backoff_initial_s  # it was up: dial at once
                # else a peer that closes at once (refusing our HELLO) is not hammered
            self.reachable.clear()
            with contextlib.suppress(TimeoutError):  # woken early when the peer reaches us
                await asyncio.wait_for(self.reachable.wait(),
                                       backoff * (0.5 + self.owner.rng.random() / 2))
            backoff = min(backoff * 2, backoff_max_s)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> bool:
        """One dial, bounded by the silence bound; True once connected and greeted."""
        address = self.address
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _OutboundProtocol(self), address.host,
                                       address.port),
                self.owner.silence_max_s)
        except TimeoutError:  # before OSError: TimeoutError is one
            self.stats["connect_timeouts"] += 1
            log.debug("dialling peer %d at %s timed out", self.peer_id, address)
            return False
        except OSError as error:
            log.debug("peer %d at %s unreachable: %s", self.peer_id, address, error)
            return False
        self.transport = transport  # uvloop's transports are not asyncio.Transport
        _bound_unacknowledged(transport, self.owner.silence_max_s)
        self.stats["connects"] += 1
        self.closed.clear()
        self.connected_at = self.sent_at = loop.time()
        transport.write(encode_frame(FrameKind.HELLO, [self.owner.node_id]))
        log.info("connected to peer %d at %s", self.peer_id, address)
        self.owner.schedule_flush()
        return True

    def stop(self) -> asyncio.Task[None] | None:
        """Cancel the dialler, close the connection, drop the queue; returns the
        cancelled task for callers that can wait for it to finish."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.raft.clear()
        self.requests.clear()
        self.responses.clear()
        return task


class _OutboundProtocol(asyncio.Protocol):
    def __init__(self, link: PeerLink) -> None:
        self.link = link

    def data_received(self, data: bytes) -> None:
        pass  # peers never write on our outbound link

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.closed.set()


class _InboundProtocol(asyncio.Protocol):
    """Reads frames from one peer's dial; any malformed input closes it."""

    def __init__(self, owner: Transport) -> None:
        self.owner = owner
        self.buffer = bytearray()
        self.peer_id: int | None = None
        self.transport: asyncio.Transport | None = None
        self.received_at = 0.0
        """Loop time of the last bytes received (or of the accept)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are duck-typed
        self.received_at = asyncio.get_running_loop().time()
        self.owner.inbound.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.inbound.discard(self)

    def close_if_silent(self, now: float, awake_since: float, silence_max_s: float) -> bool:
        silent_s = now - max(self.received_at, awake_since)
        if self.transport is None or silent_s <= silence_max_s:
            return False
        peer = "unidentified peer" if self.peer_id is None else f"peer {self.peer_id}"
        log.info("closing the connection from %s: silent for %.2f s", peer,
                 now - self.received_at)
        self.transport.abort()
        return True

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.received_at = asyncio.get_running_loop().time()
        if self.peer_id is not None:
            self.owner.heard(self.peer_id, self.received_at)
        try:
            self._drain()
        except MalformedFrame as error:
            self.owner.stats["malformed"] += 1
            peer = "unidentified peer" if self.peer_id is None else f"peer {self.peer_id}"
            log.warning("closing connection from %s: %s", peer, error)
            self.buffer.clear()
            assert self.transport is not None
            self.transport.abort()

    def _drain(self) -> None:
        while len(self.buffer) >= _HEADER_BYTES:
            length = int.from_bytes(self.buffer[:_HEADER_BYTES], "big")
            if length > limits.frame_bytes_max:
                raise MalformedFrame(f"frame of {length} bytes exceeds {limits.frame_bytes_max}")
            if len(self.buffer) < _HEADER_BYTES + length:
                return
            payload = bytes(self.buffer[_HEADER_BYTES:_HEADER_BYTES + length])
            del self.buffer[:_HEADER_BYTES + length]
            kind, body = decode_frame(payload)
            self.owner.stats["frames_received"] += 1
            if self.peer_id is None:
                self._hello(kind, body)
            elif kind is FrameKind.BATCH:
                self._batch(self.peer_id, body)
            else:
                raise MalformedFrame(f"unexpected {kind.name} frame")

    def _hello(self, kind: FrameKind, body: Any) -> None:
        if kind is not FrameKind.HELLO or not isinstance(body, list) or len(body) != 1:
            raise MalformedFrame("the first frame must be HELLO [node_id]")
        if body[0] not in self.owner.peers:
            raise MalformedFrame(f"HELLO from unknown node id {body[0]!r}")
        self.peer_id = int(body[0])
        self.owner.heard(self.peer_id, self.received_at)

    def _batch(self, sender: int, body: Any) -> None:
        if not isinstance(body, list) or len(body) != 3:
            raise MalformedFrame("BATCH body is not [raft, requests, responses]")
        raft, requests, responses = body
        handler = self.owner.handler
        try:
            decoded_requests = [ForwardRequest(request_id=int(r[0]), group_id=int(r[1]),
                                               command=_as_bytes(r[2])) for r in requests]
            decoded_responses = [ForwardResponse(request_id=int(r[0]),
                                                 status=ForwardStatus(r[1]), payload=r[2])
                                 for r in responses]
            decoded_raft = [(int(g), _as_bytes(m)) for g, m in raft]
        except (TypeError, ValueError, IndexError) as error:
            raise MalformedFrame(f"malformed BATCH: {error}") from None
        self.owner.stats["msgs_received"] += len(raft) + len(requests) + len(responses)
        for group_id, payload in decoded_raft:
            handler.on_raft(sender, group_id, payload)
        for request in decoded_requests:
            handler.on_forward_request(sender, request)
        for response in decoded_responses:
            handler.on_forward_response(sender, response)


def _bound_unacknowledged(transport: asyncio.BaseTransport, silence_max_s: float) -> None:
    """Let the kernel abort our outbound connection when data it sent stays
    unacknowledged for the silence bound (TCP_USER_TIMEOUT, Linux). Keep-alives
    keep data in flight, so a connection stuck in retransmission backoff dies
    even while the peer's own link to us works (then we keep hearing from it,
    and the silence rule alone would never re-dial)."""
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is None or option is None:
        return
    sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(silence_max_s * 1000)))


def _as_bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return value


class Transport:
    """All peer links of one node."""

    def __init__(self, node_id: int, peers: Mapping[int, Address], handler: TransportHandler,
                 rng: random.Random, *,
                 silence_max_s: float = limits.peer_silence_max_s) -> None:
        assert node_id not in peers
        assert silence_max_s > 0
        self.node_id = node_id
        self.peers = dict(peers)
        self.handler = handler
        self.rng = rng
        self.silence_max_s = silence_max_s
        self.links: dict[int, PeerLink] = {}
        self.inbound: set[_InboundProtocol] = set()
        self.heard_at: dict[int, float] = {}
        self.awake_since = 0.0
        """Loop time at which the watchdog last found that it had been held up."""
        """Loop time at which any inbound connection from each peer last delivered bytes."""
        self.server: asyncio.Server | None = None
        self.watchdog: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        self.stats = {"frames_received": 0, "msgs_received": 0, "malformed": 0, "flushes": 0,
                      "silent_inbound_closed": 0, "watchdog_late": 0}

    async def start(self, listen: Address) -> None:
        """Listen for peers (raises OSError if the port is taken), then dial them."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _InboundProtocol(self), listen.host,
                                               listen.port, reuse_address=True)
        for peer_id, address in self.peers.items():
            self._open_link(peer_id, address)
        self.watchdog = asyncio.ensure_future(self._watch())

    def _open_link(self, peer_id: int, address: Address) -> None:
        assert peer_id not in self.links
        assert len(self.links) < limits.peers_max
        link = PeerLink(self, peer_id, address)
        self.links[peer_id] = link
        link.task = asyncio.ensure_future(link.run())

    async def close(self) -> None:
        self.flush()
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
        tasks = [task for link in self.links.values() if (task := link.stop()) is not None]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            self.server.close()
        for inbound in list(self.inbound):
            if inbound.transport is not None:
                inbound.transport.abort()

    # -- membership ----------------------------------------------------------------

    def set_peer(self, node_id: int, address: Address) -> None:
        """Add a peer, or move it to `address`: a fresh link dials it. A move reports
        the old link lost (its unanswered forwards fail as "outcome unknown")."""
        assert node_id != self.node_id, "a node is not its own peer"
        if self.peers.get(node_id) == address:
            return
        self.peers[node_id] = address
        if self.server is None:
            return  # `start` dials every peer
        old = self.links.pop(node_id, None)
        if old is not None:
            old.stop()
            self.handler.on_peer_lost(node_id)
        self._open_link(node_id, address)
        log.info("peer %d is at %s", node_id, address)

    def remove_peer(self, node_id: int) -> None:
        """Forget a peer: close its links both ways, drop its queue, report it lost.
        Its dials are refused from now on (HELLO from an unknown node id)."""
        if node_id not in self.peers:
            return
        del self.peers[node_id]
        self.heard_at.pop(node_id, None)
        link = self.links.pop(node_id, None)
        if link is not None:
            link.stop()
        for inbound in list(self.inbound):
            if inbound.peer_id == node_id and inbound.transport is not None:
                inbound.transport.abort()
        self.handler.on_peer_lost(node_id)
        log.info("peer %d removed", node_id)

    # -- liveness ------------------------------------------------------------------

    def heard(self, peer_id: int, now: float) -> None:
        """Bytes from `peer_id` arrived: the path from it works, so if our link to it
        is down, dial now rather than after the backoff (after a heal the peer's
        dial often lands first; our reads and acks to it should not wait)."""
        self.heard_at[peer_id] = now
        link = self.links.get(peer_id)
        if link is not None and link.transport is None:
            link.reachable.set()

    async def _watch(self) -> None:
        """Every quarter silence bound: keep-alives, then close silent connections."""
        loop = asyncio.get_running_loop()
        interval_s = self.silence_max_s / 4
        checked_at = loop.time()
        while True:
            await asyncio.sleep(interval_s)
            now = loop.time()
            late = now - checked_at > 2 * interval_s
            checked_at = now
            for link in self.links.values():
                link.keep_alive(now, interval_s)
            if late:
                # our loop stalled or we were stopped: bytes may be waiting unread and
                # peers may have given up on us, so silence is counted from now on
                self.stats["watchdog_late"] += 1
                self.awake_since = now
                continue
            self.close_silent(now)

    def close_silent(self, now: float) -> None:
        for inbound in list(self.inbound):
            if inbound.close_if_silent(now, self.awake_since, self.silence_max_s):
                self.stats["silent_inbound_closed"] += 1
        for peer_id, link in self.links.items():
            heard_at = max(self.heard_at.get(peer_id, 0.0), self.awake_since)
            link.close_if_silent(now, heard_at, self.silence_max_s)

    def connected(self, peer_id: int) -> bool:
        link = self.links.get(peer_id)
        return link is not None and link.up

    def send_raft(self, peer_id: int, group_id: int, payload: bytes) -> bool:
        """Queue one Raft message; False if it was dropped (unknown peer, full queue)."""
        link = self.links.get(peer_id)
        if link is None or not link.up or link.queued >= limits.peer_queue_msgs_max:
            if link is not None:
                link.stats["dropped"] += 1
            return False
        link.raft.append([group_id, payload])
        self.schedule_flush()
        return True

    def send_forward_request(self, peer_id: int, request: ForwardRequest) -> None:
        """Queue a forwarded write; raises `Unavailable`/`Busy` when it cannot be sent."""
        link = self.links.get(peer_id)
        if link is None or not link.up:
            raise Unavailable(f"leader node {peer_id} is unreachable; "
                              "the command was not executed, retry")
        if link.queued >= limits.peer_queue_msgs_max or not link.writable():
            raise Busy(f"link to leader node {peer_id} is saturated; "
                       "the command was not executed, retry")
        link.requests.append([request.request_id, request.group_id, request.command])
        self.schedule_flush()

    def send_forward_response(self, peer_id: int, response: ForwardResponse) -> None:
        link = self.links.get(peer_id)
        if link is None:
            return
        link.responses.append([response.request_id, int(response.status), response.payload])
        self.schedule_flush()

    def schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        self.stats["flushes"] += 1
        for link in self.links.values():
            link.flush()

    def statistics(self) -> dict[str, object]:
        try:
            now: float | None = asyncio.get_running_loop().time()
        except RuntimeError:  # read after the loop ended (tests, shutdown)
            now = None
        peers = {peer_id: {**link.stats, "connected": link.up,
                           "queued": link.queued,
                           "silent_s": (round(now - self.heard_at[peer_id], 3)
                                        if now is not None and peer_id in self.heard_at
                                        else None)}
                 for peer_id, link in self.links.items()}
        return {**self.stats, "inbound_connections": len(self.inbound), "peers": peers}
