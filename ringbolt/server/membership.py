"""The node's side of sharding: the cluster map, which groups it hosts, online moves.

Theory of operation
-------------------
The **meta group** (`META_GROUP_ID`) is an ordinary Raft group whose state
machine is the node's key-value store, holding ONE key: `MAP_KEY`, the
msgpack-encoded `ClusterMap` (nodes with labels and states, shards with ring
ranges and replicas, a version). Every change to the map is a
compare-and-set of the whole encoded map (`update`): read it linearizably,
apply one `clustermap` command, CAS old -> new, retry on a conflict. So the
map has one linear history, checked by `clustermap.apply`, and any node can
make a change (a non-leader forwards the CAS like any write).

Every node is a member of the meta group (up to 5 voters, the rest learners:
`reconcile.meta_target`), so every node holds the map in its own store.
Every `refresh_every_ticks` the node looks at the meta group's applied index;
when it moved, it decodes the map and, when the version is newer, installs it:
the ring (key -> shard), peer addresses, and the set of hosted groups.

Hosting: a node hosts the meta group and every shard the map places on it.
A group it should host but does not gets an EMPTY replica (no configuration,
no log): it never campaigns and waits for the group's leader to add it as a
learner and send it a snapshot. A group it hosts but the map no longer places
on it is *retired* (no longer ticked or served; its WAL and store state stay
on disk, so re-hosting later resumes from them) only once the group's own
configuration has dropped this node -- never before, so a move never removes
a voter that the group still counts on.

Moves: the LEADER of each group calls `reconcile.next_step` every
`reconcile_every_ticks` and proposes the one membership change (or
leadership transfer) it returns: add learner -> promote once caught up ->
transfer away if needed -> remove. At most `learners_catching_up_max`
groups per node have a learner catching up at once (bounded snapshot
traffic). A leader change mid-move is harmless: the next leader resumes.

Bootstrap: on its very first start (empty WAL), a node that is not joining
computes the initial map from its config (`bootstrap_map`, deterministic, so
every initial node computes the same one) and creates its groups with the
initial voters; the meta group's first leader stores that map. A node with
`join = true` starts with only an empty meta replica and learns everything
once `CLUSTER ADDNODE` (via `ringbolt cluster add-node`) put it in the map.

Requests for a shard this node does not host are answered with
``MOVED <shard> <host:port> <map version>`` naming a node that hosts it
(clients refresh their layout and retry; nothing was executed).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ringbolt.consensus.types import ConfChange, NotLeader, ProposalDropped, Role
from ringbolt.kv import commands as kv
from ringbolt.server.config import NodeConfig
from ringbolt.server.groups import MAP_KEY, META_GROUP_ID, SHARD_ID_KEY
from ringbolt.server.service import Moved, ServiceError, Unavailable
from ringbolt.server.split import Split, encode_split
from ringbolt.shard import clustermap, mapcodec, reconcile
from ringbolt.shard.clustermap import ClusterMap, ClusterMapError, NodeRecord, NodeState

if TYPE_CHECKING:
    from ringbolt.server.peers import PeerBook
    from ringbolt.server.registry import ReplicaRegistry
    from ringbolt.server.replica import Replica

log = logging.getLogger("ringbolt.membership")

refresh_every_ticks = 5
reconcile_every_ticks = 10
learners_catching_up_max = 4
map_update_attempts_max = 20
seed_ask_every_refreshes = 10
"""A joining node without a map asks a seed every 10 refreshes (0.5 s)."""
leader_balance_every_ticks = 500
"""How often (plus up to as much jitter) a node looks at its share of leaderships."""


def abandoned_after_ticks(election_timeout_ticks: int) -> int:
    """A group placed elsewhere and leaderless this long here is retired."""
    return 4 * election_timeout_ticks


def node_record(node_id: int, peer: object, client: object, dc: str, zone: str) -> NodeRecord:
    return NodeRecord(node_id=node_id, peer_address=str(peer),
                      client_address=str(client) if client else "unknown:0", dc=dc, zone=zone)


def bootstrap_map(config: NodeConfig) -> ClusterMap:
    """The initial map every initial node derives from its (shared) config."""
    nodes = [node_record(config.node_id, config.peer_address, config.client_address,
                         config.dc, config.zone)]
    nodes += [node_record(p.node_id, p.address, p.client_address, p.dc, p.zone)
              for p in config.peers.values()]
    return clustermap.bootstrap(nodes, config.shards,
                                replicas=min(config.replicas, len(nodes)))


class GroupRequests(Protocol):
    """The request paths membership reads and writes the meta group and the
    hosted shards through (requests.py `Requests`)."""

    def store_get(self, group_id: int, key: bytes) -> bytes | None: ...

    def write_group(self, group_id: int, command: bytes) -> asyncio.Future[Any]: ...

    def read_group(self, group_id: int, key: bytes) -> asyncio.Future[Any]: ...

    def ask_for_map(self, seed: int) -> asyncio.Future[Any]: ...

    def shard_keys(self, shard_id: int) -> int: ...

    def last_split(self, shard_id: int) -> tuple[int, int, int] | None: ...


class Membership:
    """The map cache, hosting and reconciliation of one node, over the
    node's replica registry, peer book and request paths."""

    def __init__(self, config: NodeConfig, registry: ReplicaRegistry, peers: PeerBook,
                 groups: GroupRequests, rng: random.Random) -> None:
        self.config = config
        self.registry = registry
        self.peers = peers
        self.groups = groups
        self.rng = rng
        self.node_id = config.node_id
        self.map: ClusterMap | None = None
        self._seen_applied = -1
        self._leaderless_ticks: dict[int, int] = {}
        self._ticks = 0
        self._asked = 0
        self._next_balance = leader_balance_every_ticks
        self._split_task: asyncio.Future[Any] | None = None
        self._split_after = 0
        self._heal_task: asyncio.Future[Any] | None = None
        self._bootstrap_written = False
        self._updates = asyncio.Lock()
        self.stats = {"maps_installed": 0, "conf_changes": 0, "transfers": 0,
                      "replicas_created": 0, "replicas_retired": 0, "map_updates": 0,
                      "map_conflicts": 0}

    # -- the cached map ----------------------------------------------------------------

    def stored_map(self) -> ClusterMap | None:
        data = self.groups.store_get(META_GROUP_ID, MAP_KEY)
        if data is None:
            return None
        try:
            return mapcodec.decode(data)
        except ClusterMapError as error:  # written by us: a bug or a corrupt store
            raise AssertionError(f"undecodable cluster map in the meta group: {error}") from None

    def refresh(self) -> None:
        """Install the map the meta group holds, when it changed."""
        if self.map is None and self.config.join:
            self._ask_seeds()
        meta = self.registry.hosted.get(META_GROUP_ID)
        if meta is None or meta.applied == self._seen_applied:
            return
        self._seen_applied = meta.applied
        stored = self.stored_map()
        if stored is None:
            return
        self._bootstrap_written = True
        current = self.map
        if current is None or stored.version > current.version or (
                stored.version == current.version and stored != current):
            self.install(stored)

    def _ask_seeds(self) -> None:
        """A joining node knows only its seeds, but the meta leader that will
        replicate the map to it may be another node: ask a seed for the map
        it holds, only to learn every node's address (the map itself comes
        through the meta group once `CLUSTER ADDNODE` made this node a learner)."""
        self._asked += 1
        seeds = sorted(self.config.peers)
        if not seeds or self._asked % seed_ask_every_refreshes:
            return
        seed = seeds[(self._asked // seed_ask_every_refreshes) % len(seeds)]
        self.groups.ask_for_map(seed).add_done_callback(self._learn_addresses)

    def _learn_addresses(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        data = future.result()
        if not isinstance(data, bytes):
            return
        try:
            seen = mapcodec.decode(data)
        except ClusterMapError:
            log.warning("node %d: a seed sent an undecodable cluster map", self.node_id)
            return
        for record in seen.nodes:
            if record.node_id != self.node_id and record.state is not NodeState.REMOVED:
                self.peers.set_address(record.node_id, record.peer_address,
                                           record.client_address)

    def install(self, cluster_map: ClusterMap) -> None:
        self.map = cluster_map
        self.stats["maps_installed"] += 1
        self.registry.ring = cluster_map.ring()
        self.learn_peers(cluster_map)
        self.sync_hosting()
        log.info("node %d: cluster map version %d (%d nodes, %d shards, hosting %d groups)",
                 self.node_id, cluster_map.version, len(cluster_map.nodes),
                 len(cluster_map.shards), len(self.registry.hosted))

    def learn_peers(self, cluster_map: ClusterMap) -> None:
        """Tell the transport every node's address (the config lists only the
        nodes this one was created with) and forget removed ones. Also at
        start-up, from the stored map: a node restarted after others joined
        would otherwise refuse their connections."""
        for record in cluster_map.nodes:
            if record.node_id == self.node_id:
                continue
            if record.state is NodeState.REMOVED:
                self.peers.forget(record.node_id)
            else:
                self.peers.set_address(record.node_id, record.peer_address,
                                           record.client_address)

    def wanted_groups(self) -> set[int]:
        cluster_map = self.map
        if cluster_map is None:
            return {META_GROUP_ID}
        wanted = reconcile.placed_on(cluster_map, self.node_id)
        states = {n.node_id: n.state for n in cluster_map.nodes}
        if states.get(self.node_id) is not NodeState.REMOVED:
            wanted.add(META_GROUP_ID)
        return wanted

    def sync_hosting(self) -> None:
        wanted = self.wanted_groups()
        for group_id in sorted(wanted - set(self.registry.hosted)):
            self.registry.host(group_id)
            self.stats["replicas_created"] += 1
        known = {s.shard_id for s in self.map.shards} if self.map is not None else set()
        for group_id in sorted(set(self.registry.hosted) - wanted):
            if group_id != META_GROUP_ID and group_id not in known:
                continue  # born of a split the map does not show yet
            status = self.registry.hosted[group_id].core.status()
            members = status.conf.voters | status.conf.learners
            removed = bool(members) and self.node_id not in members
            # A leader stops sending to a node as soon as it appends the entry
            # removing it, so the removed node usually never learns it: when
            # the map has moved the group away and no leader has spoken to us
            # for a while, stop ticking it. Reversible: a leader that still
            # counts on us brings it back (`Node.on_raft`).
            abandoned = self._leaderless_ticks.get(group_id, 0) >= abandoned_after_ticks(
                self.config.election_timeout_ticks)
            learner = self.node_id in status.conf.learners  # never needed for a quorum
            if removed or abandoned or learner:
                self._leaderless_ticks.pop(group_id, None)
                self.registry.retire(group_id)
                self.stats["replicas_retired"] += 1

    def _count_leaderless(self) -> None:
        for group_id, replica in self.registry.hosted.items():
            if replica.leader == 0:
                self._leaderless_ticks[group_id] = (self._leaderless_ticks.get(group_id, 0)
                                                    + reconcile_every_ticks)
            else:
                self._leaderless_ticks.pop(group_id, None)

    # -- leaders drive their groups toward the map ----------------------------------------

    def drive_groups(self) -> None:
        cluster_map = self.map
        if cluster_map is None:
            return
        self._ticks += reconcile_every_ticks
        self._count_leaderless()
        self.sync_hosting()  # retire groups whose removal was applied since
        self._maybe_split()
        if self._ticks % (10 * reconcile_every_ticks) == 0:
            self.heal_splits()
        if self.config.balance_leaders and self._ticks >= self._next_balance:
            self._next_balance = self._ticks + leader_balance_every_ticks + int(
                self.rng.random() * leader_balance_every_ticks)
            self.shed_leadership()
        catching_up = 0
        for group_id, replica in list(self.registry.hosted.items()):
            if replica.role is not Role.LEADER:
                continue
            if group_id == META_GROUP_ID:
                self._write_bootstrap_map(replica)
                conf = replica.core.status().conf
                target = reconcile.meta_target(cluster_map, conf.voters)
            else:
                try:
                    target = reconcile.shard_target(cluster_map, group_id)
                except ClusterMapError:
                    continue  # the map no longer knows it (merged away)
            catching_up += self._step(replica, target, catching_up)

    def shed_leadership(self) -> None:
        """Leaders spread themselves: a node hands ONE of its leaderships to
        the caught-up replica that leads the fewest shards (as far as this
        node can see), when that one leads at least two fewer than this node;
        at most once per period. Each move narrows the spread, so this settles
        (within one of each other) instead of oscillating."""
        cluster_map = self.map
        if cluster_map is None:
            return
        shards = {g: r for g, r in self.registry.hosted.items() if g != META_GROUP_ID}
        led = sorted(g for g, r in shards.items() if r.role is Role.LEADER)
        if len(led) < 2:
            return
        counts: dict[int, int] = {}
        for replica in shards.values():
            if replica.leader:
                counts[replica.leader] = counts.get(replica.leader, 0) + 1
        best: tuple[int, int, int] | None = None  # (their count, node, shard)
        for group_id in led:
            core = shards[group_id].core
            status = core.status()
            progress = getattr(core, "progress", None)
            for node in sorted(status.conf.voters - {self.node_id}):
                found = progress(node) if callable(progress) else None
                match = getattr(found, "match", 0)
                if not match or match + reconcile.catch_up_slack < status.commit:
                    continue
                candidate = (counts.get(node, 0), node, group_id)
                if best is None or candidate < best:
                    best = candidate
        if best is None or best[0] >= len(led) - 1:
            return
        try:
            shards[best[2]].core.transfer_leadership(best[1])
        except (NotLeader, ProposalDropped):
            return
        self.stats["transfers"] += 1
        log.info("node %d: leads %d of %d shards here, node %d leads %d: shard %d -> node %d",
                 self.node_id, len(led), len(shards), best[1], best[0], best[2], best[1])
        self.registry.wake()

    def _maybe_split(self) -> None:
        """Split (one at a time) a shard this node leads that outgrew `split_keys_max`."""
        limit = self.config.split_keys_max
        if not limit or self.map is None or self._ticks < self._split_after or (
                self._split_task is not None and not self._split_task.done()):
            return
        if self._split_task is not None and (self._split_task.cancelled()
                                             or self._split_task.exception() is not None):
            self._split_task = None
            self._split_after = self._ticks + leader_balance_every_ticks  # back off
            return
        for group_id, replica in sorted(self.registry.hosted.items()):
            if group_id == META_GROUP_ID or replica.role is not Role.LEADER:
                continue
            keys = self.groups.shard_keys(group_id)
            if keys > limit:
                log.info("node %d: shard %d holds %d keys (> split_keys_max %d): splitting",
                         self.node_id, group_id, keys, limit)
                self._split_task = asyncio.ensure_future(self.split(group_id, None))
                self._split_task.add_done_callback(_log_failure)
                return

    def _step(self, replica: Replica, target: reconcile.Target, catching_up: int) -> int:
        core = replica.core
        status = core.status()
        progress = getattr(core, "progress", None)

        def caught_up(node: int) -> bool:
            found = progress(node) if callable(progress) else None
            match = getattr(found, "match", 0)
            return bool(match) and match + reconcile.catch_up_slack >= status.commit

        step = reconcile.next_step(status.conf, target, leader=self.node_id, caught_up=caught_up)
        learning = len([n for n in status.conf.learners if not caught_up(n)])
        if step is None:
            return learning
        try:
            if isinstance(step, reconcile.Transfer):
                core.transfer_leadership(step.target)
                self.stats["transfers"] += 1
            else:
                if (step.kind.name == "ADD_LEARNER"
                        and catching_up + learning >= learners_catching_up_max):
                    return learning
                core.propose_conf_change(step)
                self.stats["conf_changes"] += 1
                log.info("node %d: group %d: %s %d", self.node_id, replica.group_id,
                         step.kind.name.lower(), step.node_id)
                learning += step.kind.name == "ADD_LEARNER"
        except (NotLeader, ProposalDropped):
            return learning  # a change is already pending, or we just lost the lead
        self.registry.wake()
        return learning

    def _write_bootstrap_map(self, meta: Replica) -> None:
        if self._bootstrap_written or self.config.join or self.map is None:
            return
        if meta.applied == 0 or self.stored_map() is not None:
            self._bootstrap_written = self.stored_map() is not None
            return
        self._bootstrap_written = True  # one attempt per leadership; retried via refresh
        future = self.groups.write_group(META_GROUP_ID, kv.cas(MAP_KEY, None,
                                                              mapcodec.encode(self.map)))
        future.add_done_callback(self._bootstrap_done)

    def _bootstrap_done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None or future.result() is not True:
            self._bootstrap_written = False  # try again on the next reconcile

    # -- changing the map ---------------------------------------------------------------

    async def read_map(self) -> ClusterMap:
        """The current map, linearizably (a ReadIndex on the meta group)."""
        value = await self.groups.read_group(META_GROUP_ID, MAP_KEY)
        if value is None:
            raise Unavailable("the cluster map is not stored yet (the cluster is starting); "
                              "not executed, retry")
        return mapcodec.decode(value[0])

    async def update(self, change: Callable[[ClusterMap], ClusterMap]) -> ClusterMap:
        """Apply `change` to the current map with compare-and-set; retried on conflicts."""
        async with self._updates:
            for _ in range(map_update_attempts_max):
                current = await self.read_map()
                try:
                    changed = change(current)
                except ClusterMapError as error:
                    raise ServiceError(str(error)) from None
                if changed.version == current.version:
                    return current
                swapped = await self.groups.write_group(META_GROUP_ID, kv.cas(
                    MAP_KEY, mapcodec.encode(current), mapcodec.encode(changed)))
                if swapped is True:
                    self.stats["map_updates"] += 1
                    return changed
                self.stats["map_conflicts"] += 1
        raise Unavailable("the cluster map changed under every attempt; not executed, retry")

    # -- CLUSTER admin subcommands ---------------------------------------------------------

    async def admin(self, arguments: list[bytes]) -> bytes:
        """CLUSTER MAP | ADDNODE id peer client [dc [zone]] | DRAINNODE id |
        REMOVENODE id | REBALANCE [DRYRUN]: a JSON answer."""
        sub = arguments[0].upper()
        words = [a.decode("utf-8", "replace") for a in arguments[1:]]
        if sub == b"MAP" and not words:
            return _json(mapcodec_dict(await self.read_map()))
        if sub == b"ADDNODE" and 3 <= len(words) <= 5:
            record = node_record(_int(words[0]), words[1], words[2],
                                 words[3] if len(words) > 3 else "",
                                 words[4] if len(words) > 4 else "")
            updated = await self.update(lambda m: _add_node(m, record))
            return _json({"version": updated.version, "node": record.node_id})
        if sub in (b"DRAINNODE", b"REMOVENODE") and len(words) == 1:
            node_id = _int(words[0])
            wanted = NodeState.DRAINING if sub == b"DRAINNODE" else NodeState.REMOVED
            updated = await self.update(lambda m: _set_state(m, node_id, wanted))
            return _json({"version": updated.version, "node": node_id})
        if sub == b"SPLIT" and 1 <= len(words) <= 2:
            return _json(await self.split(_int(words[0]),
                                          _int(words[1]) if len(words) > 1 else None))
        if sub == b"REBALANCE" and len(words) <= 1:
            dry_run = bool(words) and words[0].upper() == "DRYRUN"
            if words and not dry_run:
                raise ServiceError("syntax error: CLUSTER REBALANCE [DRYRUN]")
            return _json(await self.rebalance(dry_run=dry_run))
        raise ServiceError(f"unknown CLUSTER subcommand or wrong arguments: "
                           f"{arguments[0].decode('utf-8', 'replace')}")

    async def rebalance(self, *, dry_run: bool) -> dict[str, object]:
        moves: list[dict[str, object]] = []

        def plan(current: ClusterMap) -> ClusterMap:
            moves.clear()
            changed = current
            for move in clustermap.plan_rebalance(current):
                moves.append({"shard": move.shard_id, "from": move.from_node, "to": move.to_node})
                if not dry_run:
                    changed = clustermap.apply(changed, clustermap.ApplyMove(
                        shard_id=move.shard_id, from_node=move.from_node, to_node=move.to_node))
            return changed

        if dry_run:
            current = await self.read_map()
            plan(current)
            return {"version": current.version, "moves": moves, "dry_run": True}
        updated = await self.update(plan)
        return {"version": updated.version, "moves": moves, "dry_run": False}

    async def split(self, shard_id: int, at: int | None) -> dict[str, object]:
        """Split `shard_id` (at the middle of its range unless `at` is given):
        the split entry in the shard's own log first (data moves on every
        replica at the same index), then the map. Retrying after a failure is
        safe: a repeated split of the same range is refused by the replicas."""
        current = await self.read_map()
        try:
            shard = current.shard(shard_id)
        except ClusterMapError as error:
            raise ServiceError(str(error)) from None
        cut = (shard.start + shard.end) // 2 if at is None else at
        if not shard.start < cut < shard.end:
            raise ServiceError(f"split point {cut} is not inside shard {shard_id}'s range "
                               f"[{shard.start}, {shard.end})")
        child = await self._new_shard_id(current)
        done = await self.groups.write_group(shard_id, encode_split(Split(
            child=child, lo=shard.start, at=cut, hi=shard.end,
            voters=tuple(sorted(shard.replicas)))))
        if done is False or done is True or not isinstance(done, int):
            raise ServiceError(f"shard {shard_id} refused the split (its range changed "
                               "meanwhile); look at CLUSTER MAP and retry")
        child = done  # a repeat of a split that happened names the child it made
        updated = await self.update(
            functools.partial(_split_in_map, shard_id=shard_id, child=child, at=cut))
        return {"version": updated.version, "shard": shard_id, "child": child, "at": cut}

    async def _new_shard_id(self, current: ClusterMap) -> int:
        """A shard id never handed out before, cluster-wide: a high-water mark
        in the meta group, advanced by compare-and-set (two splits running at
        once on different shards must not make two groups with one id)."""
        for _ in range(map_update_attempts_max):
            found = await self.groups.read_group(META_GROUP_ID, SHARD_ID_KEY)
            previous = None if found is None else found[0]
            high = max([int(previous) if previous else -1,
                        *(s.shard_id for s in current.shards)])
            child = high + 1
            if child >= META_GROUP_ID:
                raise ServiceError("no shard id left for a split")
            swapped = await self.groups.write_group(META_GROUP_ID, kv.cas(
                SHARD_ID_KEY, previous, str(child).encode()))
            if swapped is True:
                return child
        raise Unavailable("could not reserve a shard id (contention); not executed, retry")

    def heal_splits(self) -> None:
        """A split whose map update never happened (its requester died): the
        leader of the parent finishes it, from the split the replicas record."""
        cluster_map = self.map
        if cluster_map is None or (self._heal_task is not None and not self._heal_task.done()):
            return
        known = {s.shard_id for s in cluster_map.shards}
        for group_id, replica in sorted(self.registry.hosted.items()):
            if group_id == META_GROUP_ID or replica.role is not Role.LEADER:
                continue
            last = self.groups.last_split(group_id)
            if last is None or last[2] in known or group_id not in known:
                continue
            _hi, at, child = last
            log.info("node %d: shard %d was split into %d but the map does not show it: "
                     "updating the map", self.node_id, group_id, child)
            self._heal_task = asyncio.ensure_future(self.update(
                functools.partial(_split_in_map, shard_id=group_id, child=child, at=at)))
            self._heal_task.add_done_callback(_log_failure)
            return

    def moved(self, group_id: int) -> ServiceError:
        """The redirect for a request on a shard this node does not host."""
        cluster_map = self.map
        if cluster_map is None:
            return Unavailable(f"node {self.node_id} has not joined a cluster yet; retry")
        address = "unknown:0"
        try:
            shard = cluster_map.shard(group_id)
            holder = shard.leader_hint or (shard.replicas[0] if shard.replicas else None)
            if holder is not None:
                address = cluster_map.node(holder).client_address
        except ClusterMapError:
            pass
        return Moved(f"{group_id} {address} {cluster_map.version}")

    def describe(self) -> dict[str, object]:
        cluster_map = self.map
        if cluster_map is None:
            return {"map_version": 0, "ring": [], "placement": {}}
        return {"map_version": cluster_map.version,
                "ring": [[s.start, s.shard_id] for s in cluster_map.shards],
                "placement": {str(s.shard_id): list(s.replicas) for s in cluster_map.shards},
                "map_nodes": _node_rows(cluster_map)}


def _node_rows(cluster_map: ClusterMap) -> list[dict[str, object]]:
    return [{"id": n.node_id, "address": n.client_address, "peer_address": n.peer_address,
             "dc": n.dc, "zone": n.zone, "state": n.state.name.lower()}
            for n in cluster_map.nodes]


def mapcodec_dict(cluster_map: ClusterMap) -> dict[str, object]:
    return {"version": cluster_map.version, "replicas": cluster_map.replicas,
            "nodes": _node_rows(cluster_map),
            "shards": [{"id": s.shard_id, "start": s.start, "end": s.end,
                        "replicas": list(s.replicas), "version": s.version}
                       for s in cluster_map.shards]}


def _add_node(cluster_map: ClusterMap, record: NodeRecord) -> ClusterMap:
    """Idempotent, so that a retried ADDNODE (first answer lost) is harmless."""
    for known in cluster_map.nodes:
        if known.node_id == record.node_id and known.peer_address == record.peer_address \
                and known.state is NodeState.ACTIVE:
            return cluster_map
    return clustermap.apply(cluster_map, clustermap.AddNode(node=record))


def _set_state(cluster_map: ClusterMap, node_id: int, state: NodeState) -> ClusterMap:
    """DRAINING or REMOVED; idempotent like `_add_node` (REMOVED implies drained)."""
    current = cluster_map.node(node_id).state
    if current is state or (current is NodeState.REMOVED and state is NodeState.DRAINING):
        return cluster_map
    if state is NodeState.REMOVED and current is NodeState.ACTIVE:
        cluster_map = clustermap.apply(cluster_map, clustermap.DrainNode(node_id=node_id))
    command: clustermap.MapCommand = (clustermap.DrainNode(node_id=node_id)
                                      if state is NodeState.DRAINING
                                      else clustermap.RemoveNode(node_id=node_id))
    return clustermap.apply(cluster_map, command)


def _split_in_map(cluster_map: ClusterMap, *, shard_id: int, child: int, at: int) -> ClusterMap:
    if any(s.shard_id == child for s in cluster_map.shards):
        return cluster_map  # already there (a retried update)
    return clustermap.apply(cluster_map, clustermap.SplitShard(
        shard_id=shard_id, new_shard_id=child, at_hash=at))


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a split or its map update did not complete (tried again later): %s",
                    task.exception())


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ServiceError(f"expected an integer, got {text!r}") from None


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


__all__ = ["META_GROUP_ID", "MAP_KEY", "Membership", "bootstrap_map", "ConfChange"]
