"""`ringbolt bench compare`: the same workloads against ringbolt and its peers.

Theory of operation
-------------------
For each requested system, in the order given: start it in a fresh scratch
directory (`ringbolt.bench.peers`), run the load generator once per client
count with an identical `Shape` (same mix, keys, value size, pipeline,
duration, warm-up, worker processes), then stop it before the next system
starts, so systems never compete for the two cores. A system that cannot run
is recorded as skipped with its reason; one that fails mid-run is recorded
as failed with the error, and the comparison goes on.

The result is one JSON-ready dict:

    {"shape": {...},
     "systems": {name: {"status": "ok"|"skipped"|"failed", "reason": str,
                        "results": {"<clients>": {ops_per_s, p50_ms, p99_ms, ...}}}},
     "ratios": {peer: {"<clients>": {"ops_per_s": ringbolt/peer, "p99_ms": ...}}}}

Ratios are ringbolt over the peer for the same client count: above 1 for
ops/s means ringbolt is faster; above 1 for p99 means ringbolt is slower.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ringbolt.bench.loadgen import LoadError, LoadSpec, run_load
from ringbolt.bench.peers import PROTOCOL, SYSTEMS, Skipped

__all__ = ["SYSTEMS", "Shape", "render_table", "run_compare"]

MAX_CLIENT_COUNTS = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Shape:
    clients: tuple[int, ...] = (1, 16, 128)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    procs: int = 2
    reads: float = 0.0
    pipeline: int = 1
    keys: int = 100_000
    value_size: int = 100


def measure(addresses: list[tuple[str, int]], shape: Shape, clients: int,
            protocol: str = "resp") -> dict[str, Any]:
    zookeeper = protocol == "zookeeper"
    spec = LoadSpec(addresses=tuple(addresses), protocol="resp" if zookeeper else protocol,
                    clients=clients, procs=min(shape.procs, clients),
                    keys=shape.keys, value_size=shape.value_size, reads=shape.reads,
                    duration_s=shape.duration_s, warmup_s=shape.warmup_s,
                    pipeline=shape.pipeline, max_time_s=shape.warmup_s + shape.duration_s + 60)
    if zookeeper:
        from ringbolt.bench.zookeeper import run_zk_load

        report = run_zk_load(spec)
    else:
        report = run_load(spec)
    keep = ("ops_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "ops",
            "error_total", "errors", "client_cpu_s", "client_cpu_per_op_us", "elapsed_s")
    row = report.to_json()
    return {key: row[key] for key in keep}


def run_system(name: str, shape: Shape, log: Callable[[str], None] | None) -> dict[str, Any]:
    start = SYSTEMS[name]
    entry: dict[str, Any] = {"status": "ok", "reason": "", "results": {}}
    with tempfile.TemporaryDirectory(prefix=f"ringbolt-bench-{name}-") as scratch:
        try:
            with start(Path(scratch)) as addresses:
                for clients in shape.clients:
                    row = measure(addresses, shape, clients, PROTOCOL.get(name, "resp"))
                    entry["results"][str(clients)] = row
                    if log:
                        log(f"  {name:<18} clients {clients:>4}: {row['ops_per_s']:>10,.0f} ops/s"
                            f"  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms"
                            f"  errors {row['error_total']}")
        except Skipped as why:
            entry.update(status="skipped", reason=str(why))
        except (LoadError, OSError, RuntimeError) as error:
            entry.update(status="failed", reason=f"{type(error).__name__}: {error}")
    if log and entry["status"] != "ok":
        log(f"  {name:<18} {entry['status']}: {entry['reason']}")
    return entry


def ratios(systems: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    base = systems.get("ringbolt")
    out: dict[str, dict[str, dict[str, float]]] = {}
    if base is None or base["status"] != "ok":
        return out
    for name, entry in systems.items():
        if name == "ringbolt" or entry["status"] != "ok":
            continue
        per_count: dict[str, dict[str, float]] = {}
        for clients, peer in entry["results"].items():
            own = base["results"].get(clients)
            if own is None:
                continue
            per_count[clients] = {
                key: round(own[key] / peer[key], 3) if peer[key] else 0.0
                for key in ("ops_per_s", "p50_ms", "p99_ms")}
        out[name] = per_count
    return out


def run_compare(names: list[str], shape: Shape,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    assert 1 <= len(shape.clients) <= MAX_CLIENT_COUNTS
    systems: dict[str, dict[str, Any]] = {}
    for name in names:
        if log:
            log(f"{name}:")
        systems[name] = run_system(name, shape, log)
    return {"shape": asdict(shape), "systems": systems, "ratios": ratios(systems)}


def render_table(result: dict[str, Any]) -> str:
    lines = ["| system | clients | ops/s | p50 ms | p99 ms | client CPU s | errors "
             "| ringbolt/peer ops/s | ringbolt/peer p99 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in result["systems"].items():
        if entry["status"] != "ok":
            lines.append(f"| {name} | - | {entry['status']}: {entry['reason']} | | | | | | |")
            continue
        for clients, row in entry["results"].items():
            ratio = result["ratios"].get(name, {}).get(clients)
            ops_ratio = f"{ratio['ops_per_s']:.2f}" if ratio else "-"
            p99_ratio = f"{ratio['p99_ms']:.2f}" if ratio else "-"
            lines.append(f"| {name} | {clients} | {row['ops_per_s']:,.0f} | {row['p50_ms']} "
                         f"| {row['p99_ms']} | {row['client_cpu_s']:.2f} "
                         f"| {row['error_total']} | {ops_ratio} | {p99_ratio} |")
    return "\n".join(lines)
