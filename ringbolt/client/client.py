"""`ringbolt.client`: Python clients (sync and asyncio) built on redis-py.

Theory of operation
-------------------
The client keeps one redis-py connection pool per node and a `Layout` learned
from `CLUSTER DESCRIBE`. Each keyed command goes to the leader of its key's
shard (one hop); a command with no key goes to any node. Errors are handled
by `ringbolt.client.policy.classify`: retry (with bounded backoff, refreshing
the layout, moving to another node) until the per-call deadline, raise
`OutcomeUnknown` for a write that may have happened, or hand a definite error
to the caller. Pipelines group commands by target node and send each group in
one write.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ringbolt.client.layout import Address, Layout, LayoutError
from ringbolt.client.policy import Action, Backoff, OutcomeUnknown, classify
from ringbolt.server.commands import write_command_names

WRITE_COMMANDS = write_command_names()
"""Every command the server registers with the `write` flag: an ambiguous
failure of one raises `OutcomeUnknown` instead of being retried."""
TRANSPORT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def _addresses(addresses: str | Sequence[str]) -> list[Address]:
    if isinstance(addresses, str):
        addresses = [part for part in addresses.split(",") if part.strip()]
    parsed = [Address.parse(text.strip()) for text in addresses]
    if not parsed:
        raise ValueError("at least one node address (host:port) is needed")
    return parsed


class _Routing:
    """Target choice shared by the sync and async clients."""

    def __init__(self, seeds: list[Address], seed: int | None) -> None:
        self.seeds = seeds
        self.layout: Layout | None = None
        self.rng = random.Random(seed)
        self.rotation = 0

    def target(self, key: bytes | None, attempt: int) -> Address:
        if key is not None and self.layout is not None and attempt == 0:
            leader = self.layout.leader_address(key)
            if leader is not None:
                return leader
        known = list(self.layout.addresses.values()) if self.layout else []
        candidates = known + [seed for seed in self.seeds if seed not in known]
        self.rotation += 1
        return candidates[(self.rotation + attempt) % len(candidates)]


class _Retrier:
    """One call's retry state, shared by both clients: what the policy says
    after an error, the deadline, the backoff and the attempt count."""

    def __init__(self, routing: _Routing, deadline_s: float, command: Any) -> None:
        self.write = str(command).upper() in WRITE_COMMANDS
        self.deadline = time.monotonic() + deadline_s
        self.backoff = Backoff(routing.rng)
        self.attempt = 0

    def delay_after(self, error: BaseException, *, sent: bool) -> float:
        """Seconds to wait before the next attempt, or raise what the caller gets."""
        action = classify(error, sent=sent, write=self.write)
        if action is Action.RAISE:
            raise error
        if action is Action.UNKNOWN:
            raise error if isinstance(error, OutcomeUnknown) else OutcomeUnknown(str(error))
        if time.monotonic() >= self.deadline:
            raise redis.exceptions.TimeoutError(
                f"gave up after {self.attempt + 1} attempts: {error}")
        self.attempt += 1
        return self.backoff.next_delay_s()


class Client:
    """A synchronous ringbolt client. Thread-safe like redis-py's pools."""

    def __init__(self, addresses: str | Sequence[str], *, password: str | None = None,
                 timeout_s: float = 5.0, deadline_s: float = 15.0,
                 decode_responses: bool = False, seed: int | None = None) -> None:
        self._routing = _Routing(_addresses(addresses), seed)
        self._password = password
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s
        self._decode = decode_responses
        self._pools: dict[Address, redis.ConnectionPool] = {}

    # -- plumbing ------------------------------------------------------------------

    def _pool(self, address: Address) -> redis.ConnectionPool:
        pool = self._pools.get(address)
        if pool is None:
            pool = redis.ConnectionPool(
                host=address.host, port=address.port, password=self._password,
                socket_timeout=self._timeout_s, socket_connect_timeout=min(1.0, self._timeout_s),
                decode_responses=self._decode, max_connections=64,
                retry=Retry(NoBackoff(), 0))
            self._pools[address] = pool
        return pool

    def _send(self, address: Address, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send `commands` in one write to `address`; errors say whether they were sent."""
        pool = self._pool(address)
        try:
            connection = pool.get_connection()
        except TRANSPORT_ERRORS as error:
            raise _NotSent(error) from error
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            results: list[Any] = []
            for _ in commands:
                try:
                    results.append(connection.read_response())
                except redis.ResponseError as error:
                    results.append(error)
            return results
        except TRANSPORT_ERRORS as error:
            connection.disconnect()
            raise OutcomeUnknown(f"{address}: {error}") from error
        finally:
            pool.release(connection)

    def refresh_layout(self) -> Layout | None:
        for attempt in range(len(self._routing.seeds) + 1):
            address = self._routing.target(None, attempt)
            try:
                [text] = self._send(address, [("CLUSTER", "DESCRIBE")])
                if isinstance(text, Exception):
                    raise text
                self._routing.layout = Layout.from_description(text)
                return self._routing.layout
            except (_NotSent, OutcomeUnknown, redis.ResponseError, LayoutError):
                continue
        return None

    def execute_on(self, address: Address, *args: Any) -> Any:
        """Run one command on one node, no routing and no retry; errors raise."""
        try:
            [result] = self._send(address, [args])
        except _NotSent as not_sent:
            raise not_sent.error from None
        if isinstance(result, Exception):
            raise result
        return result

    def execute(self, *args: Any, key: str | bytes | None = None) -> Any:
        """Run one command, routed by `key`, retried per the policy until the deadline."""
        routing_key = None if key is None else _as_bytes(key)
        if self._routing.layout is None:
            self.refresh_layout()
        retrier = _Retrier(self._routing, self._deadline_s, args[0])
        while True:
            address = self._routing.target(routing_key, retrier.attempt)
            try:
                [result] = self._send(address, [args])
                if not isinstance(result, Exception):
                    return result
                delay_s = retrier.delay_after(result, sent=True)
            except _NotSent as not_sent:
                delay_s = retrier.delay_after(not_sent.error, sent=False)
            except OutcomeUnknown as unknown:
                delay_s = retrier.delay_after(unknown, sent=True)
            time.sleep(delay_s)
            self.refresh_layout()

    # -- commands ------------------------------------------------------------------

    def get(self, key: str | bytes) -> Any:
        return self.execute("GET", key, key=key)

    def set(self, key: str | bytes, value: str | bytes, *, ex: int | None = None,
            px: int | None = None, nx: bool = False, xx: bool = False) -> Any:
        args: list[Any] = ["SET", key, value]
        if ex is not None:
            args += ["EX", ex]
        if px is not None:
            args += ["PX", px]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        return self.execute(*args, key=key) is not None

    def delete(self, *keys: str | bytes) -> int:
        return sum(int(self.execute("DEL", key, key=key)) for key in keys)

    def exists(self, *keys: str | bytes) -> int:
        return sum(int(self.execute("EXISTS", key, key=key)) for key in keys)

    def cas(self, key: str | bytes, expected: str | bytes, new: str | bytes) -> bool:
        return int(self.execute("CAS", key, expected, new, key=key)) == 1

    def incrby(self, key: str | bytes, amount: int = 1) -> int:
        return int(self.execute("INCRBY", key, amount, key=key))

    def mget(self, keys: Iterable[str | bytes]) -> list[Any]:
        return [self.get(key) for key in keys]

    def dbsize(self) -> int:
        return int(self.execute("DBSIZE"))

    def pipeline(self) -> Pipeline:
        return Pipeline(self)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.disconnect()
        self._pools.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pipeline:
    """Buffered commands, sent grouped by target node, answered in order.

    A group whose connection fails before sending is retried once elsewhere; a
    group that was sent and lost its connection yields `OutcomeUnknown` for
    each of its commands. Errors are returned in place (like redis-py's
    `raise_on_error=False`)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._commands: list[tuple[bytes | None, tuple[Any, ...]]] = []

    def execute_command(self, *args: Any, key: str | bytes | None = None) -> Pipeline:
        self._commands.append((None if key is None else _as_bytes(key), args))
        return self

    def get(self, key: str | bytes) -> Pipeline:
        return self.execute_command("GET", key, key=key)

    def set(self, key: str | bytes, value: str | bytes) -> Pipeline:
        return self.execute_command("SET", key, value, key=key)

    def delete(self, key: str | bytes) -> Pipeline:
        return self.execute_command("DEL", key, key=key)

    def execute(self) -> list[Any]:
        client = self._client
        if client._routing.layout is None:
            client.refresh_layout()
        groups: dict[Address, list[int]] = {}
        for position, (key, _) in enumerate(self._commands):
            groups.setdefault(client._routing.target(key, 0), []).append(position)
        results: list[Any] = [None] * len(self._commands)
        for address, positions in groups.items():
            batch = [self._commands[p][1] for p in positions]
            for attempt in range(2):
                target = address if attempt == 0 else client._routing.target(None, attempt)
                try:
                    answers = client._send(target, batch)
                except _NotSent as not_sent:
                    answers = [not_sent.error] * len(batch)
                    continue
                except OutcomeUnknown as unknown:
                    answers = [unknown] * len(batch)
                break
            for position, answer in zip(positions, answers, strict=True):
                results[position] = answer
        self._commands.clear()
        return results


class _NotSent(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class AsyncClient:
    """The asyncio twin of `Client` (same routing and retry policy)."""

    def __init__(self, addresses: str | Sequence[str], *, password: str | None = None,
                 timeout_s: float = 5.0, deadline_s: float = 15.0,
                 decode_responses: bool = False, seed: int | None = None) -> None:
        self._routing = _Routing(_addresses(addresses), seed)
        self._password = password
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s
        self._decode = decode_responses
        self._clients: dict[Address, aioredis.Redis] = {}

    def _client(self, address: Address) -> aioredis.Redis:
        client = self._clients.get(address)
        if client is None:
            client = aioredis.Redis(
                host=address.host, port=address.port, password=self._password,
                socket_timeout=self._timeout_s, socket_connect_timeout=min(1.0, self._timeout_s),
                decode_responses=self._decode,
                retry=AsyncRetry(NoBackoff(), 0))
            self._clients[address] = client
        return client

    async def _send(self, address: Address, args: tuple[Any, ...]) -> Any:
        client = self._client(address)
        pool = client.connection_pool
        try:
            connection = await pool.get_connection()
        except TRANSPORT_ERRORS as error:
            raise _NotSent(error) from error
        try:
            await connection.send_command(*args)
            try:
                return await connection.read_response()
            except redis.ResponseError as error:
                return error
        except TRANSPORT_ERRORS as error:
            await connection.disconnect()
            raise OutcomeUnknown(f"{address}: {error}") from error
        finally:
            await pool.release(connection)

    async def refresh_layout(self) -> Layout | None:
        for attempt in range(len(self._routing.seeds) + 1):
            address = self._routing.target(None, attempt)
            try:
                text = await self._send(address, ("CLUSTER", "DESCRIBE"))
                if isinstance(text, Exception):
                    raise text
                self._routing.layout = Layout.from_description(text)
                return self._routing.layout
            except (_NotSent, OutcomeUnknown, redis.ResponseError, LayoutError):
                continue
        return None

    async def execute(self, *args: Any, key: str | bytes | None = None) -> Any:
        routing_key = None if key is None else _as_bytes(key)
        if self._routing.layout is None:
            await self.refresh_layout()
        retrier = _Retrier(self._routing, self._deadline_s, args[0])
        while True:
            address = self._routing.target(routing_key, retrier.attempt)
            try:
                result = await self._send(address, args)
                if not isinstance(result, Exception):
                    return result
                delay_s = retrier.delay_after(result, sent=True)
            except _NotSent as not_sent:
                delay_s = retrier.delay_after(not_sent.error, sent=False)
            except OutcomeUnknown as unknown:
                delay_s = retrier.delay_after(unknown, sent=True)
            await asyncio.sleep(delay_s)
            await self.refresh_layout()

    async def get(self, key: str | bytes) -> Any:
        return await self.execute("GET", key, key=key)

    async def set(self, key: str | bytes, value: str | bytes) -> bool:
        return (await self.execute("SET", key, value, key=key)) is not None

    async def delete(self, *keys: str | bytes) -> int:
        return sum([int(await self.execute("DEL", key, key=key)) for key in keys])

    async def cas(self, key: str | bytes, expected: str | bytes, new: str | bytes) -> bool:
        return int(await self.execute("CAS", key, expected, new, key=key)) == 1

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncClient", "Client", "OutcomeUnknown", "Pipeline", "RedisError"]
