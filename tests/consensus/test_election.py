"""Leader election: randomized timeouts, PreVote, CheckQuorum, restarts."""

from __future__ import annotations

import random

import pytest

from ringbolt.consensus.messages import VoteRequest
from ringbolt.consensus.raft import Raft, RaftConfig
from ringbolt.consensus.types import NotLeader, Role
from tests.consensus.harness import Network


def test_single_node_elects_itself_and_commits() -> None:
    net = Network([1])
    leader = net.elect(1)
    assert leader.term == 1
    term, index = leader.propose(b"x")
    net.stabilize()
    assert (term, index) == (1, 2)
    assert net.applied[1] == [b"x"]


def test_three_nodes_elect_exactly_one_leader_and_all_learn_it() -> None:
    net = Network([1, 2, 3])
    net.elect(2)
    assert net.leaders() == [2]
    for node in (1, 3):
        assert net.nodes[node].leader == 2
        assert net.nodes[node].term == net.nodes[2].term


def test_election_timeouts_are_randomized_in_t_to_2t() -> None:
    seen = set()
    for seed in range(40):
        raft = Raft(
            RaftConfig(node_id=1, voters=frozenset({1, 2, 3}), pre_vote=False),
            random.Random(seed),
        )
        ticks = 0
        while raft.role == Role.FOLLOWER:
            raft.tick()
            ticks += 1
            assert ticks < 20
        seen.add(ticks)
    assert min(seen) >= 10
    assert max(seen) <= 19
    assert len(seen) > 3


def test_ticking_all_nodes_converges_to_one_leader() -> None:
    net = Network([1, 2, 3, 4, 5], seed=7)
    for _ in range(60):
        net.tick()
        if net.leaders():
            break
    assert len(net.leaders()) == 1


def test_prevote_keeps_partitioned_node_from_inflating_terms() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    term = net.nodes[1].term
    net.isolate(3)
    net.tick(count=100)
    assert net.nodes[3].term == term  # pre-votes never reached a quorum
    assert net.nodes[3].role == Role.PRE_CANDIDATE
    net.heal()
    net.tick(count=3)
    assert net.leaders() == [1]
    assert net.nodes[1].term == term  # rejoining did not disrupt the leader


def test_without_prevote_a_partitioned_node_inflates_terms_and_disrupts() -> None:
    net = Network([1, 2, 3], pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net.nodes[1].term
    net.isolate(3)
    net.tick(count=100)
    assert net.nodes[3].term > term + 3
    net.heal()
    net.tick(count=25)
    assert net.nodes[1].term > term  # the old leader was deposed by the higher term


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.tick(nodes=[1], count=net.nodes[1].config.election_timeout_ticks * 2)
    assert net.nodes[1].role == Role.FOLLOWER
    with pytest.raises(NotLeader):
        net.nodes[1].propose(b"x")


def test_without_check_quorum_an_isolated_leader_keeps_leading() -> None:
    net = Network([1, 2, 3], check_quorum=False)
    net.elect(1)
    net.isolate(1)
    net.tick(nodes=[1], count=50)
    assert net.nodes[1].role == Role.LEADER


def test_vote_refused_while_leader_lease_holds() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    follower = net.nodes[2]
    term = follower.term
    follower.step(
        VoteRequest(sender=3, recipient=2, term=term + 1, last_log_index=99, last_log_term=term)
    )
    assert follower.term == term  # ignored: we heard from the leader recently
    assert not follower.has_ready()


def test_candidate_with_stale_log_loses() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"a", b"b")
    net.stabilize()
    net.heal()
    net.isolate(1)  # leader gone; 3 is behind, 2 is up to date
    net.campaign(3)
    assert net.nodes[3].role != Role.LEADER
    net.campaign(2)
    assert net.nodes[2].role == Role.LEADER


def test_restart_from_persistent_state_keeps_term_vote_and_log() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a", b"b", b"c")
    net.stabilize()
    net.tick()
    before = net.nodes[2].status()
    net.crash(2)
    restarted = net.restart(2)
    after = restarted.status()
    assert (after.term, after.last_index) == (before.term, before.last_index)
    assert restarted.vote == 1
    assert after.commit == before.commit
    net.tick(count=2)
    assert net.applied[2] == [b"a", b"b", b"c"]  # re-applied from the log after restart
    net.crash(1)
    net.tick(count=40)
    assert len(net.leaders()) == 1
    assert net.nodes[net.leaders()[0]].term > before.term


def test_node_without_configuration_never_campaigns() -> None:
    raft = Raft(RaftConfig(node_id=4, voters=frozenset()), random.Random(1))
    for _ in range(100):
        raft.tick()
    assert raft.role == Role.FOLLOWER
    assert raft.term == 0
    assert not raft.ready().messages


def test_mutation_vote_without_log_check_elects_a_stale_candidate() -> None:
    def stale_candidate_wins(unsafe: frozenset[str]) -> bool:
        net = Network([1, 2, 3], unsafe=unsafe)
        net.elect(1)
        net.isolate(3)
        net.propose(1, b"committed")
        net.stabilize()
        net.heal()
        net.isolate(1)
        net.tick(nodes=[2], count=10)  # let node 2's leader lease lapse
        net.campaign(3)
        return net.nodes[3].role == Role.LEADER

    assert not stale_candidate_wins(frozenset())
    assert stale_candidate_wins(frozenset({"vote_without_log_check"}))


@pytest.mark.parametrize(
    "overrides",
    [
        {"unsafe": frozenset({"no_such_mutation"})},
        {"read_mode": "lease-without-check-quorum"},
        {"heartbeat_ticks": 10, "election_timeout_ticks": 10},
        {"inflight_msgs_max": 0},
    ],
)
def test_invalid_config_is_a_bug(overrides: dict[str, object]) -> None:
    from ringbolt.consensus.raft import ReadMode

    if overrides.get("read_mode") == "lease-without-check-quorum":
        overrides = {"read_mode": ReadMode.LEASE, "check_quorum": False}
    with pytest.raises(AssertionError):
        RaftConfig(node_id=1, voters=frozenset({1}), **overrides)  # type: ignore[arg-type]


def test_raft_is_a_consensus_core_and_idle_nodes_have_nothing_ready() -> None:
    from ringbolt.consensus.types import ConsensusCore

    raft = Raft(RaftConfig(node_id=1, voters=frozenset({1, 2, 3})), random.Random(3))
    assert isinstance(raft, ConsensusCore)
    assert not raft.has_ready()
    net = Network([1, 2, 3])
    net.elect(1)
    net.tick()
    assert not any(net.nodes[n].has_ready() for n in net.ids)
    stats = net.nodes[1].statistics()
    assert stats["leaderships"] == 1 and stats["commit"] == 1 and stats["reads_pending"] == 0


def test_soft_state_reports_leader_changes_once() -> None:
    from ringbolt.consensus.messages import Heartbeat
    from ringbolt.consensus.types import SoftState

    raft = Raft(RaftConfig(node_id=2, voters=frozenset({1, 2, 3})), random.Random(3))
    raft.step(Heartbeat(sender=1, recipient=2, term=4, commit=0))
    first = raft.ready()
    assert first.soft_state == SoftState(leader=1, role=Role.FOLLOWER, term=4)
    raft.advance(first)
    raft.step(Heartbeat(sender=1, recipient=2, term=4, commit=0))
    again = raft.ready()
    assert again.soft_state is None
    assert again.hard_state is None
