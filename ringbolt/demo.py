"""`ringbolt demo`: a local 3-node cluster doing real work, failing, and proving it lost nothing.

Theory of operation
-------------------
The demo starts three real node processes in a temporary directory, then runs
a bounded mixed workload from several concurrent clients (redis-py over RESP,
each client spread over every node):

* *register* keys see reads, writes and compare-and-set; every operation goes
  into a `History` that the linearizability checker verifies at the end;
* *ledger* keys are written once each with a unique value; each acknowledged
  ledger write must be readable at the end ("no acknowledged write lost").

Partway through, the leader of shard 0 is killed with SIGKILL; the demo
measures the failover time (kill -> first acknowledged write after it), waits,
restarts the node, lets it catch up, and finally reads everything back.

A write whose outcome is unknown (connection lost, timeout, "outcome unknown"
error) is recorded as indeterminate (`info`): it may or may not have happened,
and the checker treats it so. A read that fails is recorded as `fail` (reads
have no effect).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import random
import signal
import tempfile
import time
from pathlib import Path

import click
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ringbolt.check.history import History
from ringbolt.check.linearizability import check_history

REGISTER_KEYS = 8
CLIENTS = 8
OP_TIMEOUT_S = 3.0


@dataclasses.dataclass
class DemoStats:
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    ledger_acked: int = 0
    started_at: float = 0.0
    killed_at: float | None = None
    first_ok_after_kill: float | None = None
    phase: str = "starting"

    @property
    def failover_s(self) -> float | None:
        if self.killed_at is None or self.first_ok_after_kill is None:
            return None
        return self.first_ok_after_kill - self.killed_at


class DemoWorkload:
    """Bounded clients issuing register and ledger operations against all nodes."""

    def __init__(self, ports: list[int], seed: int, password: str | None = None) -> None:
        self.ports = ports
        self.rng = random.Random(seed)
        self.history = History()
        self.stats = DemoStats()
        self.ledger: dict[str, str] = {}
        self.ledger_counter = itertools.count()
        self.value_counter = itertools.count(1)
        self.password = password
        self.stopping = False

    def _client(self, port: int) -> aioredis.Redis:
        return aioredis.Redis(
            host="127.0.0.1",
            port=port,
            socket_timeout=OP_TIMEOUT_S,
            socket_connect_timeout=1.0,
            password=self.password,
            retry_on_timeout=False,
            retry=Retry(NoBackoff(), 0),  # never resend a write behind the history's back
        )

    async def run_client(self, process: int, deadline: float) -> None:
        clients = [self._client(port) for port in self.ports]
        rng = random.Random(self.rng.randrange(2**32))
        node = process % len(clients)
        try:
            while not self.stopping and time.monotonic() < deadline:
                succeeded = await self._one_operation(process, clients[node], rng)
                if not succeeded:
                    node = (node + 1) % len(clients)  # fail over to another node
                    await asyncio.sleep(0.05)
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _one_operation(self, process: int, client: aioredis.Redis, rng: random.Random) -> bool:
        choice = rng.random()
        if choice < 0.25:
            return await self._ledger_write(process, client)
        key = f"reg{rng.randrange(REGISTER_KEYS)}"
        if choice < 0.55:
            return await self._read(process, client, key)
        if choice < 0.85:
            return await self._write(process, client, key)
        return await self._cas(process, client, key, rng)

    def _note_ok(self, write_invoked_at: float | None = None) -> None:
        """Count a success; failover ends with the first write *invoked* after
        the kill that is acknowledged (reads or in-flight writes don't count)."""
        self.stats.ok += 1
        killed_at = self.stats.killed_at
        if (write_invoked_at is not None and killed_at is not None
                and write_invoked_at >= killed_at and self.stats.first_ok_after_kill is None):
            self.stats.first_ok_after_kill = time.monotonic()

    async def _write(self, process: int, client: aioredis.Redis, key: str) -> bool:
        value = f"v{next(self.value_counter)}"
        invoked_at = time.monotonic()
        op = self.history.invoke(process, "write", key, value)
        try:
            await client.set(key, value)
        except RedisError:
            self.history.info(op)
            self.stats.unknown += 1
            return False
        self.history.ok(op)
        self._note_ok(invoked_at)
        return True

    async def _cas(self, process: int, client: aioredis.Redis, key: str, rng: random.Random) -> bool:
        expected = f"v{max(1, next(self.value_counter) - rng.randrange(1, 8))}"
        new = f"v{next(self.value_counter)}"
        op = self.history.invoke(process, "cas", key, [expected, new])
        try:
            swapped = await client.execute_command("CAS", key, expected, new)
        except RedisError:
            self.history.info(op)
            self.stats.unknown += 1
            return False
        if int(swapped) == 1:
            self.history.ok(op)
        else:
            self.history.fail(op)
        self._note_ok()
        return True

    async def _read(self, process: int, client: aioredis.Redis, key: str) -> bool:
        op = self.history.invoke(process, "read", key, None)
        try:
            value = await client.get(key)
        except RedisError:
            self.history.fail(op)
            self.stats.failed += 1
            return False
        self.history.ok(op, _text(value))
        self._note_ok()
        return True

    async def _ledger_write(self, process: int, client: aioredis.Redis) -> bool:
        key = f"ledger{next(self.ledger_counter)}"
        value = f"entry-{key}"
        invoked_at = time.monotonic()
        try:
            await client.set(key, value)
        except RedisError:
            self.stats.unknown += 1
            return False
        self.ledger[key] = value
        self.stats.ledger_acked += 1
        self._note_ok(invoked_at)
        return True

    async def verify_ledger(self) -> list[str]:
        """Every acknowledged ledger write must be readable; returns the lost keys."""
        lost: list[str] = []
        keys = sorted(self.ledger)
        for attempt in range(20):
            client = self._client(self.ports[attempt % len(self.ports)])
            try:
                lost = []
                for start in range(0, len(keys), 500):
                    chunk = keys[start : start + 500]
                    values = await client.mget(chunk)
                    for key, value in zip(chunk, values, strict=True):
                        if _text(value) != self.ledger[key]:
                            lost.append(key)
                return lost
            except (RedisConnectionError, RedisTimeoutError, ResponseError):
                await asyncio.sleep(0.5)
            finally:
                await client.aclose()
        raise click.ClickException("could not read the ledger back from any node")


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _table(stats: DemoStats, elapsed_s: float) -> Table:
    table = Table(title="ringbolt demo", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("phase", stats.phase)
    table.add_row("elapsed", f"{elapsed_s:5.1f} s")
    table.add_row("operations ok", str(stats.ok))
    table.add_row("ops/s", f"{stats.ok / max(elapsed_s, 1e-9):,.0f}")
    table.add_row("failed reads (retried)", str(stats.failed))
    table.add_row("writes with unknown outcome", str(stats.unknown))
    table.add_row("ledger writes acknowledged", str(stats.ledger_acked))
    failover = stats.failover_s
    table.add_row("failover time", "-" if failover is None else f"{failover * 1000:,.0f} ms")
    return table


async def run_demo(duration_s: float, seed: int, data_dir: Path, base_port: int,
                   console: Console) -> dict[str, object]:
    from ringbolt.server.process import LocalCluster

    cluster = LocalCluster(3, data_dir=data_dir, base_port=base_port)
    workload = DemoWorkload(cluster.client_ports(), seed)
    stats = workload.stats
    with cluster:
        stats.phase = "starting 3 nodes"
        console.print(f"[bold]ringbolt demo[/]: 3 nodes in {data_dir}, RESP ports {cluster.client_ports()}")
        await asyncio.to_thread(cluster.start)
        leader = await asyncio.to_thread(cluster.wait_for_leader, 0, 30.0)
        console.print(f"node {leader} leads shard 0")
        stats.started_at = time.monotonic()
        deadline = stats.started_at + duration_s
        clients = [asyncio.ensure_future(workload.run_client(p, deadline)) for p in range(CLIENTS)]
        with Live(_table(stats, 0.0), console=console, refresh_per_second=4, transient=False) as live:

            async def refresh() -> None:
                while not all(c.done() for c in clients):
                    live.update(_table(stats, time.monotonic() - stats.started_at))
                    await asyncio.sleep(0.25)

            refresher = asyncio.ensure_future(refresh())
            stats.phase = "workload"
            await asyncio.sleep(duration_s * 0.3)
            victim = await asyncio.to_thread(cluster.wait_for_leader, 0, 10.0)
            stats.phase = f"SIGKILL leader (node {victim})"
            stats.killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim, signal.SIGKILL)
            await asyncio.sleep(duration_s * 0.3)
            stats.phase = f"restarting node {victim}"
            await asyncio.to_thread(cluster.restart, victim)
            stats.phase = "workload (all nodes up)"
            await asyncio.gather(*clients)
            stats.phase = "verifying"
            await refresher
            live.update(_table(stats, time.monotonic() - stats.started_at))
        lost = await workload.verify_ledger()
        result = check_history(workload.history)
    summary = Table(title="summary")
    summary.add_column("check")
    summary.add_column("result", justify="right")
    failover = stats.failover_s
    summary.add_row("failover time", "-" if failover is None else f"{failover * 1000:,.0f} ms")
    summary.add_row("history operations checked", str(result.ops_checked))
    summary.add_row("linearizable", "[green]yes[/]" if result.valid else "[red]NO[/]")
    summary.add_row("acknowledged ledger writes", str(len(workload.ledger)))
    summary.add_row("lost acknowledged writes", f"[{'green' if not lost else 'red'}]{len(lost)}[/]")
    console.print(summary)
    if not result.valid:
        for violation in result.violations[:5]:
            console.print(f"[red]violation[/]: {violation}")
    if lost:
        console.print(f"[red]lost[/]: {lost[:20]}")
    ok = bool(result.valid) and not lost and stats.first_ok_after_kill is not None
    console.print("[bold green]demo passed[/]" if ok else "[bold red]demo FAILED[/]")
    return {"passed": ok, "failover_ms": None if failover is None else round(failover * 1000),
            "ops_ok": stats.ok, "ops_checked": result.ops_checked, "linearizable": result.valid,
            "acknowledged_writes": len(workload.ledger), "lost_writes": len(lost)}


@click.command()
@click.option("--duration", "duration_s", default=20.0, show_default=True, help="Workload seconds.")
@click.option("--seed", default=1, show_default=True, help="Workload RNG seed.")
@click.option("--base-port", type=int, default=None,
              help="RESP port of node 1 (default: the first free range from 17379).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON summary on stdout (progress goes to stderr).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where nodes keep data (default: a temporary directory, removed after).")
def demo(duration_s: float, seed: int, base_port: int | None, data_dir: Path | None,
         as_json: bool) -> None:
    """Start a local 3-node cluster, run a workload, SIGKILL the leader, verify nothing was lost."""
    from ringbolt.server.process import find_base_port

    console = Console(stderr=as_json)
    if duration_s < 5 or duration_s > 600:
        raise click.BadParameter("must be between 5 and 600 seconds", param_hint="--duration")
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ringbolt-demo-")))
        if base_port is None:
            base_port = find_base_port(3, start=17379)
        summary = asyncio.run(run_demo(duration_s, seed, data_dir, base_port, console))
    if as_json:
        click.echo(json.dumps(summary))
    raise SystemExit(0 if summary["passed"] else 1)
