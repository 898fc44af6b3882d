"""Crash-test tool: a durable writer to SIGKILL, and the harness that does it.

Theory of operation
-------------------
``python -m ringbolt.storage.crashtool writer DIR`` opens the WAL and the LMDB
store in DIR, recovers (replays committed WAL entries above each group's
applied index into the store), prints ``READY``, then loops forever: append a
few entries -- each an MPUT of 1..8 keys named after (group, index, key
number, key count) -- with a hard state committing them, fsync the WAL, print
``ACK group index`` (only now is the write acknowledged), apply to LMDB;
every so often checkpoint a group (LMDB fsync, snapshot meta, compact) so
that segments rotate and get deleted under the kills.

``python -m ringbolt.storage.crashtool harness DIR --cycles N`` starts the
writer (forked by a preloaded "zygote" process, or a fresh interpreter with
``--fresh``), kills it with SIGKILL a random 2..100 ms after READY (one time
in five: 0..10 ms after start, during recovery), and checks the
directory: before recovery, every batch visible in LMDB is complete (no
half-applied MPUT); after recovery, every acknowledged batch is present with
its value. Then it starts the writer again, N times.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ringbolt.consensus.types import ConfState, Entry, HardState, SnapshotMeta
from ringbolt.kv.commands import Op, encode
from ringbolt.storage import keyspace
from ringbolt.storage.engine import StateMachineStore
from ringbolt.storage.wal import WriteAheadLog

GROUPS = (1, 2, 3)
CONF = ConfState(voters=frozenset({1}))
MAP_SIZE_BYTES = 256 * 1024 * 1024
KEYS_PER_BATCH_MAX = 8


def batch_keys(group_id: int, index: int, count: int) -> list[bytes]:
    """Zero-padded indices: a group's keys sort by batch, so checks can scan
    from the first batch not yet verified."""
    return [f"g{group_id}-i{index:010d}-k{number}of{count}".encode() for number in range(count)]



def open_storage(directory: str, segment_bytes_max: int) -> tuple[WriteAheadLog, StateMachineStore]:
    wal = WriteAheadLog.open(os.path.join(directory, "wal"), segment_bytes_max=segment_bytes_max)
    try:
        store = StateMachineStore.open(os.path.join(directory, "state"), map_size_bytes=MAP_SIZE_BYTES)
    except BaseException:
        wal.close()
        raise
    return wal, store


def recover(wal: WriteAheadLog, store: StateMachineStore) -> dict[int, int]:
    """Replay committed entries above the store's applied index; return each
    group's last log index."""
    last: dict[int, int] = {}
    for group_id, state in wal.recovered().items():
        applied = store.applied_index(group_id)
        snapshot_index = 0 if state.snapshot is None else state.snapshot.meta.index
        assert applied >= snapshot_index, "the store is behind a recorded checkpoint"
        commit = state.hard_state.commit
        replay = [e for e in state.entries if applied < e.index <= commit]
        if replay:
            store.apply(group_id, replay)
        last[group_id] = state.entries[-1].index if state.entries else snapshot_index
    return last


def emit(text: str) -> None:
    """One write(2) per message: under PIPE_BUF it cannot interleave with the
    zygote's lines on the shared pipe, and nothing sits in a buffer."""
    data = text.encode()
    assert len(data) <= select.PIPE_BUF
    written = os.write(sys.stdout.fileno(), data)
    assert written == len(data)


def run_writer(directory: str, seed: int, segment_bytes_max: int) -> None:
    rng = random.Random(seed)
    wal, store = open_storage(directory, segment_bytes_max)
    last = recover(wal, store)
    emit("READY\n")
    while True:
        written: list[tuple[int, Entry]] = []
        for _ in range(rng.randint(1, 4)):
            group_id = rng.choice(GROUPS)
            index = last.get(group_id, 0) + 1
            keys = batch_keys(group_id, index, rng.randint(1, KEYS_PER_BATCH_MAX))
            data = encode(Op.MPUT, 0, [[key, str(index).encode()] for key in keys])
            entry = Entry(term=1, index=index, data=data)
            wal.append(group_id, entries=[entry], hard_state=HardState(term=1, vote=1, commit=index))
            last[group_id] = index
            written.append((group_id, entry))
        wal.sync()
        emit("".join(f"ACK {g} {e.index}\n" for g, e in written))
        for group_id, entry in written:
            store.apply(group_id, [entry])
        if rng.random() < 0.05:
            group_id = rng.choice(GROUPS)
            index, term = store.checkpoint(group_id)
            if index:
                wal.append(group_id, snapshot_meta=SnapshotMeta(index=index, term=term, conf=CONF))
                wal.compact(group_id, index)
                wal.sync()


@dataclass(slots=True)
class CheckReport:
    acknowledged: int = 0
    batches_seen: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CheckProgress:
    """What earlier checks established, so each check looks at new batches
    only (a full check now and then re-reads everything)."""

    verified: set[tuple[int, int]] = field(default_factory=set)
    """Acknowledged batches found complete with the right values."""
    next_index: dict[int, int] = field(default_factory=dict)
    """Per group: every batch below this index was checked complete."""


def check_atomic(
    store: StateMachineStore, report: CheckReport, next_index: dict[int, int]
) -> dict[tuple[int, int], int]:
    """Every visible batch from `next_index` on is whole; returns the key
    counts of those batches."""
    seen: dict[tuple[int, int], int] = {}
    expected: dict[tuple[int, int], int] = {}
    for group_id in GROUPS:
        # A scan cursor is the stored key after the group prefix: the inline
        # marker and the key (these keys are short), see ringbolt.storage.keyspace.
        first = f"g{group_id}-i{next_index.get(group_id, 0):010d}".encode()
        cursor = keyspace.INLINE + first
        for _ in range(1_000_000):
            cursor, keys = store.scan(group_id, cursor, 1000)
            for key in keys:
                name_group, name_index, name_key = key.decode().split("-")
                batch = (int(name_group[1:]), int(name_index[1:]))
                assert batch[0] == group_id
                seen[batch] = seen.get(batch, 0) + 1
                expected[batch] = int(name_key.split("of")[1])
            if not cursor:
                break
    for batch, count in seen.items():
        if count != expected[batch]:
            report.problems.append(f"batch {batch} half-applied: {count} of {expected[batch]} keys")
    report.batches_seen += len(seen)
    return seen


def check_directory(
    directory: str,
    acknowledged: set[tuple[int, int]],
    segment_bytes_max: int,
    progress: CheckProgress | None = None,
    *,
    full: bool = True,
) -> CheckReport:
    """Before recovery, no visible batch is partial; after recovery, none is
    and every acknowledged batch is present with its values. Unless `full`,
    only batches newer than `progress` are scanned."""
    progress = CheckProgress() if progress is None else progress
    start = {} if full else progress.next_index
    report = CheckReport(acknowledged=len(acknowledged))
    wal, store = open_storage(directory, segment_bytes_max)
    try:
        check_atomic(store, report, start)
        recover(wal, store)
        report.batches_seen = 0
        seen = check_atomic(store, report, start)
        for group_id, index in sorted(acknowledged):
            batch = (group_id, index)
            if batch not in seen:
                if full or batch not in progress.verified:
                    report.problems.append(f"acknowledged batch {batch} lost")
                continue
            if batch in progress.verified:
                continue
            for key in batch_keys(group_id, index, seen[batch]):
                record = store.get(group_id, key)
                if record is None or record[0] != str(index).encode():
                    report.problems.append(f"acknowledged key {key!r} has {record!r}")
            progress.verified.add(batch)
        if not report.problems:
            for group_id, index in seen:
                progress.next_index[group_id] = max(progress.next_index.get(group_id, 0), index + 1)
    finally:
        wal.close()
        store.close()
    return report


def writer_command(directory: str, seed: int, segment_bytes_max: int) -> list[str]:
    return [
        sys.executable, "-m", "ringbolt.storage.crashtool", "writer", directory,
        "--seed", str(seed), "--segment-bytes", str(segment_bytes_max),
    ]  # fmt: skip


def run_zygote(directory: str, segment_bytes_max: int) -> None:
    """A fork server: one interpreter with everything imported forks each
    writer, so a kill cycle costs a fork, not an interpreter start. Protocol
    on stdin/stdout: "spawn SEED" -> "PID n"; the child prints READY and ACKs
    on the same stdout; once it dies the zygote prints "EXIT n", after
    everything the child wrote."""
    for line in sys.stdin:
        command, seed = line.split()
        assert command == "spawn"
        pid = os.fork()
        if pid == 0:
            try:
                run_writer(directory, int(seed), segment_bytes_max)
            finally:
                os._exit(1)
        emit(f"PID {pid}\n")
        os.waitpid(pid, 0)
        emit(f"EXIT {pid}\n")


class Writers:
    """Starts writers for the harness: forked by a zygote (fast) or as fresh
    interpreters (`fresh=True`)."""

    def __init__(self, directory: str, segment_bytes_max: int, *, fresh: bool) -> None:
        self.directory = directory
        self.segment_bytes_max = segment_bytes_max
        self.zygote: subprocess.Popen[bytes] | None = None
        self.writer_pid = 0
        """The forked writer of the current cycle (0: none alive)."""
        if not fresh:
            command = writer_command(directory, 0, segment_bytes_max)
            command[3] = "zygote"
            self.zygote = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def close(self) -> None:
        """Stop the zygote; after a failed cycle, first kill its writer (ours)."""
        if self.zygote is None:
            return
        if self.writer_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.writer_pid, signal.SIGKILL)
        assert self.zygote.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.zygote.stdin.close()
        try:
            self.zygote.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.zygote.kill()
            self.zygote.wait(timeout=30)

    def cycle(self, rng: random.Random, acknowledged: set[tuple[int, int]]) -> None:
        """Start a writer, SIGKILL it 2..100 ms after READY (or, one time in
        five, 0..10 ms after it started: during recovery), collect its ACKs."""
        seed = rng.randrange(2**32)
        delay_s = rng.uniform(0.002, 0.100)
        during_recovery = rng.random() < 0.2  # kill before READY: mid-recovery or replay
        if during_recovery:
            delay_s = rng.uniform(0.0, 0.010)
        if self.zygote is None:
            output = self._fresh_cycle(seed, delay_s, during_recovery)
        else:
            output = self._forked_cycle(seed, delay_s, during_recovery)
        for line in output.split(b"\n")[:-1]:  # a last line without "\n" was cut by the kill
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"ACK":
                acknowledged.add((int(parts[1]), int(parts[2])))

    def _fresh_cycle(self, seed: int, delay_s: float, during_recovery: bool) -> bytes:
        command = writer_command(self.directory, seed, self.segment_bytes_max)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert process.stdout is not None
            first = b"READY\n" if during_recovery else process.stdout.readline()
            if first != b"READY\n":
                _, error = process.communicate(timeout=30)
                raise RuntimeError(f"writer did not start: {first!r} {error.decode(errors='replace')}")
            time.sleep(delay_s)
            process.send_signal(signal.SIGKILL)
            output, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        return output

    def _forked_cycle(self, seed: int, delay_s: float, during_recovery: bool) -> bytes:
        assert self.zygote is not None and self.zygote.stdin is not None
        assert self.zygote.stdout is not None
        self.zygote.stdin.write(f"spawn {seed}\n".encode())
        self.zygote.stdin.flush()
        pid, ready, lines = 0, False, []
        for _ in range(1_000_000):
            line = self.zygote.stdout.readline()
            if not line:
                raise RuntimeError("the writer zygote died")
            if line.startswith(b"PID "):
                pid = self.writer_pid = int(line.split()[1])
            elif line == b"READY\n":
                ready = True
            elif line.startswith(b"EXIT "):
                raise RuntimeError("the writer died before it was killed (see stderr)")
            if pid and (ready or during_recovery):
                break
        time.sleep(delay_s)
        os.kill(pid, signal.SIGKILL)
        for _ in range(10_000_000):
            line = self.zygote.stdout.readline()
            if not line or line == f"EXIT {pid}\n".encode():
                self.writer_pid = 0
                break
            if line != b"READY\n":
                lines.append(line)
        return b"".join(lines)


def run_harness(
    directory: str, cycles: int, seed: int, segment_bytes_max: int, *, fresh: bool = False
) -> CheckReport:
    rng = random.Random(seed)
    acknowledged: set[tuple[int, int]] = set()
    progress = CheckProgress()
    report = CheckReport()
    writers = Writers(directory, segment_bytes_max, fresh=fresh)
    try:
        for cycle in range(cycles):
            writers.cycle(rng, acknowledged)
            full = cycle % 25 == 24 or cycle == cycles - 1
            report = check_directory(directory, acknowledged, segment_bytes_max, progress, full=full)
            if report.problems:
                report.problems.insert(0, f"after kill {cycle + 1} (seed {seed})")
                return report
    finally:
        writers.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringbolt.storage.crashtool")
    sub = parser.add_subparsers(dest="command", required=True)
    writer = sub.add_parser("writer", help="append and acknowledge durable writes forever")
    harness = sub.add_parser("harness", help="kill and restart the writer, checking each time")
    zygote = sub.add_parser("zygote", help="fork writers on request (used by the harness)")
    for command in (writer, harness, zygote):
        command.add_argument("directory")
        command.add_argument("--seed", type=int, default=1)
        command.add_argument("--segment-bytes", type=int, default=16 * 1024)
    harness.add_argument("--cycles", type=int, default=100)
    harness.add_argument("--fresh", action="store_true", help="a new interpreter per writer")
    args = parser.parse_args(argv)
    if args.command == "writer":
        run_writer(args.directory, args.seed, args.segment_bytes)
        return 0
    if args.command == "zygote":
        run_zygote(args.directory, args.segment_bytes)
        return 0
    os.makedirs(args.directory, exist_ok=True)
    started = time.monotonic()
    report = run_harness(args.directory, args.cycles, args.seed, args.segment_bytes, fresh=args.fresh)
    elapsed = time.monotonic() - started
    print(f"{args.cycles} kills in {elapsed:.1f} s: {report.acknowledged} acknowledged batches, "
          f"{report.batches_seen} visible, problems: {report.problems or 'none'}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
