"""`DistributedSystem`: the simplest way to use ringbolt from Python.

    with DistributedSystem() as system:          # starts a local 3-node cluster
        system.add_data("user:1", "Ada")
        system.get_data("user:1")                # -> "Ada"
        system.remove_data("user:1")             # -> True
        system.balance_load()                    # -> the leadership moves made

    DistributedSystem(["10.0.0.1:7379", ...])    # or connect to a running cluster

With no addresses it starts an embedded cluster of real node processes in a
temporary directory and stops it (deleting the directory) on `close()`.
Values are stored as given (str or bytes) and returned as `str` when they are
valid UTF-8 (`decode=False` returns bytes).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from ringbolt.client.client import Client
from ringbolt.shard.leaders import plan_leader_moves


class DistributedSystem:
    def __init__(self, nodes: Sequence[str] | None = None, *, local_nodes: int = 3,
                 shards: int = 1, password: str | None = None, decode: bool = True) -> None:
        self._stack = contextlib.ExitStack()
        self._cluster: Any = None
        try:
            if not nodes:
                from ringbolt.server.process import LocalCluster, find_base_port

                data_dir = Path(self._stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="ringbolt-")))
                base_port = find_base_port(local_nodes)
                self._cluster = LocalCluster(local_nodes, data_dir=data_dir,
                                             base_port=base_port, shards=shards)
                self._stack.callback(self._cluster.stop)
                self._cluster.start()
                for group in range(shards):
                    self._cluster.wait_for_leader(group, 30.0)
                nodes = [f"127.0.0.1:{port}" for port in self._cluster.client_ports()]
            self.client = Client(nodes, password=password, decode_responses=False)
            self._stack.callback(self.client.close)
        except BaseException:
            self._stack.close()
            raise
        self._decode = decode

    def _out(self, value: Any) -> Any:
        if self._decode and isinstance(value, bytes):
            try:
                return value.decode()
            except UnicodeDecodeError:
                return value
        return value

    def add_data(self, key: str | bytes, value: str | bytes) -> None:
        """Store `value` under `key` (replicated and durable when this returns)."""
        self.client.set(key, value)

    def get_data(self, key: str | bytes) -> Any:
        """The value under `key` (linearizable read), or None."""
        return self._out(self.client.get(key))

    def remove_data(self, key: str | bytes) -> bool:
        """Delete `key`; True if it existed."""
        return self.client.delete(key) == 1

    def balance_load(self, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """Spread shard leadership evenly over the nodes (leadership transfer);
        returns the moves that took effect, as {"shard", "from", "to"}. A
        transfer that does not complete (the target lagged, a leader changed)
        is planned again from a fresh layout, until `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        made: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            layout = self.client.refresh_layout()
            if layout is None:
                raise RuntimeError("no node answered CLUSTER DESCRIBE")
            members = {group: list(layout.addresses) for group in layout.leaders}
            moves = plan_leader_moves(layout.leaders, members, sorted(layout.addresses))
            if not moves:
                break
            for move in moves:
                with contextlib.suppress(RedisError):  # lost the lead meanwhile: re-plan
                    self.client.execute_on(layout.addresses[move.source], "CLUSTER",
                                           "TRANSFER", move.shard, move.target)
            round_deadline = min(deadline, time.monotonic() + 2.0)
            while time.monotonic() < round_deadline:
                time.sleep(0.05)
                current = self.client.refresh_layout()
                if current is not None and all(
                        current.leaders.get(m.shard) == m.target for m in moves):
                    break
            current = self.client.refresh_layout()
            leaders = current.leaders if current is not None else {}
            made += [{"shard": m.shard, "from": m.source, "to": m.target}
                     for m in moves if leaders.get(m.shard) == m.target]
        return made

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> DistributedSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
