"""The asyncio half of command execution: requests become service futures.

Theory of operation
-------------------
The dispatcher (dispatch.py) answers a command with bytes or a request
(`Write`, `WriteEach`, `Read`, `Call`). `start(session, request)` submits it
to the service and returns the reply bytes at once when the future is
already done, else a `Pending` (the future plus the request's converter)
that the connection keeps in request order.

Commands of one connection take effect in order (`_in_order`): a read waits
for the connection's earlier writes and a write for its earlier reads, so a
pipelined GET sees the SET before it and not a SET after it. Nothing is
created per request on the hot path beyond the service future and the
`Pending`; no task, except for a `Call` (a coroutine: SCAN, DBSIZE, CLUSTER
admin). Futures are chained with the node's one helper (futures.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ringbolt.server import admin_commands, resp, strings  # noqa: F401 - they register
from ringbolt.server.dispatch import (
    Call,
    Convert,
    Read,
    Request,
    Session,
    Write,
    WriteEach,
    failure_reply,
)
from ringbolt.server.futures import then
from ringbolt.server.service import ServiceError

log = logging.getLogger("ringbolt.server.commands")


class Pending:
    """A reply that waits for a service future."""

    __slots__ = ("future", "convert", "context")

    def __init__(self, future: asyncio.Future[Any], convert: Convert, context: object) -> None:
        self.future = future
        self.convert = convert
        self.context = context

    def reply(self, session: Session) -> bytes:
        assert self.future.done()
        return resolve(session, self.future, self.convert, self.context)


def resolve(session: Session, future: asyncio.Future[Any], convert: Convert,
            context: object) -> bytes:
    try:
        result = future.result()
        return convert(session, result, context)
    except asyncio.CancelledError:
        return resp.encode_error("TRYAGAIN request cancelled")
    except Exception as error:  # noqa: BLE001 - every failure becomes a reply
        return failure_reply(session, error, "command")


def start(session: Session, request: Request) -> bytes | Pending:
    """Submit `request`; the reply now if it is already answered, else a `Pending`."""
    kind = type(request)
    try:
        if kind is Write:
            assert isinstance(request, Write)
            if session.pending_reads:  # the submit may be deferred: CROSSSHARD now, not later
                session.service.group_of(request.keys)
            future = _in_order(session, session.pending_reads, session.pending_writes,
                               session.service.submit_write, request.keys, request.data)
        elif kind is Read:
            assert isinstance(request, Read)
            if request.single:
                future = _read(session, request.keys[0])
            else:
                future = _gathered([_read(session, key) for key in request.keys])
        elif kind is WriteEach:
            assert isinstance(request, WriteEach)
            service = session.service
            groups = request.groups
            future = _in_order(session, session.pending_reads, session.pending_writes,
                               lambda: _gathered([service.submit_write(keys, data)
                                                  for keys, data in groups]))
        else:
            assert isinstance(request, Call), f"not a request: {request!r:.80}"
            future = asyncio.ensure_future(request.call(session.service))
            return Pending(future, request.convert, request.context)
    except Exception as error:  # noqa: BLE001 - every failure becomes a reply
        return failure_reply(session, error, f"submitting {kind.__name__}")
    if future.done():
        return resolve(session, future, request.convert, request.context)
    return Pending(future, request.convert, request.context)


def _read(session: Session, key: bytes) -> asyncio.Future[Any]:
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
            then(inner, future)

        for prerequisite in waiting:
            prerequisite.add_done_callback(go)
    mine.append(future)
    return future


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
