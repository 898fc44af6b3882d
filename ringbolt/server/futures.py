"""Future plumbing shared by the node's components: one way to chain futures.

`then(source, target)` completes `target` as `source` completes (its result
through `convert`, its failure through `on_error` first); `failed(error)` is
a future that already failed; `fail_quietly` fails a future without asyncio
logging "exception never retrieved" when nobody awaits it any more (a
client that disconnected).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ringbolt.server.service import ServiceError


def fail_quietly(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail `future`; awaiting it still raises `error`, but an abandoned one is
    not reported by asyncio."""
    future.set_exception(error)
    future.exception()


def failed(error: ServiceError) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fail_quietly(future, error)
    return future


def then(source: asyncio.Future[Any], target: asyncio.Future[Any], *,
         on_error: Callable[[BaseException], bool] | None = None,
         convert: Callable[[Any], Any] | None = None) -> None:
    """Complete `target` as `source` completes (its result through `convert`,
    which may raise a `ServiceError`). A failure goes to `on_error` first,
    which returns True when it took care of `target` itself. A `target` that
    is already done (its client went away) is left alone."""
    def copy(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
            return
        error = done.exception()
        if error is not None:
            if on_error is None or not on_error(error):
                fail_quietly(target, error)
            return
        try:
            value = done.result() if convert is None else convert(done.result())
        except ServiceError as problem:
            fail_quietly(target, problem)
            return
        target.set_result(value)

    source.add_done_callback(copy)
