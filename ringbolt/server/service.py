"""The boundary between the client protocol and the replicated store.

Theory of operation
-------------------
A client connection (RESP) turns requests into calls on a `KeyValueService`;
a node implements it by routing keys to shards (Raft groups) and driving
their replicas. Reads and writes are *submitted* and return futures, so that
one connection can have a whole pipeline of requests in flight without
creating a task per request: the connection answers them in order as they
complete.

Errors a client may see are typed here (`ServiceError` subclasses) and carry
the exact Redis-style error line the connection sends (without the leading
'-').
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ringbolt.kv.machine import Result


class ServiceError(Exception):
    """A typed, expected failure; `str(error)` is the RESP error line."""

    prefix = "ERR"

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.prefix} {message}")


class CrossShard(ServiceError):
    prefix = "CROSSSHARD"


class Busy(ServiceError):
    """A bounded queue is full; the client should back off and retry."""

    prefix = "BUSY"


class Unavailable(ServiceError):
    """No leader could be reached in time (election in progress, partition)."""

    prefix = "TRYAGAIN"


class Moved(ServiceError):
    """The client's shard map is stale (sharding)."""

    prefix = "MOVED"


DEFAULT_ADMIN_NETWORKS = ("127.0.0.0/8", "::1/128")
"""Where admin commands are allowed from without a password (loopback)."""


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    key_bytes_max: int
    value_bytes_max: int
    requirepass: str | None = None
    admin_networks: tuple[str, ...] = DEFAULT_ADMIN_NETWORKS
    """CIDR networks whose connections may run admin commands (CLUSTER ADDNODE,
    REMOVENODE, SPLIT, TRANSFER, CONFIG, ...) without AUTH."""

    def admin_allowed_from(self, address: str) -> bool:
        """Whether a client at `address` ("host:port", "[v6]:port" or a bare
        host) connects from one of `admin_networks`."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            host = address.rpartition(":")[0].strip("[]")
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                return False
        return any(ip in ipaddress.ip_network(network, strict=False)
                   for network in self.admin_networks)


class KeyValueService(Protocol):
    limits: ServiceLimits

    def now_ms(self) -> int:
        """Wall clock in ms as this node sees it (for EX/PX and TTL)."""
        ...

    def group_of(self, keys: Sequence[bytes]) -> int:
        """The shard owning all of `keys`; raises `CrossShard` when they span shards."""
        ...

    def submit_write(self, keys: Sequence[bytes], command: bytes) -> asyncio.Future[Result]:
        """Replicate `command` (ringbolt.kv.commands) in the shard owning
        `keys`; the future resolves with the state machine's `Result` once the
        command is committed and applied. Raises `CrossShard` now when the keys
        span shards, `Busy` when full; the future fails with `ServiceError`
        (e.g. `Unavailable`) when the outcome is unknown or refused."""
        ...

    def submit_read(self, key: bytes, *, stale: bool = False) -> asyncio.Future[tuple[bytes, int] | None]:
        """Linearizable read (ReadIndex) of `key` -> (value, expire_at_ms) or
        None; `stale=True` reads local state without a quorum round."""
        ...

    async def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """Redis SCAN semantics over every shard: returns (next_cursor, keys);
        next_cursor 0 ends the iteration."""
        ...

    async def dbsize(self) -> int: ...

    def info(self) -> dict[str, dict[str, object]]:
        """INFO sections -> fields (server, clients, replication, ...)."""
        ...

    def cluster_description(self) -> dict[str, object]:
        """Nodes, groups, leaders, terms, commit/applied indexes, in the format
        of docs/protocol.md (CLUSTER)."""
        ...

    def transfer_leadership(self, group_id: int, target: int) -> None:
        """Start moving the lead of `group_id` to node `target` (this node must
        lead it); raises `ServiceError` otherwise. Returns before it is done."""
        ...
