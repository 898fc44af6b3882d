"""The groups one node hosts: which replicas exist, and how a new one is made.

Theory of operation
-------------------
`ReplicaRegistry` is the one owner of the node's `Replica` objects: the
meta group and the shards the cluster map places here (`hosted`), plus the
groups moved away (`retired`: kept, not ticked, so hosting one again resumes
its state). Membership adds and retires groups through it; the round driver,
the request paths and the reports only read `hosted`.

A replica's consensus core comes from the injected `Consensus` (Raft or
another core behind the same interface): this module never names one. The
shared WAL and state-machine store are attached once storage is open.

`wake()` tells the round driver that a core has work (a proposal, a message,
a tick); every component that touches a core calls it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from ringbolt.consensus.interface import Consensus, CoreSettings
from ringbolt.consensus.types import (
    ConfState,
    HardState,
    PersistentState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from ringbolt.kv.commands import stamp as stamp_command
from ringbolt.server.config import NodeConfig
from ringbolt.server.groups import META_GROUP_ID
from ringbolt.server.replica import LostProposal, Replica, storage_id
from ringbolt.server.service import Unavailable
from ringbolt.server.split import CHILD_INIT_INDEX, CHILD_INIT_TERM, Split
from ringbolt.shard import reconcile
from ringbolt.shard.clustermap import ClusterMap
from ringbolt.shard.ring import Ring
from ringbolt.storage.engine import StateMachineStore
from ringbolt.storage.wal import WriteAheadLog

log = logging.getLogger("ringbolt.node")

RetireListener = Callable[[int], None]
"""Called with a group id when its replica retires (to fail what waits for it)."""


class ReplicaRegistry:
    """The hosted and retired replicas of one node (see the module docstring)."""

    def __init__(self, config: NodeConfig, consensus: Consensus, rng: random.Random) -> None:
        self.config = config
        self.node_id = config.node_id
        self.consensus = consensus
        self._rng = rng
        self.hosted: dict[int, Replica] = {}
        """Hosted groups: the meta group and the shards the map places here."""
        self.retired: dict[int, Replica] = {}
        """Groups moved away: kept (not ticked) so re-hosting resumes their state."""
        self.ring: Ring | None = None
        """key -> shard, from the cluster map (None until this node has a map)."""
        self.work = asyncio.Event()
        """Set when some core may have a Ready: the round driver waits on it."""
        self.on_lost: LostProposal | None = None
        """The request paths' hook: a proposal a new leader overwrote (requests.py)."""
        self._retire_listeners: list[RetireListener] = []
        self._wal: WriteAheadLog | None = None
        self._store: StateMachineStore | None = None
        self._fenced: object = None
        self._stamped_ms = 0

    def attach(self, wal: WriteAheadLog, store: StateMachineStore, fenced: object) -> None:
        """Storage is open: replicas made from now on write to it."""
        self._wal, self._store, self._fenced = wal, store, fenced

    def wake(self) -> None:
        self.work.set()

    def on_retire(self, listener: RetireListener) -> None:
        self._retire_listeners.append(listener)

    @property
    def group_ids(self) -> list[int]:
        """The hosted shards (not the meta group), in id order."""
        return sorted(g for g in self.hosted if g != META_GROUP_ID)

    def led(self) -> int:
        return sum(1 for replica in self.hosted.values() if replica.role is Role.LEADER)

    # -- making replicas -------------------------------------------------------------

    def make(self, group_id: int, state: PersistentState | None,
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
        return self._replica(group_id, voters, learners, self._restored(state, group_id))

    def _replica(self, group_id: int, voters: frozenset[int], learners: frozenset[int],
                 state: PersistentState | None) -> Replica:
        assert self._wal is not None and self._fenced is not None, "storage is not open"
        config = self.config
        core = self.consensus.make_core(
            CoreSettings(node_id=self.node_id, voters=voters, learners=learners,
                         election_timeout_ticks=config.election_timeout_ticks,
                         heartbeat_ticks=config.heartbeat_ticks, unsafe=config.unsafe,
                         early_send=True),
            random.Random(self._rng.random()), state)
        return Replica(group_id, core, self._wal, self._fenced,  # type: ignore[arg-type]
                       clock=time.monotonic, on_lost=self._lost, stamp=self._stamp)

    def _stamp(self, command: bytes) -> bytes:
        """The leader's wall clock in ms, never going back on this node (a
        clock step back would otherwise revive expired keys for a while);
        across a leader change the skew between the two leaders' clocks
        remains (docs/architecture.md)."""
        now_ms = max(time.time_ns() // 1_000_000, self._stamped_ms)
        self._stamped_ms = now_ms
        return stamp_command(command, now_ms)

    def _lost(self, replica: Replica, proposal: object) -> bool:
        return self.on_lost is not None and self.on_lost(replica, proposal)  # type: ignore[arg-type]

    def _restored(self, state: PersistentState | None, group_id: int) -> PersistentState | None:
        """The WAL keeps snapshot metadata only; the image comes from the store
        when the store is exactly at the snapshot's index. When it is ahead, the
        core gets an empty placeholder that the replica replaces with a fresh
        image as soon as the core has re-delivered the entries in between (a
        follower asking for a snapshot in that short window fails to install
        it and asks again)."""
        if state is None or state.snapshot is None:
            return state
        assert self._store is not None
        meta = state.snapshot.meta
        store_id = storage_id(group_id)
        data = (self._store.snapshot_bytes(store_id)
                if self._store.applied_index(store_id) == meta.index else b"")
        return PersistentState(hard_state=state.hard_state, entries=state.entries,
                               snapshot=Snapshot(meta=meta, data=data))

    # -- hosting (driven by `Membership`) -----------------------------------------------

    def host(self, group_id: int) -> Replica:
        replica = self.retired.pop(group_id, None)
        if replica is None:
            replica = self.make(group_id, None, None)
        self.hosted[group_id] = replica
        log.info("node %d: hosting group %d", self.node_id, group_id)
        self.work.set()
        return replica

    def retire(self, group_id: int) -> None:
        replica = self.hosted.pop(group_id)
        replica.fail_all(Unavailable(f"shard {group_id} moved away from node {self.node_id} "
                                     "while the request waited; the outcome is unknown"))
        for listener in self._retire_listeners:
            listener(group_id)
        self.retired[group_id] = replica
        log.info("node %d: group %d moved away (retired)", self.node_id, group_id)

    # -- splits (split.py) -------------------------------------------------------------

    def child_exists(self, child_storage_id: int) -> bool:
        assert self._store is not None
        child = child_storage_id - 1
        return (child in self.hosted or child in self.retired
                or self._store.applied_index(child_storage_id) > 0)

    def start_split_child(self, parent_storage_id: int, split: Split, index: int) -> None:
        """The parent applied a split here: start the child group from the
        snapshot this node just built (identical on every replica)."""
        assert self._wal is not None and self._store is not None
        child_id = split.child
        conf = ConfState(voters=frozenset(split.voters))
        meta = SnapshotMeta(index=CHILD_INIT_INDEX, term=CHILD_INIT_TERM, conf=conf)
        hard = HardState(term=CHILD_INIT_TERM, commit=CHILD_INIT_INDEX)
        self._wal.append(storage_id(child_id), hard_state=hard, snapshot_meta=meta)
        state = PersistentState(hard_state=hard, entries=[], snapshot=Snapshot(
            meta=meta, data=self._store.snapshot_bytes(storage_id(child_id))))
        self.hosted[child_id] = self._replica(child_id, conf.voters, frozenset(), state)
        log.info("node %d: shard %d split at index %d: shard %d starts on nodes %s",
                 self.node_id, parent_storage_id - 1, index, child_id, list(split.voters))
        self.work.set()
