"""Helpers for cluster tests: a workload that records a checkable history."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ringbolt.check.history import History
from ringbolt.server.process import LocalCluster

OP_TIMEOUT_S = 3.0
DEFINITE_FAILURES = ("not executed", "not committed")
"""Error messages that promise the write did not take effect."""


def dump_logs(cluster: LocalCluster) -> str:
    return "\n".join(f"--- node {n}\n{cluster.log_path(n).read_text()[-3000:]}"
                     for n in cluster.node_ids() if cluster.log_path(n).exists())


@dataclass
class Workload:
    """Clients doing writes (unique values) and reads on a few register keys,
    plus write-once ledger keys, recording a history as they go. Keys carry
    the seed, so two workloads on one cluster have independent histories."""

    ports: list[int]
    seed: int
    keys: int = 6
    history: History = field(default_factory=History)
    ledger: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "fail": 0, "info": 0})
    last_ok_at: float = 0.0
    errors: dict[int, str] = field(default_factory=dict)
    """Error replies by op id (for diagnosing a failed check)."""

    def __post_init__(self) -> None:
        self.stopped = False
        self.rng = random.Random(self.seed)
        self.values = itertools.count()

    async def run(self, clients: int, duration_s: float) -> None:
        deadline = time.monotonic() + duration_s
        await asyncio.gather(*(self._client(p, deadline) for p in range(clients)))

    def stop(self) -> None:
        """End the run early (clients finish their current operation)."""
        self.stopped = True

    async def _client(self, process: int, deadline: float) -> None:
        node = process % len(self.ports)
        connection = self._connect(node)
        while time.monotonic() < deadline and not self.stopped:
            try:
                await self._one(process, connection)
            except (TimeoutError, RedisConnectionError, RedisTimeoutError, OSError):
                await connection.aclose()
                node = (node + 1) % len(self.ports)
                connection = self._connect(node)
                await asyncio.sleep(0.05)
        await connection.aclose()

    def _connect(self, node: int) -> aioredis.Redis:
        # no automatic retries: a retried SET whose first attempt took effect
        # could come back "not executed", and the history would record a lie
        return aioredis.Redis(port=self.ports[node], socket_timeout=OP_TIMEOUT_S,
                              socket_connect_timeout=1.0, decode_responses=True,
                              retry=Retry(NoBackoff(), 0))

    async def _one(self, process: int, connection: aioredis.Redis) -> None:
        choice = self.rng.random()
        if choice < 0.15:
            key, value = f"s{self.seed}:ledger:{next(self.values)}", f"v{self.rng.random()}"
            await self._write(process, connection, key, value, ledger=True)
        elif choice < 0.55:
            key = f"s{self.seed}:r{self.rng.randrange(self.keys)}"
            await self._write(process, connection, key, f"{process}-{next(self.values)}")
        else:
            await self._read(process, connection, f"s{self.seed}:r{self.rng.randrange(self.keys)}")

    async def _write(self, process: int, connection: aioredis.Redis, key: str, value: str,
                     ledger: bool = False) -> None:
        op = self.history.invoke(process, "write", key, value)
        try:
            await asyncio.wait_for(connection.set(key, value), OP_TIMEOUT_S)
        except ResponseError as error:
            self.errors[op] = f"{time.time():.3f} port {connection.connection_pool.connection_kwargs.get('port')}: {error}"
            definite = any(text in str(error) for text in DEFINITE_FAILURES)
            self._complete(op, "fail" if definite else "info")
            if not definite and "unknown" not in str(error):
                raise AssertionError(f"unexpected error for SET: {error}") from None
            await asyncio.sleep(0.02)
            return
        except (TimeoutError, RedisError, OSError):
            self._complete(op, "info")
            raise
        self._complete(op, "ok")
        if ledger:
            self.ledger[key] = value

    async def _read(self, process: int, connection: aioredis.Redis, key: str) -> None:
        op = self.history.invoke(process, "read", key)
        try:
            value = await asyncio.wait_for(connection.get(key), OP_TIMEOUT_S)
        except ResponseError:
            self._complete(op, "fail")
            await asyncio.sleep(0.02)
            return
        except (TimeoutError, RedisError, OSError):
            self._complete(op, "fail")
            raise
        self._complete(op, "ok", value)

    def _complete(self, op: int, kind: str, value: object = None) -> None:
        self.counts[kind] += 1
        if kind == "ok":
            self.history.ok(op, value)
            self.last_ok_at = time.monotonic()
        elif kind == "fail":
            self.history.fail(op)
        else:
            self.history.info(op)

    async def missing_ledger_keys(self, port: int) -> list[str]:
        """Acknowledged ledger writes that a linearizable read does not return."""
        connection = aioredis.Redis(port=port, socket_timeout=10.0, decode_responses=True)
        try:
            keys = sorted(self.ledger)
            missing = []
            for start in range(0, len(keys), 200):
                chunk = keys[start:start + 200]
                pipe = connection.pipeline(transaction=False)
                for key in chunk:
                    pipe.get(key)
                values = await pipe.execute()
                missing += [k for k, v in zip(chunk, values, strict=True) if v != self.ledger[k]]
            return missing
        finally:
            await connection.aclose()


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def data_dirs(cluster: LocalCluster) -> list[Path]:
    return [cluster.data_dir / f"node{n}" for n in cluster.node_ids()]
