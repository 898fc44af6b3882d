"""Crash safety with real processes: SIGKILL a durable writer at random
instants, restart it, and check every acknowledged batch survived and no
batch is ever half-visible (see `ringbolt.storage.crashtool`)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from ringbolt.consensus.types import Entry, HardState
from ringbolt.kv.commands import Op, encode
from ringbolt.storage.crashtool import (
    CheckReport,
    batch_keys,
    check_directory,
    open_storage,
    run_harness,
)

SEGMENT_BYTES = 16 * 1024


def run_parallel(
    tmp_path: Path, harnesses: int, cycles_each: int, seed: int, *, fresh: bool = False
) -> list[CheckReport]:
    """Independent harnesses on separate directories, side by side (the
    writers and the fsyncs run in parallel; each harness is sequential)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=harnesses) as pool:
        futures = [
            pool.submit(
                run_harness, str(tmp_path / f"node{n}"), cycles_each, seed + n, SEGMENT_BYTES, fresh=fresh
            )
            for n in range(harnesses)
        ]
        return [future.result() for future in futures]


def assert_clean(reports: list[CheckReport]) -> None:
    for report in reports:
        assert report.problems == []
        assert report.acknowledged > 0
        assert report.batches_seen >= report.acknowledged


def test_three_hundred_kills_lose_no_acknowledged_write(tmp_path: Path) -> None:
    for n in range(2):
        (tmp_path / f"node{n}").mkdir()
    assert_clean(run_parallel(tmp_path, harnesses=2, cycles_each=150, seed=20261128))


@pytest.mark.slow
def test_kills_of_fresh_interpreters(tmp_path: Path) -> None:
    """The same with a new interpreter per writer (no fork server)."""
    for n in range(2):
        (tmp_path / f"node{n}").mkdir()
    assert_clean(run_parallel(tmp_path, harnesses=2, cycles_each=150, seed=11, fresh=True))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_two_thousand_kills_lose_no_acknowledged_write(tmp_path: Path) -> None:
    for n in range(2):
        (tmp_path / f"node{n}").mkdir()
    assert_clean(run_parallel(tmp_path, harnesses=2, cycles_each=1000, seed=7))


def test_the_checker_catches_lost_and_half_applied_batches(tmp_path: Path) -> None:
    """The crash test is only as good as its checker: feed it both faults."""
    wal, store = open_storage(str(tmp_path), SEGMENT_BYTES)
    keys = batch_keys(1, 1, 3)
    entries = [
        Entry(term=1, index=1, data=encode(Op.MPUT, 0, [[key, b"1"] for key in keys])),
        Entry(term=1, index=2, data=encode(Op.DELETE, 0, [keys[1]])),  # leaves 2 of 3 keys
    ]
    wal.append(1, entries=entries, hard_state=HardState(term=1, commit=2))
    wal.close()
    store.close()
    report = check_directory(str(tmp_path), {(1, 1), (2, 7)}, SEGMENT_BYTES)
    assert any("half-applied" in problem for problem in report.problems)
    assert any("(2, 7) lost" in problem for problem in report.problems)
