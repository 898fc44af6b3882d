"""Client writes forwarded from a follower to the leader, and their answers.

Theory of operation
-------------------
A node that receives a write for a shard it does not lead sends the command to
the leader as a `ForwardRequest` (request id, group, command bytes) over the
peer transport and keeps a future for it. The leader proposes the command and,
when the proposal completes, answers with a `ForwardResponse`: the state
machine's result, a `CommandFailed` message, or a full error line that is
passed through to the client unchanged.

Rules kept:
* at most `forwards_inflight_max` forwards wait for answers (more -> `Busy`);
* a forward not answered within `forward_timeout_s` fails with `TRYAGAIN ...
  the outcome of the write is unknown` (it may have been applied);
* a request that could not be handed to the transport fails with "not
  executed" (it definitely was not); when the link to the leader closes, every
  forward it had not answered fails at once as "outcome unknown";
* request ids start at the wall clock in ns, so they are unique across
  restarts of this node: a leader may still answer a previous incarnation's
  request over a reconnected link, and that answer must match nothing;
* an answer from a node other than the one asked is the peer's fault
  (`MalformedFrame`: the link is closed).
Forwards are kept in insertion order, which is also deadline order, so
expiry only looks at the oldest entries.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from ringbolt.kv.machine import CommandFailed, Result
from ringbolt.server import limits
from ringbolt.server.futures import fail_quietly
from ringbolt.server.service import Busy, ServiceError, Unavailable
from ringbolt.server.transport import (
    ForwardRequest,
    ForwardResponse,
    ForwardStatus,
    MalformedFrame,
    Transport,
)


class RemoteError(ServiceError):
    """An error line produced by another node, passed through unchanged."""

    def __init__(self, line: str) -> None:
        Exception.__init__(self, line)


@dataclass(slots=True)
class Forward:
    """One forwarded command awaiting its answer."""

    future: asyncio.Future[Result]
    deadline: float
    leader: int
    group_id: int
    command: bytes
    retry_until: float
    """With a retry hook: until when a "not executed" answer may be retried."""


RetryHook = Callable[[ServiceError, Forward], bool]
"""Called with a forward's failure; True if it took over the forward's future
(sending the command again later), else the future fails with the error."""


class Forwarder:
    def __init__(self, transport: Transport, clock: Callable[[], float],
                 retry: RetryHook | None = None) -> None:
        self.transport = transport
        self.clock = clock
        self.retry = retry
        self.inflight: dict[int, Forward] = {}
        self._request_ids = itertools.count(time.time_ns())
        self.stats = {"forwards_sent": 0, "forwards_served": 0, "forward_timeouts": 0}

    # -- the requesting side -------------------------------------------------------

    def forward(self, leader: int, group_id: int, command: bytes, *,
                retry_until: float = 0.0) -> asyncio.Future[Result]:
        """Send `command` to `leader`; raises `Busy` when too many are in flight.
        With `retry_until`, a failure that may be retried goes to the retry
        hook first (one future per forward, whatever the retries)."""
        if len(self.inflight) >= limits.forwards_inflight_max:
            raise Busy("too many writes forwarded to the leader; not executed, retry")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        forward = Forward(future, self.clock() + limits.forward_timeout_s, leader, group_id,
                          command, retry_until)
        request_id = next(self._request_ids)
        try:
            self.transport.send_forward_request(
                leader, ForwardRequest(request_id=request_id, group_id=group_id, command=command))
        except Unavailable as error:
            self._fail(forward, error)
            return future
        self.inflight[request_id] = forward
        self.stats["forwards_sent"] += 1
        return future

    def _fail(self, forward: Forward, error: ServiceError) -> None:
        if forward.future.done():
            return
        if forward.retry_until and self.retry is not None and self.retry(error, forward):
            return
        fail_quietly(forward.future, error)

    def on_response(self, sender: int, response: ForwardResponse) -> None:
        forward = self.inflight.get(response.request_id)
        if forward is None:
            return  # timed out already, or meant for a previous incarnation
        if forward.leader != sender:
            raise MalformedFrame(f"answer to request {response.request_id} from node {sender}, "
                                 f"which was not asked")
        del self.inflight[response.request_id]
        future = forward.future
        if future.done():
            return
        if response.status is ForwardStatus.OK:
            future.set_result(response.payload)
        elif response.status is ForwardStatus.COMMAND_FAILED:
            future.set_result(CommandFailed(str(response.payload)))
        else:
            self._fail(forward, RemoteError(str(response.payload)))

    def expire(self, now: float) -> None:
        while self.inflight:
            request_id, forward = next(iter(self.inflight.items()))
            if forward.deadline > now:
                break
            del self.inflight[request_id]
            self.stats["forward_timeouts"] += 1
            self._fail(forward, Unavailable(
                f"no answer from leader node {forward.leader} within "
                f"{limits.forward_timeout_s:g} s; the outcome of the write is unknown"))

    def peer_lost(self, peer: int) -> None:
        """The link to `peer` closed: its answers to what we forwarded can no
        longer arrive (a reconnect is a new link), so fail them now instead of
        at their deadline. They may have been applied: the outcome is unknown."""
        lost = [request_id for request_id, forward in self.inflight.items()
                if forward.leader == peer]
        for request_id in lost:
            self._fail(self.inflight.pop(request_id), Unavailable(
                f"lost the connection to leader node {peer}; "
                "the outcome of the write is unknown"))

    def fail_all(self, error: ServiceError) -> None:
        for forward in self.inflight.values():
            if not forward.future.done():
                fail_quietly(forward.future, error)
        self.inflight.clear()

    # -- the answering (leader) side ---------------------------------------------------

    def answer_when_done(self, peer: int, request_id: int,
                         proposal: asyncio.Future[Result]) -> None:
        self.stats["forwards_served"] += 1
        proposal.add_done_callback(lambda done: self._answer(peer, request_id, done))

    def _answer(self, peer: int, request_id: int, done: asyncio.Future[Result]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            assert isinstance(error, ServiceError), f"unexpected failure {error!r}"
            self.answer_error(peer, request_id, error)
            return
        result = done.result()
        if isinstance(result, CommandFailed):
            response = ForwardResponse(request_id=request_id, status=ForwardStatus.COMMAND_FAILED,
                                       payload=result.message)
        else:
            response = ForwardResponse(request_id=request_id, status=ForwardStatus.OK,
                                       payload=result)
        self.transport.send_forward_response(peer, response)

    def answer_error(self, peer: int, request_id: int, error: ServiceError) -> None:
        self.transport.send_forward_response(peer, ForwardResponse(
            request_id=request_id, status=ForwardStatus.ERROR, payload=str(error)))
