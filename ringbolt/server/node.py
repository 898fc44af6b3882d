"""One node process: many consensus groups, one WAL, one store, one transport.

Theory of operation
-------------------
A `Node` wires a node's components and runs their life cycle; it holds no
protocol logic of its own:

- `ReplicaRegistry` (registry.py): the hosted replicas (the meta group and
  the shards the cluster map places here), each driving one consensus core
  made by the injected `Consensus` (Raft by default: consensus/registry.py);
- `RoundDriver` (rounds.py): every core's Ready in rounds, ONE WAL
  fdatasync per round (group commit), in order: persist -> early messages ->
  sync -> messages -> apply -> advance;
- `Requests` (requests.py): where reads and writes go (propose, forward,
  park through elections), behind the `NodeService` the RESP front end sees
  (frontend.py);
- `Membership` (membership.py): the cluster map, hosting, online moves;
- `Introspection` (introspection.py): INFO, CLUSTER, /status, /metrics;
- `Transport` (transport.py) and `PeerBook` (peers.py): peer links.

The node is the transport's handler: a peer's consensus message is decoded
with the core's codec and stepped into its replica.

Time: a tick every `tick_ms` (default 10 ms). The election timeout is
`election_timeout_ticks` (default 20, randomized by Raft in [T, 2T): 200-400
ms) and the leader heartbeats every `heartbeat_ticks` (default 2). Ticks
missed while the loop was busy are skipped, not replayed in a burst, so a
node's own stall never fires its election timer several times at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import random
import time
from typing import Any

from ringbolt import limits as project
from ringbolt.consensus import registry as consensus_registry
from ringbolt.consensus.interface import Consensus, MessageDecodeError
from ringbolt.server import limits, membership
from ringbolt.server.config import NodeConfig
from ringbolt.server.forward import Forwarder
from ringbolt.server.frontend import NodeService
from ringbolt.server.groups import META_GROUP_ID
from ringbolt.server.introspection import Introspection
from ringbolt.server.membership import Membership, bootstrap_map
from ringbolt.server.peers import PeerBook
from ringbolt.server.registry import ReplicaRegistry
from ringbolt.server.requests import Requests
from ringbolt.server.rounds import RoundDriver
from ringbolt.server.service import ServiceLimits, Unavailable
from ringbolt.server.split import FencedStore
from ringbolt.server.transport import ForwardRequest, ForwardResponse, MalformedFrame, Transport
from ringbolt.shard import reconcile
from ringbolt.storage.engine import StateMachineStore
from ringbolt.storage.errors import StorageError
from ringbolt.storage.group_commit import GroupCommitter
from ringbolt.storage.wal import WriteAheadLog

log = logging.getLogger("ringbolt.node")

_EXPIRE_EVERY_TICKS = 10


class StartupError(Exception):
    """The node cannot start; `str(error)` is the one line shown to the operator."""


class Node:
    def __init__(self, config: NodeConfig, *, rng: random.Random | None = None,
                 consensus: Consensus | None = None) -> None:
        self.config = config
        self.node_id = config.node_id
        self.rng = rng if rng is not None else random.Random()
        self.consensus = consensus if consensus is not None else consensus_registry.consensus()
        self.registry = ReplicaRegistry(config, self.consensus, random.Random(self.rng.random()))
        # a link silent for two of the longest election timeouts is dead (at least 1 s)
        longest_election_s = 2 * config.election_timeout_ticks * config.tick_ms / 1000
        self.transport = Transport(config.node_id,
                                   {p.node_id: p.address for p in config.peers.values()},
                                   self, random.Random(self.rng.random()),
                                   silence_max_s=max(limits.peer_silence_max_s,
                                                     2 * longest_election_s))
        self.peers = PeerBook(config, self.transport)
        self.forwarder = Forwarder(self.transport, time.monotonic)
        self.requests = Requests(config, self.registry, self.forwarder, self.peers)
        self.membership = Membership(config, self.registry, self.peers, self.requests,
                                     random.Random(self.rng.random()))
        self.requests.membership = self.membership
        self.driver = RoundDriver(config.node_id, self.registry, self.transport,
                                  self.consensus.codec, fsync=config.fsync,
                                  on_failure=self._round_failed)
        self.introspection = Introspection(config, self.registry, self.peers, self.membership,
                                           self.transport, self.forwarder, self._counters,
                                           self.requests.shard_keys, self.driver.batch_sizes)
        self.service = NodeService(
            ServiceLimits(key_bytes_max=config.limits.key_bytes_max,
                          value_bytes_max=config.limits.value_bytes_max,
                          requirepass=config.requirepass,
                          admin_networks=config.admin_networks),
            self.requests, self.introspection, self.membership, self.registry)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_file: Any = None
        self._wal: WriteAheadLog | None = None
        self._committer: GroupCommitter | None = None
        self._store: StateMachineStore | None = None
        self.failed = asyncio.Event()
        """Set when the node cannot go on (the WAL failed); the process must exit."""
        self._client_server: Any = None
        self.clients: Any = None
        self._admin: Any = None
        self.stats = {"ticks": 0, "unknown_group_messages": 0}

    @property
    def replicas(self) -> dict[int, Any]:
        return self.registry.hosted

    def _counters(self) -> dict[str, Any]:
        """Every component's counters, as one flat dict (INFO, /metrics)."""
        return {**self.driver.stats, "fsync_seconds": self.driver.fsync_seconds,
                **self.requests.stats, **self.stats}

    def status(self) -> dict[str, object]:
        return self.introspection.status()

    def statistics(self) -> dict[str, object]:
        return self.introspection.statistics()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, bind every port, then start talking. Raises `StartupError`."""
        if self.config.unsafe:
            log.warning("node %d: UNSAFE test-only consensus mutations are ON: %s -- this "
                        "node breaks consistency on purpose", self.node_id,
                        ", ".join(sorted(self.config.unsafe)))
        self._open_storage()
        try:
            await self._bind()
        except BaseException:
            await self._close_storage()
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.driver.drive()), loop.create_task(self._tick())]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        log.info("node %d up: clients %s, peers %s, admin %s, %d shard(s), data %s",
                 self.node_id, self.config.client_address, self.config.peer_address,
                 self.config.admin_address, len(self.registry.group_ids), self.config.data_dir)

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
            self._wal = wal = WriteAheadLog.open(str(data_dir / "wal"))
            # the value limit a replica applies must be the same on every node:
            # per-node `limits.value_bytes_max` is enforced at the client door
            self._store = store = StateMachineStore.open(str(data_dir / "state"),
                                                         value_bytes_max=project.value_bytes_ceiling)
            recovered = wal.recovered()
        except (StorageError, OSError) as error:
            if self._wal is not None:
                self._wal.close()
                self._wal = None
            raise StartupError(f"data_dir {data_dir}: {error}") from None
        registry = self.registry
        fenced = FencedStore(store, registry.start_split_child, registry.child_exists)
        registry.attach(wal, store, fenced)
        self.requests.attach(store, fenced)
        self._committer = GroupCommitter(wal)
        self.driver.attach(self._committer)
        initial = None if self.config.join else bootstrap_map(self.config)
        for sid, state in recovered.items():
            registry.hosted[sid - 1] = registry.make(sid - 1, state, initial)
        stored = self.membership.stored_map()
        self.membership.map = stored if stored is not None else initial
        if not recovered and initial is not None:  # first start: the initial groups
            for group_id in [META_GROUP_ID, *reconcile.placed_on(initial, self.node_id)]:
                registry.hosted[group_id] = registry.make(group_id, None, initial)
        if self.membership.map is not None:
            registry.ring = self.membership.map.ring()
            self.membership.learn_peers(self.membership.map)
        self.membership.sync_hosting()

    async def _bind(self) -> None:
        from ringbolt.server.admin import start_admin
        from ringbolt.server.connection import serve_clients
        from ringbolt.server.dispatch import ClientRegistry

        config = self.config
        step = "client_address"
        try:
            self.clients = ClientRegistry(config.limits.clients_max)
            self._client_server = await serve_clients(self.service, config.client_address.host,
                                                      config.client_address.port,
                                                      registry=self.clients)
            step = "peer_address"
            await self.transport.start(config.peer_address)
            if config.admin_address is not None:
                step = "admin_address"
                self._admin = await start_admin(self.introspection, config.admin_address)
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
        self.requests.stopping = True
        if self._client_server is not None:
            self._client_server.close()
        self.registry.wake()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # the rounds in flight (bounded by their sync)
            await self.driver.wait_finishing(5.0)
        error = Unavailable("the node is shutting down; the outcome of the write is unknown")
        for replica in self.registry.hosted.values():
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

    def _round_failed(self, error: BaseException | None) -> None:
        """A round could not complete: a bug (`error`) or a failed WAL (None)."""
        if self._stopping:
            return
        if error is not None:
            log.critical("node %d: a round failed, stopping", self.node_id, exc_info=error)
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
            if self._committer is not None:
                self._committer.close()
                self._committer = None
            self._wal.close()
            self._wal = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- time ------------------------------------------------------------------------

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        interval_s = self.config.tick_ms / 1000
        next_at = loop.time()
        hosted = self.registry.hosted
        for count in itertools.count(1):
            next_at += interval_s
            delay_s = next_at - loop.time()
            if delay_s < 0:
                next_at = loop.time()  # skip missed ticks instead of bursting them
                delay_s = 0
            await asyncio.sleep(delay_s)
            for replica in hosted.values():
                replica.core.tick()
            self.stats["ticks"] += 1
            if count % membership.refresh_every_ticks == 0:
                self.membership.refresh()
            if count % membership.reconcile_every_ticks == 0:
                self.membership.drive_groups()
            self.requests.retry_parked(time.monotonic())
            if count % _EXPIRE_EVERY_TICKS == 0:
                now = time.monotonic()
                for replica in hosted.values():
                    replica.expire(now)
                self.forwarder.expire(now)
            self.registry.wake()

    # -- peer messages (the transport's handler) -----------------------------------------

    def on_raft(self, sender: int, group_id: int, payload: bytes) -> None:
        codec = self.consensus.codec
        try:
            message = codec.decode(payload)
        except MessageDecodeError as error:
            raise MalformedFrame(f"bad consensus message for group {group_id}: {error}") from None
        if message.sender != sender or message.recipient != self.node_id:
            raise MalformedFrame(f"consensus message from {message.sender} to "
                                 f"{message.recipient} on the link from {sender}")
        registry = self.registry
        replica = registry.hosted.get(group_id)
        if replica is None and group_id in registry.retired and codec.wants_replica(message):
            replica = registry.host(group_id)  # its leader (or a candidate) still counts on it
        if replica is None:
            self.stats["unknown_group_messages"] += 1  # not hosted (yet, or any more)
            return
        replica.core.step(message)
        registry.work.set()

    def on_forward_request(self, sender: int, request: ForwardRequest) -> None:
        self.requests.on_forward_request(sender, request)

    def on_forward_response(self, sender: int, response: ForwardResponse) -> None:
        self.forwarder.on_response(sender, response)

    def on_peer_lost(self, peer_id: int) -> None:
        self.forwarder.peer_lost(peer_id)
        for replica in self.registry.hosted.values():  # their read-index answers cannot come
            if replica.leader == peer_id:
                replica.fail_waiting_reads()
