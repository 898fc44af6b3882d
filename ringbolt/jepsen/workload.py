"""Workloads: client processes that drive the cluster and record a checkable history.

Theory of operation
-------------------
Each client process is bound to one node (Jepsen style) and keeps ONE RESP
connection to it. The connection is opened before an op is invoked, so a
node that is down costs no op; once a command is sent, the outcome of a
write is decided only by the reply: OK / CAS 1 -> ok, CAS 0 or an error that
promises nothing happened ("not executed", "not committed") -> fail, any
other error, a timeout or a lost connection -> info (indeterminate). Reads
that do not answer fail (a read changes nothing). Every value written is
unique, so a read names the write it saw.

* `RegisterWorkload`: read / write / CAS over a few keys; after the heal,
  one final read per key. Checked for linearizability.
* `SetWorkload`: unique adds (one key per element, value = element); after
  the heal, a final read of every attempted element plus a SCAN for any key
  nobody tried to add. Lost = acknowledged adds not read back; unexpected =
  elements present that were never added or whose add definitely failed.
  The history is checked for linearizability too.
* `bank`: the transactions issue registers it through `register_workload`.

Time in the history is milliseconds since the run started.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ringbolt.check.history import History
from ringbolt.jepsen import limits

DEFINITE_FAILURES = ("not executed", "not committed")
Address = tuple[str, int]


@dataclass(slots=True, kw_only=True)
class FinalReport:
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    """Keys the final read could not read (the run is then not valid)."""


class Workload(Protocol):
    name: str
    history: History
    errors: dict[int, str]
    answered: set[int]

    async def run_clients(self, addresses: dict[int, Address], until_s: float) -> None: ...

    async def final_reads(self, addresses: dict[int, Address]) -> FinalReport: ...

    async def close(self) -> None: ...


def _connection(address: Address) -> Connection:
    return Connection(host=address[0], port=address[1], socket_timeout=limits.op_timeout_s,
                      socket_connect_timeout=1.0, decode_responses=True,
                      retry=Retry(NoBackoff(), 0), driver_info=None)


class Client:
    """Shared op machinery: a history, a clock, one bound connection per process."""

    name = "base"

    def __init__(self, seed: int, started_at: float) -> None:
        self.rng = random.Random(seed)
        self.started_at = started_at
        self.history = History(clock=self._now_ms)
        self.errors: dict[int, str] = {}
        self.answered: set[int] = set()
        """Op ids that failed by the model's answer (CAS 0): the cluster was available."""
        self.values = itertools.count()
        self._final: Connection | None = None
        self._final_node = -1

    def _now_ms(self) -> int:
        return int((time.monotonic() - self.started_at) * 1000)

    def _now_s(self) -> float:
        return time.monotonic() - self.started_at

    async def run_clients(self, addresses: dict[int, Address], until_s: float) -> None:
        tasks = []
        for node in sorted(addresses):
            for slot in range(limits.clients_per_node):
                process = (node - 1) * limits.clients_per_node + slot
                tasks.append(self._client(process, addresses[node], until_s))
        await asyncio.gather(*tasks)

    async def _client(self, process: int, address: Address, until_s: float) -> None:
        connection = _connection(address)
        try:
            while self._now_s() < until_s and len(self.history) < 2 * limits.history_ops_max:
                try:
                    await asyncio.wait_for(connection.connect(), 1.5)
                except (RedisError, OSError, TimeoutError):
                    await connection.disconnect(nowait=True)
                    await asyncio.sleep(0.2)
                    continue
                await self.step(process, connection)
                await asyncio.sleep(limits.client_pause_s)
        finally:
            await connection.disconnect(nowait=True)

    async def step(self, process: int, connection: Connection) -> None:
        raise NotImplementedError

    async def call(self, connection: Connection, *arguments: str) -> tuple[str, Any]:
        """('ok', reply) | ('fail', error) | ('info', error) for one command."""
        try:
            await connection.send_command(*arguments)
            reply = await asyncio.wait_for(connection.read_response(), limits.op_timeout_s)
        except ResponseError as error:
            definite = any(text in str(error) for text in DEFINITE_FAILURES)
            return ("fail" if definite else "info"), str(error)
        except (RedisError, OSError, TimeoutError, ValueError) as error:
            # ValueError: redis-py could not parse an error reply (its MOVED parser
            # expects two fields; ours has three); the reply is unknown, so is the outcome
            await connection.disconnect(nowait=True)
            return "info", f"{type(error).__name__}: {error}"
        return "ok", reply

    async def write(self, process: int, connection: Connection, key: str, value: str) -> str:
        op = self.history.invoke(process, "write", key, value)
        outcome, reply = await self.call(connection, "SET", key, value)
        return self._complete_write(op, outcome, reply)

    async def cas(self, process: int, connection: Connection, key: str, expected: str,
                  new: str) -> str:
        op = self.history.invoke(process, "cas", key, [expected, new])
        outcome, reply = await self.call(connection, "CAS", key, expected, new)
        if outcome == "ok" and reply in (0, "0"):
            outcome = "fail"
            self.answered.add(op)
        return self._complete_write(op, outcome, reply)

    def _complete_write(self, op: int, outcome: str, reply: Any) -> str:
        if outcome == "ok":
            self.history.ok(op)
        elif outcome == "fail":
            self.history.fail(op)
        else:
            self.history.info(op)
        if outcome != "ok":
            self.errors[op] = str(reply)
        return outcome

    async def read(self, process: int, connection: Connection, key: str) -> str | None:
        op = self.history.invoke(process, "read", key)
        outcome, reply = await self.call(connection, "GET", key)
        if outcome != "ok":
            self.history.fail(op)
            self.errors[op] = str(reply)
            return None
        self.history.ok(op, reply)
        return "ok" if reply is None else str(reply)

    async def read_retrying(self, process: int, addresses: dict[int, Address],
                            key: str) -> tuple[bool, str | None]:
        """A final read: retried on every node in turn until one answers (bounded).
        The connection that answered is kept for the next final read."""
        nodes = sorted(addresses)
        for _ in range(limits.final_read_attempts):
            if self._final is None:
                self._final_node = (self._final_node + 1) % len(nodes)
                self._final = _connection(addresses[nodes[self._final_node]])
            try:
                await asyncio.wait_for(self._final.connect(), 1.5)
            except (RedisError, OSError, TimeoutError):
                await self._drop_final()
                await asyncio.sleep(0.2)
                continue
            op = self.history.invoke(process, "read", key)
            outcome, reply = await self.call(self._final, "GET", key)
            if outcome == "ok":
                self.history.ok(op, reply)
                return True, None if reply is None else str(reply)
            self.history.fail(op)
            await self._drop_final()
            await asyncio.sleep(0.2)
        return False, None

    async def _drop_final(self) -> None:
        if self._final is not None:
            await self._final.disconnect(nowait=True)
        self._final = None

    async def close(self) -> None:
        await self._drop_final()


class RegisterWorkload(Client):
    name = "register"
    keys = 5

    def __init__(self, seed: int, started_at: float) -> None:
        super().__init__(seed, started_at)
        self.last_seen: dict[str, str] = {}

    async def step(self, process: int, connection: Connection) -> None:
        key = f"r{self.rng.randrange(self.keys)}"
        choice = self.rng.random()
        if choice < 0.5:
            value = await self.read(process, connection, key)
            if value not in (None, "ok"):
                self.last_seen[key] = value
        elif choice < 0.8 or key not in self.last_seen:
            value = f"{process}-{next(self.values)}"
            if await self.write(process, connection, key, value) == "ok":
                self.last_seen[key] = value
        else:
            value = f"{process}-{next(self.values)}"
            if await self.cas(process, connection, key, self.last_seen[key], value) == "ok":
                self.last_seen[key] = value

    async def final_reads(self, addresses: dict[int, Address]) -> FinalReport:
        report = FinalReport()
        process = 10_000
        for index in range(self.keys):
            answered, _ = await self.read_retrying(process, addresses, f"r{index}")
            if not answered:
                report.unread.append(f"r{index}")
        return report


class SetWorkload(Client):
    name = "set"

    def __init__(self, seed: int, started_at: float) -> None:
        super().__init__(seed, started_at)
        self.added: dict[str, str] = {}
        """element key -> outcome of its add (ok / fail / info)."""

    async def step(self, process: int, connection: Connection) -> None:
        element = f"e{next(self.values)}"
        self.added[element] = "pending"
        self.added[element] = await self.write(process, connection, element, element)

    async def final_reads(self, addresses: dict[int, Address]) -> FinalReport:
        report = FinalReport()
        pending = sorted(self.added, key=lambda e: int(e[1:]))
        failures = 0
        while pending and failures < limits.final_read_attempts:
            batch = pending[:limits.set_final_read_batch]
            answers = await self._read_batch(10_000, addresses, batch)
            if len(answers) < len(batch):
                failures += 1
                await asyncio.sleep(0.2)
            pending = [e for e in pending if e not in answers]
            for element, value in answers.items():
                if value is None and self.added[element] == "ok":
                    report.lost.append(element)
                elif value is not None and (value != element or self.added[element] == "fail"):
                    report.unexpected.append(element)
        report.unread += pending
        present = await self._scan(addresses)
        if present is None:
            report.unread.append("<scan>")
        else:
            report.unexpected += sorted(k for k in present if k not in self.added)
        return report

    async def _read_batch(self, process: int, addresses: dict[int, Address],
                          keys: list[str]) -> dict[str, str | None]:
        """Pipelined GETs on the final connection; returns what was answered."""
        nodes = sorted(addresses)
        if self._final is None:
            self._final_node = (self._final_node + 1) % len(nodes)
            self._final = _connection(addresses[nodes[self._final_node]])
        answers: dict[str, str | None] = {}
        try:
            await asyncio.wait_for(self._final.connect(), 1.5)
        except (RedisError, OSError, TimeoutError):
            await self._drop_final()
            return answers
        ops = [self.history.invoke(process + i, "read", key) for i, key in enumerate(keys)]
        try:
            await self._final.send_packed_command(
                self._final.pack_commands([("GET", key) for key in keys]))
            for op, key in zip(ops, keys, strict=True):
                try:
                    reply = await asyncio.wait_for(self._final.read_response(),
                                                   limits.op_timeout_s)
                except ResponseError as error:
                    self.history.fail(op)
                    self.errors[op] = str(error)
                    continue
                self.history.ok(op, reply)
                answers[key] = None if reply is None else str(reply)
        except (RedisError, OSError, TimeoutError):
            await self._drop_final()
        for op in ops:
            if op in self.history.outstanding().values():
                self.history.fail(op)
        return answers

    async def _scan(self, addresses: dict[int, Address]) -> set[str] | None:
        for node in sorted(addresses):
            connection = _connection(addresses[node])
            try:
                await asyncio.wait_for(connection.connect(), 1.5)
                keys: set[str] = set()
                cursor = "0"
                for _ in range(100_000):
                    outcome, reply = await self.call(connection, "SCAN", cursor, "COUNT", "1000")
                    if outcome != "ok":
                        raise OSError(str(reply))
                    cursor, batch = str(reply[0]), reply[1]
                    keys.update(str(k) for k in batch)
                    if cursor == "0":
                        return keys
            except (RedisError, OSError, TimeoutError):
                continue
            finally:
                await connection.disconnect(nowait=True)
        return None


WORKLOADS: dict[str, Callable[[int, float], Workload]] = {
    "register": RegisterWorkload,
    "set": SetWorkload,
}


def register_workload(name: str, factory: Callable[[int, float], Workload]) -> None:
    """The hook for later workloads (`bank`, from the transactions issue)."""
    assert name not in WORKLOADS, name
    WORKLOADS[name] = factory
