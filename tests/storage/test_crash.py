"""Crash safety with real processes: SIGKILL a durable writer at random
instants, restart it, and check every acknowledged batch survived and no
batch is ever half-visible (see `ringbolt.storage.crashtool`)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from ringbolt.storage.crashtool import CheckReport, run_harness

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
