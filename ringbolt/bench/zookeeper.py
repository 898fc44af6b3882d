"""ZooKeeper for `ringbolt bench compare`: a 3-server ensemble and a kazoo load generator.

Theory of operation
-------------------
`ensemble(scratch)` starts 3 ZooKeeper servers (Debian's `zookeeper`
package, installed with apt-get when running as root and missing) on
127.0.0.1 and free ports, each with its own `zoo.cfg`, `myid` and data
directory under `scratch`, with the package's defaults otherwise (every
transaction is fsynced before it is acknowledged). It waits, bounded, until
every server answers `srvr` as leader or follower, and on exit stops exactly
the processes it started. When Java, the package or kazoo are missing it
raises `Skipped` with the reason.

`run_zk_load(spec)` drives it with the same shape as the RESP load
generator: `spec.procs` worker processes share `spec.clients` kazoo
sessions, spread round-robin over the servers. Each session is a closed
loop of one request at a time (ZooKeeper answers one session in order, so
in-flight requests == sessions). A write is `set_data` of a
`value_size`-byte value on `/bench/c<clients>-<key>`, or `create` the first
time the session touches that key: keys are split between sessions (key k
belongs to session k mod clients) and named per client count, so no two
sessions, nor two runs on one ensemble, race to create one znode. A read
(`spec.reads`) is `get` (ZooKeeper reads are served by the local server, not
linearizable). Latencies go into the same HdrHistogram and the result is
the same `LoadReport` as `ringbolt bench`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ringbolt.bench.histogram import LatencyHistogram
from ringbolt.bench.loadgen import LoadError, LoadReport, LoadSpec, WorkerResult, collect, merge
from ringbolt.bench.peers import (
    HOST,
    START_TIMEOUT_S,
    Address,
    Skipped,
    apt_install,
    free_port,
    stop_process,
)

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
CLASSPATH = f"/etc/zookeeper/conf:{ZOOKEEPER_JAR}"
SESSIONS_PER_PROC_MAX = 128
START_SESSION_TIMEOUT_S = 30.0


def _install() -> None:
    if not apt_install("zookeeper", lambda: bool(shutil.which("java"))
                       and os.path.exists(ZOOKEEPER_JAR)):
        raise Skipped("zookeeper is not installed and could not be (Debian package "
                      "`zookeeper`, apt-get as root)")


def _kazoo() -> None:
    if importlib.util.find_spec("kazoo") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "kazoo"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        importlib.invalidate_caches()
        if importlib.util.find_spec("kazoo") is None:
            raise Skipped("kazoo is not installed and pip could not install it")


def four_letter(address: Address, word: bytes, timeout_s: float = 1.0) -> bytes:
    """A ZooKeeper four-letter-word command's answer (b"" when unreachable)."""
    try:
        with socket.create_connection(address, timeout=timeout_s) as connection:
            connection.sendall(word)
            chunks = []
            for _ in range(64):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
    except OSError:
        return b""


def _config(scratch: Path, myid: int, client: int, servers: list[tuple[int, int]]) -> Path:
    data = scratch / f"zk{myid}"
    data.mkdir(parents=True, exist_ok=True)
    (data / "myid").write_text(f"{myid}\n")
    lines = ["tickTime=2000", "initLimit=10", "syncLimit=5", f"dataDir={data}",
             f"clientPort={client}", f"clientPortAddress={HOST}", "maxClientCnxns=0",
             "admin.enableServer=false", "4lw.commands.whitelist=srvr,ruok",
             "autopurge.purgeInterval=0"]
    lines += [f"server.{i}={HOST}:{peer}:{election}"
              for i, (peer, election) in enumerate(servers, start=1)]
    path = data / "zoo.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def ensemble(scratch: Path) -> Iterator[list[Address]]:
    _install()
    _kazoo()
    clients = [free_port() for _ in range(3)]
    servers = [(free_port(), free_port()) for _ in range(3)]
    processes: list[subprocess.Popen[bytes]] = []
    log = open(scratch / "zookeeper.log", "wb")  # noqa: SIM115 - closed below
    try:
        for myid, client in enumerate(clients, start=1):
            config = _config(scratch, myid, client, servers)
            processes.append(subprocess.Popen(
                ["java", "-Xmx512m", f"-Dzookeeper.log.dir={scratch}",
                 "-Dzookeeper.root.logger=WARN,CONSOLE", "-cp", CLASSPATH,
                 "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True))
        addresses = [(HOST, client) for client in clients]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(b"Mode: " in four_letter(a, b"srvr") for a in addresses):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise Skipped("the zookeeper ensemble did not come up (see zookeeper.log)")
            time.sleep(0.3)
        _ensure_root(addresses)
        yield addresses
    finally:
        for process in processes:
            stop_process(process)
        log.close()


def _ensure_root(addresses: list[Address]) -> None:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=",".join(f"{h}:{p}" for h, p in addresses), timeout=10)
    client.start(timeout=START_SESSION_TIMEOUT_S)
    try:
        client.ensure_path("/bench")
    finally:
        client.stop()
        client.close()


# -- the load generator -----------------------------------------------------------------


class _Session:
    """One kazoo session in a closed loop; callbacks run on kazoo's threads."""

    def __init__(self, run: _Run, client: Any, number: int, rng: random.Random) -> None:
        self.run = run
        self.client = client
        self.number = number
        self.rng = rng
        self.created: set[int] = set()
        self.started = 0.0

    def issue(self) -> None:
        run = self.run
        if time.monotonic() >= run.deadline:
            run.session_done()
            return
        spec = run.spec
        per_session = max(1, spec.keys // run.sessions_total)
        key = self.number + run.sessions_total * self.rng.randrange(per_session)
        path = f"/bench/c{run.sessions_total}-{key:0{spec.key_size}d}"
        self.started = time.monotonic()
        if key not in self.created:
            self.created.add(key)
            request = self.client.create_async(path, run.value)
        elif self.rng.random() < spec.reads:
            request = self.client.get_async(path)
        else:
            request = self.client.set_async(path, run.value)
        request.rawlink(self.done)

    def done(self, request: Any) -> None:
        finished = time.monotonic()
        error = None if request.successful() else type(request.exception).__name__
        self.run.account(self.started, finished, error)
        self.issue()


class _Run:
    def __init__(self, spec: LoadSpec, first_session: int, sessions_total: int) -> None:
        self.spec = spec
        self.first_session = first_session
        self.sessions_total = sessions_total
        self.value = b"v" * spec.value_size
        self.lock = threading.Lock()
        self.histogram = LatencyHistogram()
        self.errors: Counter[str] = Counter()
        self.recorded = 0
        self.measure_from = 0.0
        self.deadline = 0.0
        self.running = 0
        self.finished = threading.Event()

    def account(self, started: float, finished: float, error: str | None) -> None:
        if started < self.measure_from:
            return
        with self.lock:
            self.histogram.record(max(1, int((finished - started) * 1e6)))
            self.recorded += 1
            if error is not None:
                self.errors[error] += 1

    def session_done(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0:
                self.finished.set()


def _worker(spec: LoadSpec, first_session: int, sessions_total: int, ready: Any, go: Any,
            pipe: Any) -> None:
    result = WorkerResult()
    clients: list[Any] = []
    try:
        from kazoo.client import KazooClient

        run = _Run(spec, first_session, sessions_total)
        for index in range(spec.clients):
            host, port = spec.addresses[(first_session + index) % len(spec.addresses)]
            client = KazooClient(hosts=f"{host}:{port}", timeout=10)
            client.start(timeout=START_SESSION_TIMEOUT_S)
            clients.append(client)
        sessions = [_Session(run, client, first_session + index,
                             random.Random(spec.seed * 7919 + first_session + index))
                    for index, client in enumerate(clients)]
        ready.release()
        if not go.wait(spec.max_time_s):
            raise LoadError("never told to start")
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        run.measure_from = start + spec.warmup_s
        run.deadline = min(run.measure_from + spec.duration_s, start + spec.max_time_s)
        run.running = len(sessions)
        for session in sessions:
            session.issue()
        if not run.finished.wait(spec.warmup_s + spec.duration_s + spec.request_timeout_s + 10):
            run.errors["timeout"] += run.running
        after = resource.getrusage(resource.RUSAGE_SELF)
        with run.lock:
            result.elapsed_s = min(time.monotonic(), run.deadline) - run.measure_from
            result.cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            result.ops = run.recorded
            result.errors = dict(run.errors)
            result.histogram = run.histogram.encode()
    except Exception as error:  # reported to the parent, which raises LoadError
        result.failure = f"{type(error).__name__}: {error}"
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.stop()
                client.close()
    pipe.send(result)
    pipe.close()


def run_zk_load(spec: LoadSpec) -> LoadReport:
    """Closed-loop kazoo load with `spec`'s shape (pipelining is not used)."""
    spec.check()
    procs = max(min(spec.procs, spec.clients), -(-spec.clients // SESSIONS_PER_PROC_MAX))
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", procs)
    ready = context.Semaphore(0)
    go = context.Event()
    workers = []
    first = 0
    for index in range(procs):
        sessions = spec.clients // procs + (1 if index < spec.clients % procs else 0)
        part = replace(spec, clients=sessions, procs=1)
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_worker, daemon=True,
                                  args=(part, first, spec.clients, ready, go, sender))
        process.start()
        sender.close()
        workers.append((process, receiver))
        first += sessions
    try:
        deadline = time.monotonic() + 90.0
        for _ in workers:
            while not ready.acquire(timeout=0.1):
                if any(p.exitcode is not None for p, _ in workers):
                    raise LoadError("a zookeeper load worker exited before starting")
                if time.monotonic() > deadline:
                    raise LoadError("zookeeper load workers did not connect in time")
        go.set()
        started = time.monotonic()
        hard_stop = started + spec.warmup_s + spec.duration_s + 60.0
        results = collect(workers, counters, started, hard_stop, None, 0.5)
    finally:
        for process, _ in workers:
            if process.is_alive():
                process.terminate()
            process.join(5.0)
    return merge(spec, results)
