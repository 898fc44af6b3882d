"""The ZooKeeper driver of `bench compare`: a real 3-server ensemble and kazoo load."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from ringbolt.bench.loadgen import LoadSpec
from ringbolt.bench.zookeeper import ZOOKEEPER_JAR, ensemble, four_letter, run_zk_load

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or not os.path.exists(ZOOKEEPER_JAR)
    or importlib.util.find_spec("kazoo") is None,
    reason="zookeeper (Debian) or kazoo not installed")


def test_ensemble_takes_writes_and_stops(tmp_path: Path) -> None:
    with ensemble(tmp_path) as addresses:
        assert len(addresses) == 3
        modes = [four_letter(a, b"srvr") for a in addresses]
        assert sum(b"Mode: leader" in m for m in modes) == 1
        spec = LoadSpec(addresses=tuple(addresses), clients=4, procs=1, keys=1000,
                        reads=0.0, duration_s=1.0, warmup_s=0.2, max_time_s=30.0)
        report = run_zk_load(spec)
        assert report.ops > 0
        assert report.error_total == 0, report.errors
        assert 0 < report.p50_ms <= report.p99_ms
    assert all(four_letter(a, b"srvr") == b"" for a in addresses)
