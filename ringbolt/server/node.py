"""One node process: many Raft groups (Multi-Raft), one WAL, one store, one transport.

Theory of operation
-------------------
A `Node` hosts one `Replica` per group it holds: the meta group and the
shards the cluster map places on it (`membership.py`; key -> shard by the
map's ring; splits in `split.py`). All groups share ONE write-ahead log whose
fdatasync is shared by every group (group commit), ONE LMDB state-machine
store, ONE peer `Transport` and ONE ticker. A request for a shard this node
does not host is forwarded to a node that does (`_forward_elsewhere`).

The node implements `KeyValueService` for the RESP front end:

* `submit_write` proposes on the local replica when it leads the key's group
  and otherwise forwards the command to the leader node (a `ForwardRequest`
  over the peer transport, see `forward.py`; at most `forwards_inflight_max`
  in flight). The future resolves with the state machine's result once the
  entry is applied; after `forward_timeout_s` without an answer it fails with
  TRYAGAIN saying the outcome is unknown.
* `submit_read` is linearizable (ReadIndex, also on followers: the core asks
  the leader) and reads the local store once it has applied up to the read
  index; `stale=True` reads the local store at once.

Driving is done in *rounds*. Submissions, peer messages and ticks only touch
the cores and set `_work`; the round is prepared on the next loop iteration,
so everything that arrived in one iteration is handled together: every
replica's Ready is appended to the WAL and ONE sync is started for all of
them; commits that earlier syncs already made durable are applied meanwhile.
When the sync is done, all messages are sent (one write per peer), every
group applies the rest of its committed entries in one store transaction and
advances. The next round may be prepared while one waits for its sync
(`rounds_inflight_max` = 2); rounds finish strictly in order.

Time: a tick every `tick_ms` (default 10 ms). The election timeout is
`election_timeout_ticks` (default 20, randomized by Raft in [T, 2T): 200-400
ms) and the leader heartbeats every `heartbeat_ticks` (default 2). Ticks
missed while the loop was busy are skipped, not replayed in a burst, so a
node's own stall never fires its election timer several times at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import logging
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import msgpack

from ringbolt import limits as project
from ringbolt.consensus.codec import MessageDecodeError, decode_message, encode_message
from ringbolt.consensus.messages import AppendRequest, Heartbeat, SnapshotChunk, VoteRequest
from ringbolt.consensus.raft import Raft, RaftConfig
from ringbolt.consensus.types import (
    ConfState,
    HardState,
    NotLeader,
    PersistentState,
    ProposalDropped,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from ringbolt.kv.machine import Result
from ringbolt.server import limits, membership
from ringbolt.server.config import Address, NodeConfig
from ringbolt.server.forward import Forwarder
from ringbolt.server.membership import META_GROUP_ID, Membership, bootstrap_map
from ringbolt.server.replica import NotCommitted, ReadValue, Replica, fail_quietly, storage_id
from ringbolt.server.service import (
    Busy,
    CrossShard,
    ServiceError,
    ServiceLimits,
    Unavailable,
)
from ringbolt.server.split import (
    CHILD_INIT_INDEX,
    CHILD_INIT_TERM,
    RANGE_KEY,
    SPLIT_PREFIX,
    FencedStore,
    Split,
    decode_range_record,
    decode_split,
)
from ringbolt.server.transport import ForwardRequest, ForwardResponse, MalformedFrame, Transport
from ringbolt.shard import reconcile
from ringbolt.shard.clustermap import ClusterMap, ClusterMapError
from ringbolt.shard.ring import Ring
from ringbolt.storage.engine import StateMachineStore
from ringbolt.storage.errors import StorageError, StorageFailed, StorageFull
from ringbolt.storage.wal import WriteAheadLog

log = logging.getLogger("ringbolt.node")

_EXPIRE_EVERY_TICKS = 10


class StartupError(Exception):
    """The node cannot start; `str(error)` is the one line shown to the operator."""


class Node:
    def __init__(self, config: NodeConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.node_id = config.node_id
        self.rng = rng if rng is not None else random.Random()
        self.limits = ServiceLimits(key_bytes_max=config.limits.key_bytes_max,
                                    value_bytes_max=config.limits.value_bytes_max,
                                    requirepass=config.requirepass)
        self.ring: Ring | None = None
        """key -> shard, from the cluster map (None until this node has a map)."""
        self.replicas: dict[int, Replica] = {}
        """Hosted groups: the meta group and the shards the map places here."""
        self._retired: dict[int, Replica] = {}
        """Groups moved away: kept (not ticked) so re-hosting resumes their state."""
        self.membership = Membership(self)
        self._client_addresses: dict[int, str] = {
            p.node_id: str(p.client_address) for p in config.peers.values() if p.client_address}
        self.transport = Transport(config.node_id,
                                   {p.node_id: p.address for p in config.peers.values()},
                                   self, random.Random(self.rng.random()))
        self.forwarder = Forwarder(self.transport, time.monotonic)
        self._scan_cursors: dict[int, tuple[int, bytes]] = {}
        self._scan_ids = itertools.count(1)
        self._work = asyncio.Event()
        self._leaderless: dict[int, collections.deque[
            tuple[float, bytes, asyncio.Future[Result], bool]]] = {}
        """Writes waiting for their group to take them (`_park`), by group."""
        self._leaderless_count = 0
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._finishing: collections.deque[asyncio.Future[None]] = collections.deque()
        self._lock_file: Any = None
        self._wal: Any = None
        self._background_sync: asyncio.Task[None] | None = None
        self.failed = asyncio.Event()
        """Set when the node cannot go on (the WAL failed); the process must exit."""
        self._store: Any = None
        self._fenced: Any = None
        """The store as replicas see it: splits applied, keys fenced (split.py)."""
        self._client_server: Any = None
        self.clients: Any = None
        self._admin: Any = None
        self.started_at = time.time()
        self.stats = {"rounds": 0, "fsyncs": 0, "fsync_seconds": 0.0, "readies": 0,
                      "round_entries_max": 0, "messages_sent": 0, "messages_dropped": 0,
                      "writes": 0, "reads": 0, "stale_reads": 0, "ticks": 0,
                      "unknown_group_messages": 0, "forwarded_elsewhere": 0,
                      "writes_reproposed": 0, "forwards_retried": 0, "reads_retried": 0}
        self.batch_sizes: list[int] = []

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, bind every port, then start talking. Raises `StartupError`."""
        if self.config.unsafe:
            log.warning("node %d: UNSAFE test-only Raft mutations are ON: %s -- this node "
                        "breaks consistency on purpose", self.node_id,
                        ", ".join(sorted(self.config.unsafe)))
        self._open_storage()
        try:
            await self._bind()
        except BaseException:
            await self._close_storage()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._drive()), loop.create_task(self._tick())]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        log.info("node %d up: clients %s, peers %s, admin %s, %d shard(s), data %s",
                 self.node_id, self.config.client_address, self.config.peer_address,
                 self.config.admin_address, len(self.group_ids), self.config.data_dir)

    def _open_storage(self) -> None:
        data_dir = self.config.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(data_dir / "LOCK", "a+")  # noqa: SIM115 - held for life
        except OSError as error:
            raise StartupError(f"data_dir {data_dir}: {error.strerror or error}") from None
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StartupError(f"data_dir {data_dir}: in use by another process") from None
        try:
            (data_dir / "wal").mkdir(exist_ok=True)
            (data_dir / "state").mkdir(exist_ok=True)
            self._wal = WriteAheadLog.open(str(data_dir / "wal"))
            # the value limit a replica applies must be the same on every node:
            # per-node `limits.value_bytes_max` is enforced at the client door
            self._store = store = StateMachineStore.open(str(data_dir / "state"),
                                                 value_bytes_max=project.value_bytes_ceiling)
            recovered = self._wal.recovered()
            self._fenced = FencedStore(store, self._start_split_child, self._child_exists)
        except (StorageError, OSError) as error:
            if self._wal is not None:
                self._wal.close()
            raise StartupError(f"data_dir {data_dir}: {error}") from None
        initial = None if self.config.join else bootstrap_map(self.config)
        self._initial_map = initial
        for sid, state in recovered.items():
            self.replicas[sid - 1] = self._make_replica(sid - 1, state, initial)
        stored = self.membership.stored_map()
        self.membership.map = stored if stored is not None else initial
        if not recovered and initial is not None:  # first start: the initial groups
            for group_id in [META_GROUP_ID, *reconcile.placed_on(initial, self.node_id)]:
                self.replicas[group_id] = self._make_replica(group_id, None, initial)
        if self.membership.map is not None:
            self.ring = self.membership.map.ring()
        self.membership.sync_hosting()

    def _make_replica(self, group_id: int, state: PersistentState | None,
                      initial: ClusterMap | None) -> Replica:
        """A replica of `group_id`; a group this node did not start with (a move,
        a join) gets an empty configuration: it waits to be added by the leader."""
        voters: frozenset[int] = frozenset()
        learners: frozenset[int] = frozenset()
        if initial is not None and group_id == META_GROUP_ID:
            target = reconcile.meta_target(initial, frozenset())
            voters, learners = target.voters, target.learners
        elif initial is not None and group_id in reconcile.placed_on(initial, self.node_id):
            voters = frozenset(initial.shard(group_id).replicas)
        core = Raft(RaftConfig(node_id=self.node_id, voters=voters, learners=learners,
                               election_timeout_ticks=self.config.election_timeout_ticks,
                               heartbeat_ticks=self.config.heartbeat_ticks,
                               unsafe=self.config.unsafe),
                    random.Random(self.rng.random()),
                    self._restored(state, group_id))
        return Replica(group_id, core, self._wal, self._fenced, clock=time.monotonic)

    # -- splits (split.py) -------------------------------------------------------------

    def _child_exists(self, child_storage_id: int) -> bool:
        child = child_storage_id - 1
        return (child in self.replicas or child in self._retired
                or self._store.applied_index(child_storage_id) > 0)

    def _start_split_child(self, parent_storage_id: int, split: Split, index: int) -> None:
        """The parent applied a split here: start the child group from the
        snapshot this node just built (identical on every replica)."""
        child_id = split.child
        conf = ConfState(voters=frozenset(split.voters))
        meta = SnapshotMeta(index=CHILD_INIT_INDEX, term=CHILD_INIT_TERM, conf=conf)
        hard = HardState(term=CHILD_INIT_TERM, commit=CHILD_INIT_INDEX)
        self._wal.append(storage_id(child_id), hard_state=hard, snapshot_meta=meta)
        state = PersistentState(hard_state=hard, entries=[], snapshot=Snapshot(
            meta=meta, data=self._store.snapshot_bytes(storage_id(child_id))))
        core = Raft(RaftConfig(node_id=self.node_id, voters=conf.voters,
                               election_timeout_ticks=self.config.election_timeout_ticks,
                               heartbeat_ticks=self.config.heartbeat_ticks,
                               unsafe=self.config.unsafe),
                    random.Random(self.rng.random()), state)
        self.replicas[child_id] = Replica(child_id, core, self._wal, self._fenced,
                                          clock=time.monotonic)
        log.info("node %d: shard %d split at index %d: shard %d starts on nodes %s",
                 self.node_id, parent_storage_id - 1, index, child_id, list(split.voters))
        self._work.set()

    def _refuse_bad_split(self, replica: Replica, command: bytes) -> ServiceError | None:
        """A split proposed on the leader must name exactly the group's voters
        (no move in progress), so the child starts on the right nodes."""
        split = decode_split(command)
        if split is None:
            return None if not command.startswith(SPLIT_PREFIX) else ServiceError(
                "malformed split")
        conf = replica.core.status().conf
        if conf.learners or frozenset(split.voters) != conf.voters:
            return Unavailable(f"shard {replica.group_id} is changing membership; split "
                               "not executed, retry")
        return None

    # -- hosting (driven by `Membership`) -------------------------------------------

    @property
    def group_ids(self) -> list[int]:
        """The hosted shards (not the meta group), in id order."""
        return sorted(g for g in self.replicas if g != META_GROUP_ID)

    def host_group(self, group_id: int) -> None:
        replica = self._retired.pop(group_id, None)
        if replica is None:
            replica = self._make_replica(group_id, None, None)
        self.replicas[group_id] = replica
        log.info("node %d: hosting group %d", self.node_id, group_id)
        self._work.set()

    def retire_group(self, group_id: int) -> None:
        replica = self.replicas.pop(group_id)
        replica.fail_all(Unavailable(f"shard {group_id} moved away from node {self.node_id} "
                                     "while the request waited; the outcome is unknown"))
        waiting = self._leaderless.pop(group_id, ())
        self._leaderless_count -= len(waiting)
        for _deadline, _command, future, _local in waiting:
            fail_quietly(future, Unavailable(f"shard {group_id} moved away; not executed, retry"))
        self._retired[group_id] = replica
        log.info("node %d: group %d moved away (retired)", self.node_id, group_id)

    def set_peer_address(self, node_id: int, peer_address: str, client_address: str) -> None:
        self._client_addresses[node_id] = client_address
        host, _, port = peer_address.rpartition(":")
        if host and port.isdigit():
            set_peer = getattr(self.transport, "set_peer", None)
            if set_peer is not None:
                set_peer(node_id, Address(host, int(port)))

    def store_get(self, group_id: int, key: bytes) -> bytes | None:
        found = self._store.get(storage_id(group_id), key)
        return None if found is None else found[0]

    def write_group(self, group_id: int, command: bytes) -> asyncio.Future[Result]:
        return self._write(group_id, command)

    def read_group(self, group_id: int, key: bytes) -> asyncio.Future[ReadValue]:
        replica = self.replicas.get(group_id)
        if replica is None:
            return _failed(Unavailable(f"node {self.node_id} does not host group {group_id}"))
        future = replica.read(key)
        self._work.set()
        return future

    def ask_for_map(self, seed: int) -> asyncio.Future[Any]:
        """The (possibly stale) map a seed node holds, as bytes or None."""
        try:
            return self.forwarder.forward(seed, META_GROUP_ID, MAP_MARKER)
        except ServiceError as error:
            return _failed(error)

    def wake(self) -> None:
        self._work.set()

    def _restored(self, state: PersistentState | None, group_id: int) -> PersistentState | None:
        """The WAL keeps snapshot metadata only; the image comes from the store
        when the store is exactly at the snapshot's index. When it is ahead, the
        core gets an empty placeholder that the replica replaces with a fresh
        image as soon as the core has re-delivered the entries in between (a
        follower asking for a snapshot in that short window fails to install
        it and asks again)."""
        if state is None or state.snapshot is None:
            return state
        meta = state.snapshot.meta
        store_id = storage_id(group_id)
        data = (self._store.snapshot_bytes(store_id)
                if self._store.applied_index(store_id) == meta.index else b"")
        return PersistentState(hard_state=state.hard_state, entries=state.entries,
                               snapshot=Snapshot(meta=meta, data=data))

    async def _bind(self) -> None:
        from ringbolt.server.admin import start_admin
        from ringbolt.server.commands import ClientRegistry
        from ringbolt.server.connection import serve_clients

        config = self.config
        step = "client_address"
        try:
            self.clients = ClientRegistry(config.limits.clients_max)
            self._client_server = await serve_clients(self, config.client_address.host,
                                                      config.client_address.port,
                                                      registry=self.clients)
            step = "peer_address"
            await self.transport.start(config.peer_address)
            if config.admin_address is not None:
                step = "admin_address"
                self._admin = await start_admin(self, config.admin_address)
        except OSError as error:
            address = getattr(config, step)
            await self._close_servers()
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise StartupError(f"{step} {address}: cannot listen: {reason}") from None

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, finish the round, sync the WAL, close."""
        if self._stopping:
            return
        self._stopping = True
        if self._client_server is not None:
            self._client_server.close()
        self._work.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._finishing:  # let the rounds in flight finish (bounded by their sync)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*self._finishing), 5.0)
        error = Unavailable("the node is shutting down; the outcome of the write is unknown")
        for replica in self.replicas.values():
            replica.fail_all(error)
        self.forwarder.fail_all(error)
        await self._close_servers()
        await self._close_storage()
        log.info("node %d stopped", self.node_id)

    def _task_ended(self, task: asyncio.Future[None]) -> None:
        """The driver and the ticker run for the node's life: if one ends with
        an error (a bug, an unexpected storage failure), the node must stop."""
        if task.cancelled() or self._stopping:
            return
        error = task.exception()
        if error is None:
            return
        log.critical("node %d: %r failed, stopping", self.node_id, task, exc_info=error)
        self.failed.set()

    async def _close_servers(self) -> None:
        if self._client_server is not None:
            self._client_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client_server.wait_closed(), 2.0)
        await self.transport.close()
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None

    async def _close_storage(self) -> None:
        if self._wal is not None:
            with contextlib.suppress(StorageError):
                await asyncio.to_thread(self._wal.sync)
            self._wal.close()
            self._wal = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- the driver ---------------------------------------------------------------

    async def _drive(self) -> None:
        """Prepare a round as soon as there is work, even while earlier rounds
        wait for their fsync (at most `rounds_inflight_max` in flight); rounds
        finish -- send, apply, advance -- strictly in order."""
        finishing = self._finishing
        while True:
            await self._work.wait()
            while finishing and finishing[0].done():
                finishing.popleft().result()  # a failed round stops the node
            if len(finishing) >= limits.rounds_inflight_max:
                await asyncio.wait([finishing[0]])
                continue  # `_work` is still set
            self._work.clear()
            prepared = self._prepare()
            if prepared is None:
                continue
            previous = finishing[-1] if finishing else None
            task = asyncio.ensure_future(self._finish(*prepared, previous))
            task.add_done_callback(self._task_ended)
            finishing.append(task)

    def _prepare(self) -> tuple[list[tuple[Replica, Ready]], asyncio.Future[None] | None] | None:
        """Take every replica's Ready, append them all to the WAL, start ONE
        sync for all of them, and apply what was already durable meanwhile."""
        readies = []
        for replica in self.replicas.values():
            replica.issue_reads()
            ready = replica.take_ready()
            if ready is not None:
                readies.append((replica, ready))
        if not readies:
            return None
        self.stats["rounds"] += 1
        self.stats["readies"] += len(readies)
        must_sync = False
        appended = 0
        for replica, ready in readies:
            replica.persist(ready)
            must_sync = must_sync or ready.must_sync()
            appended += len(ready.entries)
        if appended:
            self.batch_sizes.append(appended)
            del self.batch_sizes[:-1000]
            self.stats["round_entries_max"] = max(self.stats["round_entries_max"], appended)
        syncing: asyncio.Future[None] | None = None
        if must_sync:
            if self.config.fsync:
                syncing = asyncio.ensure_future(self._sync())
            elif self._background_sync is None or self._background_sync.done():
                self._background_sync = asyncio.ensure_future(self._sync())
        for replica, ready in readies:
            replica.apply(ready, durable_only=True)  # while the WAL syncs
        return readies, syncing

    async def _finish(self, readies: list[tuple[Replica, Ready]],
                      syncing: asyncio.Future[None] | None,
                      previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            await previous
        if syncing is not None:
            await syncing
        for replica, ready in readies:
            for message in ready.messages:
                self._send(replica.group_id, message)
        for replica, ready in readies:
            replica.apply(ready)
            replica.advance(ready)
        if any(r.core.has_ready() for r in self.replicas.values()):
            self._work.set()

    async def _sync(self) -> None:
        """ONE fdatasync for every group's appends of the round (in a worker thread).
        A full disk is retried (the batch stays buffered); any other failure
        poisons the WAL and stops the node."""
        started = time.monotonic()
        while True:
            try:
                await asyncio.to_thread(self._wal.sync)
                break
            except StorageFull as error:
                log.error("WAL sync: %s; retrying", error)
                await asyncio.sleep(0.5)
            except StorageFailed as error:
                log.critical("WAL failed, stopping the node: %s", error)
                self.failed.set()
                await asyncio.Event().wait()  # never send or apply unsynced state
        self.stats["fsyncs"] += 1
        self.stats["fsync_seconds"] += time.monotonic() - started

    def _send(self, group_id: int, message: Any) -> None:
        recipient = message.recipient
        assert recipient != self.node_id, "a core addressed a message to itself"
        if self.transport.send_raft(recipient, group_id, encode_message(message)):
            self.stats["messages_sent"] += 1
        else:
            self.stats["messages_dropped"] += 1

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self.config.tick_ms / 1000
        next_at = loop.time()
        for count in itertools.count(1):
            next_at += interval_s
            delay_s = next_at - loop.time()
            if delay_s < 0:
                next_at = loop.time()  # skip missed ticks instead of bursting them
                delay_s = 0
            await asyncio.sleep(delay_s)
            for replica in self.replicas.values():
                replica.core.tick()
            self.stats["ticks"] += 1
            if count % membership.refresh_every_ticks == 0:
                self.membership.refresh()
            if count % membership.reconcile_every_ticks == 0:
                self.membership.drive_groups()
            if self._leaderless:
                self._retry_parked(time.monotonic())
            if count % _EXPIRE_EVERY_TICKS == 0:
                now = time.monotonic()
                for replica in self.replicas.values():
                    replica.expire(now)
                self.forwarder.expire(now)
            self._work.set()

    # -- KeyValueService -----------------------------------------------------------

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def group_of(self, keys: Sequence[bytes]) -> int:
        assert keys, "a write names at least one key"
        ring = self.ring
        if ring is None:
            raise Unavailable(f"node {self.node_id} has not joined a cluster yet; retry")
        if RANGE_KEY in keys:
            raise ServiceError("this key is reserved")
        group_id = ring.shard_for_key(keys[0])
        for key in keys[1:]:
            if ring.shard_for_key(key) != group_id:
                raise CrossShard("keys of one command must live in one shard")
        return group_id

    def submit_write(self, keys: Sequence[bytes], command: bytes) -> asyncio.Future[Result]:
        group_id = self.group_of(keys)
        self.stats["writes"] += 1
        return self._write(group_id, command)

    def _write(self, group_id: int, command: bytes, deadline: float | None = None, *,
               local_only: bool = False) -> asyncio.Future[Result]:
        """Propose `command` here if this node leads the group, else forward it.

        A write the leader cannot take right now (election, leadership
        transfer, full window) waits, bounded in count and time, and is tried
        again (`_park`); a proposal that a new leader overwrote ("not
        committed": it can never be applied) is proposed again. Clients see
        neither, only latency, until `leaderless_wait_s` has passed. With
        `local_only` (a write forwarded to us) it is never forwarded further."""
        if self._stopping:
            return _failed(Unavailable("the node is shutting down; not executed, retry"))
        replica = self.replicas.get(group_id)
        if replica is None:
            if local_only:
                return _failed(Unavailable(f"node {self.node_id} does not host shard "
                                           f"{group_id}; not executed, retry"))
            return self._forward_elsewhere(group_id, command)
        leader = replica.leader
        if replica.role is Role.LEADER:
            refused = self._refuse_bad_split(replica, command)
            if refused is not None:
                return _failed(refused)
            try:
                future = replica.propose(command)
            except NotLeader as error:
                leader = error.leader_hint
            except Busy:  # a transfer in progress, or a full window: wait for it
                return self._park(group_id, command, deadline, local_only)
            else:
                self._work.set()
                return self._repropose_if_lost(future, group_id, command, deadline, local_only)
        if local_only:
            return _failed(Unavailable(f"node {self.node_id} does not lead shard {group_id}; "
                                       "the command was not executed, retry"))
        if leader in (0, self.node_id):
            return self._park(group_id, command, deadline, local_only)
        return self._forward_to_leader(leader, group_id, command, deadline)

    def _forward_to_leader(self, leader: int, group_id: int, command: bytes,
                           deadline: float | None) -> asyncio.Future[Result]:
        """Forward to the leader; when it answers that it did not execute the
        write (it just lost the lead), wait for the next tick and try again
        (`_park`), until the deadline."""
        try:
            forwarded = self.forwarder.forward(leader, group_id, command)
        except Busy as error:
            return _failed(error)
        outer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        due = time.monotonic() + limits.leaderless_wait_s if deadline is None else deadline

        def done(finished: asyncio.Future[Result]) -> None:
            if outer.done():
                return
            if finished.cancelled():
                outer.cancel()
                return
            error = finished.exception()
            if error is None:
                outer.set_result(finished.result())
            elif _not_executed(error) and time.monotonic() < due and not self._stopping:
                self.stats["forwards_retried"] += 1
                _chain(self._park(group_id, command, due, False), outer)
            else:
                fail_quietly(outer, error)

        forwarded.add_done_callback(done)
        return outer

    def _repropose_if_lost(self, proposal: asyncio.Future[Result], group_id: int,
                           command: bytes, deadline: float | None,
                           local_only: bool) -> asyncio.Future[Result]:
        outer: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        due = time.monotonic() + limits.leaderless_wait_s if deadline is None else deadline

        def done(finished: asyncio.Future[Result]) -> None:
            if outer.done():
                return
            if finished.cancelled():
                outer.cancel()
                return
            error = finished.exception()
            if error is None:
                outer.set_result(finished.result())
            elif isinstance(error, NotCommitted) and time.monotonic() < due \
                    and not self._stopping:
                self.stats["writes_reproposed"] += 1
                _chain(self._write(group_id, command, due, local_only=local_only), outer)
            else:
                fail_quietly(outer, error)

        proposal.add_done_callback(done)
        return outer

    def _park(self, group_id: int, command: bytes, deadline: float | None,
              local_only: bool) -> asyncio.Future[Result]:
        """The group cannot take the write now (no leader known, a transfer in
        progress, a full window): hold it, bounded in count and time, and try
        again every tick (see `_retry_parked`)."""
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            return _failed(Unavailable(f"shard {group_id} could not take the write in time "
                                       "(election or leadership transfer); the command was "
                                       "not executed, retry"))
        if self._leaderless_count >= limits.leaderless_writes_max:
            return _failed(Busy(f"shard {group_id} has no leader and too many writes wait "
                                "for one; not executed, retry"))
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        due = now + limits.leaderless_wait_s if deadline is None else deadline
        self._leaderless.setdefault(group_id, collections.deque()).append(
            (due, command, future, local_only))
        self._leaderless_count += 1
        return future

    def _retry_parked(self, now: float) -> None:
        for group_id in list(self._leaderless):
            replica = self.replicas[group_id]
            waiting = self._leaderless.pop(group_id)
            self._leaderless_count -= len(waiting)
            known = replica.role is Role.LEADER or replica.leader not in (0, self.node_id)
            for deadline, command, future, local_only in waiting:
                if future.done():
                    continue  # the client went away
                if known or self._stopping or deadline <= now:
                    _chain(self._write(group_id, command, deadline, local_only=local_only),
                           future)
                else:
                    self._leaderless.setdefault(group_id, collections.deque()).append(
                        (deadline, command, future, local_only))
                    self._leaderless_count += 1

    def _forward_elsewhere(self, group_id: int, command: bytes) -> asyncio.Future[Any]:
        """A request for a shard this node does not host goes to a node that
        does (which reads locally, or passes a write on to its leader)."""
        holder = self._holder(group_id)
        if holder is None:
            return _failed(self.membership.moved(group_id))
        self.stats["forwarded_elsewhere"] += 1
        try:
            return self.forwarder.forward(holder, group_id, command)
        except ServiceError as error:
            return _failed(error)

    def _holder(self, group_id: int) -> int | None:
        """A connected node the map places `group_id` on, else any such node."""
        cluster_map = self.membership.map
        if cluster_map is None:
            return None
        try:
            holders = [n for n in cluster_map.shard(group_id).replicas if n != self.node_id]
        except ClusterMapError:
            return None
        connected = [n for n in holders if self.transport.connected(n)]
        if connected:
            return connected[0]
        return holders[0] if holders else None

    def submit_read(self, key: bytes, *, stale: bool = False) -> asyncio.Future[ReadValue]:
        try:
            group_id = self.group_of([key])
        except ServiceError as error:
            return _failed(error)
        replica = self.replicas.get(group_id)
        if replica is None:
            remote = self._forward_elsewhere(group_id, READ_MARKER + key)
            if remote.done():
                return remote
            read: asyncio.Future[ReadValue] = asyncio.get_running_loop().create_future()
            remote.add_done_callback(lambda done: _copy_read(done, read))
            return read
        if stale:
            self.stats["stale_reads"] += 1
            future: asyncio.Future[ReadValue] = asyncio.get_running_loop().create_future()
            future.set_result(replica.read_stale(key))
            return future
        if self._stopping:
            return _failed(Unavailable("the node is shutting down; retry"))
        self.stats["reads"] += 1
        future = self._fenced_read(replica, key)
        self._work.set()
        return future

    def _fenced_read(self, replica: Replica, key: bytes,
                     deadline: float | None = None) -> asyncio.Future[ReadValue]:
        """A linearizable read that fails (retry) if, by the time it is served,
        a split has moved the key out of the group. A read the group could not
        serve (no leader known, a transfer, a lost ReadIndex round) is issued
        again on the next tick until `leaderless_wait_s`: reads have no
        effect, so trying again is always safe."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[ReadValue] = loop.create_future()
        due = time.monotonic() + limits.leaderless_wait_s if deadline is None else deadline
        group_id = replica.group_id

        def again() -> None:
            current = self.replicas.get(group_id)
            if result.done():
                return
            if current is None or self._stopping:
                fail_quietly(result, Unavailable(f"shard {group_id} is not served here any "
                                                 "more; retry"))
                return
            _chain(self._fenced_read(current, key, due), result)
            self._work.set()

        def check(done: asyncio.Future[ReadValue]) -> None:
            if result.done():
                return
            if done.cancelled():
                result.cancel()
                return
            error = done.exception()
            if error is not None:
                if isinstance(error, ServiceError) and time.monotonic() < due \
                        and not self._stopping:
                    self.stats["reads_retried"] += 1
                    loop.call_later(self.config.tick_ms / 1000, again)
                else:
                    fail_quietly(result, error)
            elif not self._fenced.in_range(replica.storage_id, key):
                fail_quietly(result, Unavailable(
                    f"the key moved out of shard {group_id} (split); retry"))
            else:
                result.set_result(done.result())

        try:
            read = replica.read(key)
        except Busy as error:
            read = _failed(error)
        read.add_done_callback(check)
        return result

    async def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """SCAN over every shard of the map, in shard id order (a split's new
        shard has the highest id, so keys it takes over mid-scan are still
        seen). Each shard is read from a replica's local store -- this node's,
        or a holder's -- so, as in Redis, a scan is not a snapshot. Clients get
        small integers naming (shard, store cursor) in a bounded table."""
        if cursor == 0:
            shard_id, inner = -1, b""
        else:
            found = self._scan_cursors.pop(cursor, None)
            if found is None:
                raise ServiceError("invalid cursor")
            shard_id, inner = found
        count = max(1, min(count, 10_000))
        cluster_map = self.membership.map
        shard_ids = sorted(s.shard_id for s in cluster_map.shards) if cluster_map else []
        pending = [g for g in shard_ids if g >= shard_id] if inner else [
            g for g in shard_ids if g > shard_id]
        if not pending:
            return 0, []
        current = pending[0]
        next_inner, keys = await self._scan_shard(current, inner, count)
        keys = [k for k in keys if k != RANGE_KEY]
        if not next_inner and current == shard_ids[-1]:
            return 0, keys
        cursor_id = next(self._scan_ids)
        self._scan_cursors[cursor_id] = (current, next_inner)
        while len(self._scan_cursors) > limits.scan_cursors_max:
            self._scan_cursors.pop(next(iter(self._scan_cursors)))
        return cursor_id, keys

    async def _scan_shard(self, shard_id: int, inner: bytes,
                          count: int) -> tuple[bytes, list[bytes]]:
        if shard_id in self.replicas:
            result: tuple[bytes, list[bytes]] = self._store.scan(storage_id(shard_id), inner, count)
            return result
        answer = await self._forward_elsewhere(shard_id, SCAN_MARKER + msgpack.packb([inner, count]))
        if not (isinstance(answer, list) and len(answer) == 2 and isinstance(answer[0], bytes)):
            raise Unavailable(f"unexpected scan answer for shard {shard_id}; retry")
        return answer[0], [k for k in answer[1] if isinstance(k, bytes)]

    async def dbsize(self) -> int:
        """Keys of every shard of the map (each counted at one replica, local if possible)."""
        cluster_map = self.membership.map
        if cluster_map is None:
            return 0
        counts = [self._count_shard(s.shard_id) for s in cluster_map.shards]
        return sum(await asyncio.gather(*counts))

    async def _count_shard(self, shard_id: int) -> int:
        if shard_id in self.replicas:
            return self._local_count(shard_id)
        answer = await self._forward_elsewhere(shard_id, COUNT_MARKER)
        if not isinstance(answer, int):
            raise Unavailable(f"unexpected count answer for shard {shard_id}; retry")
        return answer

    def last_split(self, shard_id: int) -> tuple[int, int, int] | None:
        """(old end, cut, child) of the latest split the shard's replicas applied."""
        found = self._store.get(storage_id(shard_id), RANGE_KEY)
        if found is None:
            return None
        try:
            return decode_range_record(found[0])[1]
        except (ValueError, TypeError, IndexError, msgpack.UnpackException):
            return None

    def shard_keys(self, shard_id: int) -> int:
        """Keys of a hosted shard in this node's store."""
        return self._local_count(shard_id)

    def _local_count(self, shard_id: int) -> int:
        sid = storage_id(shard_id)
        count: int = self._store.count(sid) - (self._fenced.range_of(sid) is not None)
        return count

    def info(self) -> dict[str, dict[str, object]]:
        leaders = sum(1 for r in self.replicas.values() if r.role is Role.LEADER)
        return {
            "server": {"ringbolt_version": "0.1.0", "node_id": self.node_id,
                       "process_id": os.getpid(),
                       "uptime_in_seconds": int(time.time() - self.started_at),
                       "tcp_port": self.config.client_address.port,
                       "dc": self.config.dc, "zone": self.config.zone},
            "replication": {"role": "master" if leaders else "slave", "shards": len(self.group_ids),
                            "shards_led": leaders, "peers": len(self._client_addresses)},
            "stats": {k: v for k, v in self.stats.items() if isinstance(v, int)},
        }

    def cluster_description(self) -> dict[str, object]:
        """This node's view in the format of docs/protocol.md (CLUSTER)."""
        nodes: list[dict[str, object]] = [{
            "id": self.node_id, "address": str(self.config.client_address),
            "peer_address": str(self.config.peer_address), "dc": self.config.dc,
            "zone": self.config.zone, "connected": True}]
        cluster_map = self.membership.map
        known = ({n.node_id: n for n in cluster_map.nodes} if cluster_map is not None else {})
        for node_id in sorted(set(self._client_addresses) | set(known)):
            record = known.get(node_id)
            if node_id == self.node_id or (record is not None and record.state.name == "REMOVED"):
                continue
            nodes.append({"id": node_id,
                          "address": record.client_address if record else
                          self._client_addresses.get(node_id, ""),
                          "peer_address": record.peer_address if record else "",
                          "dc": record.dc if record else "", "zone": record.zone if record else "",
                          "connected": self.transport.connected(node_id)})
        groups: list[dict[str, object]] = []
        for group_id, replica in sorted(self.replicas.items()):
            if group_id == META_GROUP_ID:
                continue
            status = replica.status()
            groups.append({
                "id": group_id, "leader": status.leader or None, "term": status.term,
                "role": status.role.name.lower(),
                "members": sorted(status.conf.voters | status.conf.learners),
                "voters": sorted(status.conf.voters),
                "commit_index": status.commit, "applied_index": replica.applied})
        led = all(group["leader"] is not None for group in groups)
        meta = self.replicas.get(META_GROUP_ID)
        meta_status = meta.status() if meta is not None else None
        return {"cluster_state": "ok" if led and cluster_map is not None else "fail",
                "node_id": self.node_id,
                "shards": len(cluster_map.shards) if cluster_map is not None else 0,
                "nodes": nodes, "groups": groups,
                "meta": None if meta_status is None else {
                    "leader": meta_status.leader or None, "role": meta_status.role.name.lower(),
                    "voters": sorted(meta_status.conf.voters),
                    "learners": sorted(meta_status.conf.learners)},
                **self.membership.describe()}

    async def cluster_admin(self, arguments: list[bytes]) -> bytes:
        """CLUSTER MAP / ADDNODE / DRAINNODE / REMOVENODE / REBALANCE (membership.py)."""
        return await self.membership.admin(arguments)

    def transfer_leadership(self, group_id: int, target: int) -> None:
        replica = self.replicas.get(group_id)
        if replica is None:
            raise ServiceError(f"no shard {group_id}")
        if target not in replica.status().conf.voters:
            raise ServiceError(f"no node {target}")
        try:
            replica.core.transfer_leadership(target)
        except NotLeader as error:
            raise Unavailable(f"node {self.node_id} does not lead shard {group_id} "
                              f"(leader hint: {error.leader_hint or 'unknown'})") from None
        except ProposalDropped as error:
            raise Busy(f"shard {group_id} cannot transfer now: {error}") from None
        self._work.set()

    # -- peer messages ----------------------------------------------------------------

    def on_raft(self, sender: int, group_id: int, payload: bytes) -> None:
        try:
            message = decode_message(payload)
        except MessageDecodeError as error:
            raise MalformedFrame(f"bad Raft message for group {group_id}: {error}") from None
        if message.sender != sender or message.recipient != self.node_id:
            raise MalformedFrame(f"Raft message from {message.sender} to {message.recipient} "
                                 f"on the link from {sender}")
        replica = self.replicas.get(group_id)
        if replica is None and group_id in self._retired and isinstance(
                message, (AppendRequest, Heartbeat, SnapshotChunk, VoteRequest)):
            self.host_group(group_id)  # its leader (or a candidate) still counts on it
            replica = self.replicas[group_id]
        if replica is None:
            self.stats["unknown_group_messages"] += 1  # not hosted (yet, or any more)
            return
        replica.core.step(message)
        self._work.set()

    def on_forward_request(self, sender: int, request: ForwardRequest) -> None:
        replica = self.replicas.get(request.group_id)
        if replica is not None and request.command.startswith(b"\x00") and self._answer_local(
                sender, request, replica):
            return
        if replica is not None and request.command.startswith(READ_MARKER) and not self._stopping:
            read = self._fenced_read(replica, request.command[len(READ_MARKER):])
            self.forwarder.answer_when_done(sender, request.request_id, _as_result(read))
            self._work.set()
            return
        if (replica is not None and replica.role is not Role.LEADER and not self._stopping
                and replica.leader not in (0, self.node_id)
                and sender not in _members(replica)):
            # from a node that does not host the shard: pass it on to the leader
            # (once: the leader is a member, so it never passes it further)
            try:
                future = self.forwarder.forward(replica.leader, request.group_id, request.command)
            except ServiceError as error:
                self.forwarder.answer_error(sender, request.request_id, error)
                return
            self.forwarder.answer_when_done(sender, request.request_id, future)
            return
        if replica is None or replica.role is not Role.LEADER or self._stopping:
            self.forwarder.answer_error(sender, request.request_id, Unavailable(
                f"node {self.node_id} does not lead shard {request.group_id}; "
                "the command was not executed, retry"))
            return
        self.forwarder.answer_when_done(sender, request.request_id,
                                        self._write(request.group_id, request.command,
                                                    local_only=True))

    def _answer_local(self, sender: int, request: ForwardRequest, replica: Replica) -> bool:
        """Answer a forwarded COUNT or SCAN of one shard from the local store."""
        command = request.command
        if command == MAP_MARKER:
            answer: Result = self.store_get(META_GROUP_ID, membership.MAP_KEY)
        elif command == COUNT_MARKER:
            answer = self._local_count(replica.group_id)
        elif command.startswith(SCAN_MARKER):
            try:
                inner, count = msgpack.unpackb(command[len(SCAN_MARKER):])
                next_inner, keys = self._store.scan(replica.storage_id, bytes(inner),
                                                    max(1, min(int(count), 10_000)))
            except (ValueError, TypeError, msgpack.UnpackException):
                raise MalformedFrame("malformed forwarded scan") from None
            answer = [next_inner, keys]
        else:
            return False
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        done.set_result(answer)
        self.forwarder.answer_when_done(sender, request.request_id, done)
        return True

    def on_forward_response(self, sender: int, response: ForwardResponse) -> None:
        self.forwarder.on_response(sender, response)

    def on_peer_lost(self, peer_id: int) -> None:
        self.forwarder.peer_lost(peer_id)

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        groups = [self._group_status(g, r) for g, r in sorted(self.replicas.items())
                  if g != META_GROUP_ID]
        meta = self.replicas.get(META_GROUP_ID)
        peers = {str(node_id): {"client_address": address,
                                "connected": self.transport.connected(node_id)}
                 for node_id, address in sorted(self._client_addresses.items())}
        cluster_map = self.membership.map
        return {"node_id": self.node_id, "pid": os.getpid(),
                "dc": self.config.dc, "zone": self.config.zone,
                "client_address": str(self.config.client_address),
                "peer_address": str(self.config.peer_address),
                "shards": len(self.group_ids), "groups": groups, "peers": peers,
                "map_version": cluster_map.version if cluster_map is not None else 0,
                "meta": None if meta is None else self._group_status(META_GROUP_ID, meta),
                "membership": dict(self.membership.stats),
                "map": None if cluster_map is None else {
                    "version": cluster_map.version,
                    "shards": [{"id": s.shard_id, "start": s.start, "end": s.end,
                                "replicas": list(s.replicas)} for s in cluster_map.shards],
                    "nodes": {str(n.node_id): n.state.name.lower() for n in cluster_map.nodes}}}

    def _group_status(self, group_id: int, replica: Replica) -> dict[str, object]:
        status = replica.status()
        return {"group": group_id, "role": status.role.name.lower(), "term": status.term,
                "leader": status.leader, "commit": status.commit, "applied": replica.applied,
                "last_index": status.last_index, "voters": sorted(status.conf.voters),
                "keys": self._local_count(group_id) if group_id != META_GROUP_ID else 0,
                "learners": sorted(status.conf.learners),
                "followers": self._follower_lag(replica)}

    def _follower_lag(self, replica: Replica) -> dict[str, dict[str, int]]:
        """The leader's view of each follower: match index and lag behind its log."""
        progress = getattr(replica.core, "progress", None)
        if replica.role is not Role.LEADER or not callable(progress):
            return {}
        last = replica.core.status().last_index
        lags = {}
        for node in sorted(replica.status().conf.voters | replica.status().conf.learners):
            if node == self.node_id:
                continue
            match = getattr(progress(node), "match", None)
            if isinstance(match, int):
                lags[str(node)] = {"match": match, "lag": last - match}
        return lags

    def statistics(self) -> dict[str, object]:
        return {"node": {**self.stats, **self.forwarder.stats},
                "forwards_inflight": len(self.forwarder.inflight),
                "replicas": {g: r.statistics() for g, r in self.replicas.items()},
                "transport": self.transport.statistics()}


COUNT_MARKER = b"\x00count"
MAP_MARKER = b"\x00map"
"""A joining node asks a seed for the map it holds (to learn the nodes' addresses)."""
SCAN_MARKER = b"\x00scan:"
READ_MARKER = b"\x00read:"
"""Prefix of a forwarded linearizable read (never the start of a KV command,
which is a msgpack array)."""


def _not_executed(error: BaseException) -> bool:
    """An answer that promises the write had no effect (safe to send again)."""
    text = str(error)
    return "not executed" in text or "not committed" in text


def _members(replica: Replica) -> frozenset[int]:
    conf = replica.core.status().conf
    return conf.voters | conf.learners


def _as_result(read: asyncio.Future[ReadValue]) -> asyncio.Future[Result]:
    """A read's answer in a form a `ForwardResponse` carries: [value, expiry] or None."""
    result: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

    def copy(done: asyncio.Future[ReadValue]) -> None:
        if result.done() or done.cancelled():
            return
        error = done.exception()
        if error is not None:
            fail_quietly(result, error)
            return
        value = done.result()
        result.set_result(None if value is None else [value[0], value[1]])

    read.add_done_callback(copy)
    return result


def _copy_read(done: asyncio.Future[Any], read: asyncio.Future[ReadValue]) -> None:
    if read.done():
        return
    if done.cancelled():
        read.cancel()
        return
    error = done.exception()
    if error is not None:
        fail_quietly(read, error)
        return
    value = done.result()
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], bytes):
        read.set_result((value[0], int(value[1])))
    elif value is None:
        read.set_result(None)
    else:
        fail_quietly(read, Unavailable(f"unexpected forwarded read answer {value!r}; retry"))


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    """Complete `target` as `source` completes."""
    def copy(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
            return
        error = done.exception()
        if error is not None:
            fail_quietly(target, error)
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)


def _failed(error: ServiceError) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fail_quietly(future, error)
    return future
