"""Storage benchmark: WAL group commit and LMDB apply throughput.

Theory of operation
-------------------
* WAL: W writer tasks (1, 16, 256) on one event loop, in a closed loop: each
  appends one 100-byte entry to its own group and awaits its durability via
  `GroupCommitter` -- the shape of a node with W groups taking writes. The
  single-writer rate is the fsync rate of the disk; with more writers each
  fdatasync covers more entries.
* LMDB: batches of committed PUT entries (small keys, 16-byte values) applied
  with `StateMachineStore.apply`, one write transaction per batch.

Every measurement runs `--runs` times (default 3) and the median is reported.
Run on a real disk: the directory's filesystem type is printed and tmpfs is
refused (its fdatasync is free).

    python -m ringbolt.bench.storage [--json] [--seconds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from ringbolt.consensus.types import Entry
from ringbolt.kv.commands import Op, encode
from ringbolt.storage.engine import StateMachineStore
from ringbolt.storage.group_commit import GroupCommitter
from ringbolt.storage.wal import WriteAheadLog

ENTRY_BYTES = 100
LMDB_ENTRIES = 300_000
LMDB_BATCH_ENTRIES = 1000


def filesystem_type(path: str) -> str:
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1]
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best, kind = point, fields[2]
    return kind


async def _wal_run(directory: str, writers: int, seconds: float) -> tuple[float, float]:
    wal = WriteAheadLog.open(directory)
    committer = GroupCommitter(wal)
    payload = b"x" * ENTRY_BYTES
    committed = [0] * writers
    deadline = time.monotonic() + seconds

    async def writer(number: int) -> None:
        group_id = number + 1
        index = 0
        while time.monotonic() < deadline:
            index += 1
            wal.append(group_id, entries=[Entry(term=1, index=index, data=payload)])
            await committer.commit()
            committed[number] += 1

    started = time.monotonic()
    syncs_before = wal.statistics()["syncs"]
    await asyncio.gather(*(writer(n) for n in range(writers)))
    elapsed = time.monotonic() - started
    syncs = wal.statistics()["syncs"] - syncs_before
    committer.close()
    wal.close()
    return sum(committed) / elapsed, syncs / elapsed


def wal_rate(base: str, writers: int, seconds: float) -> tuple[float, float]:
    directory = tempfile.mkdtemp(prefix=f"wal{writers}-", dir=base)
    try:
        return asyncio.run(_wal_run(directory, writers, seconds))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def lmdb_rate(base: str) -> float:
    directory = tempfile.mkdtemp(prefix="lmdb-", dir=base)
    try:
        store = StateMachineStore.open(os.path.join(directory, "state"), map_size_bytes=1 << 30)
        entries = [
            Entry(term=1, index=i, data=encode(Op.PUT, 0, b"key:%08d" % i, b"v" * 16, 0, 0))
            for i in range(1, LMDB_ENTRIES + 1)
        ]
        started = time.perf_counter()
        for start in range(0, len(entries), LMDB_BATCH_ENTRIES):
            store.apply(1, entries[start : start + LMDB_BATCH_ENTRIES])
        elapsed = time.perf_counter() - started
        assert store.count(1) == LMDB_ENTRIES
        store.close()
        return LMDB_ENTRIES / elapsed
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringbolt.bench.storage")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=3.0, help="per WAL measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="a directory on the disk to test")
    args = parser.parse_args(argv)
    kind = filesystem_type(args.dir)
    if kind == "tmpfs":
        print(f"{args.dir} is on tmpfs: fdatasync is free there; use a real disk", file=sys.stderr)
        return 2
    rates: dict[int, list[float]] = {1: [], 16: [], 256: []}
    fsyncs: dict[int, list[float]] = {1: [], 16: [], 256: []}
    lmdb: list[float] = []
    for _ in range(args.runs):
        for writers in rates:
            entries_per_s, syncs_per_s = wal_rate(args.dir, writers, args.seconds)
            rates[writers].append(entries_per_s)
            fsyncs[writers].append(syncs_per_s)
        lmdb.append(lmdb_rate(args.dir))
    median = statistics.median
    result = {
        "filesystem": kind,
        "runs": args.runs,
        "entry_bytes": ENTRY_BYTES,
        "single_writer_entries_per_s": round(median(rates[1])),
        "writers16_entries_per_s": round(median(rates[16])),
        "writers256_entries_per_s": round(median(rates[256])),
        "fsyncs_per_s": round(median(fsyncs[1])),
        "writers16_fsyncs_per_s": round(median(fsyncs[16])),
        "writers256_fsyncs_per_s": round(median(fsyncs[256])),
        "writers16_speedup": round(median(rates[16]) / median(rates[1]), 1),
        "writers256_speedup": round(median(rates[256]) / median(rates[1]), 1),
        "lmdb_apply_entries_per_s": round(median(lmdb)),
        "lmdb_batch_entries": LMDB_BATCH_ENTRIES,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
