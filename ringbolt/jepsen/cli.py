"""`ringbolt jepsen`: fault-test real node processes in network namespaces.

Theory of operation
-------------------
Parses the options into `RunOptions`, installs a SIGTERM handler that turns
the signal into `SystemExit` (so the runner's `finally` tears everything
down, as it does for Ctrl-C), runs `--runs` runs and prints one line per run
(or, with `--json`, one JSON object: the single run's summary, or for several
runs {"valid", "runs": [...]} plus the summed counts). Exit status: 0 when
every run is valid and no node stopped itself, 1 when a run is invalid or
unknown or a node logged a CRITICAL failure (`node_failures` in the summary),
2 for setup problems (not root, bad options).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ringbolt.jepsen import limits
from ringbolt.jepsen.cluster import NodeError
from ringbolt.jepsen.nemesis import FAULTS, GROUPS, resolve_kinds
from ringbolt.jepsen.netns import NetworkError, NotRoot
from ringbolt.jepsen.runner import RunOptions, run_series
from ringbolt.jepsen.workload import WORKLOADS

EXIT_INVALID = 1
EXIT_SETUP = 2


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    if len(summaries) == 1:
        return summaries[0]
    valid: bool | None = True
    if any(s["valid"] is False for s in summaries):
        valid = False
    elif any(s["valid"] is None for s in summaries):
        valid = None
    total = {name: sum(s[name] for s in summaries)
             for name in ("ops", "ok", "fail", "info", "nemesis_events", "lost_writes")}
    failures = [f for s in summaries for f in s.get("node_failures", [])]
    return {"valid": valid, **total, "node_failures": failures, "runs": summaries}


@click.command(help="Fault-test real node processes in network namespaces (needs root).")
@click.option("--nodes", default=5, show_default=True,
              type=click.IntRange(1, limits.nodes_max), help="Nodes (one namespace each).")
@click.option("--time", "time_s", default=60.0, show_default=True,
              type=click.FloatRange(1.0, limits.run_time_s_max), help="Seconds of workload per run.")
@click.option("--nemesis", default="all", show_default=True, metavar="NAME[,NAME...]",
              help=f"Comma-separated groups ({', '.join(GROUPS)}) and/or kinds "
                   f"({', '.join(sorted(FAULTS))}).")
@click.option("--workload", default="register", show_default=True,
              type=click.Choice(sorted(WORKLOADS)))
@click.option("--runs", default=1, show_default=True, type=click.IntRange(1, limits.runs_max))
@click.option("--seed", default=None, type=int, help="First seed (runs use seed, seed+1, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--unsafe", multiple=True,
              help="Test-only Raft mutation on every node, e.g. read_without_read_index.")
@click.option("--out", "out_dir", default=Path("runs"), show_default=True,
              type=click.Path(path_type=Path, file_okay=False), help="Where run directories go.")
@click.option("--no-fsync", is_flag=True, help="Nodes skip fdatasync (faster, less realistic).")
def jepsen(nodes: int, time_s: float, nemesis: str, workload: str, runs: int, seed: int | None,
           as_json: bool, unsafe: tuple[str, ...], out_dir: Path, no_fsync: bool) -> None:
    try:
        resolve_kinds(nemesis)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--nemesis") from None
    options = RunOptions(nodes=nodes, time_s=time_s, nemesis=nemesis, workload=workload,
                         unsafe=frozenset(unsafe), out_dir=out_dir, fsync=not no_fsync)
    previous = signal.signal(signal.SIGTERM, _terminate)

    def log(text: str) -> None:
        click.echo(text, err=as_json)

    try:
        summaries = run_series(options, runs, seed, log)
    except NotRoot as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_SETUP)
    except (NetworkError, NodeError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_SETUP)
    finally:
        signal.signal(signal.SIGTERM, previous)
    result = combine(summaries)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        for s in summaries:
            availability = ", ".join(f"{kind} {row['percent_ok']}%"
                                     for kind, row in s["availability"].items())
            click.echo(f"seed {s['seed']}: {s['workload']} "
                       f"{ {True: 'VALID', False: 'INVALID', None: 'UNKNOWN'}[s['valid']] } "
                       f"ops {s['ops']} ok {s['ok']} fail {s['fail']} info {s['info']} "
                       f"lost {s['lost_writes']} faults {s['nemesis_events']} "
                       f"node failures {len(s.get('node_failures', []))} | "
                       f"ok during: {availability} | all clients back after heal: mean "
                       f"{s['recovery']['all_clients_s_mean']} s max "
                       f"{s['recovery']['all_clients_s_max']} s | {s['run_dir']}")
    passed = result["valid"] is True and not result.get("node_failures")
    sys.exit(0 if passed else EXIT_INVALID)
