"""Log compaction and chunked InstallSnapshot."""

from __future__ import annotations

import pytest

from ringbolt.consensus.log import Compacted
from ringbolt.consensus.messages import SnapshotChunk, SnapshotResponse
from ringbolt.consensus.progress import ProgressState
from ringbolt.consensus.types import ConfChange, ConfChangeKind
from tests.consensus.harness import Network


def _lagging_follower_cluster(chunk_bytes: int) -> Network:
    net = Network([1, 2, 3], snapshot_chunk_bytes_max=chunk_bytes)
    net.elect(1)
    net.isolate(3)
    net.propose(1, *[b"value-%03d" % i for i in range(100)])
    net.stabilize()
    net.tick(nodes=[1, 2])
    net.compact(1)
    net.compact(2)
    return net


def test_compact_drops_the_log_prefix() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a", b"b", b"c")
    net.stabilize()
    leader = net.nodes[1]
    index = net.compact(1)
    assert index == leader.log.applied == 4
    assert leader.log.first_index == 5
    assert leader.log.term(4) == leader.term
    assert leader.log.term(3) is None
    with pytest.raises(Compacted):
        leader.log.slice(3, 5, 100)
    snapshot = leader.log.snapshot
    assert snapshot is not None
    assert snapshot.meta.conf.voters == frozenset({1, 2, 3})


def test_lagging_follower_gets_snapshot_in_chunks() -> None:
    net = _lagging_follower_cluster(chunk_bytes=64)
    snapshot = net.nodes[1].log.snapshot
    assert snapshot is not None
    net.sent.clear()
    net.heal()
    net.tick(count=2)
    chunks = [m for m in net.sent if isinstance(m, SnapshotChunk)]
    assert len(snapshot.data) > 64 * 10
    assert all(len(c.data) <= 64 for c in chunks)
    assert sum(len(c.data) for c in chunks) == len(snapshot.data)
    assert [c.offset for c in chunks] == sorted(c.offset for c in chunks)
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert net.disks[3].snapshot is not None
    assert net.disks[3].snapshot.meta.index == snapshot.meta.index
    assert net.applied[3] == net.applied[1]
    net.propose(1, b"after")
    net.tick(count=2)
    assert net.applied[3][-1] == b"after"
    assert net.nodes[3].log.last_index == net.nodes[1].log.last_index


def test_follower_only_emits_snapshot_once_all_chunks_arrived() -> None:
    net = _lagging_follower_cluster(chunk_bytes=100)
    net.heal()
    follower = net.nodes[3]
    seen_chunks = 0
    for _ in range(200):
        net.drain()
        batch = [m for m in net.queue if isinstance(m, SnapshotChunk)]
        if batch and not batch[0].done:
            assert net.disks[3].snapshot is None
        seen_chunks += len(batch)
        net.deliver()
        net.nodes[1].tick()
        if net.disks[3].snapshot is not None:
            break
    assert seen_chunks > 3
    assert net.disks[3].snapshot is not None
    assert follower.log.committed >= net.disks[3].snapshot.meta.index


def test_lost_chunk_is_retransmitted() -> None:
    net = _lagging_follower_cluster(chunk_bytes=128)
    dropped: list[SnapshotChunk] = []

    def drop_second_chunk(m: object) -> object | None:
        if isinstance(m, SnapshotChunk) and m.offset == 128 and not dropped:
            dropped.append(m)
            return None
        return m

    net.transform = drop_second_chunk  # type: ignore[assignment]
    net.heal()
    net.tick(count=6)
    assert dropped
    assert net.applied[3] == net.applied[1]


def test_out_of_order_chunk_is_refused_and_transfer_restarts() -> None:
    net = _lagging_follower_cluster(chunk_bytes=128)
    follower = net.nodes[3]
    snapshot = net.nodes[1].log.snapshot
    assert snapshot is not None
    follower.step(
        SnapshotChunk(
            sender=1,
            recipient=3,
            term=net.nodes[1].term,
            meta=snapshot.meta,
            offset=256,
            total_bytes=len(snapshot.data),
            data=snapshot.data[256:384],
            done=False,
        )
    )
    (answer,) = follower.ready().messages
    assert isinstance(answer, SnapshotResponse)
    assert answer.reject and answer.offset == 0 and not answer.done


def test_snapshot_state_then_back_to_replicate() -> None:
    net = _lagging_follower_cluster(chunk_bytes=1 << 20)
    net.heal()
    net.nodes[1].tick()
    states = []
    for _ in range(10):  # the leader finds the follower behind its snapshot
        net.drain()
        during = net.nodes[1].progress(3)
        assert during is not None
        states.append(during.state)
        net.deliver()
    assert ProgressState.SNAPSHOT in states
    net.stabilize()
    net.propose(1, b"next")
    net.stabilize()
    after = net.nodes[1].progress(3)
    assert after is not None
    assert after.state == ProgressState.REPLICATE
    assert after.match == net.nodes[1].log.last_index


def test_restart_from_snapshot_and_suffix() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a", b"b")
    net.stabilize()
    net.tick()
    net.compact(2)
    net.propose(1, b"c")
    net.stabilize()
    net.tick()
    net.crash(2)
    restarted = net.restart(2)
    assert restarted.log.first_index == 4
    assert restarted.log.committed >= 4
    net.tick(count=2)
    assert net.applied[2] == [b"a", b"b", b"c"]


def test_snapshot_carries_membership_to_a_new_node() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, *[b"%d" % i for i in range(20)])
    net.stabilize()
    net.tick()
    net.compact(1)
    net.add_node(4, voters=frozenset())
    net.nodes[1].propose_conf_change(ConfChange(kind=ConfChangeKind.ADD_LEARNER, node_id=4))
    net.tick(count=3)
    assert net.nodes[4].conf.learners == frozenset({4})
    assert net.nodes[4].conf.voters == frozenset({1, 2, 3})
    assert net.applied[4] == net.applied[1]


def test_assembly_survives_duplicates_and_reordering() -> None:
    from ringbolt.consensus.snapshot_assembly import SnapshotAssembly
    from ringbolt.consensus.types import ConfState, SnapshotMeta

    meta = SnapshotMeta(index=9, term=2, conf=ConfState(voters=frozenset({1})))
    data = bytes(range(250))

    def chunk(offset: int, meta: SnapshotMeta = meta) -> SnapshotChunk:
        piece = data[offset : offset + 100]
        return SnapshotChunk(sender=1, recipient=2, term=2, meta=meta, offset=offset,
                             total_bytes=len(data), data=piece, done=offset + 100 >= len(data))

    assembly = SnapshotAssembly()
    assert assembly.receive(chunk(100)).reject  # nothing held yet: restart
    assert assembly.receive(chunk(0)).offset == 100
    assert assembly.receive(chunk(0)).offset == 100  # a duplicate of the first chunk
    assert assembly.receive(chunk(200)).offset == 100  # arrived early: refused
    assert assembly.receive(chunk(100)).offset == 200
    answer = assembly.receive(chunk(200))
    assert answer.snapshot is not None
    assert answer.snapshot.data == data and answer.snapshot.meta == meta
    assert assembly.held_bytes == 0
    newer = SnapshotMeta(index=12, term=2, conf=meta.conf)
    assembly.receive(chunk(0))
    assert assembly.receive(chunk(0, newer)).offset == 100  # a newer snapshot starts over
    assert assembly.receive(chunk(100)).reject  # chunks of the old one are refused


def test_driver_ahead_of_the_core_after_restart_may_compact() -> None:
    """A restarted core re-offers committed entries the driver's store already
    applied; the driver may compact at its own applied index at once."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a", b"b", b"c")
    net.stabilize()
    net.tick()
    net.crash(2)
    restarted = net.restart(2)
    assert restarted.log.applied == 0 and restarted.log.committed == 4
    restarted.compact(4, b"image")
    assert restarted.log.first_index == 5
    ready = restarted.ready()
    assert ready.committed_entries == []  # nothing below the driver's own snapshot
