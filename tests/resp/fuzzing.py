"""Seeded RESP fuzzing: a frame generator, a mutator and a live-server driver.

`frames(seed, count)` and `connection_batches(...)` make request frames: valid commands (arrays and
inline), mutations of valid frames (flipped bytes, truncations, bad lengths,
nested arrays, lost CRLFs...) and raw garbage. `fuzz_server(host, port, ...)`
sends frames over many short connections from a thread pool; each connection
half-closes after its frames and must be answered and closed by the server
(replies must be well-formed RESP) within a deadline, while one long-lived
healthy client keeps checking that SET/GET round trips stay correct.

It depends only on the standard library and hiredis so that other suites can
load it by path (tests have no packages):

    spec = importlib.util.spec_from_file_location("resp_fuzzing", "tests/resp/fuzzing.py")
    fuzzing = importlib.util.module_from_spec(spec); spec.loader.exec_module(fuzzing)
    report = fuzzing.fuzz_server("127.0.0.1", port, seed=1, frames_total=10_000)

Frames only use keys under `fz:`; the healthy client uses `healthy:`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import hiredis

COMMANDS: list[list[bytes]] = [
    [b"PING"], [b"PING", b"msg"], [b"ECHO", b"x"], [b"GET", b"K"], [b"SET", b"K", b"V"],
    [b"SET", b"K", b"V", b"EX", b"100"], [b"SET", b"K", b"V", b"NX", b"GET"],
    [b"SET", b"K", b"V", b"PX", b"N"], [b"GETSET", b"K", b"V"], [b"DEL", b"K", b"K"],
    [b"EXISTS", b"K"], [b"MGET", b"K", b"K", b"K"], [b"MSET", b"K", b"V", b"K", b"V"],
    [b"INCR", b"K"], [b"INCRBY", b"K", b"N"], [b"DECRBY", b"K", b"N"], [b"APPEND", b"K", b"V"],
    [b"STRLEN", b"K"], [b"EXPIRE", b"K", b"N"], [b"PEXPIRE", b"K", b"N"], [b"TTL", b"K"],
    [b"PTTL", b"K"], [b"PERSIST", b"K"], [b"CAS", b"K", b"V", b"V"], [b"CAS", b"K", b"V"],
    [b"TYPE", b"K"], [b"DBSIZE"], [b"SCAN", b"0", b"MATCH", b"fz:*", b"COUNT", b"N"],
    [b"INFO"], [b"CONFIG", b"GET", b"*"], [b"CLIENT", b"SETNAME", b"V"], [b"CLIENT", b"LIST"],
    [b"COMMAND", b"DOCS"], [b"COMMAND", b"COUNT"], [b"CLUSTER", b"INFO"], [b"CLUSTER", b"NODES"],
    [b"HELLO", b"3"], [b"HELLO", b"2"], [b"SELECT", b"N"], [b"READONLY"], [b"READWRITE"],
    [b"AUTH", b"V"], [b"TIME"], [b"NOSUCHCOMMAND", b"V"], [b"QUIT"], [b"RESET"],
]


def _value(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.randbytes(rng.randint(1000, 20_000))
    if roll < 0.5:
        return rng.randbytes(rng.randint(0, 20))
    return str(rng.randint(-(2**64), 2**64)).encode() if roll < 0.7 else b"v%d" % rng.randint(0, 99)


def valid_command(rng: random.Random) -> list[bytes]:
    template = rng.choice(COMMANDS)
    if template[0] == b"QUIT" and rng.random() < 0.9:
        template = [b"PING"]  # keep most connections alive to the end
    command: list[bytes] = []
    for word in template:
        if word == b"K":
            command.append(b"fz:%d" % rng.randint(0, 50))
        elif word == b"V":
            command.append(_value(rng))
        elif word == b"N":
            command.append(str(rng.choice([0, 1, -1, 10, 2**63, -(2**63), 99999])).encode())
        else:
            command.append(word.lower() if rng.random() < 0.2 else word)
    return command


def encode(command: list[bytes]) -> bytes:
    return b"".join([b"*%d\r\n" % len(command)] + [b"$%d\r\n%b\r\n" % (len(a), a) for a in command])


def valid_frame(rng: random.Random) -> bytes:
    command = valid_command(rng)
    if rng.random() < 0.15 and all(a and a.isalnum() for a in command):
        return b" ".join(command) + rng.choice([b"\r\n", b"\n"])  # inline form
    return encode(command)


def mutate(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(9)
        position = rng.randrange(len(data) + 1)
        if choice == 0 and data:  # flip a byte
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif choice == 1:  # truncate
            del data[position:]
        elif choice == 2:  # insert garbage
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        elif choice == 3:  # a wrong length
            text = bytes(data)
            marker = rng.choice([b"$", b"*"])
            index = text.find(marker, position)
            if index >= 0:
                end = text.find(b"\r\n", index)
                number = rng.choice([-5, -1, 0, 2**31, 2**40, 1_048_577, rng.randint(0, 100)])
                data[index + 1:end if end > index else index + 1] = str(number).encode()
        elif choice == 4:  # lose a CRLF
            index = bytes(data).find(b"\r\n", position)
            if index >= 0:
                del data[index:index + 2]
        elif choice == 5:  # nest an array, or send a non-bulk type
            data[position:position] = rng.choice([b"*1\r\n", b":1\r\n", b"+OK\r\n", b"%1\r\n"])
        elif choice == 6:  # duplicate a slice
            data[position:position] = data[position:position + rng.randint(1, 40)]
        elif choice == 7:  # a long line without a newline
            data[position:position] = b"A" * rng.choice([100, 70_000])
        else:  # swap a type marker
            index = bytes(data).find(rng.choice([b"$", b"*"]), position)
            if index >= 0:
                data[index] = rng.choice(b"$*:+-#%_~")
    return bytes(data)


def random_frame(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.5:
        return valid_frame(rng)
    if roll < 0.95:
        return mutate(valid_frame(rng), rng)
    return rng.randbytes(rng.randint(1, 64))


def frames(seed: int, count: int) -> Iterator[bytes]:
    """A stream of frames: half valid, half mutated or garbage."""
    rng = random.Random(seed)
    for _ in range(count):
        yield random_frame(rng)


def connection_batches(seed: int, frames_total: int, frames_per_connection: int
                       ) -> list[list[bytes]]:
    """Frames grouped per connection. Connections are clean (all valid: the
    commands run), end in one bad frame, or are chaotic (every frame random),
    so both command handling and every parser error path get exercised."""
    rng = random.Random(seed)
    batches: list[list[bytes]] = []
    remaining = frames_total
    while remaining > 0:
        size = min(remaining, rng.randint(1, 2 * frames_per_connection - 1))
        mode = rng.random()
        if mode < 0.4:
            batch = [valid_frame(rng) for _ in range(size)]
        elif mode < 0.8:
            batch = [valid_frame(rng) for _ in range(size - 1)]
            batch.insert(rng.randrange(size), mutate(valid_frame(rng), rng))
        else:
            batch = [random_frame(rng) for _ in range(size)]
        batches.append(batch)
        remaining -= size
    return batches


@dataclass
class FuzzReport:
    seed: int
    connections: int = 0
    frames: int = 0
    bytes_sent: int = 0
    replies: int = 0
    protocol_errors: int = 0
    healthy_checks: int = 0
    failures: list[str] = field(default_factory=list)


class HealthyClient:
    """One long-lived connection doing SET/GET round trips."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._reader = hiredis.Reader()
        self._counter = 0

    def call(self, *arguments: bytes) -> object:
        self._sock.sendall(encode(list(arguments)))
        while (reply := self._reader.gets()) is False:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("healthy client: server closed the connection")
            self._reader.feed(chunk)
        return reply

    def check(self) -> None:
        self._counter += 1
        key, value = b"healthy:%d" % (self._counter % 7), b"value-%d" % self._counter
        assert self.call(b"SET", key, value) == b"OK"
        assert self.call(b"GET", key) == value
        assert self.call(b"PING") == b"PONG"

    def close(self) -> None:
        self._sock.close()


def _run_connection(host: str, port: int, payload: bytes, cuts: list[int],
                    timeout_s: float) -> tuple[int, int, str | None]:
    """Send `payload` in pieces, half-close, read to EOF. Returns (replies,
    protocol errors, failure or None)."""
    deadline = time.monotonic() + timeout_s
    reader = hiredis.Reader()
    replies = errors = 0
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        previous = 0
        try:
            for cut in [*cuts, len(payload)]:
                sock.sendall(payload[previous:cut])
                previous = cut
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed first (protocol error, QUIT): allowed
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                return replies, errors, "server neither answered nor closed in time"
            if not chunk:
                break
            reader.feed(chunk)
            while (reply := reader.gets()) is not False:
                replies += 1
                errors += isinstance(reply, hiredis.ReplyError) and "Protocol error" in str(reply)
        else:
            return replies, errors, "deadline passed before the server closed"
    return replies, errors, None


def fuzz_server(host: str, port: int, *, seed: int, frames_total: int = 10_000,
                frames_per_connection: int = 25, workers: int = 8,
                timeout_s: float = 10.0) -> FuzzReport:
    """See module docstring; `report.failures` lists what went wrong."""
    assert frames_total > 0 and frames_per_connection > 0 and workers > 0
    rng = random.Random(seed)
    report = FuzzReport(seed=seed)
    healthy = HealthyClient(host, port, timeout_s)
    jobs = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for batch in connection_batches(seed, frames_total, frames_per_connection):
            payload = b"".join(batch)
            if rng.random() < 0.5:  # cut anywhere
                cuts = sorted(rng.sample(range(len(payload) + 1), min(3, len(payload) + 1)))
            else:  # cut between frames (whole pipelines per read: the parser's fast path)
                boundaries = list(itertools.accumulate(len(frame) for frame in batch))
                cuts = sorted(rng.sample(boundaries, min(3, len(boundaries))))
            jobs.append(pool.submit(_run_connection, host, port, payload, cuts, timeout_s))
            report.connections += 1
            report.frames += len(batch)
            report.bytes_sent += len(payload)
        pending = set(jobs)
        deadline = time.monotonic() + timeout_s * (1 + len(jobs) / workers)
        while pending and time.monotonic() < deadline:
            healthy.check()
            report.healthy_checks += 1
            _, pending = concurrent.futures.wait(pending, timeout=0.02)
        for job in jobs:
            try:
                replies, errors, failure = job.result(timeout=timeout_s)
            except Exception as error:  # noqa: BLE001 - reported, not swallowed
                failure, replies, errors = f"{type(error).__name__}: {error}", 0, 0
            report.replies += replies
            report.protocol_errors += errors
            if failure is not None:
                report.failures.append(failure)
    healthy.check()
    report.healthy_checks += 1
    healthy.close()
    return report
