"""`ringbolt serve`: startup errors are one stderr line + non-zero exit; SIGTERM is graceful."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ringbolt.server.config import Address, NodeConfig, render_config
from ringbolt.server.process import fetch_json

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def single_node(tmp_path: Path, **changes: object) -> NodeConfig:
    fields: dict[str, object] = {
        "node_id": 1, "client_address": Address("127.0.0.1", free_port()),
        "peer_address": Address("127.0.0.1", free_port()),
        "admin_address": Address("127.0.0.1", free_port()), "data_dir": tmp_path / "data",
    }
    fields.update(changes)
    return NodeConfig(**fields)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def serve(config_path: Path, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ringbolt", "serve", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=timeout_s)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_bad_field_is_one_line_and_exit_2(tmp_path: Path) -> None:
    text = render_config(single_node(tmp_path)) + '\n[peers.2]\naddress = "x"\n'
    done = serve(write(tmp_path, text))
    assert done.returncode == 2
    assert one_line(done) == 'config error: peers.2.address: expected "host:port", got "x"'


def test_missing_config_file(tmp_path: Path) -> None:
    done = serve(tmp_path / "nope.toml")
    assert done.returncode != 0
    assert "nope.toml" in one_line(done)


def test_occupied_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = single_node(tmp_path, client_address=Address("127.0.0.1", port))
        done = serve(write(tmp_path, render_config(config)))
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith(f"startup error: client_address 127.0.0.1:{port}: cannot listen")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    done = serve(write(tmp_path, render_config(single_node(tmp_path))))
    assert done.returncode == 1
    assert one_line(done).startswith(f"startup error: data_dir {tmp_path / 'data'}")


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def reap_nodes() -> Iterator[None]:
    """Nodes a failed test left running are killed (only the ones it started)."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start(config_path: Path, config: NodeConfig) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "ringbolt", "serve", "--config",
                                str(config_path)], stderr=subprocess.PIPE, text=True)
    STARTED.append(process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            status = fetch_json(str(config.admin_address), "/status", 1.0)
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        if status["groups"][0]["role"] == "leader":
            return process
        time.sleep(0.05)
    process.kill()
    raise AssertionError("single node did not become leader")


def test_sigterm_is_graceful_and_data_survives(tmp_path: Path) -> None:
    config = single_node(tmp_path)
    path = write(tmp_path, render_config(config))
    process = start(path, config)
    client = redis.Redis(port=config.client_address.port, socket_timeout=10)
    for i in range(50):
        assert client.set(f"k{i}", f"v{i}")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    process = start(path, config)
    try:
        client = redis.Redis(port=config.client_address.port, socket_timeout=10)
        assert [client.get(f"k{i}") for i in range(50)] == [f"v{i}".encode() for i in range(50)]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_corrupt_wal_stops_startup_with_one_line(tmp_path: Path) -> None:
    config = single_node(tmp_path)
    path = write(tmp_path, render_config(config))
    process = start(path, config)
    client = redis.Redis(port=config.client_address.port, socket_timeout=10)
    for i in range(200):
        assert client.set(f"k{i}", "x" * 100)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    segments = sorted((p for p in (config.data_dir / "wal").rglob("*") if p.is_file()),
                      key=lambda p: p.stat().st_size)
    assert segments, "the WAL wrote no file"
    victim = segments[-1]
    data = bytearray(victim.read_bytes())
    middle = len(data) // 3
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    victim.write_bytes(bytes(data))
    done = serve(path)
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith(f"startup error: data_dir {config.data_dir}"), line
    assert "corrupt" in line


def test_fsync_off_still_persists_on_graceful_stop(tmp_path: Path) -> None:
    config = single_node(tmp_path, fsync=False)
    path = write(tmp_path, render_config(config))
    process = start(path, config)
    client = redis.Redis(port=config.client_address.port, socket_timeout=10)
    pipe = client.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"k{i}", f"v{i}")
    assert all(pipe.execute())
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    process = start(path, config)
    try:
        client = redis.Redis(port=config.client_address.port, socket_timeout=10)
        assert client.mget([f"k{i}" for i in range(500)]) == [f"v{i}".encode() for i in range(500)]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
