"""Cluster administration over RESP: add and remove nodes, rebalance, balance leaders.

Theory of operation
-------------------
The map changes themselves happen on the nodes (`CLUSTER ADDNODE`,
`DRAINNODE`, `REMOVENODE`, `REBALANCE`: a compare-and-set on the meta
group); the replica moves they imply are carried out by each shard's leader.
`ClusterAdmin` only sends those commands and then *watches*: it asks every
node for `CLUSTER DESCRIBE` until each shard's voters equal the replicas the
map places it on (`wait_converged`), and spreads shard leaderships evenly
with `CLUSTER TRANSFER` (`balance_leaders`, planned by
`shard.leaders.plan_leader_moves`). Every wait is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ringbolt.client.policy import Action, classify
from ringbolt.shard.leaders import plan_leader_moves


class AdminError(Exception):
    """A cluster change could not be made or did not finish in time."""


@dataclass(frozen=True, slots=True)
class ShardState:
    shard: int
    replicas: tuple[int, ...]
    """Where the map places it."""
    voters: tuple[int, ...]
    """Where its leader says it lives ((), when no leader answered)."""
    learners: tuple[int, ...]
    leader: int | None


class ClusterAdmin:
    def __init__(self, addresses: Sequence[str], *, password: str | None = None,
                 timeout_s: float = 5.0) -> None:
        if not addresses:
            raise AdminError("no node address given")
        self.addresses = list(addresses)
        self.password = password
        self.timeout_s = timeout_s
        self._rotation = 0

    def _connect(self, address: str) -> redis.Redis:
        host, _, port = address.rpartition(":")
        # no hidden retries: an unreachable node must cost one refused dial
        return redis.Redis(host=host, port=int(port), password=self.password,
                           socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                           retry=Retry(NoBackoff(), 0))

    def call(self, *arguments: object, address: str | None = None) -> Any:
        """Run a command on `address`, or on the first node that answers
        (starting after the node that last answered with a retryable error)."""
        errors = []
        if address:
            candidates = [address]
        else:
            start = self._rotation % len(self.addresses)
            candidates = self.addresses[start:] + self.addresses[:start]
        for candidate in candidates:
            connection = self._connect(candidate)
            try:
                return connection.execute_command(*arguments)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                errors.append(f"{candidate}: {error}")
            finally:
                connection.close()
        raise AdminError("no node answered: " + "; ".join(errors))

    def command_json(self, *arguments: object, address: str | None = None) -> Any:
        deadline = time.monotonic() + 30.0
        while True:
            try:
                reply = self.call(*arguments, address=address)
                return json.loads(reply)
            except redis.ResponseError as error:
                # the map commands are idempotent on the node, so even an
                # "outcome unknown" answer can be retried (on another node)
                action = classify(error, sent=True, write=False)
                if action is not Action.RETRY or time.monotonic() > deadline:
                    raise AdminError(str(error)) from None
                self._rotation += 1
            time.sleep(0.2)

    # -- reading ---------------------------------------------------------------------

    def cluster_map(self) -> dict[str, Any]:
        result: dict[str, Any] = self.command_json("CLUSTER", "MAP")
        return result

    def describe(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.call("CLUSTER", "DESCRIBE", address=address))
        return result

    def describe_all(self) -> dict[int, dict[str, Any]]:
        """Every active node's description, by node id (unreachable nodes left out)."""
        cluster_map = self.cluster_map()
        descriptions = {}
        for node in cluster_map["nodes"]:
            if node["state"] == "removed":
                continue
            with contextlib.suppress(RedisError, AdminError, OSError, ValueError):
                descriptions[int(node["id"])] = self.describe(node["address"])
        return descriptions

    def shard_states(self) -> list[ShardState]:
        cluster_map = self.cluster_map()
        descriptions = self.describe_all()
        states = []
        for shard in cluster_map["shards"]:
            voters: tuple[int, ...] = ()
            learners: tuple[int, ...] = ()
            leader = None
            for description in descriptions.values():
                for group in description.get("groups", []):
                    if group["id"] == shard["id"] and group["role"] == "leader":
                        leader = description["node_id"]
                        voters = tuple(group.get("voters", group["members"]))
                        learners = tuple(sorted(set(group["members"]) - set(voters)))
            states.append(ShardState(shard["id"], tuple(shard["replicas"]), voters, learners,
                                     leader))
        return states

    # -- changing -----------------------------------------------------------------------

    def add_node(self, address: str, *, dc: str | None = None,
                 zone: str | None = None) -> dict[str, Any]:
        """Register the (running, `join = true`) node serving RESP at `address`."""
        described = self.describe(address)
        me = next(n for n in described["nodes"] if n["id"] == described["node_id"])
        result: dict[str, Any] = self.command_json(
            "CLUSTER", "ADDNODE", me["id"], me["peer_address"], me["address"],
            dc if dc is not None else me.get("dc", ""),
            zone if zone is not None else me.get("zone", ""))
        deadline = time.monotonic() + 30.0
        while self.describe(address).get("map_version", 0) < result["version"]:
            if time.monotonic() > deadline:
                raise AdminError(f"node {me['id']} was added but has not learned the "
                                 "cluster map within 30 s (can it reach the other nodes?)")
            time.sleep(0.1)
        return result

    def rebalance(self, *, dry_run: bool = False) -> dict[str, Any]:
        arguments = ["CLUSTER", "REBALANCE"] + (["DRYRUN"] if dry_run else [])
        result: dict[str, Any] = self.command_json(*arguments)
        return result

    def split(self, shard: int, at: int | None = None) -> dict[str, Any]:
        arguments: list[object] = ["CLUSTER", "SPLIT", shard] + ([] if at is None else [at])
        result: dict[str, Any] = self.command_json(*arguments)
        return result

    def drain_node(self, node_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.command_json("CLUSTER", "DRAINNODE", node_id)
        return result

    def remove_node(self, node_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.command_json("CLUSTER", "REMOVENODE", node_id)
        return result

    def wait_converged(self, timeout_s: float = 120.0) -> list[ShardState]:
        """Until every shard's voters are exactly its map replicas, with no learner."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.shard_states()
            pending = [s for s in states
                       if set(s.voters) != set(s.replicas) or s.learners or s.leader is None]
            if not pending:
                return states
            if time.monotonic() > deadline:
                shown = ", ".join(f"{s.shard}: voters {list(s.voters)} want {list(s.replicas)}"
                                  for s in pending[:5])
                raise AdminError(f"{len(pending)} shard(s) still moving after {timeout_s:g} s "
                                 f"({shown})")
            time.sleep(0.25)

    def balance_leaders(self, timeout_s: float = 30.0) -> list[dict[str, int]]:
        """Transfer leaderships until every node leads floor or ceil(G/N) shards."""
        deadline = time.monotonic() + timeout_s
        made: list[dict[str, int]] = []
        addresses = {int(n["id"]): n["address"] for n in self.cluster_map()["nodes"]
                     if n["state"] == "active"}
        while time.monotonic() < deadline:
            states = self.shard_states()
            leaders = {s.shard: s.leader for s in states if s.leader is not None}
            members = {s.shard: list(s.voters) for s in states}
            moves = plan_leader_moves(leaders, members, sorted(addresses))
            if not moves:
                break
            for move in moves:
                with contextlib.suppress(RedisError, AdminError):
                    self.call("CLUSTER", "TRANSFER", move.shard, move.target,
                              address=addresses.get(move.source))
            time.sleep(1.0)
            after = {s.shard: s.leader for s in self.shard_states()}
            made += [{"shard": m.shard, "from": m.source, "to": m.target}
                     for m in moves if after.get(m.shard) == m.target]
        return made
