"""Load generator: raw RESP over asyncio, pipelined, spread over processes.

Theory of operation
-------------------
The parent process plans the run (`LoadSpec`), splits clients, rate and
operation budget evenly over `procs` worker processes and starts them with
the `spawn` method. Each worker opens its share of connections (spread
round-robin over the target addresses), signals it is ready and waits for a
common start event so connection set-up is never measured.

Each connection runs one loop: build a batch of `pipeline` commands (GET,
SET or CAS chosen by the read/CAS mix, key drawn uniformly or from a
zipfian distribution), write it in one `write()`, parse replies with
`hiredis.Reader` and record one latency per command in microseconds into an
HdrHistogram. In the closed loop a connection sends its next batch when the
previous one is answered. In the open loop (`rate`) each connection owns a
schedule of batch start times; latency is measured from the *scheduled*
time, so a slow server cannot hide queueing (no coordinated omission).

Replies that are errors are counted by their first word (`ERR`, `MOVED`,
`TRYAGAIN`, ...); lost connections count as `connection`, replies slower
than `request_timeout_s` as `timeout` (the connection is then closed and
reopened). Operations completed during `warmup_s` are not recorded.

Workers report progress through a shared counter array, and at the end send
the encoded histogram, counts, errors and their own CPU time
(`resource.getrusage`) over a pipe; the parent decodes and merges the
histograms. Everything is bounded: the run stops at `duration_s` or `ops`,
whichever comes first, and never later than `max_time_s`; workers that do
not report in time are terminated.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import itertools
import json
import multiprocessing
import random
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import hiredis

from ringbolt.bench.histogram import LatencyHistogram

MAX_PROCS = 64
MAX_CLIENTS = 4096
MAX_PIPELINE = 1024
MAX_KEYS = 10_000_000
MAX_VALUE_SIZE = 1 << 20
MAX_ZIPF_TABLE = 1_000_000
MAX_HTTP_HEADER = 16 * 1024
PROTOCOLS = ("resp", "etcd")


class LoadError(Exception):
    """The run could not be carried out (bad spec, unreachable targets)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    addresses: tuple[tuple[str, int], ...]
    clients: int = 16
    procs: int = 2
    rate: float | None = None
    keys: int = 100_000
    dist: str = "uniform"
    zipf_s: float = 0.99
    value_size: int = 100
    key_size: int = 16
    reads: float = 0.5
    cas: float = 0.0
    duration_s: float = 10.0
    ops: int | None = None
    warmup_s: float = 1.0
    pipeline: int = 1
    request_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    max_time_s: float = 600.0
    seed: int = 1
    protocol: str = "resp"

    def check(self) -> None:
        if not self.addresses:
            raise LoadError("no target address")
        if not 1 <= self.procs <= MAX_PROCS:
            raise LoadError(f"procs must be in 1..{MAX_PROCS}")
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise LoadError(f"clients must be in 1..{MAX_CLIENTS}")
        if not 1 <= self.pipeline <= MAX_PIPELINE:
            raise LoadError(f"pipeline must be in 1..{MAX_PIPELINE}")
        if not 1 <= self.keys <= MAX_KEYS:
            raise LoadError(f"keys must be in 1..{MAX_KEYS}")
        if not 1 <= self.value_size <= MAX_VALUE_SIZE or not 8 <= self.key_size <= 1024:
            raise LoadError("value size must be 1..1 MiB and key size 8..1024")
        if self.protocol not in PROTOCOLS:
            raise LoadError(f"protocol must be one of {PROTOCOLS}")
        if self.dist not in ("uniform", "zipfian"):
            raise LoadError("dist must be uniform or zipfian")
        if self.reads < 0 or self.cas < 0 or self.reads + self.cas > 1:
            raise LoadError("reads and cas are fractions summing to at most 1")
        if self.rate is not None and self.rate <= 0:
            raise LoadError("rate must be positive")
        if self.duration_s <= 0 or self.warmup_s < 0 or self.max_time_s <= 0:
            raise LoadError("duration must be positive and warmup non-negative")
        if self.ops is not None and self.ops < 1:
            raise LoadError("ops must be positive")

    def split(self) -> list[LoadSpec]:
        """One spec per worker process; clients, rate and ops shared out evenly."""
        procs = min(self.procs, self.clients)
        specs = []
        for index in range(procs):
            clients = self.clients // procs + (1 if index < self.clients % procs else 0)
            rate = None if self.rate is None else self.rate * clients / self.clients
            ops = None if self.ops is None else max(1, self.ops * clients // self.clients)
            specs.append(replace(self, clients=clients, procs=1, rate=rate, ops=ops,
                                 seed=self.seed * 1000 + index))
        return specs


@dataclass(slots=True, kw_only=True)
class WorkerResult:
    ops: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    histogram: bytes = b""
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    failure: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    ops: int
    elapsed_s: float
    ops_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    error_total: int
    client_cpu_s: float
    client_cpu_per_op_us: float
    clients: int
    procs: int
    pipeline: int
    rate: float | None
    reads: float
    cas: float
    dist: str
    keys: int
    value_size: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- key and command generation ---------------------------------------------------------


class KeyChooser:
    """Uniform or zipfian key indexes; the zipfian table is bounded in size."""

    def __init__(self, keys: int, dist: str, s: float, rng: random.Random) -> None:
        self.keys = keys
        self.rng = rng
        self.cdf: list[float] | None = None
        if dist == "zipfian":
            ranks = min(keys, MAX_ZIPF_TABLE)
            weights = [1.0 / (rank ** s) for rank in range(1, ranks + 1)]
            self.cdf = list(itertools.accumulate(weights))
            # Hot ranks land on scattered keys, not on neighbours.
            self.scatter = rng.randrange(1, 1 << 31) | 1

    def next(self) -> int:
        if self.cdf is None:
            return self.rng.randrange(self.keys)
        rank = bisect.bisect_left(self.cdf, self.rng.random() * self.cdf[-1])
        return (rank * self.scatter) % self.keys


def resp_command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class CommandMaker:
    def __init__(self, spec: LoadSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.chooser = KeyChooser(spec.keys, spec.dist, spec.zipf_s, rng)
        self.value = (b"v" * spec.value_size)

    def key(self) -> bytes:
        index = self.chooser.next()
        prefix = b"key:"
        return prefix + str(index).encode().rjust(self.spec.key_size - len(prefix), b"0")

    def batch(self, size: int) -> bytes:
        parts = []
        for _ in range(size):
            draw = self.rng.random()
            key = self.key()
            if self.spec.protocol == "etcd":
                parts.append(etcd_request(key, None if draw < self.spec.reads else self.value))
            elif draw < self.spec.reads:
                parts.append(resp_command(b"GET", key))
            elif draw < self.spec.reads + self.spec.cas:
                parts.append(resp_command(b"CAS", key, self.value, self.value))
            else:
                parts.append(resp_command(b"SET", key, self.value))
        return b"".join(parts)


def etcd_request(key: bytes, value: bytes | None) -> bytes:
    """One HTTP/1.1 request to etcd's v3 JSON gateway: put, or a linearizable range."""
    body = {"key": base64.b64encode(key).decode()}
    if value is not None:
        body["value"] = base64.b64encode(value).decode()
    payload = json.dumps(body).encode()
    path = b"/v3/kv/range" if value is None else b"/v3/kv/put"
    return (b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path, len(payload), payload))


class HttpReader:
    """Splits a stream of HTTP/1.1 responses with Content-Length (hiredis-like API)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def gets(self) -> object:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HTTP_HEADER:
                raise hiredis.ProtocolError("HTTP header too long")
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise hiredis.ProtocolError("HTTP response without Content-Length")
        if len(self.buffer) < end + 4 + length:
            return False
        del self.buffer[:end + 4 + length]
        status = head[0].split(" ", 2)[1]
        return True if status == "200" else RuntimeError(f"HTTP{status}")


def error_kind(reply: Exception) -> str:
    words = str(reply).split(maxsplit=1)
    return words[0] if words else "error"


# -- worker process -----------------------------------------------------------------------


class Worker:
    def __init__(self, spec: LoadSpec, progress: Callable[[int], None]) -> None:
        self.spec = spec
        self.progress = progress
        self.histogram = LatencyHistogram()
        self.errors: Counter[str] = Counter()
        self.recorded = 0
        self.issued = 0
        self.measure_from = 0.0
        self.deadline = 0.0

    def budget(self, size: int) -> int:
        """How many commands the next batch may carry under the ops limit."""
        if self.spec.ops is None:
            return size
        allowed = self.spec.ops - self.issued
        return max(0, min(size, allowed))

    def account(self, started: float, finished: float, count: int, errors: list[str]) -> None:
        if started < self.measure_from:
            return
        micros = max(1, int((finished - started) * 1e6))
        self.histogram.record(micros, count)
        self.recorded += count
        for kind in errors:
            self.errors[kind] += 1
        self.progress(self.recorded)

    async def connection(self, index: int) -> None:
        spec = self.spec
        host, port = spec.addresses[index % len(spec.addresses)]
        rng = random.Random(spec.seed * 7919 + index)
        maker = CommandMaker(spec, rng)
        interval = None if spec.rate is None else spec.pipeline * spec.clients / spec.rate
        next_start = time.monotonic() + (rng.random() * interval if interval else 0.0)
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), spec.connect_timeout_s)
            except OSError:  # TimeoutError included
                self.errors["connect"] += 1
                await asyncio.sleep(0.1)
                continue
            try:
                next_start = await self.drive(reader, writer, maker, interval, next_start)
            except TimeoutError:
                self.errors["timeout"] += 1
            except (OSError, asyncio.IncompleteReadError, hiredis.ProtocolError):
                self.errors["connection"] += 1
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if self.spec.ops is not None and self.issued >= self.spec.ops:
                return

    async def drive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    maker: CommandMaker, interval: float | None, next_start: float) -> float:
        parser: Any = HttpReader() if self.spec.protocol == "etcd" else hiredis.Reader()
        while True:
            now = time.monotonic()
            if now >= self.deadline:
                return next_start
            if interval is not None:
                if next_start > now:
                    await asyncio.sleep(min(next_start - now, self.deadline - now))
                    continue
                started = next_start
                next_start += interval
            else:
                started = now
            size = self.budget(self.spec.pipeline)
            if size == 0:
                return next_start
            self.issued += size
            writer.write(maker.batch(size))
            errors = await asyncio.wait_for(self.replies(reader, parser, size),
                                            self.spec.request_timeout_s)
            self.account(started, time.monotonic(), size, errors)

    @staticmethod
    async def replies(reader: asyncio.StreamReader, parser: Any,
                      count: int) -> list[str]:
        errors: list[str] = []
        received = 0
        while received < count:
            reply = parser.gets()
            if reply is False:
                data = await reader.read(1 << 16)
                if not data:
                    raise asyncio.IncompleteReadError(b"", None)
                parser.feed(data)
                continue
            received += 1
            if isinstance(reply, Exception):
                errors.append(error_kind(reply))
        return errors

    async def run(self, start_at: float) -> float:
        spec = self.spec
        self.measure_from = start_at + spec.warmup_s
        self.deadline = min(self.measure_from + spec.duration_s, start_at + spec.max_time_s)
        tasks = [asyncio.create_task(self.connection(i)) for i in range(spec.clients)]
        await asyncio.gather(*tasks)
        return min(time.monotonic(), self.deadline) - self.measure_from


def worker_main(spec: LoadSpec, slot: int, counters: SynchronizedArray[int],
                ready: Any, go: Any, pipe: Connection) -> None:
    result = WorkerResult()
    try:
        with contextlib.suppress(ImportError):
            import uvloop
            uvloop.install()

        def progress(recorded: int) -> None:
            counters[slot] = recorded

        worker = Worker(spec, progress)
        ready.release()
        if not go.wait(spec.max_time_s):
            raise LoadError("never told to start")
        before = resource.getrusage(resource.RUSAGE_SELF)
        result.elapsed_s = asyncio.run(worker.run(time.monotonic()))
        after = resource.getrusage(resource.RUSAGE_SELF)
        result.cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result.ops = worker.recorded
        result.errors = dict(worker.errors)
        result.histogram = worker.histogram.encode()
    except Exception as error:  # reported to the parent, which raises LoadError
        result.failure = f"{type(error).__name__}: {error}"
    pipe.send(result)
    pipe.close()


# -- parent ---------------------------------------------------------------------------------


def run_load(spec: LoadSpec, on_progress: Callable[[int, float], None] | None = None,
             progress_interval_s: float = 0.5) -> LoadReport:
    """Run the load described by `spec` in worker processes; merge their results."""
    spec.check()
    parts = spec.split()
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", len(parts))
    ready = context.Semaphore(0)
    go = context.Event()
    workers = []
    for slot, part in enumerate(parts):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=worker_main, daemon=True,
                                  args=(part, slot, counters, ready, go, sender))
        process.start()
        sender.close()
        workers.append((process, receiver))
    try:
        wait_ready(ready, [process for process, _ in workers], timeout_s=60.0)
        go.set()
        started = time.monotonic()
        hard_stop = started + min(spec.max_time_s, spec.warmup_s + spec.duration_s) + 30.0
        results = collect(workers, counters, started, hard_stop, on_progress,
                          progress_interval_s)
    finally:
        for process, _ in workers:
            if process.is_alive():
                process.terminate()
            process.join(5.0)
    return merge(spec, results)


def wait_ready(ready: Any, processes: list[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in processes:
        while not ready.acquire(timeout=0.1):
            if any(p.exitcode is not None for p in processes):
                raise LoadError("a worker process exited before starting")
            if time.monotonic() > deadline:
                raise LoadError(f"a worker process did not start within {timeout_s:.0f} s")


def collect(workers: list[tuple[Any, Connection]], counters: SynchronizedArray[int],
            started: float, hard_stop: float, on_progress: Callable[[int, float], None] | None,
            interval_s: float) -> list[WorkerResult]:
    results: dict[int, WorkerResult] = {}
    while len(results) < len(workers):
        if time.monotonic() > hard_stop:
            raise LoadError("worker processes did not finish in time")
        for index, (_, receiver) in enumerate(workers):
            if index not in results and receiver.poll(interval_s / len(workers)):
                try:
                    results[index] = receiver.recv()
                except EOFError as error:
                    raise LoadError("a worker process died") from error
        if on_progress is not None:
            on_progress(sum(counters[:]), time.monotonic() - started)
    failures = [r.failure for r in results.values() if r.failure]
    if failures:
        raise LoadError("; ".join(failures))
    return [results[i] for i in range(len(workers))]


def merge(spec: LoadSpec, results: list[WorkerResult]) -> LoadReport:
    histogram = LatencyHistogram()
    errors: Counter[str] = Counter()
    for result in results:
        histogram.add_encoded(result.histogram)
        errors.update(result.errors)
    ops = sum(r.ops for r in results)
    assert ops == histogram.count
    elapsed = max((r.elapsed_s for r in results), default=0.0)
    cpu = sum(r.cpu_s for r in results)
    return LoadReport(
        ops=ops, elapsed_s=round(elapsed, 3),
        ops_per_s=round(ops / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=histogram.percentile_ms(50), p90_ms=histogram.percentile_ms(90),
        p99_ms=histogram.percentile_ms(99), p999_ms=histogram.percentile_ms(99.9),
        max_ms=histogram.max_ms(), mean_ms=histogram.mean_ms(),
        errors=dict(errors), error_total=sum(errors.values()),
        client_cpu_s=round(cpu, 3),
        client_cpu_per_op_us=round(cpu / ops * 1e6, 2) if ops else 0.0,
        clients=spec.clients, procs=len(results), pipeline=spec.pipeline, rate=spec.rate,
        reads=spec.reads, cas=spec.cas, dist=spec.dist, keys=spec.keys,
        value_size=spec.value_size)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise LoadError(f"address must be host:port, not {text!r}")
    return (host or "127.0.0.1", int(port))
