"""Sending AppendEntries before the leader's own fsync: the core must not count
the leader's unsynced log toward a commit, and the replica hands out only the
leader's appends/heartbeats of a term it already made durable."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from ringbolt.consensus.messages import AppendRequest, AppendResponse
from ringbolt.consensus.raft import Raft, RaftConfig
from ringbolt.consensus.types import Entry, Ready, Role
from ringbolt.kv import commands
from ringbolt.kv.machine import DictBackend, Result, apply_command
from ringbolt.server.replica import Replica

VOTERS = frozenset({1, 2, 3})


class Store:
    def __init__(self) -> None:
        self.backend = DictBackend()
        self.applied = 0

    def apply(self, group_id: int, entries: list[Entry]) -> list[Result]:
        self.applied = entries[-1].index
        return [apply_command(self.backend, e.data) for e in entries]

    def applied_index(self, group_id: int) -> int:
        return self.applied

    def get(self, group_id: int, key: bytes) -> tuple[bytes, int] | None:
        return self.backend.get(key)

    def count(self, group_id: int) -> int:
        return len(self.backend.data)

    def snapshot_bytes(self, group_id: int) -> bytes:
        return b""

    def checkpoint(self, group_id: int) -> tuple[int, int]:
        return self.applied, 1

    def install_snapshot(self, group_id: int, snapshot: Any) -> None:
        raise AssertionError("no snapshots here")


class Log:
    def append(self, group_id: int, *, entries: list[Entry], hard_state: Any,
               snapshot_meta: Any) -> None:
        pass

    def compact(self, group_id: int, index: int) -> None:
        pass


def cluster() -> dict[int, Raft]:
    return {n: Raft(RaftConfig(node_id=n, voters=VOTERS), random.Random(n)) for n in VOTERS}


def settle(nodes: dict[int, Raft], rounds_max: int = 200) -> None:
    """Persist, deliver and advance every Ready until nothing is left (bounded)."""
    for _ in range(rounds_max):
        busy = False
        for core in nodes.values():
            if not core.has_ready():
                continue
            busy = True
            ready = core.ready()
            for message in ready.messages:
                nodes[message.recipient].step(message)  # type: ignore[attr-defined]
            core.advance(ready)
        if not busy:
            return
    raise AssertionError("the cluster did not settle")


def elect(nodes: dict[int, Raft]) -> Raft:
    for _ in range(500):
        nodes[1].tick()
        settle(nodes)
        if nodes[1].status().role is Role.LEADER:
            return nodes[1]
    raise AssertionError("node 1 never became leader")


def test_an_acknowledgement_before_the_leaders_fsync_does_not_commit() -> None:
    nodes = cluster()
    leader = elect(nodes)
    committed = leader.status().commit
    _, index = leader.propose(commands.put(b"k", b"v"))
    ready = leader.ready()
    assert [e.index for e in ready.entries] == [index]
    appends = [m for m in ready.messages if isinstance(m, AppendRequest)]
    assert {m.recipient for m in appends} == {2, 3}
    follower = nodes[2]  # one follower persists and answers before the leader's fsync
    follower.step(next(m for m in appends if m.recipient == 2))
    answer = follower.ready()
    follower.advance(answer)
    for message in answer.messages:
        assert isinstance(message, AppendResponse)
        leader.step(message)
    assert leader.status().commit == committed, "committed on one durable copy"
    leader.advance(ready)  # the leader's own fsync completed
    assert leader.status().commit == index
    assert leader.has_ready()
    told = leader.ready()
    assert told.committed_entries[-1].index == index  # the leader applies it now
    leader.advance(told)
    for _ in range(leader.config.heartbeat_ticks):  # followers learn it with the next heartbeat
        leader.tick()
    beat = leader.ready()
    assert any(getattr(m, "commit", 0) == index for m in beat.messages)


def test_a_fresh_leader_waits_for_its_first_sync() -> None:
    async def scenario() -> None:
        nodes = cluster()
        leader = elect(nodes)
        replica = Replica(0, leader, Log(), Store(), clock=lambda: 0.0)  # type: ignore[arg-type]
        replica.role, replica.term = Role.LEADER, leader.status().term
        leader.propose(commands.put(b"k", b"v"))
        ready: Ready | None = replica.take_ready()
        assert ready is not None
        replica.persist(ready)
        assert replica.take_early_messages(ready) == []  # no synced round in this term yet
        replica.apply(ready)
        leader.propose(commands.put(b"k", b"w"))
        second = replica.take_ready()
        assert second is not None
        replica.persist(second)
        assert replica.take_early_messages(second)

    asyncio.run(scenario())
