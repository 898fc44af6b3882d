"""LocalService: a single-process, in-memory KeyValueService (no replication).

Theory of operation
-------------------
Writes are applied at once with `ringbolt.kv.machine.apply_command` to a dict
backend, and reads look the dict up; both return futures that are already
resolved, so a connection answers a whole pipeline in one pass. It is the
reference the protocol tests run against, the target of the protocol fuzzer,
the ceiling of the protocol layer in benchmarks, and a "dev" mode.

`shards` > 1 splits the key space by hash only to refuse multi-key writes
that span shards (`CrossShard`), the way a sharded node does; the data stays
in one dict. The clock is injected (`clock_ms`), so tests can move time.

SCAN cursors are positions in the 64-bit xxhash order of keys: a key present
for the whole iteration is returned exactly once, whatever is written
meanwhile; each call costs O(number of keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable, Sequence
from typing import Any

import click
import xxhash

from ringbolt import limits as project
from ringbolt.kv.machine import DictBackend, Result, apply_command
from ringbolt.server.service import CrossShard, ServiceError, ServiceLimits


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalService:
    """See module docstring. Used from one running event loop (the first
    that calls it, or the next one once that is closed)."""

    def __init__(self, *, limits: ServiceLimits | None = None, shards: int = 1,
                 clock_ms: Callable[[], int] = wall_clock_ms, port: int = 0) -> None:
        assert shards >= 1
        self.limits = limits or ServiceLimits(key_bytes_max=project.key_bytes_max,
                                              value_bytes_max=project.value_bytes_max)
        self.backend = DictBackend()
        self.shards = shards
        self.clock_ms = clock_ms
        self.port = port
        self.started_ms = clock_ms()
        self.writes_total = 0
        self.reads_total = 0
        self.applied_index = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def _future(self) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    def now_ms(self) -> int:
        return self.clock_ms()

    def shard_of(self, key: bytes) -> int:
        return xxhash.xxh64_intdigest(key) % self.shards if self.shards > 1 else 0

    def group_of(self, keys: Sequence[bytes]) -> int:
        shards = {self.shard_of(key) for key in keys}
        if len(shards) > 1:
            raise CrossShard("keys in request don't hash to the same shard")
        return shards.pop()

    def submit_write(self, keys: Sequence[bytes], command: bytes) -> asyncio.Future[Result]:
        assert keys, "a write names at least one key"
        self.group_of(keys)
        future: asyncio.Future[Result] = self._future()
        future.set_result(apply_command(self.backend, command))
        self.writes_total += 1
        self.applied_index += 1
        return future

    def submit_read(self, key: bytes, *, stale: bool = False
                    ) -> asyncio.Future[tuple[bytes, int] | None]:
        future: asyncio.Future[tuple[bytes, int] | None] = self._future()
        record = self.backend.data.get(key)
        if record is not None and record[1] != 0 and record[1] <= self.clock_ms():
            del self.backend.data[key]  # lazily forget what has expired
            record = None
        future.set_result(record)
        self.reads_total += 1
        return future

    def _live_keys(self) -> list[bytes]:
        now_ms = self.clock_ms()
        return [key for key, (_, expire_at_ms) in self.backend.data.items()
                if expire_at_ms == 0 or expire_at_ms > now_ms]

    async def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        assert count > 0
        candidates = [(position, key) for key in self._live_keys()
                      if (position := xxhash.xxh64_intdigest(key)) >= cursor]
        chosen = heapq.nsmallest(count, candidates)
        if len(chosen) == len(candidates):
            return 0, [key for _, key in chosen]
        last = chosen[-1][0]
        # Keys sharing the last position must come in this batch too.
        ties = sorted(key for position, key in candidates if position == last)
        keys = [key for position, key in chosen if position != last] + ties
        next_cursor = last + 1
        return (0 if next_cursor >= 1 << 64 else next_cursor), keys

    async def dbsize(self) -> int:
        return len(self._live_keys())

    def info(self) -> dict[str, dict[str, object]]:
        data = self.backend.data
        expiring = sum(1 for _, expire_at_ms in data.values() if expire_at_ms)
        return {
            "server": {
                "redis_version": "7.0.0",
                "ringbolt_mode": "local",
                "process_id": 0,
                "tcp_port": self.port,
                "uptime_in_seconds": (self.clock_ms() - self.started_ms) // 1000,
            },
            "replication": {"role": "master", "connected_slaves": 0},
            "stats": {"writes_total": self.writes_total, "reads_total": self.reads_total},
            "keyspace": {"db0": f"keys={len(data)},expires={expiring},avg_ttl=0"},
        }

    def cluster_description(self) -> dict[str, object]:
        return {
            "cluster_state": "ok",
            "mode": "local",
            "node_id": "local",
            "nodes": [{"id": "local", "address": f"127.0.0.1:{self.port}", "zone": "local",
                       "state": "up"}],
            "groups": [{"id": 0, "leader": "local", "term": 1, "members": ["local"],
                        "commit_index": self.applied_index,
                        "applied_index": self.applied_index}],
        }

    def transfer_leadership(self, group_id: int, target: int) -> None:
        raise ServiceError("a local (single-process) node has no leadership to transfer")


@click.command(name="dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6379, show_default=True, type=int)
@click.option("--requirepass", default=None, help="Require AUTH with this password.")
@click.option("--shards", default=1, show_default=True, type=int,
              help="Refuse multi-key writes spanning this many hash shards.")
def dev(host: str, port: int, requirepass: str | None, shards: int) -> None:
    """Serve RESP from one in-memory LocalService: no replication, no disk."""
    import uvloop

    from ringbolt.server.connection import serve_clients

    limits = ServiceLimits(key_bytes_max=project.key_bytes_max,
                           value_bytes_max=project.value_bytes_max, requirepass=requirepass)

    async def run() -> None:
        service = LocalService(limits=limits, shards=shards, port=port)
        server = await serve_clients(service, host, port)
        click.echo(f"ringbolt dev: serving {host}:{port} (in memory, not replicated)")
        async with server:
            await server.serve_forever()

    uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
