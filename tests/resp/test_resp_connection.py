"""ClientConnection driven directly (fake transport, futures completed by hand):
order of replies, bounded pending requests, failures that must not kill it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

import hiredis
import pytest

from ringbolt.kv.machine import Result
from ringbolt.server.connection import ClientConnection, ConnectionLimits
from ringbolt.server.dispatch import ClientRegistry
from ringbolt.server.local import LocalService
from ringbolt.server.resp import encode_request
from ringbolt.server.service import Unavailable


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.reading = True
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed
        self.written += data
        self.writes += 1

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1234) if name == "peername" else default

    def replies(self) -> list[object]:
        reader = hiredis.Reader()
        reader.feed(bytes(self.written))
        found = []
        while (reply := reader.gets()) is not False:
            found.append(reply)
        return found


class HeldService(LocalService):
    """Reads and writes complete only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]] = []
        self.explode = False

    def submit_write(self, keys: Sequence[bytes], command: bytes) -> asyncio.Future[Result]:
        return self._hold(super().submit_write(keys, command))

    def submit_read(self, key: bytes, *, stale: bool = False
                    ) -> asyncio.Future[tuple[bytes, int] | None]:
        if self.explode:
            raise RuntimeError("bug in the service")
        return self._hold(super().submit_read(key, stale=stale))

    def _hold(self, done: asyncio.Future[Any]) -> asyncio.Future[Any]:
        waiting: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append((waiting, done))
        return waiting

    def release(self, index: int) -> None:
        waiting, done = self.held[index]
        waiting.set_result(done.result())


def connect(service: LocalService, limits: ConnectionLimits | None = None
            ) -> tuple[ClientConnection, FakeTransport, ClientRegistry]:
    registry = ClientRegistry()
    connection = ClientConnection(service, registry, limits or ConnectionLimits())
    transport = FakeTransport()
    connection.connection_made(transport)
    return connection, transport, registry


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_replies_keep_request_order_when_completions_do_not() -> None:
    async def scenario() -> None:
        service = HeldService()
        service.backend.data[b"a"] = (b"1", 0)
        connection, transport, _ = connect(service)
        connection.data_received(
            encode_request([b"GET", b"a"]) + encode_request([b"PING"])
            + encode_request([b"GET", b"b"]) + encode_request([b"ECHO", b"x"])
            + encode_request([b"GET", b"c"]))
        assert len(service.held) == 3  # reads run concurrently
        assert transport.written == b""
        service.release(2)
        service.release(1)
        await settle()
        assert transport.written == b""  # the head (GET a) still waits
        service.release(0)
        await settle()
        assert transport.replies() == [b"1", b"PONG", None, b"x", None]
        assert transport.writes == 1  # one write for the whole drained pipeline

    asyncio.run(scenario())


def test_commands_of_one_connection_take_effect_in_order() -> None:
    """A read waits for the connection's earlier writes, a write for its
    earlier reads: a pipelined GET sees the SET before it, not the one after."""
    async def scenario() -> None:
        service = HeldService()
        connection, transport, _ = connect(service)
        connection.data_received(
            encode_request([b"SET", b"a", b"1"]) + encode_request([b"GET", b"a"])
            + encode_request([b"SET", b"a", b"2"]) + encode_request([b"GET", b"a"]))
        await settle()
        assert len(service.held) == 1  # only the first SET was submitted
        service.release(0)
        await settle()
        assert len(service.held) == 2  # then the GET; the second SET waits for it
        service.release(1)
        await settle()
        assert len(service.held) == 3
        service.release(2)
        await settle()
        service.release(3)
        await settle()
        assert transport.replies() == [b"OK", b"1", b"OK", b"2"]

    asyncio.run(scenario())


def test_pending_requests_are_bounded_and_reading_pauses() -> None:
    async def scenario() -> None:
        service = HeldService()
        limits = ConnectionLimits(pending_requests_max=4)
        connection, transport, registry = connect(service, limits)
        connection.data_received(b"".join(
            encode_request([b"SET", b"k", b"%d" % i]) for i in range(10)))
        assert len(service.held) == 4  # the rest stays parsed-but-unexecuted
        assert not transport.reading
        assert registry.statistics()["pending_requests_peak"] == 4
        for _ in range(20):
            for index in range(len(service.held)):
                if not service.held[index][0].done():
                    service.release(index)
            await settle()
            if len(transport.replies()) == 10:
                break
        assert transport.replies() == [b"OK"] * 10
        assert transport.reading
        assert connection.statistics()["pending_requests_peak"] == 4
        assert service.backend.data[b"k"][0] == b"9"  # applied in order

    asyncio.run(scenario())


def test_service_failures_and_bugs_become_error_replies() -> None:
    async def scenario() -> None:
        service = HeldService()
        connection, transport, registry = connect(service)
        connection.data_received(encode_request([b"GET", b"a"]) + encode_request([b"PING"]))
        service.held[0][0].set_exception(Unavailable("no leader for shard 3"))
        await settle()
        service.explode = True
        connection.data_received(encode_request([b"GET", b"a"]) + encode_request([b"PING"]))
        await settle()
        replies = transport.replies()
        assert [str(reply) for reply in replies[::2]] == [
            "TRYAGAIN no leader for shard 3", "ERR internal error"]
        assert replies[1::2] == [b"PONG", b"PONG"]
        assert registry.internal_errors_total == 1
        assert not transport.closed

    asyncio.run(scenario())


def test_protocol_error_waits_for_earlier_replies_then_closes() -> None:
    async def scenario() -> None:
        service = HeldService()
        connection, transport, registry = connect(service)
        connection.data_received(encode_request([b"GET", b"a"]) + b"*1\r\n$-5\r\n")
        assert not transport.closed
        service.release(0)
        await settle()
        replies = transport.replies()
        assert replies[0] is None
        assert str(replies[1]) == "ERR Protocol error: invalid bulk length"
        assert transport.closed
        connection.data_received(encode_request([b"PING"]))  # ignored after the error
        assert len(transport.replies()) == 2
        connection.connection_lost(None)
        assert registry.statistics()["connected_clients"] == 0

    asyncio.run(scenario())


def test_write_backpressure_pauses_reading() -> None:
    async def scenario() -> None:
        service = LocalService()
        connection, transport, _ = connect(service)
        connection.pause_writing()
        assert not transport.reading
        connection.data_received(encode_request([b"PING"]))
        assert transport.written == b""  # held in the parser while the socket is full
        connection.resume_writing()
        assert transport.reading
        assert transport.replies() == [b"PONG"]

    asyncio.run(scenario())


def test_max_clients() -> None:
    async def scenario() -> None:
        registry = ClientRegistry(clients_max=1)
        service = LocalService()
        first, second = FakeTransport(), FakeTransport()
        ClientConnection(service, registry).connection_made(first)
        ClientConnection(service, registry).connection_made(second)
        assert not first.closed
        assert second.closed
        assert [str(r) for r in second.replies()] == ["ERR max number of clients reached"]
        assert registry.statistics()["rejected_connections"] == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_pipeline_fed_in_chunks(chunk: int) -> None:
    async def scenario() -> None:
        connection, transport, _ = connect(LocalService())
        data = b"".join(encode_request([b"SET", b"k%d" % i, b"v"]) + encode_request(
            [b"GET", b"k%d" % i]) for i in range(50))
        for start in range(0, len(data), chunk):
            connection.data_received(data[start:start + chunk])
        assert transport.replies() == [b"OK", b"v"] * 50

    asyncio.run(scenario())


def test_half_close_answers_everything_then_closes() -> None:
    async def scenario() -> None:
        service = HeldService()
        limits = ConnectionLimits(pending_requests_max=2)
        connection, transport, _ = connect(service, limits)
        connection.data_received(b"".join(encode_request([b"GET", b"k"]) for _ in range(5)))
        assert connection.eof_received() is True
        for _ in range(10):
            assert not transport.closed or len(transport.replies()) == 5
            for index in range(len(service.held)):
                if not service.held[index][0].done():
                    service.release(index)
            await settle()
        assert transport.replies() == [None] * 5
        assert transport.closed

    asyncio.run(scenario())


def test_quit_behind_a_pending_reply_closes_after_answering() -> None:
    async def scenario() -> None:
        service = HeldService()
        connection, transport, _ = connect(service)
        connection.data_received(encode_request([b"GET", b"a"]) + encode_request([b"QUIT"])
                                 + encode_request([b"PING"]))
        assert len(service.held) == 1
        service.release(0)
        await settle()
        assert transport.replies() == [None, b"OK"]
        assert transport.closed

    asyncio.run(scenario())


def test_full_socket_stops_execution_mid_batch() -> None:
    async def scenario() -> None:
        service = LocalService()
        limits = ConnectionLimits(write_batch_bytes=10)
        connection, transport, _ = connect(service, limits)
        original_write = transport.write

        def write_and_fill(data: bytes | bytearray | memoryview) -> None:
            original_write(data)
            connection.pause_writing()  # the socket buffer is now "full"

        transport.write = write_and_fill  # type: ignore[method-assign]
        connection.data_received(b"".join(
            encode_request([b"ECHO", b"%d" % i]) for i in range(20)))
        assert 0 < connection.commands_total < 20
        assert not transport.reading
        for _ in range(40):
            if connection.commands_total == 20:
                break
            connection.resume_writing()
        assert connection.commands_total == 20
        assert transport.replies() == [b"%d" % i for i in range(20)]

    asyncio.run(scenario())


def test_outcomes_after_disconnect_are_dropped_quietly() -> None:
    reports: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, report: reports.append(report))
        service = HeldService()
        connection, transport, registry = connect(service)
        connection.data_received(encode_request([b"GET", b"a"]) + encode_request([b"GET", b"b"]))
        connection.connection_lost(ConnectionResetError())
        service.held[0][0].set_exception(Unavailable("no leader"))
        service.release(1)
        await settle()
        assert transport.written == b""
        assert registry.statistics()["connected_clients"] == 0
        service.held.clear()
        del connection
        gc.collect()

    asyncio.run(scenario())
    assert reports == []
