"""Reads whose ReadIndex request is lost are failed at once and issued again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ringbolt.consensus.messages import AppendRequest, ReadIndexRequest
from ringbolt.server.config import parse_config
from ringbolt.server.node import Node
from ringbolt.server.service import Unavailable


def node(tmp_path: Path) -> Node:
    return Node(parse_config({
        "node_id": 1, "client_address": "127.0.0.1:1", "peer_address": "127.0.0.1:2",
        "data_dir": str(tmp_path), "tick_ms": 1,
        "peers": {"2": {"address": "127.0.0.1:3"}, "3": {"address": "127.0.0.1:4"}}}))


class DeadLinks:
    """A transport whose links to every peer are down."""

    def send_raft(self, peer: int, group: int, payload: bytes) -> bool:
        return False

    def connected(self, peer: int) -> bool:
        return False


class WaitingReads:
    """A replica with reads waiting for a ReadIndex answer."""

    group_id = 0
    storage_id = 1
    leader = 2

    def __init__(self) -> None:
        self.failed = 0
        self.attempts = 0

    def fail_waiting_reads(self) -> None:
        self.failed += 1

    def read(self, key: bytes) -> asyncio.Future[Any]:
        self.attempts += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.attempts == 1:  # the first round's ReadIndex request was dropped
            future.set_exception(Unavailable("shard 0: the leader changed during the read"))
        else:
            future.set_result((b"value", 0))
        return future


class Everywhere:
    def in_range(self, storage_id: int, key: bytes) -> bool:
        return True


def test_a_dropped_read_index_request_fails_the_waiting_reads(tmp_path: Path) -> None:
    subject = node(tmp_path)
    replica = WaitingReads()
    subject.driver.links = DeadLinks()  # type: ignore[assignment]
    subject.registry.hosted[0] = replica  # type: ignore[assignment]
    subject.driver.send(0, AppendRequest(sender=1, recipient=2, term=1, prev_log_index=0,
                                   prev_log_term=0, commit=0))
    assert replica.failed == 0  # Raft retransmits appends; reads are not concerned
    subject.driver.send(0, ReadIndexRequest(sender=1, recipient=2, term=1, context=b"c"))
    assert replica.failed == 1
    subject.on_peer_lost(3)  # not the leader: nothing to fail
    assert replica.failed == 1
    subject.on_peer_lost(2)  # the link to the leader closed
    assert replica.failed == 2


def test_a_failed_read_is_issued_again_and_answers(tmp_path: Path) -> None:
    subject = node(tmp_path)
    replica = WaitingReads()
    subject.registry.hosted[0] = replica  # type: ignore[assignment]
    subject.requests._fenced = Everywhere()  # type: ignore[assignment]

    async def scenario() -> Any:
        return await asyncio.wait_for(
            subject.requests._fenced_read(replica, b"key"), 2.0)  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == (b"value", 0)
    assert replica.attempts == 2 and subject.requests.stats["reads_retried"] == 1
