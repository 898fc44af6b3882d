"""Benchmark of the Raft core alone: committed entries per second.

Theory of operation
-------------------
Three Raft cores (built through `consensus.registry`, with early_send on as
the node runs them) in one process, driven directly with zero delay and no
I/O: each iteration proposes `batch` commands at the leader, then drains the
Readys of all nodes and delivers their messages until the cluster is quiet.
An entry counts when the leader sees it in `Ready.committed_entries`. Wall
clock and CPU time are both reported: on a shared machine the CPU figure is
the one that measures the core rather than its neighbours. Every
`compact_every_entries` committed entries each node compacts its log, as a
real driver would, so memory stays flat over a long run. The number measures
the core's own overhead per entry: message construction, batching, progress
tracking and commit calculation.

    python -m ringbolt.bench.core [--seconds 3] [--batch 64] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections import deque

from ringbolt.consensus import limits, registry
from ringbolt.consensus.interface import CoreSettings
from ringbolt.consensus.types import ConsensusCore, Role

compact_every_entries = 100_000


def make_cluster(size: int, seed: int, consensus: str = "raft") -> list[ConsensusCore]:
    make_core = registry.consensus(consensus).make_core
    voters = frozenset(range(1, size + 1))
    rng = random.Random(seed)
    return [
        make_core(CoreSettings(node_id=n, voters=voters, early_send=True),
                  random.Random(rng.randrange(1 << 30)), None)
        for n in sorted(voters)
    ]


def drain(nodes: dict[int, ConsensusCore], leader_id: int) -> int:
    """Handle Readys and deliver messages until quiet; entries the leader committed."""
    committed = 0
    queue: deque[object] = deque()
    while True:
        for node_id, core in nodes.items():
            if core.has_ready():
                ready = core.ready()
                if node_id == leader_id:
                    committed += len(ready.committed_entries)
                queue.extend(ready.early_messages)  # persist, send these, "fsync", ...
                queue.extend(ready.messages)
                core.advance(ready)
        if not queue:
            return committed
        while queue:
            message = queue.popleft()
            nodes[message.recipient].step(message)  # type: ignore[attr-defined]


def elect(nodes: dict[int, ConsensusCore], leader_id: int) -> ConsensusCore:
    leader = nodes[leader_id]
    for _ in range(10 * limits.election_timeout_ticks):  # the CoreSettings default
        leader.tick()
        drain(nodes, leader_id)
        if leader.status().role == Role.LEADER:
            return leader
    raise RuntimeError("no leader elected")


def run_once(seconds: float, batch: int, payload_bytes: int, seed: int = 1) -> dict[str, float]:
    cluster = make_cluster(3, seed)
    nodes = {core.node_id: core for core in cluster}
    leader = elect(nodes, 1)
    payload = b"x" * payload_bytes
    propose = leader.propose
    committed = 0
    since_compact = 0
    iterations = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            propose(payload)
        done = drain(nodes, 1)
        committed += done
        since_compact += done
        iterations += 1
        if since_compact >= compact_every_entries:
            since_compact = 0
            for core in cluster:
                core.compact(core.status().applied, b"")
        if iterations % 16 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {
        "entries_committed": committed,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "entries_per_second": committed / elapsed,
        "entries_per_cpu_second": committed / cpu,
        "iterations": iterations,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--payload-bytes", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = [run_once(args.seconds, args.batch, args.payload_bytes, seed=i + 1) for i in range(args.runs)]
    rates = [r["entries_per_second"] for r in runs]
    result = {
        "benchmark": "raft-core-3-nodes",
        "batch": args.batch,
        "payload_bytes": args.payload_bytes,
        "runs": runs,
        "entries_per_second_median": statistics.median(rates),
        "entries_per_cpu_second_median": statistics.median(
            r["entries_per_cpu_second"] for r in runs
        ),
        "load_average_1m": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for number, run in enumerate(runs, 1):
        print(
            f"run {number}: {run['entries_committed']:>10,.0f} entries in {run['seconds']:.2f} s"
            f" = {run['entries_per_second']:>10,.0f} entries/s"
            f" ({run['entries_per_cpu_second']:,.0f} per CPU second)"
        )
    print(f"median: {result['entries_per_second_median']:,.0f} committed entries/s, "
          f"{result['entries_per_cpu_second_median']:,.0f} per CPU second "
          f"(3 nodes, batch {args.batch}, {args.payload_bytes}-byte commands; "
          f"load average {result['load_average_1m']:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
