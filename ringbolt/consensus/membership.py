"""Group membership, changed one server at a time.

Theory of operation
-------------------
A configuration takes effect on a node as soon as its CONFIG entry is in the
node's log -- appended, not committed (Ongaro's thesis, section 4.1). Adding
or removing one voter at a time makes any majority of the old configuration
overlap any majority of the new one, so two leaders can never be elected in
one term across a change, and no joint consensus is needed. The price is the
rule the leader enforces: at most one uncommitted change at a time.

Because a follower may later truncate an uncommitted CONFIG entry, every node
keeps `ConfHistory`: the configuration in force after each CONFIG entry still
in its log, on top of a base (the snapshot's, or the initial one). Truncating
the log from index i drops the changes at or after i and the configuration
reverts to the latest one left. Compaction folds old changes into the base.
"""

from __future__ import annotations

from ringbolt.consensus.types import ConfChange, ConfChangeKind, ConfState, ProposalDropped


class InvalidConfChange(ProposalDropped):
    """The change makes no sense against the current configuration."""


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after `change`; InvalidConfChange if it is a no-op or
    would leave the group without a voter."""
    node = change.node_id
    voters, learners = conf.voters, conf.learners
    if change.kind == ConfChangeKind.ADD_VOTER:
        if node in voters:
            raise InvalidConfChange(f"node {node} is already a voter")
        return ConfState(voters=voters | {node}, learners=learners - {node})
    if change.kind == ConfChangeKind.ADD_LEARNER:
        if node in learners:
            raise InvalidConfChange(f"node {node} is already a learner")
        if node in voters:
            raise InvalidConfChange(f"node {node} is a voter; remove it first")
        return ConfState(voters=voters, learners=learners | {node})
    assert change.kind == ConfChangeKind.REMOVE_NODE
    if node not in conf.members:
        raise InvalidConfChange(f"node {node} is not a member")
    if voters == {node}:
        raise InvalidConfChange(f"node {node} is the last voter")
    return ConfState(voters=voters - {node}, learners=learners - {node})


class ConfHistory:
    """The configurations in force after each CONFIG entry in the log."""

    __slots__ = ("_changes",)

    def __init__(self, base_index: int, base: ConfState) -> None:
        self._changes: list[tuple[int, ConfState]] = [(base_index, base)]

    @property
    def current(self) -> ConfState:
        return self._changes[-1][1]

    @property
    def last_change_index(self) -> int:
        """Index of the latest CONFIG entry in the log (or of the base)."""
        return self._changes[-1][0]

    def append(self, index: int, conf: ConfState) -> None:
        assert index > self._changes[-1][0], "configuration changes must be in log order"
        self._changes.append((index, conf))

    def truncate_from(self, index: int) -> bool:
        """Forget changes at or after `index`; True if the current one changed."""
        changes = self._changes
        dropped = False
        while len(changes) > 1 and changes[-1][0] >= index:
            changes.pop()
            dropped = True
        assert changes[0][0] < index, "truncating into the base configuration"
        return dropped

    def at(self, index: int) -> ConfState:
        """The configuration in force once the log is applied up to `index`."""
        for change_index, conf in reversed(self._changes):
            if change_index <= index:
                return conf
        raise AssertionError(f"no configuration known at index {index}")

    def compact(self, index: int) -> None:
        """Fold every change at or below `index` into a new base at `index`."""
        base = self.at(index)
        self._changes = [(index, base)] + [c for c in self._changes if c[0] > index]

    def reset(self, index: int, conf: ConfState) -> None:
        self._changes = [(index, conf)]
