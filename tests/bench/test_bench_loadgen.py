"""The load generator, its histogram and `bench compare` (Redis only when installed)."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from ringbolt.bench import peers
from ringbolt.bench.cli import bench
from ringbolt.bench.compare import ratios, render_table
from ringbolt.bench.histogram import LatencyHistogram
from ringbolt.bench.loadgen import (
    HttpReader,
    KeyChooser,
    LoadError,
    LoadSpec,
    etcd_request,
    parse_address,
    run_load,
)
from ringbolt.server.connection import serve_clients
from ringbolt.server.local import LocalService

REPORT_KEYS = {"ops_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "errors",
               "client_cpu_s", "ops", "error_total"}


class ServerThread:
    """LocalService behind the real RESP layer on its own event loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(
                serve_clients(LocalService(), "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            self.server = server
            started.set()
            self.loop.run_forever()
            server.close()
            self.loop.run_until_complete(server.wait_closed())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10.0)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10.0)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread()
    yield running
    running.stop()


# -- histogram -------------------------------------------------------------------------------


def test_histogram_percentiles_match_a_known_uniform_distribution() -> None:
    histogram = LatencyHistogram()
    for micros in range(1, 100_001):  # 1 us .. 100 ms, one of each
        histogram.record(micros)
    assert histogram.count == 100_000
    for percentile, expected_ms in [(50, 50.0), (90, 90.0), (99, 99.0), (99.9, 99.9)]:
        assert histogram.percentile_ms(percentile) == pytest.approx(expected_ms, rel=2e-3)
    assert histogram.max_ms() == pytest.approx(100.0, rel=2e-3)
    assert histogram.mean_ms() == pytest.approx(50.0, rel=2e-3)


def test_histogram_merge_through_encoding_is_exact() -> None:
    rng = random.Random(5)
    values = [int(rng.expovariate(1 / 2000)) + 1 for _ in range(20_000)]
    whole, merged = LatencyHistogram(), LatencyHistogram()
    parts = [LatencyHistogram() for _ in range(3)]
    for index, value in enumerate(values):
        whole.record(value)
        parts[index % 3].record(value)
    for part in parts:
        merged.add_encoded(part.encode())
    merged.add_encoded(LatencyHistogram().encode())  # an idle worker adds nothing
    assert merged.count == whole.count == len(values)
    for percentile in (50, 90, 99, 99.9, 100):
        assert merged.percentile_ms(percentile) == whole.percentile_ms(percentile)
    exact_p99 = sorted(values)[int(len(values) * 0.99) - 1] / 1000
    assert merged.percentile_ms(99) == pytest.approx(exact_p99, rel=2e-3)


def test_histogram_clamps_out_of_range_values() -> None:
    histogram = LatencyHistogram()
    histogram.record(0)
    histogram.record(10**12)
    assert histogram.count == 2
    assert histogram.max_ms() == pytest.approx(60_000, rel=1e-3)


# -- spec and key choice ---------------------------------------------------------------------


def test_spec_split_shares_clients_rate_and_ops() -> None:
    spec = LoadSpec(addresses=(("127.0.0.1", 1),), clients=5, procs=2, rate=1000.0, ops=100)
    parts = spec.split()
    assert [p.clients for p in parts] == [3, 2]
    assert sum(p.rate or 0 for p in parts) == pytest.approx(1000.0)
    assert sum(p.ops or 0 for p in parts) == 100
    assert len({p.seed for p in parts}) == 2
    assert len(LoadSpec(addresses=spec.addresses, clients=1, procs=4).split()) == 1


@pytest.mark.parametrize("bad", [dict(clients=0), dict(reads=0.8, cas=0.5), dict(dist="x"),
                                 dict(pipeline=0), dict(addresses=())])
def test_spec_rejects_bad_values(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"addresses": (("127.0.0.1", 1),), **bad}
    with pytest.raises(LoadError):
        LoadSpec(**fields).check()  # type: ignore[arg-type]


def test_zipfian_keys_are_skewed_and_in_range() -> None:
    chooser = KeyChooser(1000, "zipfian", 0.99, random.Random(3))
    draws = [chooser.next() for _ in range(20_000)]
    assert all(0 <= d < 1000 for d in draws)
    counts = sorted((draws.count(k) for k in set(draws)), reverse=True)
    assert counts[0] > 10 * (20_000 / 1000)  # the hottest key is far above uniform
    uniform = KeyChooser(1000, "uniform", 0.99, random.Random(3))
    assert all(0 <= uniform.next() < 1000 for _ in range(1000))


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    with pytest.raises(LoadError):
        parse_address("localhost")


# -- against a live in-memory server ---------------------------------------------------------


def test_cli_json_run_against_local_service(server: ServerThread) -> None:
    result = CliRunner().invoke(bench, [
        "--address", f"127.0.0.1:{server.port}", "--duration", "2", "--warmup", "0.2",
        "--clients", "4", "--procs", "2", "--pipeline", "4", "--reads", "0.5",
        "--cas", "0.2", "--dist", "zipfian", "--keys", "1000", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) >= REPORT_KEYS
    assert report["ops"] > 0 and report["ops_per_s"] > 0
    assert report["errors"] == {} and report["error_total"] == 0
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["p999_ms"] <= report["max_ms"]
    assert report["client_cpu_s"] > 0
    assert report["procs"] == 2


def test_ops_limit_and_values_are_written(server: ServerThread) -> None:
    spec = LoadSpec(addresses=(("127.0.0.1", server.port),), clients=2, procs=1, ops=200,
                    reads=0.0, keys=10, warmup_s=0.0, duration_s=20.0, value_size=7)
    report = run_load(spec)
    assert report.ops == 200 and report.error_total == 0
    import redis

    client = redis.Redis(port=server.port)
    assert client.get("key:000000000003") == b"v" * 7
    client.close()


def test_open_loop_rate_is_respected(server: ServerThread) -> None:
    spec = LoadSpec(addresses=(("127.0.0.1", server.port),), clients=4, procs=2, rate=400.0,
                    warmup_s=0.2, duration_s=1.5)
    report = run_load(spec)
    assert report.error_total == 0
    assert 400 * 1.5 * 0.7 <= report.ops <= 400 * 1.5 * 1.1


def test_unreachable_target_counts_connect_errors() -> None:
    from ringbolt.bench.peers import free_port

    spec = LoadSpec(addresses=(("127.0.0.1", free_port()),), clients=1, procs=1,
                    warmup_s=0.0, duration_s=0.5)
    report = run_load(spec)
    assert report.ops == 0
    assert report.errors.get("connect", 0) >= 1


# -- compare ---------------------------------------------------------------------------------


def test_ratios_and_table_from_a_synthetic_result() -> None:
    row = {"ops_per_s": 100.0, "p50_ms": 1.0, "p99_ms": 4.0, "client_cpu_s": 0.5,
           "error_total": 0}
    peer = {**row, "ops_per_s": 400.0, "p99_ms": 2.0}
    systems = {"ringbolt": {"status": "ok", "reason": "", "results": {"1": row}},
               "redis-aof-off": {"status": "ok", "reason": "", "results": {"1": peer}},
               "etcd": {"status": "skipped", "reason": "no driver", "results": {}}}
    computed = ratios(systems)
    assert computed == {"redis-aof-off": {"1": {"ops_per_s": 0.25, "p50_ms": 1.0,
                                                 "p99_ms": 2.0}}}
    table = render_table({"systems": systems, "ratios": computed})
    assert "skipped: no driver" in table and "| redis-aof-off | 1 | 400 |" in table


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_compare_against_redis_without_aof(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(peers.SYSTEMS, "zookeeper", peers.unsupported("not started in this test"))
    result = CliRunner().invoke(bench, [
        "compare", "--systems", "redis-aof-off,zookeeper", "--duration", "2", "--warmup", "0.3",
        "--clients", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    redis_entry = report["systems"]["redis-aof-off"]
    assert redis_entry["status"] == "ok", redis_entry
    row = redis_entry["results"]["1"]
    assert row["ops_per_s"] > 0 and row["error_total"] == 0
    assert {"ops_per_s", "p50_ms", "p99_ms"} <= set(row)
    assert report["systems"]["zookeeper"]["status"] == "skipped"
    assert "ratios" in report


def test_http_reader_splits_pipelined_responses_and_flags_errors() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    bad = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
    reader = HttpReader()
    stream = ok + bad + ok
    reader.feed(stream[:30])
    assert reader.gets() is False
    reader.feed(stream[30:])
    assert reader.gets() is True
    failed = reader.gets()
    assert isinstance(failed, RuntimeError) and str(failed) == "HTTP503"
    assert reader.gets() is True
    assert reader.gets() is False


def test_etcd_request_encodes_put_and_range() -> None:
    put = etcd_request(b"key:1", b"vv")
    head, _, body = put.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v3/kv/put HTTP/1.1")
    assert json.loads(body) == {"key": "a2V5OjE=", "value": "dnY="}
    assert b"Content-Length: %d" % len(body) in head
    assert etcd_request(b"key:1", None).startswith(b"POST /v3/kv/range ")


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd (etcd-server) not installed")
def test_compare_against_etcd() -> None:
    result = CliRunner().invoke(bench, [
        "compare", "--systems", "etcd", "--duration", "1", "--warmup", "0.3",
        "--clients", "2", "--json"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)["systems"]["etcd"]
    assert entry["status"] == "ok", entry
    assert entry["results"]["2"]["ops_per_s"] > 0
    assert entry["results"]["2"]["error_total"] == 0


def test_compare_against_pysyncobj() -> None:
    pytest.importorskip("pysyncobj", reason="pysyncobj not installed")
    result = CliRunner().invoke(bench, [
        "compare", "--systems", "pysyncobj", "--duration", "1", "--warmup", "0.5",
        "--clients", "4", "--json"])
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)["systems"]["pysyncobj"]
    assert entry["status"] == "ok", entry
    assert entry["results"]["4"]["ops_per_s"] > 0
    assert entry["results"]["4"]["error_total"] == 0
