"""`ringbolt bench` (load generator) and `ringbolt bench compare` (peers).

Theory of operation
-------------------
`ringbolt bench [OPTIONS]` turns its options into a `LoadSpec`, runs it with
`run_load` and prints a summary (or one JSON object with `--json`). A rich
progress line on stderr shows operations and the current rate while the run
is going; it is off with `--json` or when stderr is not a terminal.
`ringbolt bench compare` starts each system in turn, runs the same workload
shapes against it and prints one table (see `ringbolt.bench.compare`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from ringbolt.bench.loadgen import LoadError, LoadReport, LoadSpec, parse_address, run_load


@contextmanager
def progress_display(enabled: bool, total_s: float) -> Iterator[Callable[[int, float], None] | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    last = [0, 0.0]
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        def update(ops: int, elapsed: float) -> None:
            rate = (ops - last[0]) / max(elapsed - last[1], 1e-6)
            last[0], last[1] = ops, elapsed
            live.update(f"[bold]{elapsed:5.1f}/{total_s:.0f}s[/] ops {ops:,}  "
                        f"~{rate:,.0f} ops/s")

        yield update


def print_report(report: LoadReport) -> None:
    click.echo(f"ops {report.ops:,} in {report.elapsed_s:.2f}s: {report.ops_per_s:,.0f} ops/s "
               f"({report.clients} clients, {report.procs} procs, pipeline {report.pipeline})")
    click.echo(f"latency ms  p50 {report.p50_ms}  p90 {report.p90_ms}  p99 {report.p99_ms}  "
               f"p99.9 {report.p999_ms}  max {report.max_ms}  mean {report.mean_ms}")
    errors = ", ".join(f"{k} {v}" for k, v in sorted(report.errors.items())) or "none"
    click.echo(f"errors {errors}")
    click.echo(f"client CPU {report.client_cpu_s:.2f}s ({report.client_cpu_per_op_us} us/op)")


@click.group(invoke_without_command=True)
@click.option("--address", "addresses", multiple=True, default=["127.0.0.1:6379"],
              show_default=True, help="Target host:port (repeatable; clients spread over them).")
@click.option("--clients", default=16, show_default=True, help="Connections in total.")
@click.option("--procs", default=2, show_default=True, help="Worker processes.")
@click.option("--rate", type=float, default=None, help="Open loop: total ops/s (default closed).")
@click.option("--keys", default=100_000, show_default=True)
@click.option("--dist", type=click.Choice(["uniform", "zipfian"]), default="uniform",
              show_default=True)
@click.option("--value-size", default=100, show_default=True)
@click.option("--key-size", default=16, show_default=True)
@click.option("--reads", default=0.5, show_default=True, help="Fraction of GETs.")
@click.option("--cas", default=0.0, show_default=True, help="Fraction of CAS (rest are SETs).")
@click.option("--duration", default=10.0, show_default=True, help="Measured seconds.")
@click.option("--ops", type=int, default=None, help="Stop after this many operations.")
@click.option("--warmup", default=1.0, show_default=True, help="Unmeasured seconds first.")
@click.option("--pipeline", default=1, show_default=True, help="Commands per round trip.")
@click.option("--seed", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def bench(ctx: click.Context, addresses: tuple[str, ...], clients: int, procs: int,
          rate: float | None, keys: int, dist: str, value_size: int, key_size: int,
          reads: float, cas: float, duration: float, ops: int | None, warmup: float,
          pipeline: int, seed: int, as_json: bool) -> None:
    """Generate load against RESP servers and report throughput and latency."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        spec = LoadSpec(addresses=tuple(parse_address(a) for a in addresses), clients=clients,
                        procs=procs, rate=rate, keys=keys, dist=dist, value_size=value_size,
                        key_size=key_size, reads=reads, cas=cas, duration_s=duration, ops=ops,
                        warmup_s=warmup, pipeline=pipeline, seed=seed)
        live = not as_json and sys.stderr.isatty()
        with progress_display(live, warmup + duration) as on_progress:
            report = run_load(spec, on_progress)
    except LoadError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    else:
        print_report(report)


@bench.command()
@click.option("--systems", default="ringbolt,redis-aof-always,redis-aof-off,etcd,zookeeper,"
              "pysyncobj", show_default=True)
@click.option("--clients", "client_counts", default="1,16,128", show_default=True)
@click.option("--duration", default=5.0, show_default=True)
@click.option("--warmup", default=1.0, show_default=True)
@click.option("--procs", default=2, show_default=True)
@click.option("--reads", default=0.0, show_default=True,
              help="Fraction of GETs (default: writes only, as in the issue's table).")
@click.option("--pipeline", default=1, show_default=True)
@click.option("--keys", default=100_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare(systems: str, client_counts: str, duration: float, warmup: float, procs: int,
            reads: float, pipeline: int, keys: int, as_json: bool) -> None:
    """Start each system in turn, run the same workloads, print one table."""
    import ringbolt.bench.compare as comparing

    try:
        counts = [int(c) for c in client_counts.split(",") if c.strip()]
    except ValueError as error:
        raise click.BadParameter("--clients is a comma-separated list of integers") from error
    names = [s.strip() for s in systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in comparing.SYSTEMS]
    if unknown or not counts:
        raise click.BadParameter(f"unknown systems {unknown}; known: {sorted(comparing.SYSTEMS)}")
    shape = comparing.Shape(clients=tuple(counts), duration_s=duration, warmup_s=warmup,
                            procs=procs, reads=reads, pipeline=pipeline, keys=keys)
    log = None if as_json else click.echo
    result = comparing.run_compare(names, shape, log=log)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(comparing.render_table(result))
