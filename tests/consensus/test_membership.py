"""Membership changes, one server at a time."""

from __future__ import annotations

import pytest

from ringbolt.consensus.codec import decode_conf_change
from ringbolt.consensus.messages import AppendRequest
from ringbolt.consensus.types import (
    ConfChange,
    ConfChangeKind,
    EntryKind,
    NotLeader,
    ProposalDropped,
    Role,
)
from tests.consensus.harness import Network


def _change(kind: ConfChangeKind, node: int) -> ConfChange:
    return ConfChange(kind=kind, node_id=node)


def test_add_learner_then_promote_once_caught_up() -> None:
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.propose(1, *[b"%d" % i for i in range(30)])
    net.stabilize()
    net.add_node(4, voters=frozenset())
    term, index = leader.propose_conf_change(_change(ConfChangeKind.ADD_LEARNER, 4))
    assert leader.conf.learners == frozenset({4})  # in effect when appended
    entry = leader.log.entry(index)
    assert entry.kind == EntryKind.CONFIG
    assert decode_conf_change(entry.data) == _change(ConfChangeKind.ADD_LEARNER, 4)
    net.tick(count=3)
    learner = net.nodes[4]
    assert learner.status().role == Role.LEARNER
    assert net.applied[4] == net.applied[1]
    status = leader.progress(4)
    assert status is not None and status.learner
    assert status.match == leader.log.last_index  # the driver's cue to promote
    # a learner never campaigns and its acknowledgements do not count
    for _ in range(50):
        learner.tick()
    assert learner.role == Role.FOLLOWER
    net.crash(4)
    restarted = net.restart(4)  # a joined node rebuilds its configuration from its log alone
    assert restarted.conf.voters == frozenset({1, 2, 3})
    assert restarted.conf.learners == frozenset({4})
    leader.propose_conf_change(_change(ConfChangeKind.ADD_VOTER, 4))
    net.tick(count=2)
    for node in (1, 2, 3, 4):
        assert net.nodes[node].conf.voters == frozenset({1, 2, 3, 4})
        assert net.nodes[node].conf.learners == frozenset()
    assert net.nodes[4].status().role == Role.FOLLOWER


def test_learner_acks_do_not_make_a_quorum() -> None:
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.add_node(4, voters=frozenset())
    leader.propose_conf_change(_change(ConfChangeKind.ADD_LEARNER, 4))
    net.tick(count=2)
    net.cut |= {(1, 2), (1, 3)}
    _, index = leader.propose(b"x")
    net.stabilize()
    assert net.nodes[4].log.last_index == index
    assert leader.log.committed < index


def test_one_change_at_a_time() -> None:
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.isolate(1)  # nothing commits
    leader.propose_conf_change(_change(ConfChangeKind.ADD_LEARNER, 4))
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(_change(ConfChangeKind.ADD_LEARNER, 5))


def test_new_leader_must_commit_in_its_term_before_a_change() -> None:
    net = Network([1, 2, 3])
    net.transform = lambda m: None if isinstance(m, AppendRequest) else m
    leader = net.elect(1)
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(_change(ConfChangeKind.ADD_LEARNER, 4))


def test_invalid_changes_are_refused() -> None:
    net = Network([1, 2, 3])
    leader = net.elect(1)
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(_change(ConfChangeKind.ADD_VOTER, 2))
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(_change(ConfChangeKind.REMOVE_NODE, 9))
    with pytest.raises(NotLeader):
        net.nodes[2].propose_conf_change(_change(ConfChangeKind.REMOVE_NODE, 3))


def test_remove_a_voter_shrinks_the_quorum() -> None:
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose_conf_change(_change(ConfChangeKind.REMOVE_NODE, 3))
    net.tick(count=2)
    net.crash(3)
    net.crash(2)
    assert leader.conf.voters == frozenset({1, 2})
    _, index = leader.propose(b"needs 2 of 2")
    net.stabilize()
    assert leader.log.committed < index
    net.restart(2)
    net.tick(nodes=[1, 2], count=2)
    assert leader.log.committed >= index


def test_leader_removing_itself_steps_down_after_commit() -> None:
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose_conf_change(_change(ConfChangeKind.REMOVE_NODE, 1))
    assert leader.role == Role.LEADER  # still leads until the change commits
    net.stabilize()
    assert leader.role == Role.FOLLOWER
    net.tick(nodes=[2, 3], count=40)
    (new_leader,) = net.leaders()
    assert new_leader in (2, 3)
    for _ in range(50):
        leader.tick()
    assert leader.role == Role.FOLLOWER  # a removed node never campaigns


def test_follower_reverts_configuration_when_the_entry_is_overwritten() -> None:
    net = Network([1, 2, 3], check_quorum=False, pre_vote=False)
    leader = net.elect(1)
    net.tick()
    net.isolate(2)
    net.isolate(3)
    leader.propose_conf_change(_change(ConfChangeKind.ADD_LEARNER, 7))
    net.stabilize()
    assert leader.conf.learners == frozenset({7})
    net.heal()
    net.isolate(1)
    net.tick(nodes=[2, 3], count=30)
    (new_leader,) = [n for n in net.leaders() if n != 1]
    net.propose(new_leader, b"x")
    net.stabilize()
    net.heal()
    net.tick(count=3)
    assert leader.role == Role.FOLLOWER
    assert leader.conf.learners == frozenset()  # its uncommitted change was truncated
