"""Checker throughput on generated histories: `python -m ringbolt.check.benchmark`.

Prints one line per scenario (records, seconds, verdict). Each history is
linearizable by construction; the "stale" variants replace one read's result
with the value of a write that a later acknowledged write had replaced before
the read began, so the verdict must be invalid and the search must prove it.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from ringbolt.check.generate import linearizable_history
from ringbolt.check.linearizability import check_history

SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("20k ops, 50 keys, 10 clients", {"keys": 50, "processes": 10}),
    ("20k ops, 50 keys, 10 clients, 5% fail, 5% info", {"keys": 50, "processes": 10, "fail_probability": 0.05, "info_probability": 0.05}),
    ("20k ops, 1 key, 10 clients, 3 values", {"keys": 1, "processes": 10, "values": 3}),
    ("20k ops, 1 key, 10 clients, 5% info", {"keys": 1, "processes": 10, "info_probability": 0.05}),
    ("20k ops, 1 key, 30 clients, 3 values", {"keys": 1, "processes": 30, "values": 3}),
]  # fmt: skip


def make_stale_read(ops: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Point a read in the second half at the first acknowledged write of its
    key (unique values only): a later acknowledged write replaced it long ago."""
    reads = [
        i
        for i, op in enumerate(ops)
        if op["type"] == "ok" and op["f"] == "read" and i > len(ops) // 2
    ]
    mutated = [dict(op) for op in ops]
    read = mutated[rng.choice(reads)]
    first_write = next(
        op for op in ops if op["type"] == "ok" and op["f"] == "write" and op["key"] == read["key"]
    )
    read["value"] = first_write["value"]
    return mutated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    print(f"seed={args.seed} ops={args.ops} time_limit_s={args.time_limit}")
    for name, parameters in SCENARIOS:
        rng = random.Random(args.seed)
        history = linearizable_history(rng, ops_total=args.ops, **parameters)
        variants: list[tuple[str, Any]] = [("", history)]
        if parameters.get("values") is None:
            variants.append((" [stale read]", make_stale_read(history.ops, rng)))
        for suffix, ops in variants:
            started = time.perf_counter()
            result = check_history(ops, time_limit_s=args.time_limit)
            elapsed_s = time.perf_counter() - started
            print(
                f"{name + suffix:<58} records={len(history.ops):>6} "
                f"check_s={elapsed_s:6.2f} verdict={result.verdict}"
            )


if __name__ == "__main__":
    main()
