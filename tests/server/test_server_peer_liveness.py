"""Peer links: silent paths are closed and re-dialled; peers are added, moved and removed.

The black-hole proxy models what a partition does to a long-lived TCP
connection: bytes stop flowing but nothing closes it, and a connection that
was cut stays stuck after the heal (in the kernel it would wait for its
retransmission backoff, seconds to minutes). Only a fresh dial after the heal
carries bytes again -- which is what the transport's silence bound must do.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from ringbolt.server import limits
from ringbolt.server.config import Address
from ringbolt.server.transport import ForwardRequest, ForwardResponse, Transport

SILENCE_S = 0.3
"""Silence bound of the transports under test (the default is ~1 s)."""


LOOPBACK_ANY_PORT = Address("127.0.0.1", 0)


def listening(transport: Transport) -> Address:
    """The address a transport started on port 0 listens on (no port races)."""
    assert transport.server is not None
    return Address("127.0.0.1", int(transport.server.sockets[0].getsockname()[1]))


class Recorder:
    def __init__(self) -> None:
        self.raft: list[tuple[int, int, bytes]] = []
        self.lost: list[int] = []

    def on_raft(self, sender: int, group_id: int, payload: bytes) -> None:
        self.raft.append((sender, group_id, payload))

    def on_forward_request(self, sender: int, request: ForwardRequest) -> None:
        pass

    def on_forward_response(self, sender: int, response: ForwardResponse) -> None:
        pass

    def on_peer_lost(self, peer_id: int) -> None:
        self.lost.append(peer_id)


async def wait_for(condition: object, timeout_s: float = 5.0) -> None:
    assert callable(condition)
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


class BlackHoleProxy:
    """Forwards TCP connections to `target`; `cut()` freezes every connection it
    has (they never forward again) and every one accepted until `heal()`."""

    def __init__(self) -> None:
        self.target: Address | None = None
        self.is_cut = False
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.live: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.frozen: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Address:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return Address("127.0.0.1", int(port))

    def cut(self) -> None:
        self.is_cut = True
        for client, upstream in self.live:
            self._freeze(client)
            self._freeze(upstream)
        self.live.clear()

    def heal(self) -> None:
        self.is_cut = False

    def _freeze(self, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()  # type: ignore[attr-defined]  # unread bytes back up into the sender's socket
        self.frozen.append(writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.is_cut:
            self._freeze(writer)
            return
        assert self.target is not None
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        self.live.append((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(source, sink, writer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    client: asyncio.StreamWriter) -> None:
        while True:
            data = await source.read(65536)
            if client in self.frozen:
                return  # cut: these bytes are lost in the network, the socket stays open
            if not data:
                sink.close()
                return
            sink.write(data)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for client, upstream in self.live:
            client.transport.abort()
            upstream.transport.abort()
        for writer in self.frozen:
            writer.transport.abort()


async def proxied_pair() -> tuple[Transport, Transport, Recorder, Recorder,
                                  BlackHoleProxy, BlackHoleProxy]:
    """Node 1 and node 2; each direction goes through its own black-hole proxy."""
    to_b, to_a = BlackHoleProxy(), BlackHoleProxy()
    to_b_address, to_a_address = await to_b.start(), await to_a.start()
    a_handler, b_handler = Recorder(), Recorder()
    a = Transport(1, {}, a_handler, random.Random(1), silence_max_s=SILENCE_S)
    b = Transport(2, {}, b_handler, random.Random(2), silence_max_s=SILENCE_S)
    await a.start(LOOPBACK_ANY_PORT)
    await b.start(LOOPBACK_ANY_PORT)
    to_b.target, to_a.target = listening(b), listening(a)
    a.set_peer(2, to_b_address)
    b.set_peer(1, to_a_address)
    await wait_for(lambda: a.connected(2) and b.connected(1))
    return a, b, a_handler, b_handler, to_b, to_a


async def delivered(sender: Transport, peer: int, receiver: Recorder, payload: bytes,
                    timeout_s: float) -> None:
    """Send `payload` every 50 ms until it has arrived (bounded)."""
    for _ in range(int(timeout_s / 0.05)):
        sender.send_raft(peer, 0, payload)
        await asyncio.sleep(0.05)
        if any(p == payload for _, _, p in receiver.raft):
            return
    raise AssertionError(f"{payload!r} not delivered within {timeout_s} s")


def test_a_healed_black_hole_is_re_dialled_and_carries_messages_again() -> None:
    async def scenario() -> None:
        a, b, a_handler, b_handler, to_b, to_a = await proxied_pair()
        try:
            await delivered(a, 2, b_handler, b"before", 2.0)
            await delivered(b, 1, a_handler, b"before", 2.0)
            connects_a, connects_b = a.links[2].stats["connects"], b.links[1].stats["connects"]
            to_b.cut()
            to_a.cut()
            await asyncio.sleep(4 * SILENCE_S)  # several silence bounds: links judged dead
            assert not any(p == b"during" for _, _, p in b_handler.raft)
            to_b.heal()
            to_a.heal()
            # bound: detection (~silence) + capped backoff (<= silence) + dial, with slack
            await delivered(a, 2, b_handler, b"after", 10 * SILENCE_S)
            await delivered(b, 1, a_handler, b"after", 10 * SILENCE_S)
            a_peer = a.statistics()["peers"][2]  # type: ignore[index]
            assert a_peer["connects"] > connects_a
            assert a_peer["silence_closes"] >= 1
            assert b.links[1].stats["connects"] > connects_b
            assert a_handler.lost and set(a_handler.lost) == {2}  # in-flight forwards failed
            assert a.stats["silent_inbound_closed"] >= 1  # the stuck inbound was closed too
            assert to_b.accepted >= 3  # first dial, dial(s) into the cut, dial after the heal
        finally:
            await a.close()
            await b.close()
            await to_b.close()
            await to_a.close()

    asyncio.run(scenario())


def test_idle_links_stay_up_on_keepalives() -> None:
    async def scenario() -> None:
        a, b, _, b_handler, to_b, to_a = await proxied_pair()
        try:
            await asyncio.sleep(5 * SILENCE_S)  # nothing to send: only keep-alives flow
            assert a.links[2].stats["keepalives_sent"] >= 3
            assert b.links[1].stats["keepalives_sent"] >= 3
            late = a.stats["watchdog_late"] + b.stats["watchdog_late"]
            if late == 0:  # a stalled test machine may (rightly) have skipped judgments
                assert a.links[2].stats["connects"] == 1
                assert b.links[1].stats["connects"] == 1
                assert to_b.accepted == 1
            await delivered(a, 2, b_handler, b"still", 2.0)
        finally:
            await a.close()
            await b.close()
            await to_b.close()
            await to_a.close()

    asyncio.run(scenario())


def test_a_stalled_event_loop_is_not_taken_for_a_cut() -> None:
    async def scenario() -> None:
        a, b, _, b_handler, to_b, to_a = await proxied_pair()
        try:
            time.sleep(3 * SILENCE_S)  # the whole loop stalls (as a stopped process would)
            await asyncio.sleep(2 * SILENCE_S)  # watchdogs run late, then on time again
            assert a.stats["watchdog_late"] >= 1
            assert a.links[2].stats["silence_closes"] == 0
            assert b.links[1].stats["silence_closes"] == 0
            assert a.links[2].stats["connects"] == 1
            await delivered(a, 2, b_handler, b"after the stall", 2.0)
        finally:
            await a.close()
            await b.close()
            await to_b.close()
            await to_a.close()

    asyncio.run(scenario())


def test_a_down_link_dials_at_once_when_its_peer_reaches_us(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "reconnect_backoff_initial_s", 5.0)  # sleeps 2.5-5 s

    async def scenario() -> None:
        a_handler, b_handler = Recorder(), Recorder()
        a = Transport(1, {}, a_handler, random.Random(1), silence_max_s=40.0)
        await a.start(LOOPBACK_ANY_PORT)
        with socket.socket() as probe:  # a port nobody listens on (yet)
            probe.bind(("127.0.0.1", 0))
            b_address = Address("127.0.0.1", int(probe.getsockname()[1]))
        b = Transport(2, {1: listening(a)}, b_handler, random.Random(2), silence_max_s=40.0)
        try:
            a.set_peer(2, b_address)
            await asyncio.sleep(0.2)  # a's first dial was refused: it backs off >= 2.5 s
            assert not a.connected(2)
            await b.start(b_address)  # b listens there now, and dials a
            await wait_for(lambda: a.connected(2), timeout_s=1.5)  # well before the backoff
            await delivered(a, 2, b_handler, b"woken", 1.0)
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_outbound_sockets_bound_unacknowledged_data_by_the_silence_bound() -> None:
    async def scenario() -> None:
        a, b, _, _, to_b, to_a = await proxied_pair()
        try:
            link = a.links[2]
            assert link.transport is not None
            sock = link.transport.get_extra_info("socket")
            timeout_ms = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
            assert timeout_ms == int(SILENCE_S * 1000)
        finally:
            await a.close()
            await b.close()
            await to_b.close()
            await to_a.close()

    asyncio.run(scenario())


def test_set_peer_adds_and_moves_a_peer_and_remove_peer_forgets_it() -> None:
    async def scenario() -> None:
        handlers = {n: Recorder() for n in (1, 2, 3)}
        a, b, c = (Transport(n, {}, handlers[n], random.Random(n)) for n in (1, 2, 3))
        moved: Transport | None = None
        for transport in (a, b, c):  # each one's own peers are added below
            await transport.start(LOOPBACK_ANY_PORT)
        addresses = {1: listening(a), 2: listening(b), 3: listening(c)}
        try:
            a.set_peer(2, addresses[2])
            for other in (b, c):
                other.set_peer(1, addresses[1])
            await wait_for(lambda: a.connected(2) and b.connected(1))
            assert not a.send_raft(3, 0, b"unknown peer")
            await asyncio.sleep(0.3)
            refused = a.stats["malformed"]  # node 3 dials but its HELLO is refused...
            assert 1 <= refused <= 5  # ...with backoff: a refused dial is no reset
            a.set_peer(3, addresses[3])  # new peer: dialled, and its HELLO accepted
            await delivered(a, 3, handlers[3], b"to c", 3.0)
            await delivered(c, 1, handlers[1], b"from c", 3.0)
            a.set_peer(3, addresses[3])  # same address: nothing changes
            assert a.links[3].stats["connects"] == 1
            # node 2 moves: a new process with the same id on another port
            moved_handler = Recorder()
            moved = Transport(2, {1: addresses[1]}, moved_handler, random.Random(4))
            await moved.start(LOOPBACK_ANY_PORT)
            await b.close()
            a.set_peer(2, listening(moved))
            assert handlers[1].lost.count(2) >= 1
            await delivered(a, 2, moved_handler, b"to the new 2", 2.0)
            # remove node 3: links closed both ways, queue dropped, reported lost
            lost_before = handlers[1].lost.count(3)
            a.remove_peer(3)
            assert handlers[1].lost.count(3) == lost_before + 1
            assert not a.connected(3)
            assert not a.send_raft(3, 0, b"gone")
            assert 3 not in a.statistics()["peers"]  # type: ignore[operator]
            await wait_for(lambda: all(i.peer_id != 3 for i in a.inbound))
            malformed = a.stats["malformed"]
            await wait_for(lambda: a.stats["malformed"] > malformed)  # c re-dials: refused
            a.remove_peer(3)  # unknown peer: nothing to do
        finally:
            for each in (a, b, c, moved):
                if each is not None:
                    await each.close()

    asyncio.run(scenario())
