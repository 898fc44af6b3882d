"""`ringbolt cluster up`: starts real nodes, reports a dead one, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringbolt.server.process import fetch_json, find_base_port, port_layout

pytestmark = pytest.mark.timeout(120)


def read_until(process: subprocess.Popen[bytes], marker: str, timeout_s: float) -> str:
    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    os.set_blocking(descriptor, False)
    seen = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = os.read(descriptor, 65536)
        except BlockingIOError:
            chunk = b""
        seen += chunk
        if marker.encode() in seen:
            return seen.decode()
        if not chunk:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    raise AssertionError(f"{marker!r} not seen; output so far:\n{seen.decode()}")


def test_cluster_up_reports_a_dead_node_and_stops_on_sigterm(tmp_path: Path) -> None:
    base = find_base_port(2, start=24000)
    process = subprocess.Popen(
        [sys.executable, "-m", "ringbolt", "cluster", "up", "--nodes", "2", "--base-port",
         str(base), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = read_until(process, "cluster running", 60.0)
        for node in (1, 2):
            client, peer, admin = port_layout(node, base)
            assert f"127.0.0.1:{client}" in output and f"127.0.0.1:{peer}" in output
            status = fetch_json(f"127.0.0.1:{admin}", "/status")
            assert status["node_id"] == node
        pid = int(fetch_json(f"127.0.0.1:{port_layout(2, base)[2]}", "/status")["pid"])
        os.kill(pid, signal.SIGKILL)
        read_until(process, "node 2 exited with code -9", 30.0)
        process.send_signal(signal.SIGTERM)
        read_until(process, "stopped", 30.0)
        assert process.wait(30) == 0
        with pytest.raises(OSError):
            fetch_json(f"127.0.0.1:{port_layout(1, base)[2]}", "/status", 1.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
