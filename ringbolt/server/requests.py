"""The request paths of a node: where a read or a write goes, and how it waits.

Theory of operation
-------------------
`Requests` is the node's request-path component: the data half of its
`KeyValueService` (frontend.py), handed the replica registry, the
forwarder, the peer book and the stores. A write for a shard this node leads is proposed
here; for a shard it hosts but does not lead, forwarded to the leader; for a
shard it does not host, forwarded to a node that does, which passes it on to
its leader once (`on_forward_request`: a member never passes it further).
Reads are linearizable (ReadIndex) on any replica; for a shard the node does
not host they are served by a node that does (`READ_MARKER`).

Nothing a client can survive is shown to it: a write the leader cannot take
right now (election, leadership transfer, full window) waits in a bounded
queue and is tried again every tick (`_park`); a proposal a new leader
overwrote ("not committed": it can never apply) is proposed again; a
forward the old leader did not execute is sent again; a read the group could
not serve is issued again -- all until `leaderless_wait_s`. Outcomes that
may have happened (a lost connection, a timeout) are never retried here:
they reach the client as "outcome unknown".

Forwarded one-shard requests from other nodes (COUNT, SCAN, MAP, READ) are
answered from this node's replica (`_answer_local`).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from ringbolt.consensus.types import NotLeader, Role
from ringbolt.kv.machine import Result
from ringbolt.server import limits
from ringbolt.server.forward import Forward
from ringbolt.server.futures import fail_quietly, failed, then
from ringbolt.server.groups import MAP_KEY, META_GROUP_ID
from ringbolt.server.replica import (
    Proposal,
    ReadValue,
    Replica,
    storage_id,
)
from ringbolt.server.service import Busy, CrossShard, ServiceError, Unavailable
from ringbolt.server.split import RANGE_KEY, SPLIT_PREFIX, decode_range_record, decode_split
from ringbolt.server.transport import ForwardRequest, MalformedFrame
from ringbolt.shard.clustermap import ClusterMapError

if TYPE_CHECKING:
    from ringbolt.server.config import NodeConfig
    from ringbolt.server.forward import Forwarder
    from ringbolt.server.membership import Membership
    from ringbolt.server.peers import PeerBook
    from ringbolt.server.registry import ReplicaRegistry
    from ringbolt.server.split import FencedStore
    from ringbolt.storage.engine import StateMachineStore

ParkedWrite = tuple[float, bytes, asyncio.Future[Result], bool]
"""(retry deadline, command, the client's future, forwarded to us)."""


class Requests:
    """The node's reads and writes (see the module docstring)."""

    def __init__(self, config: NodeConfig, registry: ReplicaRegistry, forwarder: Forwarder,
                 peers: PeerBook) -> None:
        self.config = config
        self.node_id = config.node_id
        self.registry = registry
        self.forwarder = forwarder
        self.peers = peers
        self.membership: Membership | None = None
        """Set by the node once membership exists (it needs these paths too)."""
        self.stopping = False
        self._store: StateMachineStore | None = None
        self._fenced: FencedStore | None = None
        self._leaderless: dict[int, collections.deque[ParkedWrite]] = {}
        """Writes waiting for their group to take them (`_park`), by group."""
        self._leaderless_count = 0
        self._scan_cursors: dict[int, tuple[int, bytes]] = {}
        self._scan_ids = itertools.count(1)
        self.stats = {"writes": 0, "reads": 0, "stale_reads": 0, "forwarded_elsewhere": 0,
                      "writes_reproposed": 0, "forwards_retried": 0, "reads_retried": 0}
        registry.on_lost = self._propose_again
        registry.on_retire(self._fail_parked)
        forwarder.retry = self._forward_again

    def attach(self, store: StateMachineStore, fenced: FencedStore) -> None:
        self._store, self._fenced = store, fenced

    @property
    def store(self) -> StateMachineStore:
        assert self._store is not None, "storage is not open"
        return self._store

    @property
    def fenced(self) -> FencedStore:
        assert self._fenced is not None, "storage is not open"
        return self._fenced

    @property
    def replicas(self) -> dict[int, Replica]:
        return self.registry.hosted

    @property
    def _map(self) -> Membership:
        assert self.membership is not None, "membership is wired at start"
        return self.membership

    def _wake(self) -> None:
        self.registry.work.set()

    # -- for membership (the meta group and hosted shards) ----------------------------

    def store_get(self, group_id: int, key: bytes) -> bytes | None:
        found = self.store.get(storage_id(group_id), key)
        return None if found is None else found[0]

    def write_group(self, group_id: int, command: bytes) -> asyncio.Future[Result]:
        return self._write(group_id, command)

    def read_group(self, group_id: int, key: bytes) -> asyncio.Future[ReadValue]:
        replica = self.replicas.get(group_id)
        if replica is None:
            return failed(Unavailable(f"node {self.node_id} does not host group {group_id}"))
        future = replica.read(key)
        self._wake()
        return future

    def ask_for_map(self, seed: int) -> asyncio.Future[Any]:
        """The (possibly stale) map a seed node holds, as bytes or None."""
        try:
            return self.forwarder.forward(seed, META_GROUP_ID, MAP_MARKER)
        except ServiceError as error:
            return failed(error)

    def _fail_parked(self, group_id: int) -> None:
        """`ReplicaRegistry.on_retire`: writes parked for a group moved away."""
        waiting = self._leaderless.pop(group_id, ())
        self._leaderless_count -= len(waiting)
        for _deadline, _command, future, _local in waiting:
            fail_quietly(future, Unavailable(f"shard {group_id} moved away; not executed, retry"))

    # -- the data paths -------------------------------------------------------------

    def group_of(self, keys: Sequence[bytes]) -> int:
        assert keys, "a write names at least one key"
        ring = self.registry.ring
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
        if self.stopping:
            return failed(Unavailable("the node is shutting down; not executed, retry"))
        replica = self.replicas.get(group_id)
        if replica is None:
            if local_only:
                return failed(Unavailable(f"node {self.node_id} does not host shard "
                                           f"{group_id}; not executed, retry"))
            return self._forward_elsewhere(group_id, command)
        leader = replica.leader
        if replica.role is Role.LEADER:
            refused = refuse_bad_split(replica, command)
            if refused is not None:
                return failed(refused)
            try:
                future = replica.propose(command, retry_until=_retry_until(deadline),
                                         local_only=local_only)
            except NotLeader as error:
                leader = error.leader_hint
            except Busy:  # a transfer in progress, or a full window: wait for it
                return self._park(group_id, command, deadline, local_only)
            else:
                self._wake()
                return future  # a lost proposal is proposed again (`_propose_again`)
        if local_only:
            return failed(Unavailable(f"node {self.node_id} does not lead shard {group_id}; "
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
            return self.forwarder.forward(leader, group_id, command,
                                          retry_until=_retry_until(deadline))
        except Busy as error:
            return failed(error)

    def _forward_again(self, error: ServiceError, forward: Forward) -> bool:
        """`Forwarder.retry`: the leader answered that it did not execute the
        write (it just lost the lead), or it could not be reached: wait for
        the next tick and try again (`_park`), until the forward's deadline."""
        if not _not_executed(error) or time.monotonic() >= forward.retry_until or self.stopping:
            return False
        self.stats["forwards_retried"] += 1
        then(self._park(forward.group_id, forward.command, forward.retry_until, False),
              forward.future)
        return True

    def _propose_again(self, replica: Replica, proposal: Proposal) -> bool:
        """`Replica.on_lost`: a new leader overwrote the proposal ("not
        committed": it can never be applied); write the command again under
        the same future, on the next loop iteration (not inside the apply that
        found out), until its retry deadline."""
        if self.stopping or time.monotonic() >= proposal.retry_until:
            return False
        self.stats["writes_reproposed"] += 1

        def again() -> None:
            if not proposal.future.done():
                then(self._write(replica.group_id, proposal.command, proposal.retry_until,
                                  local_only=proposal.local_only), proposal.future)

        asyncio.get_running_loop().call_soon(again)
        return True

    def _park(self, group_id: int, command: bytes, deadline: float | None,
              local_only: bool) -> asyncio.Future[Result]:
        """The group cannot take the write now (no leader known, a transfer in
        progress, a full window): hold it, bounded in count and time, and try
        again every tick (see `retry_parked`)."""
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            return failed(Unavailable(f"shard {group_id} could not take the write in time "
                                       "(election or leadership transfer); the command was "
                                       "not executed, retry"))
        if self._leaderless_count >= limits.leaderless_writes_max:
            return failed(Busy(f"shard {group_id} has no leader and too many writes wait "
                                "for one; not executed, retry"))
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        due = _retry_until(deadline, now)
        self._leaderless.setdefault(group_id, collections.deque()).append(
            (due, command, future, local_only))
        self._leaderless_count += 1
        return future

    def retry_parked(self, now: float) -> None:
        """Every tick: writes parked for a group that now knows its leader go again."""
        if not self._leaderless:
            return
        for group_id in list(self._leaderless):
            replica = self.replicas[group_id]
            waiting = self._leaderless.pop(group_id)
            self._leaderless_count -= len(waiting)
            known = replica.role is Role.LEADER or replica.leader not in (0, self.node_id)
            for deadline, command, future, local_only in waiting:
                if future.done():
                    continue  # the client went away
                if known or self.stopping or deadline <= now:
                    then(self._write(group_id, command, deadline, local_only=local_only),
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
            return failed(self._map.moved(group_id))
        self.stats["forwarded_elsewhere"] += 1
        try:
            return self.forwarder.forward(holder, group_id, command)
        except ServiceError as error:
            return failed(error)

    def _holder(self, group_id: int) -> int | None:
        """A connected node the map places `group_id` on, else any such node."""
        cluster_map = self._map.map
        if cluster_map is None:
            return None
        try:
            holders = [n for n in cluster_map.shard(group_id).replicas if n != self.node_id]
        except ClusterMapError:
            return None
        connected = [n for n in holders if self.peers.connected(n)]
        if connected:
            return connected[0]
        return holders[0] if holders else None

    def submit_read(self, key: bytes, *, stale: bool = False) -> asyncio.Future[ReadValue]:
        try:
            group_id = self.group_of([key])
        except ServiceError as error:
            return failed(error)
        replica = self.replicas.get(group_id)
        if replica is None:
            remote = self._forward_elsewhere(group_id, READ_MARKER + key)
            if remote.done():
                return remote
            read: asyncio.Future[ReadValue] = asyncio.get_running_loop().create_future()
            then(remote, read, convert=_as_read)
            return read
        if stale:
            self.stats["stale_reads"] += 1
            future: asyncio.Future[ReadValue] = asyncio.get_running_loop().create_future()
            future.set_result(replica.read_stale(key))
            return future
        if self.stopping:
            return failed(Unavailable("the node is shutting down; retry"))
        self.stats["reads"] += 1
        future = self._fenced_read(replica, key)
        self._wake()
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
            if current is None or self.stopping:
                fail_quietly(result, Unavailable(f"shard {group_id} is not served here any "
                                                 "more; retry"))
                return
            then(self._fenced_read(current, key, due), result)
            self._wake()

        def on_error(error: BaseException) -> bool:
            if not isinstance(error, ServiceError) or time.monotonic() >= due \
                    or self.stopping:
                return False
            self.stats["reads_retried"] += 1
            loop.call_later(self.config.tick_ms / 1000, again)
            return True

        fenced_store = self.fenced

        def fenced(value: ReadValue) -> ReadValue:
            if not fenced_store.in_range(replica.storage_id, key):
                raise Unavailable(f"the key moved out of shard {group_id} (split); retry")
            return value

        try:
            read = replica.read(key)
        except Busy as error:
            read = failed(error)
        then(read, result, on_error=on_error, convert=fenced)
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
        cluster_map = self._map.map
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
            result: tuple[bytes, list[bytes]] = self.store.scan(storage_id(shard_id), inner, count)
            return result
        answer = await self._forward_elsewhere(shard_id, SCAN_MARKER + msgpack.packb([inner, count]))
        if not (isinstance(answer, list) and len(answer) == 2 and isinstance(answer[0], bytes)):
            raise Unavailable(f"unexpected scan answer for shard {shard_id}; retry")
        return answer[0], [k for k in answer[1] if isinstance(k, bytes)]

    async def dbsize(self) -> int:
        """Keys of every shard of the map (each counted at one replica, local if possible)."""
        cluster_map = self._map.map
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
        found = self.store.get(storage_id(shard_id), RANGE_KEY)
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
        count: int = self.store.count(sid) - (self.fenced.range_of(sid) is not None)
        return count

    def on_forward_request(self, sender: int, request: ForwardRequest) -> None:
        replica = self.replicas.get(request.group_id)
        if replica is not None and request.command.startswith(b"\x00") and self._answer_local(
                sender, request, replica):
            return
        if replica is not None and request.command.startswith(READ_MARKER) and not self.stopping:
            read = self._fenced_read(replica, request.command[len(READ_MARKER):])
            self.forwarder.answer_when_done(sender, request.request_id, _as_result(read))
            self._wake()
            return
        if (replica is not None and replica.role is not Role.LEADER and not self.stopping
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
        if replica is None or replica.role is not Role.LEADER or self.stopping:
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
            answer: Result = self.store_get(META_GROUP_ID, MAP_KEY)
        elif command == COUNT_MARKER:
            answer = self._local_count(replica.group_id)
        elif command.startswith(SCAN_MARKER):
            try:
                inner, count = msgpack.unpackb(command[len(SCAN_MARKER):])
                next_inner, keys = self.store.scan(replica.storage_id, bytes(inner),
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


COUNT_MARKER = b"\x00count"
MAP_MARKER = b"\x00map"
"""A joining node asks a seed for the map it holds (to learn the nodes' addresses)."""
SCAN_MARKER = b"\x00scan:"
READ_MARKER = b"\x00read:"
"""Prefix of a forwarded linearizable read (never the start of a KV command,
which is a msgpack array)."""


def _retry_until(deadline: float | None, now: float | None = None) -> float:
    """Until when a write may wait and be tried again: its deadline if an
    earlier attempt set one, else `leaderless_wait_s` from now."""
    if deadline is not None:
        return deadline
    return (time.monotonic() if now is None else now) + limits.leaderless_wait_s


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
    then(read, result, convert=lambda value: None if value is None else [value[0], value[1]])
    return result


def _as_read(value: Any) -> ReadValue:
    """The inverse of `_as_result`, checking what another node sent."""
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], bytes):
        return value[0], int(value[1])
    raise Unavailable(f"unexpected forwarded read answer {value!r}; retry")




def refuse_bad_split(replica: Replica, command: bytes) -> ServiceError | None:
    """A split proposed on the leader must name exactly the group's voters
    (no move in progress), so the child starts on the right nodes."""
    if not command.startswith(SPLIT_PREFIX):
        return None
    split = decode_split(command)
    if split is None:
        return ServiceError("malformed split")
    conf = replica.core.status().conf
    if conf.learners or frozenset(split.voters) != conf.voters:
        return Unavailable(f"shard {replica.group_id} is changing membership; split "
                           "not executed, retry")
    return None
