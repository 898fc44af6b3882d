"""Log replication: batching, the in-flight window, backtracking, Figure 8."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ringbolt.consensus.messages import AppendRequest, AppendResponse, Message
from ringbolt.consensus.progress import ProgressState
from ringbolt.consensus.types import Entry, EntryKind, NotLeader, ProposalDropped, Role
from tests.consensus.harness import Network, entry_terms


def test_new_leader_appends_a_noop_of_its_term() -> None:
    net = Network([1, 2, 3])
    leader = net.elect(1)
    first = leader.log.entries[0]
    assert (first.kind, first.term, first.index) == (EntryKind.NOOP, leader.term, 1)
    assert leader.log.committed == 1


def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    with pytest.raises(NotLeader) as info:
        net.nodes[2].propose(b"x")
    assert info.value.leader_hint == 1


def test_many_proposals_travel_in_one_append_per_follower() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.sent.clear()
    net.propose(1, *[b"v%d" % i for i in range(100)])
    net.stabilize()
    appends = [m for m in net.sent if isinstance(m, AppendRequest) and m.entries]
    assert len(appends) == 2
    assert all(len(m.entries) == 100 for m in appends)
    net.tick()
    for node in (1, 2, 3):
        assert net.applied[node] == [b"v%d" % i for i in range(100)]


def test_batches_respect_entries_and_bytes_limits() -> None:
    net = Network([1, 2], entries_per_msg_max=7, bytes_per_msg_max=50)
    net.elect(1)
    net.sent.clear()
    net.propose(1, *[b"x" * 10 for _ in range(30)])
    net.stabilize()
    appends = [m for m in net.sent if isinstance(m, AppendRequest) and m.entries]
    assert sum(len(m.entries) for m in appends) == 30
    assert max(len(m.entries) for m in appends) == 5  # 5 * 10 bytes = 50
    oversized = b"y" * 80
    net.propose(1, oversized)  # alone larger than the byte limit: still sent, alone
    net.stabilize()
    assert net.nodes[2].log.entry(net.nodes[1].log.last_index).data == oversized


def test_pipelining_stops_at_the_inflight_window() -> None:
    net = Network([1, 2], entries_per_msg_max=2, inflight_msgs_max=3)
    net.elect(1)
    net.tick()
    net.sent.clear()
    net.cut.add((2, 1))  # the follower's acknowledgements are lost
    net.propose(1, *[b"%d" % i for i in range(20)])
    net.drain()
    appends = [m for m in net.sent if isinstance(m, AppendRequest) and m.entries]
    assert len(appends) == 3  # 3 messages in flight, then the leader waits
    status = net.nodes[1].progress(2)
    assert status is not None
    assert status.state == ProgressState.REPLICATE
    assert status.inflight_msgs == 3
    net.heal()
    net.stabilize()
    net.tick()
    assert net.nodes[2].log.last_index == net.nodes[1].log.last_index


def test_lost_append_recovers_through_probe() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.cut.add((1, 3))
    net.propose(1, b"a", b"b")
    net.stabilize()
    net.heal()
    net.propose(1, b"c")
    net.stabilize()
    net.tick(count=3)
    assert net.applied[3] == [b"a", b"b", b"c"]


def test_conflicting_suffix_is_replaced_with_few_round_trips() -> None:
    """A follower with a long divergent suffix from old terms converges with a
    number of rejections proportional to terms, not entries."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.propose(1, *[b"old%d" % i for i in range(50)])  # never committed
    net.stabilize()
    net.heal()
    net.isolate(1)
    net.tick(nodes=[2, 3], count=30)  # 2 or 3 leads without node 1
    (new_leader,) = [n for n in net.leaders() if n != 1]
    net.propose(new_leader, *[b"new%d" % i for i in range(50)])
    net.stabilize()
    other = 5 - new_leader  # hand over so the next leader probes node 1 at its end
    net.nodes[new_leader].transfer_leadership(other)
    net.stabilize()
    assert net.nodes[other].role == Role.LEADER
    new_leader = other
    net.sent.clear()
    net.heal()
    net.tick(count=3)
    rejections = [m for m in net.sent if isinstance(m, AppendResponse) and m.reject]
    assert 1 <= len(rejections) <= 3
    assert net.nodes[1].role == Role.FOLLOWER
    assert net.applied[1] == [b"new%d" % i for i in range(50)]
    assert entry_terms(net.nodes[1]) == entry_terms(net.nodes[new_leader])


def test_follower_rejects_gap_and_hints_its_last_index() -> None:
    net = Network([1, 2])
    leader = net.elect(1)
    follower = net.nodes[2]
    term = leader.term
    follower.step(
        AppendRequest(
            sender=1,
            recipient=2,
            term=term,
            prev_log_index=10,
            prev_log_term=term,
            commit=1,
            entries=[Entry(term=term, index=11)],
        )
    )
    (response,) = follower.ready().messages
    assert isinstance(response, AppendResponse)
    assert response.reject
    assert (response.index, response.hint_index, response.hint_term) == (10, 1, term)


def _figure8(**config: object) -> tuple[Network, int]:
    """Raft paper Figure 8, steps (a)-(c), with one entry per message.

    (a) S1 leads term 1 and replicates index 2 only to S2. (b) S1 crashes; S5
    leads term 2 and appends index 2 only locally. (c) S5 crashes; S1 restarts,
    leads term 3 and replicates its term-1 entry at index 2 to a majority, but
    none of its own term-3 entries (they are stripped in flight)."""
    net = Network([1, 2, 3, 4, 5], pre_vote=False, check_quorum=False, entries_per_msg_max=1, **config)
    net.elect(1)
    net.tick(count=1)
    net.partition([1, 2], [3, 4, 5])
    net.propose(1, b"t1")
    net.stabilize()
    net.heal()
    net.crash(1)
    net.transform = lambda m: None if isinstance(m, AppendRequest) and m.sender == 5 else m
    net.isolate(2)
    net.elect(5)
    assert net.nodes[5].log.term(2) == 2
    net.crash(5)
    net.heal()
    term = 3

    def strip_current_term(m: Message) -> Message:
        if isinstance(m, AppendRequest):
            return replace(m, entries=[e for e in m.entries if e.term < term])
        return m

    net.transform = strip_current_term
    net.restart(1)
    net.campaign(1)  # term 2 is lost: S3 and S4 voted for S5 in it
    while net.nodes[1].term < term:
        net.nodes[1].tick()
    net.stabilize()
    assert net.nodes[1].role == Role.LEADER
    net.tick(nodes=[1, 2, 3, 4], count=4)
    replicas = [n for n in net.ids if net.nodes[n].log.term(2) == 1]
    assert len(replicas) >= 3
    return net, term


def test_figure8_leader_never_commits_old_term_entries_by_counting() -> None:
    net, term = _figure8()
    leader = net.nodes[1]
    assert leader.role == Role.LEADER
    assert leader.log.committed == 1  # a majority holds index 2, yet it is not committed
    net.transform = None
    net.tick(nodes=[1, 2, 3, 4], count=3)
    assert leader.log.committed >= 3  # committed along with the NOOP of term 3
    assert net.applied[1] == [b"t1"]


def test_figure8_mutation_commits_by_counting_old_terms() -> None:
    net, _ = _figure8(unsafe=frozenset({"commit_old_terms"}))
    assert net.nodes[1].log.committed == 2  # the unsafe rule commits index 2 here


def test_uncommitted_entries_are_bounded() -> None:
    from ringbolt.consensus import limits

    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    leader = net.nodes[1]
    with pytest.raises(ProposalDropped):
        for _ in range(limits.uncommitted_entries_max + 1):
            leader.propose(b"")
    assert leader.log.last_index - leader.log.committed == limits.uncommitted_entries_max


def test_proposed_entries_are_ordinary_entries() -> None:
    net = Network([1])
    leader = net.elect(1)
    term, index = leader.propose(b"payload")
    entry = leader.log.entry(index)
    assert entry == Entry(term=term, index=index, kind=EntryKind.NORMAL, data=b"payload")
    assert hash(entry) == hash(Entry(term=term, index=index, data=b"payload"))
    with pytest.raises(AttributeError):
        entry.term = 9  # type: ignore[misc]


def test_followers_learn_the_commit_index_with_the_next_append_or_heartbeat() -> None:
    """No message is sent only to carry a new commit index (two sends and two
    answers per write at low load): it rides on the next AppendEntries, or on
    the next heartbeat when the leader is idle."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    net.sent.clear()
    net.stabilize()
    assert net.applied[1] == [b"a"]
    assert net.applied[2] == [] and net.applied[3] == []
    assert all(isinstance(m, (AppendRequest, AppendResponse)) for m in net.sent), net.sent
    net.propose(1, b"b")
    net.stabilize()
    assert net.applied[2] == [b"a"]  # carried by the AppendEntries of b
    net.tick(count=net.nodes[1].config.heartbeat_ticks)
    assert net.applied[2] == [b"a", b"b"] and net.applied[3] == [b"a", b"b"]
