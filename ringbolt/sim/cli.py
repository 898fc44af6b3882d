"""`ringbolt sim`: run the deterministic simulator over many seeds.

Seeds run in worker processes (each seed is self-contained and deterministic,
so the result of a seed does not depend on which worker ran it); results are
reported in seed order.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from collections import Counter
from collections.abc import Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ringbolt.sim.params import FAULT_KINDS, MUTATIONS, parse_faults
from ringbolt.sim.runner import SeedResult, run_seed

workers_max = 64


def _run_quiet(job: tuple[int, int, frozenset[str], str | None]) -> SeedResult:
    seed, nodes, faults, mutation = job
    result = run_seed(seed, nodes=nodes, faults=faults, mutation=mutation)
    result.trace = []
    return result


def _results(jobs: list[tuple[int, int, frozenset[str], str | None]],
             workers: int) -> Iterator[SeedResult]:
    if workers <= 1 or len(jobs) < 2:
        yield from map(_run_quiet, jobs)
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(workers) as pool:
        yield from pool.imap(_run_quiet, jobs, chunksize=2)


def _summary(results: list[SeedResult]) -> dict[str, object]:
    faults: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
    safety = [r for r in results if r.safety_violation is not None]
    linear = [r for r in results if r.linearizability_violation is not None]
    liveness = [r for r in results if not r.liveness_ok and r.safety_violation is None]
    unknown = [r.seed for r in results if r.linearizability_unknown]
    return {
        "seeds": len(results),
        "ops_checked": sum(r.ops_checked for r in results),
        "safety_violations": len(safety),
        "linearizability_violations": len(linear),
        "liveness_failures": len(liveness),
        "linearizability_unknown": len(unknown),
        "faults": dict(sorted(faults.items())),
        "failed_seeds": {
            "safety": {str(r.seed): r.safety_violation for r in safety},
            "linearizability": {str(r.seed): r.linearizability_violation for r in linear},
            "liveness": [r.seed for r in liveness],
            "linearizability_unknown": unknown,
        },
        "liveness_ticks_max": max((r.liveness_ticks for r in results if r.liveness_ok), default=0),
    }


def _print_summary(console: Console, summary: dict[str, object]) -> None:
    table = Table(title="simulation summary", show_header=False)
    for key in ("seeds", "ops_checked", "safety_violations", "linearizability_violations",
                "liveness_failures", "linearizability_unknown", "liveness_ticks_max"):
        table.add_row(key, str(summary[key]))
    console.print(table)
    faults = Table(title="faults injected", show_header=True)
    faults.add_column("kind")
    faults.add_column("count", justify="right")
    for kind, count in summary["faults"].items():  # type: ignore[attr-defined]
        faults.add_row(kind, str(count))
    console.print(faults)
    failed = summary["failed_seeds"]
    assert isinstance(failed, dict)
    for kind in ("safety", "linearizability"):
        for seed, detail in failed[kind].items():
            console.print(f"[red]{kind} violation[/red] seed {seed}: {detail}")
    if failed["liveness"]:
        console.print(f"[yellow]liveness failed[/yellow] seeds: {failed['liveness']}")
    if failed["linearizability_unknown"]:
        console.print(f"[yellow]linearizability unknown[/yellow] seeds: "
                      f"{failed['linearizability_unknown']}")


@click.command(name="sim")
@click.option("--nodes", default=5, show_default=True, type=click.IntRange(1, 9))
@click.option("--seeds", default=100, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--start-seed", default=1, show_default=True, type=int)
@click.option("--seed", "one_seed", default=None, type=int, help="Run (replay) only this seed.")
@click.option("--faults", default="all", show_default=True,
              help=f"all, none, or a comma list of: {', '.join(FAULT_KINDS)}")
@click.option("--trace", is_flag=True, help="With --seed: print the seed's full trace.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--mutation", type=click.Choice(MUTATIONS), default=None,
              help="Test only: run a deliberately broken Raft.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, workers_max))
@click.option("--stop-on-violation", is_flag=True, help="Stop at the first unsafe seed.")
def sim(nodes: int, seeds: int, start_seed: int, one_seed: int | None, faults: str, trace: bool,
        as_json: bool, mutation: str | None, workers: int, stop_on_violation: bool) -> None:
    """Run the deterministic simulator: real Raft cores, simulated faults,
    safety invariants, linearizability of client histories, and liveness
    after healing."""
    try:
        kinds = parse_faults(faults)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--faults") from None
    console = Console(stderr=as_json)
    if one_seed is not None:
        result = run_seed(one_seed, nodes=nodes, faults=kinds, mutation=mutation, trace=trace)
        if trace:
            out = sys.stderr if as_json else sys.stdout
            for line in result.trace:
                print(line, file=out)
            print(f"trace digest {result.trace_hash}", file=out)
        results = [result]
    else:
        jobs = [(seed, nodes, kinds, mutation) for seed in range(start_seed, start_seed + seeds)]
        results = []
        with Progress(TextColumn("seeds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=as_json) as progress:
            task = progress.add_task("seeds", total=len(jobs))
            for result in _results(jobs, workers):
                results.append(result)
                progress.advance(task)
                if stop_on_violation and (result.safety_violation or result.linearizability_violation):
                    break
    summary = _summary(results)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        _print_summary(console, summary)
    if summary["safety_violations"] or summary["linearizability_violations"]:
        sys.exit(1)
