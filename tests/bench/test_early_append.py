"""Sending AppendEntries before the leader's own fsync: the core must not count
the leader's unsynced log toward a commit, and the node's round driver sends
the core's early messages before its fsync (which messages are early is the
core's rule: tests/consensus/test_early_send.py)."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

from ringbolt.consensus.messages import AppendRequest, AppendResponse
from ringbolt.consensus.raft import Raft, RaftConfig
from ringbolt.consensus.types import Entry, Ready, Role
from ringbolt.kv import commands
from ringbolt.kv.machine import DictBackend, Result, apply_command
from ringbolt.server.rounds import RoundDriver

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


def test_the_round_driver_sends_early_messages_before_its_sync_and_the_rest_after() -> None:
    """The server's half of the contract: `Ready.early_messages` (the core's
    choice) leave before the round's fdatasync, `Ready.messages` after it."""
    events: list[str] = []

    class Links:
        def send_raft(self, peer: int, group_id: int, payload: bytes) -> bool:
            events.append(f"send {payload.decode()}")
            return True

        def flush(self) -> None:
            events.append("flush")

    class Codec:
        def encode(self, message: object) -> bytes:
            return str(getattr(message, "name", "")).encode()

        def is_read_request(self, message: object) -> bool:
            return False

    class Committer:
        sync_seconds = 0.0

        def sync_inline(self) -> bool:
            events.append("fsync")
            return True

    class Message:
        def __init__(self, name: str) -> None:
            self.name, self.recipient = name, 2

    ready = Ready(entries=[Entry(index=1, term=1, data=b"")],
                  early_messages=[Message("append")], messages=[Message("vote")])

    class OneReplica:
        group_id = 0
        core = SimpleNamespace(has_ready=lambda: False)

        def __init__(self) -> None:
            self.taken = False

        def issue_reads(self) -> None:
            pass

        def take_ready(self) -> Ready | None:
            if self.taken:
                return None
            self.taken = True
            return ready

        def persist(self, ready: Ready) -> None:
            events.append("persist")

        def apply(self, ready: Ready, *, durable_only: bool = False) -> None:
            events.append("apply (durable only)" if durable_only else "apply")

        def advance(self, ready: Ready) -> None:
            events.append("advance")

    registry: Any = SimpleNamespace(hosted={0: OneReplica()}, work=asyncio.Event())
    driver = RoundDriver(1, registry, Links(), Codec(), fsync=True,  # type: ignore[arg-type]
                         on_failure=lambda error: None)
    driver.attach(Committer())  # type: ignore[arg-type]
    prepared = driver.prepare()
    assert prepared is not None
    readies, syncing = prepared
    assert syncing is None  # synced inline
    driver.complete(readies)
    assert events == ["persist", "send append", "flush", "fsync", "apply (durable only)",
                      "send vote", "flush", "apply", "advance"]
    assert driver.stats["messages_early"] == 1 and driver.stats["fsyncs_inline"] == 1
