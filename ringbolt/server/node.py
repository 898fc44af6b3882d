"""One node process: many Raft groups (Multi-Raft), one WAL, one store, one transport.

Theory of operation
-------------------
A `Node` hosts one `Replica` per group it holds: the meta group and the
shards the cluster map places on it (`membership.py`; key -> shard by the
map's ring; splits in `split.py`). All groups share ONE write-ahead log whose
fdatasync is shared by every group (group commit), ONE LMDB state-machine
store, ONE peer `Transport` and ONE ticker.

The node implements `KeyValueService` for the RESP front end through its
`RequestPaths` half (requests.py: where reads and writes go, forwarding, and
how they wait through elections and transfers) and reports through its
`Introspection` half (introspection.py). A write resolves with the state
machine's result once applied; reads are linearizable (ReadIndex, on any
replica); `stale=True` reads the local store at once.

Driving is done in *rounds*. Submissions, peer messages and ticks only touch
the cores and set `_work`; the round is prepared on the next loop iteration,
so everything that arrived in one iteration is handled together: every
replica's Ready is appended to the WAL, a leader's AppendEntries leave, and
ONE fdatasync makes all of them durable; commits that earlier syncs already
made durable are applied meanwhile. Then all other messages are sent (one
write per peer), every group applies the rest of its committed entries in one
store transaction and advances. A round whose Ready only moves the commit
index costs no sync.

The fdatasync runs on the loop's own thread (`_sync_inline`): measured on a
2-core machine with three nodes it beats handing it to a worker thread at
every load (docs/benchmarks.md) -- the hop costs more than the ~0.1-0.3 ms
sync, and a busy loop builds bigger batches meanwhile. A sync that fails with
a full disk goes to a worker thread and is retried there; while such a round
waits, the next one may be prepared (`rounds_inflight_max` = 2) and rounds
finish strictly in order.

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
from typing import Any

from ringbolt import limits as project
from ringbolt.consensus.codec import MessageDecodeError, decode_message, encode_message
from ringbolt.consensus.messages import (
    AppendRequest,
    Heartbeat,
    ReadIndexRequest,
    SnapshotChunk,
    VoteRequest,
)
from ringbolt.consensus.raft import Raft, RaftConfig
from ringbolt.consensus.types import (
    ConfState,
    HardState,
    NotLeader,
    PersistentState,
    ProposalDropped,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from ringbolt.kv.machine import Result
from ringbolt.server import limits, membership
from ringbolt.server.config import Address, NodeConfig
from ringbolt.server.forward import Forwarder
from ringbolt.server.introspection import Introspection
from ringbolt.server.membership import META_GROUP_ID, Membership, bootstrap_map
from ringbolt.server.replica import ReadValue, Replica, fail_quietly, storage_id
from ringbolt.server.requests import MAP_MARKER, RequestPaths, _failed
from ringbolt.server.service import (
    Busy,
    ServiceError,
    ServiceLimits,
    Unavailable,
)
from ringbolt.server.split import (
    CHILD_INIT_INDEX,
    CHILD_INIT_TERM,
    SPLIT_PREFIX,
    FencedStore,
    Split,
    decode_split,
)
from ringbolt.server.transport import ForwardResponse, MalformedFrame, Transport
from ringbolt.shard import reconcile
from ringbolt.shard.clustermap import ClusterMap
from ringbolt.shard.ring import Ring
from ringbolt.storage.engine import StateMachineStore
from ringbolt.storage.errors import StorageError, StorageFailed, StorageFull
from ringbolt.storage.wal import WriteAheadLog

log = logging.getLogger("ringbolt.node")

_EXPIRE_EVERY_TICKS = 10


class StartupError(Exception):
    """The node cannot start; `str(error)` is the one line shown to the operator."""


class Node(RequestPaths, Introspection):
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
        # a link silent for two of the longest election timeouts is dead (at least 1 s)
        longest_election_s = 2 * config.election_timeout_ticks * config.tick_ms / 1000
        self.transport = Transport(config.node_id,
                                   {p.node_id: p.address for p in config.peers.values()},
                                   self, random.Random(self.rng.random()),
                                   silence_max_s=max(limits.peer_silence_max_s,
                                                     2 * longest_election_s))
        self.forwarder = Forwarder(self.transport, time.monotonic, retry=self._forward_again)
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
        self._durable_votes: dict[int, tuple[int, int]] = {}
        """(term, vote) of each group's latest hard state that was synced (or is
        in the sync of a round that finishes before any later one sends)."""
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
        self.stats = {"rounds": 0, "fsyncs": 0, "fsyncs_inline": 0, "fsync_seconds": 0.0, "readies": 0,
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
            self.membership.learn_peers(self.membership.map)
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
        return Replica(group_id, core, self._wal, self._fenced, clock=time.monotonic,
                       on_lost=self._propose_again)

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
                                          clock=time.monotonic, on_lost=self._propose_again)
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

    def forget_peer(self, node_id: int) -> None:
        """A node removed from the cluster: close its links (its address may
        be reused by a new node with another id)."""
        self._client_addresses.pop(node_id, None)
        self.transport.remove_peer(node_id)

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
            readies, syncing = prepared
            if syncing is None and not finishing:
                self._complete_round(readies)  # durable already: no task, no wait
                continue
            previous = finishing[-1] if finishing else None
            task = asyncio.ensure_future(self._finish(readies, syncing, previous))
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
            must_sync = self._needs_sync(replica.group_id, ready) or must_sync
            appended += len(ready.entries)
            for message in replica.take_early_messages(ready):  # before our own fsync
                self._send(replica.group_id, message)
        if appended:
            self.batch_sizes.append(appended)
            del self.batch_sizes[:-1000]
            self.stats["round_entries_max"] = max(self.stats["round_entries_max"], appended)
        syncing: asyncio.Future[None] | None = None
        if must_sync:
            if self.config.fsync:
                if self._finishing or not self._sync_inline():
                    syncing = asyncio.ensure_future(self._sync())
            elif self._background_sync is None or self._background_sync.done():
                self._background_sync = asyncio.ensure_future(self._sync())
        for replica, ready in readies:
            replica.apply(ready, durable_only=True)  # while the WAL syncs
        return readies, syncing

    def _needs_sync(self, group_id: int, ready: Ready) -> bool:
        """Entries, a snapshot, or a new term or vote must be on disk before
        the round's messages leave; a hard state that only moves the commit
        index need not be (after a crash the node learns the commit index
        again from the leader), so it rides along with the next sync instead
        of costing one -- the leader's second fsync per write at low load."""
        if ready.entries or ready.snapshot is not None:
            return True
        hard = ready.hard_state
        if hard is None:
            return False
        vote = (hard.term, hard.vote)
        if self._durable_votes.get(group_id) == vote:
            return False
        self._durable_votes[group_id] = vote
        return True

    async def _finish(self, readies: list[tuple[Replica, Ready]],
                      syncing: asyncio.Future[None] | None,
                      previous: asyncio.Future[None] | None) -> None:
        if previous is not None:
            await previous
        if syncing is not None:
            await syncing
        self._complete_round(readies)

    def _complete_round(self, readies: list[tuple[Replica, Ready]]) -> None:
        """The round is durable: send its messages, apply, advance. The
        messages leave before the apply (a follower's acknowledgement is on
        the write's critical path; the apply is not)."""
        sent = False
        for replica, ready in readies:
            for message in ready.messages:
                self._send(replica.group_id, message)
                sent = True
        if sent:
            self.transport.flush()
        for replica, ready in readies:
            replica.apply(ready)
            replica.advance(ready)
        if any(r.core.has_ready() for r in self.replicas.values()):
            self._work.set()

    def _sync_inline(self) -> bool:
        """Sync on the loop's own thread (see the module docstring for why),
        unless a round that went to the worker thread is still in flight.
        The early messages are flushed first, so the followers' fsyncs overlap
        ours. False when the sync failed: the worker-thread path retries a
        full disk or stops the node."""
        self.transport.flush()
        started = time.monotonic()
        try:
            self._wal.sync()
        except StorageError:
            return False
        self.stats["fsyncs"] += 1
        self.stats["fsyncs_inline"] += 1
        self.stats["fsync_seconds"] += time.monotonic() - started
        return True

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
            return
        self.stats["messages_dropped"] += 1
        if isinstance(message, ReadIndexRequest):
            # nobody retransmits a ReadIndex request: fail its reads now, so
            # they are issued again on the next tick (requests.py)
            replica = self.replicas.get(group_id)
            if replica is not None:
                replica.fail_waiting_reads()

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

    def on_forward_response(self, sender: int, response: ForwardResponse) -> None:
        self.forwarder.on_response(sender, response)

    def on_peer_lost(self, peer_id: int) -> None:
        self.forwarder.peer_lost(peer_id)
        for replica in self.replicas.values():  # their ReadIndex answers cannot come
            if replica.leader == peer_id:
                replica.fail_waiting_reads()
