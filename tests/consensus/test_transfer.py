"""Leadership transfer with TimeoutNow."""

from __future__ import annotations

import pytest

from ringbolt.consensus.messages import TimeoutNow
from ringbolt.consensus.types import ProposalDropped, Role
from tests.consensus.harness import Network


def test_transfer_to_an_up_to_date_follower() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    net.stabilize()
    term = net.nodes[1].term
    net.nodes[1].transfer_leadership(3)
    net.stabilize()
    assert net.leaders() == [3]
    assert net.nodes[3].term == term + 1
    assert net.nodes[1].leader == 3
    net.propose(3, b"b")
    net.stabilize()
    assert net.applied[3] == [b"a", b"b"]  # committed and applied on the new leader
    # followers learn the new commit index with the next heartbeat
    net.tick(count=net.nodes[3].config.heartbeat_ticks)
    assert net.applied[1] == [b"a", b"b"]


def test_transfer_waits_for_the_target_to_catch_up() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.propose(1, *[b"%d" % i for i in range(10)])
    net.stabilize()
    net.sent.clear()
    net.nodes[1].transfer_leadership(3)
    net.stabilize()
    assert not [m for m in net.sent if isinstance(m, TimeoutNow)]
    net.heal()
    net.tick()
    assert [m.recipient for m in net.sent if isinstance(m, TimeoutNow)] == [3]
    assert net.leaders() == [3]
    assert net.nodes[3].log.last_index >= 11


def test_proposals_are_refused_while_transferring() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.nodes[1].transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose(b"x")


def test_transfer_aborts_after_an_election_timeout() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    net.cut |= {(1, 3), (3, 1)}
    leader = net.nodes[1]
    leader.transfer_leadership(3)
    net.tick(nodes=[1, 2], count=leader.config.election_timeout_ticks)
    assert leader.role == Role.LEADER
    term, _ = leader.propose(b"after-abort")
    assert term == leader.term


def test_transfer_to_a_non_voter_is_refused() -> None:
    net = Network([1, 2, 3])
    net.elect(1)
    with pytest.raises(ProposalDropped):
        net.nodes[1].transfer_leadership(9)


def test_transfer_target_ignores_nothing_even_inside_leader_lease() -> None:
    """Voters still in their leader lease grant a TimeoutNow campaign."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.tick()
    net.nodes[1].transfer_leadership(2)
    net.stabilize()
    assert net.leaders() == [2]
