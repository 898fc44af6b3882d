"""`ringbolt demo` end to end: real processes, a leader SIGKILL, verification."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ringbolt.server.process import find_base_port


@pytest.mark.timeout(180)
def test_demo_passes_with_a_failover() -> None:
    base_port = find_base_port(3, start=24000)
    result = subprocess.run(
        [sys.executable, "-m", "ringbolt", "demo", "--duration", "8", "--base-port", str(base_port),
         "--json"], capture_output=True, text=True, timeout=170, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["passed"] is True
    assert summary["linearizable"] is True
    assert summary["lost_writes"] == 0
    assert summary["acknowledged_writes"] > 0
    assert summary["ops_checked"] > 100
    assert summary["failover_ms"] is not None
    assert "demo passed" in result.stderr


def test_demo_refuses_a_silly_duration() -> None:
    result = subprocess.run([sys.executable, "-m", "ringbolt", "demo", "--duration", "1"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--duration" in result.stderr
