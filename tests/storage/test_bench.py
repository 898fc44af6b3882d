"""The storage benchmark runs and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_benchmark_reports_its_json_figures(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ringbolt.bench.storage", "--json", "--seconds", "0.2",
         "--runs", "1", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for name in (
        "single_writer_entries_per_s", "writers16_entries_per_s", "writers256_entries_per_s",
        "fsyncs_per_s", "lmdb_apply_entries_per_s",
    ):  # fmt: skip
        assert figures[name] > 0, name
    assert list(tmp_path.iterdir()) == []  # it cleans up after itself
