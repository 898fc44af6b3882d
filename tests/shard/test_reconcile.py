"""Membership steps toward a target: add as learner, promote, hand off, remove."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ringbolt.consensus.types import ConfChange, ConfChangeKind, ConfState
from ringbolt.shard import clustermap, reconcile
from ringbolt.shard.clustermap import NodeRecord
from ringbolt.shard.reconcile import Target, Transfer, meta_target, next_step

ADD_LEARNER, ADD_VOTER, REMOVE = (ConfChangeKind.ADD_LEARNER, ConfChangeKind.ADD_VOTER,
                                  ConfChangeKind.REMOVE_NODE)


def conf(voters: set[int], learners: set[int] = frozenset()) -> ConfState:  # type: ignore[assignment]
    return ConfState(voters=frozenset(voters), learners=frozenset(learners))


def apply(state: ConfState, change: ConfChange) -> ConfState:
    voters, learners = set(state.voters), set(state.learners)
    if change.kind is ADD_LEARNER:
        learners.add(change.node_id)
    elif change.kind is ADD_VOTER:
        learners.discard(change.node_id)
        voters.add(change.node_id)
    else:
        voters.discard(change.node_id)
        learners.discard(change.node_id)
    return conf(voters, learners)


def drive(state: ConfState, target: Target, leader: int,
          lagging: frozenset[int] = frozenset()) -> tuple[ConfState, list[object]]:
    steps: list[object] = []
    floor = min(len(state.voters), len(target.voters))
    for _ in range(20):
        step = next_step(state, target, leader=leader, caught_up=lambda n: n not in lagging)
        if step is None:
            return state, steps
        steps.append(step)
        if isinstance(step, Transfer):
            leader = step.target
            continue
        state = apply(state, step)
        assert len(state.voters) >= floor, "a move never shrinks the group below its size"
    raise AssertionError("did not converge")


def test_a_move_adds_a_learner_promotes_it_then_removes_the_old_replica() -> None:
    final, steps = drive(conf({1, 2, 3}), Target(voters=frozenset({1, 2, 4})), leader=1)
    assert final == conf({1, 2, 4})
    assert steps == [ConfChange(kind=ADD_LEARNER, node_id=4), ConfChange(kind=ADD_VOTER, node_id=4),
                     ConfChange(kind=REMOVE, node_id=3)]


def test_the_leader_hands_off_before_it_is_removed() -> None:
    final, steps = drive(conf({1, 2, 3}), Target(voters=frozenset({2, 3, 4})), leader=1)
    assert final == conf({2, 3, 4})
    assert Transfer(target=2) in steps
    assert steps.index(Transfer(target=2)) < steps.index(ConfChange(kind=REMOVE, node_id=1))


def test_a_lagging_learner_is_not_promoted_and_nothing_is_removed_meanwhile() -> None:
    state = conf({1, 2, 3}, {4})
    assert next_step(state, Target(voters=frozenset({1, 2, 4})), leader=1,
                     caught_up=lambda n: n != 4) is None


def test_no_heir_caught_up_means_the_leader_waits() -> None:
    state = conf({1, 2, 3})
    assert next_step(state, Target(voters=frozenset({2, 3})), leader=1,
                     caught_up=lambda n: False) is None


def test_meta_target_keeps_current_voters_and_makes_everyone_else_a_learner() -> None:
    nodes = [NodeRecord(node_id=i, peer_address=f"h:{i}", client_address=f"h:{i + 100}")
             for i in (1, 2, 3, 4)]
    cluster_map = clustermap.bootstrap(nodes, 4)
    target = meta_target(cluster_map, frozenset({2, 3, 4}))
    assert target.voters == {2, 3, 4} and target.learners == {1}
    drained = clustermap.apply(cluster_map, clustermap.DrainNode(node_id=3))
    target = meta_target(drained, frozenset({2, 3, 4}))
    assert target.voters == {1, 2, 4} and target.learners == {3}
    five = clustermap.apply(cluster_map, clustermap.AddNode(node=NodeRecord(
        node_id=5, peer_address="h:5", client_address="h:105")))
    assert meta_target(five, frozenset({1, 2, 3})).voters == {1, 2, 3, 4, 5}
    assert reconcile.placed_on(cluster_map, 1) == {s.shard_id for s in cluster_map.shards
                                                    if 1 in s.replicas}


@given(st.sets(st.integers(1, 7), min_size=1, max_size=5),
       st.sets(st.integers(1, 7), min_size=1, max_size=5),
       st.sets(st.integers(1, 7), max_size=3),
       st.integers(1, 7), st.randoms(use_true_random=False))
@settings(max_examples=300, deadline=None)
def test_any_move_converges_without_shrinking_the_group(
        voters: set[int], wanted: set[int], learners: set[int], leader: int,
        rng: random.Random) -> None:
    """From any configuration to any target: every step keeps at least as
    many voters as the smaller of start and target, the leader is never
    removed (it hands off first), and the target is reached once learners
    catch up, whatever the order in which they do."""
    learners -= voters
    if leader not in voters:
        leader = min(voters)
    state = conf(voters, learners)
    target = Target(voters=frozenset(wanted))
    floor = min(len(voters), len(wanted))
    behind = set(wanted)  # learners catch up in a random order
    for _ in range(60):
        step = next_step(state, target, leader=leader, caught_up=lambda n: n not in behind)
        if step is None:
            if not (behind & (state.voters | state.learners)):
                break
            behind.discard(rng.choice(sorted(behind & (state.voters | state.learners))))
            continue
        if isinstance(step, Transfer):
            assert step.target in state.voters and step.target in wanted
            leader = step.target
            continue
        assert not (step.kind is REMOVE and step.node_id == leader), "leader removes itself"
        state = apply(state, step)
        assert len(state.voters) >= floor
    assert state == conf(wanted)
