"""Drive a Raft group's membership toward what the cluster map asks for.

Theory of operation
-------------------
The cluster map says where a group *should* live (`Target`); the group's
committed configuration says where it *does* live. The leader of each group
compares the two every few ticks and takes ONE step (`next_step`), so a move
is a sequence of small, individually safe changes that any later leader can
resume from wherever the previous one stopped:

1. every node the target names but the configuration lacks joins as a
   LEARNER (it receives a snapshot and the log, votes in nothing);
2. a learner the target wants as a voter is promoted once it has caught up
   (its match index is within `catch_up_slack` of the commit index), so the
   group never waits on a voter that would need a whole snapshot first;
3. only when every target voter IS a voter, voters the target does not want
   are removed -- the leader first hands its leadership to a caught-up
   target voter rather than removing itself;
4. learners the target does not name are removed.

Adding before removing means a shard never has fewer voters than the target
asks for while a replica moves; one change at a time is what the Raft core
accepts (one-server membership changes, docs/raft.md).

`meta_target` chooses the meta group's members: up to 3 (or 5, once 5 nodes
are active) voters among the ACTIVE nodes -- current voters first, so a
change in the node set does not reshuffle the meta group -- and every other
node that is not REMOVED as a learner, so that every node learns the map.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ringbolt.consensus.types import ConfChange, ConfChangeKind, ConfState
from ringbolt.shard.clustermap import ClusterMap, NodeState

catch_up_slack = 256
"""A learner within this many entries of the commit index counts as caught up."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    voters: frozenset[int]
    learners: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        assert self.voters, "a group needs at least one voter"
        assert not (self.voters & self.learners)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """Hand leadership to `target` before the leader can be removed."""

    target: int


Step = ConfChange | Transfer | None


def next_step(conf: ConfState, target: Target, *, leader: int,
              caught_up: Callable[[int], bool]) -> Step:
    """The one change that brings `conf` closer to `target`, or None (done, or
    waiting for a learner to catch up)."""
    members = conf.voters | conf.learners
    for node in sorted(target.voters | target.learners):
        if node not in members:
            return ConfChange(kind=ConfChangeKind.ADD_LEARNER, node_id=node)
    waiting = False
    for node in sorted(target.voters & conf.learners):
        if caught_up(node):
            return ConfChange(kind=ConfChangeKind.ADD_VOTER, node_id=node)
        waiting = True
    if waiting:
        return None
    for node in sorted(conf.voters - target.voters):
        if node == leader:
            heirs = [n for n in sorted(target.voters) if n != leader and caught_up(n)]
            return Transfer(target=heirs[0]) if heirs else None
        assert len(conf.voters) > 1
        return ConfChange(kind=ConfChangeKind.REMOVE_NODE, node_id=node)
    for node in sorted(conf.learners - target.voters - target.learners):
        return ConfChange(kind=ConfChangeKind.REMOVE_NODE, node_id=node)
    return None


def shard_target(cluster_map: ClusterMap, shard_id: int) -> Target:
    return Target(voters=frozenset(cluster_map.shard(shard_id).replicas))


def meta_voter_count(active: int) -> int:
    if active >= 5:
        return 5
    return min(3, active)


def meta_target(cluster_map: ClusterMap, current_voters: frozenset[int]) -> Target:
    active = [n.node_id for n in cluster_map.nodes if n.state is NodeState.ACTIVE]
    live = {n.node_id for n in cluster_map.nodes if n.state is not NodeState.REMOVED}
    wanted = meta_voter_count(len(active))
    voters = [n for n in sorted(current_voters) if n in active][:wanted]
    for node in active:
        if len(voters) >= wanted:
            break
        if node not in voters:
            voters.append(node)
    if not voters:  # nothing active: keep whoever still votes rather than nobody
        voters = sorted(current_voters & live) or sorted(current_voters)
    chosen = frozenset(voters)
    return Target(voters=chosen, learners=frozenset(live - chosen))


def placed_on(cluster_map: ClusterMap, node_id: int) -> set[int]:
    """The shards the map places on `node_id`."""
    return {s.shard_id for s in cluster_map.shards if node_id in s.replicas}
