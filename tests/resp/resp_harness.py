"""A LocalService behind a real loopback RESP server, run in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import uvloop

from ringbolt.server.connection import ConnectionLimits, serve_clients
from ringbolt.server.dispatch import ClientRegistry
from ringbolt.server.local import LocalService


class ManualClock:
    """Wall-clock start, moved only by `advance` (expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class ServerThread:
    def __init__(self, make_service: Callable[[ManualClock], LocalService],
                 limits: ConnectionLimits | None = None, *, use_uvloop: bool = False) -> None:
        self.clock = ManualClock()
        self.registry = ClientRegistry()
        self._make_service = make_service
        self._limits = limits or ConnectionLimits()
        self._loop = uvloop.new_event_loop() if use_uvloop else asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resp-server", daemon=True)
        self.port = 0
        self.service: LocalService | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _start(self) -> None:
        self.service = self._make_service(self.clock)
        self._server = await serve_clients(self.service, "127.0.0.1", 0,
                                           registry=self.registry, limits=self._limits)
        self.port = self._server.sockets[0].getsockname()[1]
        self.service.port = self.port

    def call(self, function: Callable[[], object]) -> object:
        """Run `function` on the server's loop and return its result."""
        async def wrapper() -> object:
            return function()
        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def start_server(make_service: Callable[[ManualClock], LocalService] | None = None,
                 limits: ConnectionLimits | None = None, *, use_uvloop: bool = False
                 ) -> ServerThread:
    factory = make_service or (lambda clock: LocalService(clock_ms=clock))
    return ServerThread(factory, limits, use_uvloop=use_uvloop).start()


def wait_for_no_clients(server: ServerThread, attempts: int = 200) -> int:
    """Connections the server still counts once closed ones are processed
    (closing completes a loop iteration or two after the client sees EOF)."""
    connected = -1
    for _ in range(attempts):
        connected = int(server.call(lambda: len(server.registry.sessions)))  # type: ignore[call-overload]
        if connected == 0:
            break
        time.sleep(0.005)
    return connected
