"""Group commit: concurrent callers share syncs; appends during a sync wait
for the next one; failures reach exactly the callers of the failed round."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import cast

import pytest

from ringbolt.consensus.types import Entry
from ringbolt.storage.errors import StorageFailed, StorageFull
from ringbolt.storage.group_commit import GroupCommitter
from ringbolt.storage.wal import WriteAheadLog


class GatedLog:
    """A stand-in log whose sync blocks until the test opens the gate, and
    which records what each sync covered."""

    def __init__(self) -> None:
        self.appended = 0
        self.synced_upto: list[int] = []
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.fail_next = False

    def append(self) -> None:
        self.appended += 1

    def sync(self) -> None:
        covered = self.appended
        self.entered.release()
        assert self.gate.wait(10)
        self.gate.clear()
        if self.fail_next:
            self.fail_next = False
            raise StorageFull("test: disk full")
        self.synced_upto.append(covered)


async def wait_entered(log: GatedLog) -> None:
    for _ in range(1000):
        if log.entered.acquire(blocking=False):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("no sync started")


def committer_for(log: GatedLog) -> GroupCommitter:
    return GroupCommitter(cast(WriteAheadLog, log))


def test_concurrent_callers_share_two_syncs() -> None:
    async def scenario() -> None:
        log = GatedLog()
        committer = committer_for(log)
        log.append()
        first = asyncio.ensure_future(committer.commit())
        await wait_entered(log)  # sync 1 runs, covering one append
        others = []
        for _ in range(50):
            log.append()
            others.append(asyncio.ensure_future(committer.commit()))
        await asyncio.sleep(0)
        assert not first.done()
        log.gate.set()
        await first
        assert all(not o.done() for o in others)  # they appended after sync 1 began
        await wait_entered(log)
        log.gate.set()
        await asyncio.gather(*others)
        assert log.synced_upto == [1, 51]
        assert committer.statistics()["rounds"] == 2
        assert committer.statistics()["round_callers_max"] == 50
        committer.close()

    asyncio.run(scenario())


def test_failed_round_fails_its_callers_only() -> None:
    async def scenario() -> None:
        log = GatedLog()
        committer = committer_for(log)
        blocker = asyncio.ensure_future(committer.commit())
        await wait_entered(log)  # round 1 runs; the next callers form round 2
        failing = [asyncio.ensure_future(committer.commit()) for _ in range(3)]
        await asyncio.sleep(0)
        log.gate.set()
        await blocker
        await wait_entered(log)
        later = asyncio.ensure_future(committer.commit())  # round 3
        await asyncio.sleep(0)
        log.fail_next = True
        log.gate.set()
        for future in failing:
            with pytest.raises(StorageFull):
                await future
        await wait_entered(log)
        log.gate.set()
        await later
        assert committer.statistics()["failed_rounds"] == 1
        assert committer.statistics()["rounds"] == 3
        committer.close()

    asyncio.run(scenario())


def test_cancelled_caller_does_not_cancel_the_round() -> None:
    async def scenario() -> None:
        log = GatedLog()
        committer = committer_for(log)
        blocker = asyncio.ensure_future(committer.commit())
        await wait_entered(log)
        impatient = asyncio.ensure_future(committer.commit())
        patient = asyncio.ensure_future(committer.commit())
        await asyncio.sleep(0)
        log.gate.set()
        await blocker
        await wait_entered(log)
        impatient.cancel()
        await asyncio.sleep(0)
        log.gate.set()
        await patient
        assert impatient.cancelled()
        assert log.synced_upto == [0, 0]
        assert committer.statistics()["rounds"] == 2
        committer.close()

    asyncio.run(scenario())


def test_real_log_many_writers_few_syncs(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal = WriteAheadLog.open(tmp_path)
        committer = GroupCommitter(wal)
        next_index = {group_id: 1 for group_id in range(1, 9)}

        async def writer(group_id: int) -> None:
            for _ in range(20):
                index = next_index[group_id]
                next_index[group_id] += 1
                wal.append(group_id, entries=[Entry(term=1, index=index, data=b"x" * 100)])
                await committer.commit()

        await asyncio.gather(*(writer(g) for g in next_index))
        syncs = wal.statistics()["syncs"]
        assert syncs < 160 / 2  # 8 writers x 20 entries shared the fsyncs
        committer.close()
        wal.close()

    asyncio.run(scenario())
    wal = WriteAheadLog.open(tmp_path)
    assert {g: len(s.entries) for g, s in wal.recovered().items()} == dict.fromkeys(range(1, 9), 20)
    wal.close()


class CountingLog:
    """A log whose first `full` syncs fail with a full disk."""

    def __init__(self, full: int = 0, failed: bool = False) -> None:
        self.full = full
        self.failed = failed
        self.syncs = 0

    def sync(self) -> None:
        self.syncs += 1
        if self.failed:
            raise StorageFailed("test: fsync failed")
        if self.full:
            self.full -= 1
            raise StorageFull("test: disk full")


def test_sync_inline_syncs_on_the_callers_thread_and_reports_failure() -> None:
    log = CountingLog(full=1)
    committer = GroupCommitter(cast(WriteAheadLog, log))
    assert committer.sync_inline() is False  # full: the caller goes to sync_retrying
    assert committer.sync_inline() is True
    assert log.syncs == 2 and committer.statistics()["syncs_inline"] == 1
    committer.close()


def test_sync_retrying_waits_out_a_full_disk_and_raises_a_failed_wal() -> None:
    async def scenario() -> None:
        log = CountingLog(full=2)
        committer = GroupCommitter(cast(WriteAheadLog, log))
        await asyncio.wait_for(committer.sync_retrying(retry_full_s=0.01), 5)
        assert log.syncs == 3  # two full-disk failures, then the sync that held
        log.failed = True
        with pytest.raises(StorageFailed):
            await asyncio.wait_for(committer.sync_retrying(retry_full_s=0.01), 5)
        committer.close()

    asyncio.run(scenario())
