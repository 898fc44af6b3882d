"""`ringbolt placement-sim`: place shards on a simulated cluster and measure.

Builds `--nodes` nodes spread round-robin over `--dcs` DCs (and `--zones`
zones per DC), places `--shards` shards x `--replicas` replicas, then adds one
node and, separately, removes one node from that initial placement, and
reports balance (max/mean replicas per node), the replica moves of each
change against the ideal, DC violations and the time each step took.
`--check` exits non-zero unless the acceptance bounds hold:
max/mean <= 1 + epsilon, add moves <= 1.15 x ideal, remove moves == the
removed node's replicas (and only those), no DC violations.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ringbolt.shard.limits import epsilon_default, epsilon_max, nodes_max, replicas_max, shards_max
from ringbolt.shard.placement import (
    PlacementNode,
    place_with_statistics,
    plan_moves,
    summarize,
)

ADD_MOVES_RATIO_MAX = 1.15
"""Acceptance: adding a node moves at most this multiple of the ideal R/(N+1)."""


def simulated_node(node_id: int, dcs: int, zones: int) -> PlacementNode:
    dc = node_id % dcs
    return PlacementNode(node_id=node_id, dc=f"dc{dc}", zone=f"dc{dc}-z{(node_id // dcs) % zones}")


def simulate(
    *, nodes: int, shards: int, replicas: int, dcs: int, zones: int, epsilon: float
) -> dict[str, Any]:
    """Run the three placements and return every figure as plain data."""
    members = [simulated_node(index, dcs, zones) for index in range(nodes)]
    shard_ids = list(range(shards))
    started = time.perf_counter()
    initial, initial_counters = place_with_statistics(
        members, shard_ids, replicas=replicas, epsilon=epsilon
    )
    initial_seconds = time.perf_counter() - started

    grown = [*members, simulated_node(nodes, dcs, zones)]
    started = time.perf_counter()
    after_add, add_counters = place_with_statistics(
        grown, shard_ids, replicas=replicas, epsilon=epsilon, previous=initial
    )
    add_seconds = time.perf_counter() - started
    add_moves = plan_moves(initial, after_add)

    removed = members[0].node_id
    shrunk = members[1:]
    started = time.perf_counter()
    after_remove, remove_counters = (
        place_with_statistics(
            shrunk, shard_ids, replicas=replicas, epsilon=epsilon, previous=initial
        )
        if shrunk
        else (initial, {})
    )
    remove_seconds = time.perf_counter() - started
    remove_moves = plan_moves(initial, after_remove)

    first = summarize(initial, members, replicas)
    added = summarize(after_add, grown, replicas)
    shrunk_summary = summarize(after_remove, shrunk, replicas) if shrunk else first
    ideal = first.replicas_total / (nodes + 1)
    removed_replicas = initial.loads().get(removed, 0)
    report: dict[str, Any] = {
        "nodes": nodes,
        "shards": shards,
        "replicas": replicas,
        "dcs": dcs,
        "zones_per_dc": zones,
        "epsilon": epsilon,
        "replicas_total": first.replicas_total,
        "mean": round(first.load_mean, 3),
        "max": first.load_max,
        "min": first.load_min,
        "max_over_mean": round(first.max_over_mean, 4),
        "max_over_mean_after_add": round(added.max_over_mean, 4),
        "max_over_mean_after_remove": round(shrunk_summary.max_over_mean, 4),
        "moves_on_add": len(add_moves),
        "ideal_moves_on_add": round(ideal, 2),
        "add_moves_over_ideal": round(len(add_moves) / ideal, 4) if ideal else 0.0,
        "add_moves_all_to_new_node": all(m.to_node == nodes for m in add_moves),
        "moves_on_remove": len(remove_moves),
        "removed_node_replicas": removed_replicas,
        "remove_moves_only_removed_node": all(m.from_node == removed for m in remove_moves),
        "dc_violations": first.dc_violations + added.dc_violations + shrunk_summary.dc_violations,
        "dc_violations_initial": first.dc_violations,
        "dc_violations_after_add": added.dc_violations,
        "dc_violations_after_remove": shrunk_summary.dc_violations,
        "cap_overflows": sum(
            c.get("cap_overflows", 0) for c in (initial_counters, add_counters, remove_counters)
        ),
        "initial_seconds": round(initial_seconds, 3),
        "add_seconds": round(add_seconds, 3),
        "remove_seconds": round(remove_seconds, 3),
        "total_seconds": round(initial_seconds + add_seconds + remove_seconds, 3),
    }
    report["acceptance_failures"] = acceptance_failures(report)
    return report


def acceptance_failures(report: dict[str, Any]) -> list[str]:
    failures = []
    if report["max_over_mean"] > 1 + report["epsilon"] + 1e-9:
        failures.append("max_over_mean above 1 + epsilon")
    if report["moves_on_add"] > ADD_MOVES_RATIO_MAX * report["ideal_moves_on_add"]:
        failures.append(f"moves_on_add above {ADD_MOVES_RATIO_MAX} x ideal")
    if report["moves_on_remove"] != report["removed_node_replicas"]:
        failures.append("moves_on_remove differs from the removed node's replicas")
    if not report["remove_moves_only_removed_node"]:
        failures.append("removal moved replicas of other nodes")
    if report["dc_violations"]:
        failures.append("dc_violations")
    return failures


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="placement-sim", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if key != "acceptance_failures":
            table.add_row(key, str(value))
    console = Console()
    console.print(table)
    failures = report["acceptance_failures"]
    console.print(
        "acceptance: " + ("[green]ok[/green]" if not failures else f"[red]{failures}[/red]")
    )


@click.command(name="placement-sim")
@click.option("--nodes", type=click.IntRange(1, nodes_max - 1), default=100, show_default=True)
@click.option("--shards", type=click.IntRange(1, shards_max), default=10_000, show_default=True)
@click.option("--replicas", type=click.IntRange(1, replicas_max), default=3, show_default=True)
@click.option("--dcs", type=click.IntRange(1, 64), default=3, show_default=True)
@click.option(
    "--zones", type=click.IntRange(1, 64), default=3, show_default=True, help="Zones per DC."
)
@click.option(
    "--epsilon",
    type=click.FloatRange(0.0, epsilon_max, min_open=True),
    default=epsilon_default,
    show_default=True,
    help="Bounded-load slack.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--check", is_flag=True, help="Exit 1 unless the acceptance bounds hold.")
def placement_sim(
    nodes: int,
    shards: int,
    replicas: int,
    dcs: int,
    zones: int,
    epsilon: float,
    as_json: bool,
    check: bool,
) -> None:
    """Simulate shard placement at scale: balance, moves on add/remove, DC spread."""
    report = simulate(
        nodes=nodes, shards=shards, replicas=replicas, dcs=dcs, zones=zones, epsilon=epsilon
    )
    if as_json:
        click.echo(json.dumps(report, sort_keys=False))
    else:
        _print_table(report)
    if check and report["acceptance_failures"]:
        raise SystemExit(1)


__all__ = ["placement_sim", "simulate"]
