"""`DistributedSystem`: the simplest way to use ringbolt from Python.

    with DistributedSystem() as system:          # starts a local 3-node cluster
        system.add_data("user:1", "Ada")
        system.get_data("user:1")                # -> "Ada"
        system.remove_data("user:1")             # -> True
        system.balance_load()                    # -> the replica and leadership moves made

    DistributedSystem(["10.0.0.1:7379", ...])    # or connect to a running cluster

With no addresses it starts an embedded cluster of real node processes in a
temporary directory and stops it (deleting the directory) on `close()`.
Values are stored as given (str or bytes) and returned as `str` when they are
valid UTF-8 (`decode=False` returns bytes).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ringbolt.client.admin import AdminError, ClusterAdmin
from ringbolt.client.client import Client


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
            self._addresses = list(nodes)
            self._password = password
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

    def balance_load(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Rebalance: move replicas to the placement the nodes call for (bounded
        loads, distinct DCs; online, see `ringbolt cluster rebalance`), wait for
        the moves, then spread shard leaderships evenly. Returns the moves
        made, as {"kind": "replica" | "leader", "shard", "from", "to"}."""
        admin = ClusterAdmin(self._addresses, password=self._password)
        try:
            plan = admin.rebalance()
            admin.wait_converged(timeout_s)
            leader_moves = admin.balance_leaders(min(timeout_s, 30.0))
        except AdminError as error:
            raise RuntimeError(f"rebalance failed: {error}") from None
        return ([{"kind": "replica", **move} for move in plan["moves"]]
                + [{"kind": "leader", **move} for move in leader_moves])

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> DistributedSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
