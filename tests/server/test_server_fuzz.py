"""Protocol robustness against a live replicated node: >= 10,000 random and
mutated RESP frames over many connections; the node never crashes, answers or
closes each connection, and keeps serving other clients (the fuzzer's healthy
client checks SET/GET throughout, and the other nodes keep working)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

import pytest
import redis

from ringbolt.server.process import LocalCluster

pytestmark = pytest.mark.timeout(300)


def _fuzzing() -> ModuleType:
    path = pathlib.Path(__file__).resolve().parent.parent / "resp" / "fuzzing.py"
    spec = importlib.util.spec_from_file_location("resp_fuzzing_for_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_live_node_survives_fuzzing(cluster: LocalCluster) -> None:
    target = 1
    report = _fuzzing().fuzz_server("127.0.0.1", cluster.client_port(target),
                                    seed=4242, frames_total=10_000, timeout_s=20.0)
    assert report.failures == []
    assert report.frames == 10_000
    assert report.connections >= 300
    assert report.protocol_errors > 100
    assert report.healthy_checks >= 2
    for node in cluster.node_ids():
        assert cluster.alive(node), f"node {node} died"
    fuzzed = redis.Redis(port=cluster.client_port(target), socket_timeout=10)
    other = redis.Redis(port=cluster.client_port(2), socket_timeout=10)
    try:
        assert fuzzed.set("after-fuzz", "still-here") is True
        assert other.get("after-fuzz") == b"still-here"
        clients = fuzzed.info("clients")
        assert clients["internal_errors"] == 0
    finally:
        fuzzed.close()
        other.close()
