"""`ringbolt cluster up` and `ringbolt cluster status`.

Theory of operation
-------------------
`up` writes one config per node and runs a `LocalCluster` of real node
processes in the foreground: node i serves RESP on P+i-1, peers on P+100+i-1
and admin HTTP on P+200+i-1 (P = --base-port). It prints that layout, then
watches the processes: a node that dies is reported once. Ctrl-C or SIGTERM
stops every node with SIGTERM (graceful), then SIGKILL after a bound.

`status` asks each node's admin endpoint for `/status` and prints one row per
(node, group): role, term, leader, commit, applied, last index and lag (the
group's highest commit minus this node's applied index). An unreachable node
gives one clear error line on stderr and a non-zero exit; the rows of the
reachable nodes are still printed.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ringbolt.server.process import (
    ADMIN_PORT_OFFSET,
    ClusterError,
    LocalCluster,
    fetch_json,
    port_layout,
    ports_free,
)


@click.group()
def cluster() -> None:
    """Run and inspect a cluster."""


@cluster.command()
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("ringbolt-data"), show_default=True)
@click.option("--base-port", default=7379, show_default=True, type=click.IntRange(1024, 65000))
@click.option("--shards", default=1, show_default=True, type=click.IntRange(1, 1024))
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(1, 7),
              help="Replicas per shard (capped by --nodes).")
@click.option("--fsync/--no-fsync", default=True, show_default=True)
@click.option("--requirepass", default=None, help="Password clients must AUTH with.")
def up(nodes: int, data_dir: Path, base_port: int, shards: int, replicas: int, fsync: bool,
       requirepass: str | None) -> None:
    """Start a local cluster of NODES processes in the foreground (Ctrl-C stops it)."""
    console = _console()
    if not ports_free(nodes, base_port):
        raise click.ClickException(
            f"ports in use: the layout for base port {base_port} needs RESP "
            f"{base_port}..{base_port + nodes - 1}, peer {base_port + 100}.., admin "
            f"{base_port + ADMIN_PORT_OFFSET}..; pick another --base-port")
    local = LocalCluster(nodes, data_dir, base_port, shards, fsync=fsync, requirepass=requirepass,
                         replicas=replicas)
    stopping = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        with local:
            try:
                local.start()
            except ClusterError as error:
                raise click.ClickException(str(error)) from None
            console.print(_layout_table(local))
            console.print("cluster running; Ctrl-C to stop")
            _watch(local, console, lambda: stopping)
            console.print("stopping nodes ...")
    except KeyboardInterrupt:
        console.print("stopped")
        return
    console.print("stopped")


def _watch(local: LocalCluster, console: Console, stopping: Any) -> None:
    reported: set[int] = set()
    while not stopping():
        for node, code in local.exited().items():
            if node not in reported:
                reported.add(node)
                console.print(f"[red]node {node} exited with code {code}[/]; "
                              f"see {local.log_path(node)}")
        if len(reported) == local.nodes:
            console.print("[red]every node has exited[/]")
            return
        time.sleep(0.2)


def _console() -> Console:
    """A console that does not squeeze tables into 80 columns when piped."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _layout_table(local: LocalCluster) -> Table:
    table = Table(title=f"ringbolt cluster: {local.nodes} nodes, {local.shards} shard(s)")
    for column in ("node", "RESP", "peer", "admin", "pid", "data dir", "log"):
        table.add_column(column)
    for node in local.node_ids():
        client, peer, admin = port_layout(node, local.base_port)
        table.add_row(str(node), f"127.0.0.1:{client}", f"127.0.0.1:{peer}",
                      f"127.0.0.1:{admin}", str(local.pid(node)),
                      str(local.data_dir / f"node{node}"), str(local.log_path(node)))
    return table


@cluster.command()
@click.option("--address", "addresses", multiple=True, metavar="HOST:ADMINPORT",
              help="Admin address of a node (repeatable).")
@click.option("--base-port", default=7379, show_default=True, type=click.IntRange(1024, 65000),
              help="With --nodes: admin ports are BASE+200 ...")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 64))
@click.option("--json", "as_json", is_flag=True, help="Print the raw statuses as JSON.")
@click.option("--timeout", "timeout_s", default=2.0, show_default=True)
def status(addresses: tuple[str, ...], base_port: int, nodes: int, as_json: bool,
           timeout_s: float) -> None:
    """Show nodes, groups, leaders, terms, commit/applied indexes and lag."""
    if not addresses:
        addresses = tuple(f"127.0.0.1:{port_layout(n, base_port)[2]}" for n in range(1, nodes + 1))
    statuses: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for address in addresses:
        try:
            statuses[address] = fetch_json(address, "/status", timeout_s)
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            errors.append(f"error: node at {address} is unreachable: {reason}")
    if as_json:
        click.echo(json.dumps(statuses, indent=2, sort_keys=True))
    elif statuses:
        console = _console()
        shards = _shards_table(statuses)
        if shards is not None:
            console.print(shards)
        console.print(_status_table(statuses))
    for line in errors:
        click.echo(line, err=True)
    if errors:
        sys.exit(1)


def _shards_table(statuses: dict[str, dict[str, Any]]) -> Table | None:
    """One row per shard of the newest map: range, replicas, leader, keys."""
    maps = [s["map"] for s in statuses.values() if s.get("map")]
    if not maps:
        return None
    newest = max(maps, key=lambda m: m["version"])
    leaders: dict[int, int] = {}
    keys: dict[int, int] = {}
    for node_status in statuses.values():
        for group in node_status["groups"]:
            if group["role"] == "leader":
                leaders[group["group"]] = node_status["node_id"]
                keys[group["group"]] = group.get("keys", 0)
    table = Table(title=f"shards (map version {newest['version']})")
    for column in ("shard", "range", "replicas", "leader", "keys"):
        table.add_column(column, justify="right" if column in ("shard", "keys") else "left")
    for shard in sorted(newest["shards"], key=lambda s: s["start"]):
        table.add_row(str(shard["id"]), f"{shard['start']:016x}-{shard['end'] - 1:016x}",
                      ",".join(str(n) for n in shard["replicas"]),
                      str(leaders.get(shard["id"], "-")), str(keys.get(shard["id"], "-")))
    return table


def _status_table(statuses: dict[str, dict[str, Any]]) -> Table:
    commits: dict[int, int] = {}
    for node_status in statuses.values():
        for group in node_status["groups"]:
            commits[group["group"]] = max(commits.get(group["group"], 0), group["commit"])
    table = Table(title="ringbolt cluster status")
    for column in ("node", "admin", "group", "role", "term", "leader", "commit", "applied",
                   "last", "lag"):
        table.add_column(column, justify="right" if column not in ("admin", "role") else "left")
    for address, node_status in sorted(statuses.items(), key=lambda item: item[1]["node_id"]):
        for group in node_status["groups"]:
            role = group["role"]
            shown = f"[bold green]{role}[/]" if role == "leader" else role
            table.add_row(str(node_status["node_id"]), address, str(group["group"]), shown,
                          str(group["term"]), str(group["leader"] or "-"), str(group["commit"]),
                          str(group["applied"]), str(group["last_index"]),
                          str(commits[group["group"]] - group["applied"]))
    return table


# -- membership: add-node, remove-node, rebalance ------------------------------------

_cluster_option = click.option(
    "--cluster", "cluster_addresses", multiple=True, metavar="HOST:PORT",
    default=("127.0.0.1:7379",), show_default=True,
    help="RESP address of a cluster node (repeatable; the first that answers is used).")
_timeout_option = click.option("--timeout", "timeout_s", default=300.0, show_default=True,
                               help="Seconds to wait for the replica moves to finish.")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _admin(cluster_addresses: tuple[str, ...]) -> Any:
    from ringbolt.client.admin import ClusterAdmin

    return ClusterAdmin(list(cluster_addresses))


def _finish_moves(admin: Any, plan: dict[str, Any], timeout_s: float,
                  console: Console | None) -> dict[str, Any]:
    """Wait for the planned moves, then spread leaderships; the summary."""
    started = time.monotonic()
    if console is not None and plan["moves"]:
        console.print(f"moving {len(plan['moves'])} replica(s) ...")
    states = admin.wait_converged(timeout_s)
    leader_moves = admin.balance_leaders()
    loads: dict[int, int] = {}
    leads: dict[int, int] = {}
    for state in states:
        for node in state.replicas:
            loads[node] = loads.get(node, 0) + 1
    for state in admin.shard_states():
        if state.leader is not None:
            leads[state.leader] = leads.get(state.leader, 0) + 1
    return {**plan, "seconds": round(time.monotonic() - started, 3),
            "leader_moves": leader_moves,
            "replicas_per_node": {str(k): v for k, v in sorted(loads.items())},
            "leaders_per_node": {str(k): v for k, v in sorted(leads.items())}}


def _report(result: dict[str, Any], as_json: bool, headline: str) -> None:
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    console = _console()
    console.print(headline)
    for move in result.get("moves", []):
        console.print(f"  shard {move['shard']}: {move['from'] or '-'} -> {move['to'] or '-'}")
    if "replicas_per_node" in result:
        console.print(f"replicas per node: {result['replicas_per_node']}")
        console.print(f"leaders per node:  {result['leaders_per_node']}")
        console.print(f"done in {result['seconds']} s")


def _run_admin(action: Any) -> Any:
    from ringbolt.client.admin import AdminError

    try:
        return action()
    except AdminError as error:
        raise click.ClickException(str(error)) from None


@cluster.command("add-node")
@click.argument("address", metavar="ADDR")
@click.option("--dc", default=None, help="Data-center label (default: the node's own).")
@click.option("--zone", default=None, help="Zone label (default: the node's own).")
@click.option("--rebalance/--no-rebalance", default=True, show_default=True,
              help="Move a fair share of replicas onto the new node.")
@_cluster_option
@_timeout_option
@_json_option
def add_node(address: str, dc: str | None, zone: str | None, rebalance: bool,
             cluster_addresses: tuple[str, ...], timeout_s: float, as_json: bool) -> None:
    """Add the node serving RESP at ADDR (started with `join = true`) to the cluster.

    The node is registered in the cluster map, then (unless --no-rebalance)
    replicas move onto it online: learner, snapshot, catch-up, promotion,
    removal of the old replica; then shard leaderships are spread evenly."""
    admin = _admin(cluster_addresses)
    added = _run_admin(lambda: admin.add_node(address, dc=dc, zone=zone))
    result: dict[str, Any] = {"node": added["node"], "version": added["version"], "moves": []}
    if rebalance:
        plan = _run_admin(lambda: admin.rebalance())
        result = _run_admin(lambda: _finish_moves(admin, {**result, **plan}, timeout_s,
                                                  None if as_json else _console()))
    _report(result, as_json, f"node {added['node']} added (map version {result['version']})")


@cluster.command("remove-node")
@click.argument("node_id", type=int)
@_cluster_option
@_timeout_option
@_json_option
def remove_node(node_id: int, cluster_addresses: tuple[str, ...], timeout_s: float,
                as_json: bool) -> None:
    """Drain node NODE_ID (its replicas move to the other nodes, online), then
    remove it from the map. Works for a node that is down for good too: its
    replicas are rebuilt on the others from the surviving copies."""
    admin = _admin(cluster_addresses)
    _run_admin(lambda: admin.drain_node(node_id))
    plan = _run_admin(lambda: admin.rebalance())
    result = _run_admin(lambda: _finish_moves(admin, plan, timeout_s,
                                              None if as_json else _console()))
    removed = _run_admin(lambda: admin.remove_node(node_id))
    result.update(node=node_id, version=removed["version"])
    _report(result, as_json, f"node {node_id} drained and removed (map version "
                             f"{removed['version']}); its process can be stopped")


@cluster.command("rebalance")
@click.option("--dry-run", is_flag=True, help="Only print the moves placement calls for.")
@_cluster_option
@_timeout_option
@_json_option
def rebalance_command(dry_run: bool, cluster_addresses: tuple[str, ...], timeout_s: float,
                      as_json: bool) -> None:
    """Move replicas to the placement the active nodes call for (bounded loads,
    distinct DCs), then spread shard leaderships evenly."""
    admin = _admin(cluster_addresses)
    plan = _run_admin(lambda: admin.rebalance(dry_run=dry_run))
    if dry_run:
        _report(plan, as_json, f"{len(plan['moves'])} move(s) planned (dry run, map version "
                               f"{plan['version']})")
        return
    result = _run_admin(lambda: _finish_moves(admin, plan, timeout_s,
                                              None if as_json else _console()))
    _report(result, as_json, f"{len(plan['moves'])} move(s) made (map version {plan['version']})")


@cluster.command("split")
@click.argument("shard", type=int)
@click.option("--at", "at_hash", type=int, default=None,
              help="Hash at which to cut (default: the middle of the shard's range).")
@_cluster_option
@_timeout_option
@_json_option
def split_command(shard: int, at_hash: int | None, cluster_addresses: tuple[str, ...],
                  timeout_s: float, as_json: bool) -> None:
    """Split SHARD in two, online: the keys above the cut move to a new shard
    on the same replicas (no data crosses the network), then leaderships are
    spread again. Clients with the old map get a retryable error and follow."""
    admin = _admin(cluster_addresses)
    done = _run_admin(lambda: admin.split(shard, at_hash))
    result = _run_admin(lambda: _finish_moves(admin, {**done, "moves": []}, timeout_s, None))
    _report(result, as_json, f"shard {shard} split at {done['at']}: new shard {done['child']} "
                              f"(map version {done['version']})")
