"""Protocol robustness: >= 10,000 random and mutated frames against a live
server (LocalService) over many connections, with a healthy client watching."""

from __future__ import annotations

import random

import fuzzing
import pytest
from resp_harness import ServerThread, wait_for_no_clients

from ringbolt.server.resp import ParserLimits, ProtocolError, RequestParser


def test_generator_is_deterministic_and_mixes_valid_and_broken_frames() -> None:
    first = list(fuzzing.frames(7, 500))
    assert first == list(fuzzing.frames(7, 500))
    assert first != list(fuzzing.frames(8, 500))
    outcomes = {"ok": 0, "error": 0}
    for frame in first:
        parser = RequestParser(ParserLimits())
        try:
            parser.feed(frame)
            parser.commands()
            outcomes["ok"] += 1
        except ProtocolError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 100
    assert outcomes["error"] > 50


def test_mutations_change_frames() -> None:
    rng = random.Random(3)
    frame = fuzzing.encode([b"SET", b"fz:1", b"value"])
    assert sum(fuzzing.mutate(frame, rng) != frame for _ in range(100)) > 80


@pytest.mark.timeout(120)
def test_live_server_survives_fuzzing(server: ServerThread) -> None:
    report = fuzzing.fuzz_server("127.0.0.1", server.port, seed=20261128, frames_total=10_000)
    assert report.failures == []
    assert report.frames == 10_000
    assert report.connections >= 400
    assert report.replies > 2_000
    assert report.protocol_errors > 100
    assert report.healthy_checks >= 2
    assert server.registry.statistics()["internal_errors"] == 0
    assert wait_for_no_clients(server) == 0


@pytest.mark.slow
def test_live_server_survives_long_fuzzing(server: ServerThread) -> None:
    for seed in range(20):
        report = fuzzing.fuzz_server("127.0.0.1", server.port, seed=seed, frames_total=20_000)
        assert report.failures == [], f"seed {seed}"
        assert server.registry.statistics()["internal_errors"] == 0
