"""Forwarder bookkeeping against a fake transport: answers, retries, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ringbolt.server.forward import Forward, Forwarder, RemoteError
from ringbolt.server.service import ServiceError, Unavailable
from ringbolt.server.transport import ForwardRequest, ForwardResponse, ForwardStatus


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[int, ForwardRequest]] = []
        self.down = False

    def send_forward_request(self, peer: int, request: ForwardRequest) -> None:
        if self.down:
            raise Unavailable(f"leader node {peer} is unreachable; the command was not "
                              "executed, retry")
        self.sent.append((peer, request))


def test_a_retryable_failure_goes_to_the_hook_with_the_command() -> None:
    async def scenario() -> None:
        seen: list[tuple[str, int, bytes, float]] = []
        take_over = [True]

        def retry(error: ServiceError, forward: Forward) -> bool:
            seen.append((str(error), forward.group_id, forward.command, forward.retry_until))
            return take_over[0]

        transport = FakeTransport()
        forwarder = Forwarder(transport, lambda: 0.0, retry=retry)  # type: ignore[arg-type]
        answered = forwarder.forward(2, 7, b"cmd-a", retry_until=9.0)
        retried = forwarder.forward(2, 7, b"cmd-b", retry_until=9.0)
        failed = forwarder.forward(2, 7, b"cmd-c", retry_until=9.0)
        ids = [request.request_id for _, request in transport.sent]
        forwarder.on_response(2, ForwardResponse(request_id=ids[0], status=ForwardStatus.OK,
                                                 payload=b"v"))
        assert answered.result() == b"v"
        forwarder.on_response(2, ForwardResponse(
            request_id=ids[1], status=ForwardStatus.ERROR,
            payload="TRYAGAIN node 2 does not lead shard 7; the command was not executed"))
        assert seen[0][1:] == (7, b"cmd-b", 9.0)
        assert not retried.done()  # the hook owns it now
        take_over[0] = False
        forwarder.on_response(2, ForwardResponse(request_id=ids[2], status=ForwardStatus.ERROR,
                                                 payload="ERR boom"))
        with pytest.raises(RemoteError, match="ERR boom"):
            failed.result()
        assert not forwarder.inflight

    asyncio.run(scenario())


def test_a_forward_without_retry_bounds_fails_at_once() -> None:
    async def scenario() -> None:
        calls: list[Any] = []

        def retry(error: ServiceError, forward: Forward) -> bool:
            calls.append(error)
            return True

        transport = FakeTransport()
        forwarder = Forwarder(transport, lambda: 0.0, retry=retry)  # type: ignore[arg-type]
        transport.down = True
        unreachable = forwarder.forward(2, 1, b"read")
        with pytest.raises(Unavailable, match="unreachable"):
            unreachable.result()
        assert calls == []  # no retry_until: the hook is not asked
        retried = forwarder.forward(2, 1, b"write", retry_until=1.0)
        assert len(calls) == 1 and not retried.done()

    asyncio.run(scenario())
