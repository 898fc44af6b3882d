"""Group commit for asyncio: many awaiting callers, one fdatasync.

Theory of operation
-------------------
Callers `wal.append(...)` and then `await committer.commit()`. At most one
`wal.sync()` runs at a time, in one dedicated worker thread. A caller that
arrives while no sync runs schedules one for the next loop iteration (so
that every caller runnable now -- typically all those woken by the previous
round -- joins it); a caller that arrives while a
sync runs joins the *next* round (its append may have missed the running
sync's snapshot of the buffer), which starts as soon as the running one ends
and covers everything appended meanwhile. So N concurrent callers cost about
two syncs, not N.

Each round is one shared future; callers await it through `asyncio.shield`,
so a cancelled caller does not cancel the round for the others. No task is
created per call or per round (the executor's future drives the chain). A
failed sync (`StorageFull`, `StorageFailed`) fails exactly the callers of
that round; `StorageFull` leaves the records pending, so a later round may
still make them durable (the outcome of a failed round is "unknown").

The node's round driver uses the same committer two more ways
(server/rounds.py): `sync_inline` makes the round durable on the loop's own
thread when no worker-thread sync is in flight (cheaper than the thread hop
for a ~0.1-0.3 ms fdatasync), and `sync_retrying` is the worker-thread path
that waits out a full disk instead of failing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import TYPE_CHECKING

from ringbolt.storage.errors import StorageError, StorageFull

if TYPE_CHECKING:
    from ringbolt.storage.wal import WriteAheadLog

log = logging.getLogger("ringbolt.wal")


class GroupCommitter:
    def __init__(self, wal: WriteAheadLog) -> None:
        self._wal = wal
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="wal-sync"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._start_scheduled = False
        self._next_round: asyncio.Future[None] | None = None
        self._statistics = {"commits": 0, "rounds": 0, "round_callers_max": 0, "failed_rounds": 0,
                            "syncs_inline": 0}
        self.sync_seconds = 0.0
        """Time spent in syncs that completed, inline or in the worker thread."""
        self._next_callers = 0

    async def commit(self) -> None:
        """Return once everything appended before this call is durable."""
        await asyncio.shield(self.commit_future())

    sync = commit
    """Alias: the server calls `await committer.sync()`."""

    def commit_future(self) -> asyncio.Future[None]:
        """The shared future of the round that will cover appends made so far
        (do not cancel it; `commit()` shields it for you)."""
        loop = asyncio.get_running_loop()
        assert self._loop is None or self._loop is loop, "one committer per event loop"
        self._loop = loop
        self._statistics["commits"] += 1
        if self._next_round is None:
            self._next_round = loop.create_future()
        self._next_callers += 1
        round_future = self._next_round
        if not self._running and not self._start_scheduled:
            # Start on the next loop iteration, not now: callers woken by the
            # previous round's completion are all runnable in this iteration
            # and join this round instead of trailing one behind.
            self._start_scheduled = True
            loop.call_soon(self._start_if_idle)
        return round_future

    def sync_inline(self) -> bool:
        """One fdatasync on the caller's thread, unless a worker-thread sync is
        running (then False, as for a failed sync: the caller goes through
        `sync_retrying`, which retries a full disk or raises)."""
        if self._running:
            return False
        started = time.monotonic()
        try:
            self._wal.sync()
        except StorageError:
            return False
        self._statistics["syncs_inline"] += 1
        self.sync_seconds += time.monotonic() - started
        return True

    async def sync_retrying(self, retry_full_s: float = 0.5) -> None:
        """Everything appended so far is durable once this returns; a full disk
        is retried every `retry_full_s` (the batch stays buffered); any other
        failure (`StorageFailed`: the WAL is poisoned) is raised."""
        while True:
            started = time.monotonic()
            try:
                await self.commit()
            except StorageFull as error:
                log.error("WAL sync: %s; retrying", error)
                await asyncio.sleep(retry_full_s)
                continue
            self.sync_seconds += time.monotonic() - started
            return

    def _start_if_idle(self) -> None:
        self._start_scheduled = False
        if not self._running and self._next_round is not None:
            self._start_round()

    def _start_round(self) -> None:
        assert self._loop is not None
        assert not self._running
        round_future, self._next_round = self._next_round, None
        assert round_future is not None
        self._running = True
        self._statistics["rounds"] += 1
        self._statistics["round_callers_max"] = max(
            self._statistics["round_callers_max"], self._next_callers
        )
        self._next_callers = 0
        sync_future = self._loop.run_in_executor(self._executor, self._wal.sync)
        sync_future.add_done_callback(lambda done: self._finish_round(done, round_future))

    def _finish_round(self, done: asyncio.Future[None], round_future: asyncio.Future[None]) -> None:
        self._running = False
        error = done.exception() if not done.cancelled() else asyncio.CancelledError()
        if not round_future.done():
            if error is None:
                round_future.set_result(None)
            else:
                self._statistics["failed_rounds"] += 1
                round_future.set_exception(error)
                round_future.exception()  # retrieved: callers may all be gone
        if self._next_round is not None:
            self._start_round()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def statistics(self) -> dict[str, int]:
        return {**self._statistics, "running": int(self._running)}
