"""Linearizable reads: ReadIndex (safe) and leader leases."""

from __future__ import annotations

import pytest

from ringbolt.consensus import limits
from ringbolt.consensus.messages import AppendResponse, Heartbeat
from ringbolt.consensus.raft import ReadMode
from ringbolt.consensus.types import NotLeader, ReadState, Role
from tests.consensus.harness import Network


def _cluster(**config: object) -> Network:
    net = Network([1, 2, 3], **config)
    net.elect(1)
    net.propose(1, b"a", b"b")
    net.stabilize()
    net.tick()
    return net


def test_leader_read_waits_for_a_heartbeat_round() -> None:
    net = _cluster()
    leader = net.nodes[1]
    leader.read_index(b"r1")
    assert net.drain()
    assert net.read_states[1] == []  # not before a quorum confirmed leadership
    net.stabilize()
    assert net.read_states[1] == [ReadState(index=leader.log.committed, context=b"r1")]


def test_many_reads_share_one_round() -> None:
    net = _cluster()
    leader = net.nodes[1]
    rounds = leader.statistics()["read_rounds"]
    net.sent.clear()
    for i in range(100):
        leader.read_index(b"%d" % i)
    net.stabilize()
    assert [r.context for r in net.read_states[1]] == [b"%d" % i for i in range(100)]
    assert leader.statistics()["read_rounds"] - rounds == 1
    assert len([m for m in net.sent if isinstance(m, Heartbeat)]) == 2


def test_reads_arriving_during_a_round_join_the_next_one() -> None:
    net = _cluster()
    leader = net.nodes[1]
    leader.read_index(b"first")
    net.drain()  # round 1 heartbeats are out
    leader.read_index(b"second")
    leader.read_index(b"third")
    net.stabilize()
    assert [r.context for r in net.read_states[1]] == [b"first", b"second", b"third"]
    assert leader.statistics()["read_rounds"] == 2


def test_follower_read_is_forwarded_to_the_leader() -> None:
    net = _cluster()
    net.nodes[3].read_index(b"f")
    net.stabilize()
    assert net.read_states[3] == [ReadState(index=net.nodes[1].log.committed, context=b"f")]


def test_follower_without_leader_raises_not_leader_zero() -> None:
    net = Network([1, 2, 3])
    with pytest.raises(NotLeader) as info:
        net.nodes[2].read_index(b"x")
    assert info.value.leader_hint == 0


def test_new_leader_serves_reads_only_after_committing_in_its_term() -> None:
    net = _cluster()
    net.isolate(1)
    net.tick(nodes=[2, 3], count=30)
    (leader_id,) = [n for n in net.leaders() if n != 1]
    net.heal()
    net.isolate(1)
    leader = net.nodes[leader_id]
    assert leader.log.term(leader.log.committed) == leader.term
    # Now a fresh leader whose NOOP cannot commit yet:
    net.transform = lambda m: None if isinstance(m, AppendResponse) else m
    other = 5 - leader_id
    leader.transfer_leadership(other)
    net.stabilize()
    fresh = net.nodes[other]
    assert fresh.role == Role.LEADER
    assert fresh.log.term(fresh.log.committed) != fresh.term
    fresh.read_index(b"early")
    net.tick(nodes=[2, 3], count=2)
    assert net.read_states[other] == []
    net.transform = None
    net.tick(nodes=[2, 3], count=2)
    assert [r.context for r in net.read_states[other]] == [b"early"]
    assert net.read_states[other][0].index == fresh.log.committed


def test_deposed_leader_cannot_serve_a_read() -> None:
    net = _cluster(check_quorum=False)
    old = net.nodes[1]
    net.isolate(1)
    net.tick(nodes=[2, 3], count=30)
    (new_id,) = [n for n in net.leaders() if n != 1]
    net.propose(new_id, b"newer")
    net.stabilize()
    old.read_index(b"stale?")
    net.tick(nodes=[1], count=10)
    assert old.role == Role.LEADER  # it still believes it leads...
    assert net.read_states[1] == []  # ...but cannot confirm it, so it serves nothing


def test_mutation_read_without_read_index_serves_stale_data() -> None:
    net = _cluster(check_quorum=False, unsafe=frozenset({"read_without_read_index"}))
    old = net.nodes[1]
    net.isolate(1)
    net.tick(nodes=[2, 3], count=30)
    (new_id,) = [n for n in net.leaders() if n != 1]
    net.propose(new_id, b"newer")
    net.stabilize()
    old.read_index(b"stale")
    net.stabilize()
    (state,) = net.read_states[1]
    assert state.index < net.nodes[new_id].log.committed  # a stale read


def test_lease_read_is_local_while_the_lease_holds() -> None:
    net = _cluster(read_mode=ReadMode.LEASE)
    leader = net.nodes[1]
    net.tick()  # a heartbeat round acknowledged by everyone: the lease starts
    leader.read_index(b"lease")
    ready = leader.ready()
    assert ready.read_states == [ReadState(index=leader.log.committed, context=b"lease")]
    assert not [m for m in ready.messages if isinstance(m, Heartbeat)]
    leader.advance(ready)


def test_lease_expires_before_followers_may_elect_another_leader() -> None:
    net = _cluster(read_mode=ReadMode.LEASE)
    leader = net.nodes[1]
    net.tick()
    net.isolate(1)
    timeout = leader.config.election_timeout_ticks
    lease_ticks = timeout - limits.lease_clock_drift_ticks
    valid = []
    for _ in range(timeout):
        assert leader.leader_role is not None
        valid.append(leader.leader_role.lease_valid())
        leader.tick()
        net.stabilize()
    assert valid == [True] * lease_ticks + [False] * (timeout - lease_ticks)
    leader.read_index(b"x")
    net.stabilize()
    assert net.read_states[1] == []  # falls back to ReadIndex, which cannot complete


def test_no_lease_reads_during_a_leadership_transfer() -> None:
    net = _cluster(read_mode=ReadMode.LEASE)
    leader = net.nodes[1]
    net.tick()
    net.cut.add((1, 2))  # keep the transfer pending
    leader.transfer_leadership(2)
    assert leader.leader_role is not None
    assert not leader.leader_role.lease_valid()


def test_reads_are_dropped_when_leadership_is_lost() -> None:
    net = _cluster()
    leader = net.nodes[1]
    net.isolate(1)
    leader.read_index(b"lost")
    net.tick(nodes=[1], count=2 * leader.config.election_timeout_ticks)
    assert leader.role == Role.FOLLOWER
    assert leader.statistics().get("reads_pending") is None
    assert net.read_states[1] == []


def test_no_lease_reads_for_the_rest_of_a_term_after_timeout_now() -> None:
    net = _cluster(read_mode=ReadMode.LEASE)
    leader = net.nodes[1]
    net.tick()
    net.cut.add((1, 2))  # the TimeoutNow is lost (or just very late)
    net.cut.add((2, 1))
    leader.transfer_leadership(2)
    net.stabilize()
    net.tick(nodes=[1, 3], count=leader.config.election_timeout_ticks)  # transfer aborted
    assert leader.role == Role.LEADER
    assert leader.leader_role is not None
    assert leader.leader_role.transferee == 0
    assert not leader.leader_role.lease_valid()


def test_restarted_voter_refuses_votes_for_a_timeout_in_lease_mode() -> None:
    net = _cluster(read_mode=ReadMode.LEASE)
    net.tick()
    net.crash(3)
    restarted = net.restart(3)
    term = restarted.term
    from ringbolt.consensus.messages import VoteRequest, VoteResponse

    request = VoteRequest(sender=2, recipient=3, term=term + 1, last_log_index=99,
                          last_log_term=term, pre_vote=True)
    restarted.step(request)
    assert not restarted.ready().messages  # ignored: it may be part of a lease quorum
    for _ in range(restarted.config.election_timeout_ticks):
        restarted.tick()
    restarted.ready()
    restarted.step(request)
    answers = [m for m in restarted.ready().messages if isinstance(m, VoteResponse)]
    assert [a.granted for a in answers] == [True]
