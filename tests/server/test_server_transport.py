"""Peer transport: batching, forwards, malformed frames, reconnects, bounds."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
import uvloop

from ringbolt.server import limits
from ringbolt.server.config import Address
from ringbolt.server.service import Unavailable
from ringbolt.server.transport import (
    ForwardRequest,
    ForwardResponse,
    ForwardStatus,
    FrameKind,
    MalformedFrame,
    Transport,
    decode_frame,
    encode_frame,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Recorder:
    def __init__(self) -> None:
        self.raft: list[tuple[int, int, bytes]] = []
        self.requests: list[tuple[int, ForwardRequest]] = []
        self.responses: list[tuple[int, ForwardResponse]] = []
        self.lost: list[int] = []
        self.arrived = asyncio.Event()

    def on_raft(self, sender: int, group_id: int, payload: bytes) -> None:
        if payload == b"bad":
            raise MalformedFrame("bad payload")
        self.raft.append((sender, group_id, payload))
        self.arrived.set()

    def on_forward_request(self, sender: int, request: ForwardRequest) -> None:
        self.requests.append((sender, request))
        self.arrived.set()

    def on_forward_response(self, sender: int, response: ForwardResponse) -> None:
        self.responses.append((sender, response))
        self.arrived.set()

    def on_peer_lost(self, peer_id: int) -> None:
        self.lost.append(peer_id)


async def wait_for(condition: object, timeout_s: float = 5.0) -> None:
    assert callable(condition)
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def pair() -> tuple[Transport, Transport, Recorder, Recorder, Address, Address]:
    a_address, b_address = Address("127.0.0.1", free_port()), Address("127.0.0.1", free_port())
    a_handler, b_handler = Recorder(), Recorder()
    a = Transport(1, {2: b_address}, a_handler, random.Random(1))
    b = Transport(2, {1: a_address}, b_handler, random.Random(2))
    await a.start(a_address)
    await b.start(b_address)
    await wait_for(lambda: a.connected(2) and b.connected(1))
    return a, b, a_handler, b_handler, a_address, b_address


def test_frame_round_trip_and_garbage() -> None:
    frame = encode_frame(FrameKind.BATCH, [[[3, b"m"]], [], []])
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert decode_frame(frame[4:]) == (FrameKind.BATCH, [[[3, b"m"]], [], []])
    for garbage in (b"\xc1", b"\x93\x09\x02\x90", b"\x93\x01\x63\x90", b"\x01"):
        with pytest.raises(MalformedFrame):
            decode_frame(garbage)


def test_batches_raft_messages_and_forwards_both_ways() -> None:
    async def scenario() -> None:
        a, b, a_handler, b_handler, _, _ = await pair()
        try:
            for group in range(50):
                assert a.send_raft(2, group, f"msg{group}".encode())
            a.send_forward_request(2, ForwardRequest(request_id=7, group_id=3, command=b"cmd"))
            await wait_for(lambda: len(b_handler.raft) == 50 and b_handler.requests)
            assert [g for _, g, _ in b_handler.raft] == list(range(50))
            assert b_handler.raft[0] == (1, 0, b"msg0")
            assert b_handler.requests == [(1, ForwardRequest(request_id=7, group_id=3,
                                                             command=b"cmd"))]
            # everything queued in one loop iteration went out in one frame
            assert a.links[2].stats["frames_sent"] == 1
            b.send_forward_response(1, ForwardResponse(request_id=7, status=ForwardStatus.OK,
                                                       payload=[b"x", 3, None, True]))
            await wait_for(lambda: a_handler.responses)
            assert a_handler.responses[0][1].payload == [b"x", 3, None, True]
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_malformed_frame_closes_only_that_connection() -> None:
    async def scenario() -> None:
        a, b, _, b_handler, _, b_address = await pair()
        try:
            reader, writer = await asyncio.open_connection(b_address.host, b_address.port)
            writer.write((10**9).to_bytes(4, "big") + b"junk")  # oversized length prefix
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by b
            assert b.stats["malformed"] == 1
            # a bad Raft payload from a real peer closes its link; it reconnects
            a.send_raft(2, 0, b"bad")
            await wait_for(lambda: b.stats["malformed"] == 2)
            await wait_for(lambda: a.handler.lost == [2])  # type: ignore[attr-defined]
            await wait_for(lambda: a.links[2].stats["connects"] == 2 and a.connected(2))
            a.send_raft(2, 0, b"good")
            await wait_for(lambda: b_handler.raft)
            assert b_handler.raft == [(1, 0, b"good")]
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_unknown_hello_is_refused() -> None:
    async def scenario() -> None:
        a, b, _, _, _, b_address = await pair()
        try:
            reader, writer = await asyncio.open_connection(b_address.host, b_address.port)
            writer.write(encode_frame(FrameKind.HELLO, [99]))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5.0) == b""
            assert b.stats["malformed"] == 1
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_unreachable_peer_drops_raft_and_refuses_forwards() -> None:
    async def scenario() -> None:
        handler = Recorder()
        transport = Transport(1, {2: Address("127.0.0.1", free_port())}, handler,
                              random.Random(3))
        await transport.start(Address("127.0.0.1", free_port()))
        try:
            assert not transport.send_raft(2, 0, b"m")
            assert transport.links[2].stats["dropped"] == 1
            with pytest.raises(Unavailable, match="not executed"):
                transport.send_forward_request(2, ForwardRequest(request_id=1, group_id=0,
                                                                 command=b"c"))
        finally:
            await transport.close()

    asyncio.run(scenario())


def test_queue_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "peer_queue_msgs_max", 10)

    async def scenario() -> None:
        a, b, _, b_handler, _, _ = await pair()
        try:
            sent = [a.send_raft(2, 0, b"m") for _ in range(15)]
            assert sent == [True] * 10 + [False] * 5
            await wait_for(lambda: len(b_handler.raft) == 10)
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_link_closing_under_a_flush_drops_instead_of_raising() -> None:
    """Between an abort (the silence watchdog, a reset by the peer) and the
    dialler noticing the loss, the link still holds the closed transport; a
    flush in that window used to write to it, which uvloop refuses with a
    RuntimeError that stopped the node (found by a Jepsen run)."""
    async def scenario() -> None:
        a, b, _, b_handler, _, _ = await pair()
        try:
            link = a.links[2]
            assert link.transport is not None
            link.transport.abort()
            assert link.transport is not None  # not noticed yet: same loop iteration
            assert not a.connected(2)
            assert not a.send_raft(2, 0, b"late")  # dropped, counted
            with pytest.raises(Unavailable, match="not executed"):
                a.send_forward_request(2, ForwardRequest(request_id=1, group_id=0,
                                                         command=b"c"))
            link.raft.append([0, b"queued before the abort"])
            a.flush()  # must not raise
            assert link.queued == 0 and link.stats["dropped"] >= 2
            await wait_for(lambda: a.connected(2))  # the dialler reconnects
            assert a.send_raft(2, 0, b"after")
            await wait_for(lambda: any(m == b"after" for _, _, m in b_handler.raft))
        finally:
            await a.close()
            await b.close()

    uvloop.run(scenario())
