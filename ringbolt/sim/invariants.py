"""Raft's safety properties, checked from outside the cores.

Theory of operation
-------------------
The checker never looks inside a core. It observes what a driver can see:
the roles and terms a node reports (`Ready.soft_state` / `status()`), what
each node persisted (its `DurableStorage`), and what each node applied. It
keeps global facts across the whole run and raises `SafetyViolation` the
moment one of the four properties of the Raft paper (figure 3) breaks:

- Election Safety: at most one node is ever leader in a given term.
- Log Matching: if two logs hold an entry with the same index and term, the
  entries are identical and so are the logs up to there. Checked
  inductively: every persisted (index, term) maps to one (kind, data,
  previous term) across all nodes, ever.
- Leader Completeness: an entry committed in term c is in the log of every
  leader of a term > c. A leader's reported commit index tells which
  entries were committed in its term (the lowest such term is kept per
  index). Checked when a node is first seen leading a term, and whenever an
  index is first seen committed (against the current leaders of later terms).
- State Machine Safety: no two nodes apply different entries at one index,
  and snapshots of the same index hold the same state-machine image.
"""

from __future__ import annotations

from ringbolt.consensus.types import Entry, Snapshot
from ringbolt.sim.storage import DurableStorage


class SafetyViolation(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class InvariantChecker:
    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        self.current_leaders: dict[int, int] = {}
        """node -> term it currently leads (as last observed)."""
        self._leader_commit: dict[tuple[int, int], int] = {}
        """(node, term) -> the commit index that leader reported last."""
        self.commit_terms: dict[int, tuple[int, int]] = {}
        """index -> (entry term, the lowest term whose leader committed it)."""
        self.logged: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.committed: dict[int, tuple[int, int, bytes]] = {}
        """index -> (term, kind, data) of the entry applied there."""
        self.snapshot_images: dict[int, tuple[int, bytes]] = {}
        self.checks = 0

    # -- Election Safety and Leader Completeness --------------------------------
    def observe_role(self, node: int, is_leader: bool, term: int, commit: int,
                     storage: DurableStorage, storages: dict[int, DurableStorage]) -> None:
        """Called after every Ready a node handled (its storage is then in
        step with its core). A leader's reported commit index says which
        entries were committed *in its term*; Raft promises exactly that every
        leader of a later term holds them (leaders of earlier terms, which may
        be elected late, need not)."""
        if not is_leader:
            self.current_leaders.pop(node, None)
            return
        if self.current_leaders.get(node) != term:
            self.checks += 1
            other = self.leader_of_term.setdefault(term, node)
            if other != node:
                raise SafetyViolation("election-safety", f"nodes {other} and {node} both led term {term}")
            self.current_leaders[node] = term
            for index, (entry_term, commit_term) in self.commit_terms.items():
                if commit_term < term:
                    self._leader_has(node, term, storage, index, entry_term)
        seen = self._leader_commit.get((node, term), storage.snapshot_index)
        if commit > seen:
            self._leader_commit[(node, term)] = commit
            self._observe_commits(node, term, seen, commit, storage, storages)

    def _observe_commits(self, node: int, term: int, low: int, high: int,
                         storage: DurableStorage, storages: dict[int, DurableStorage]) -> None:
        for index in range(low + 1, high + 1):
            entry_term = storage.term_at(index)
            assert entry_term is not None, f"leader {node} committed index {index} it does not hold"
            known = self.commit_terms.get(index)
            self.checks += 1
            if known is not None and known[0] != entry_term:
                raise SafetyViolation(
                    "state-machine-safety",
                    f"leader {node} of term {term} committed term {entry_term} at index {index}; "
                    f"the leader of term {known[1]} committed term {known[0]} there",
                )
            if known is not None and known[1] <= term:
                continue
            self.commit_terms[index] = (entry_term, term)
            for leader, leader_term in self.current_leaders.items():
                if leader_term > term and leader in storages:
                    self._leader_has(leader, leader_term, storages[leader], index, entry_term)

    def observe_crash(self, node: int) -> None:
        self.current_leaders.pop(node, None)

    def _leader_has(self, node: int, term: int, storage: DurableStorage,
                    index: int, entry_term: int) -> None:
        if index <= storage.snapshot_index:
            return  # covered by the snapshot (whose image is checked separately)
        held = storage.term_at(index)
        if held != entry_term:
            raise SafetyViolation(
                "leader-completeness",
                f"leader {node} of term {term} holds term {held} at index {index}, "
                f"but an entry of term {entry_term} was committed there in an earlier term",
            )

    # -- Log Matching ------------------------------------------------------------
    def observe_persisted(self, node: int, storage: DurableStorage, entries: list[Entry]) -> None:
        for entry in entries:
            previous = storage.term_at(entry.index - 1)
            assert previous is not None, "persisted entry without a predecessor"
            fact = (int(entry.kind), entry.data, previous)
            known = self.logged.setdefault((entry.index, entry.term), fact)
            self.checks += 1
            if known != fact:
                raise SafetyViolation(
                    "log-matching",
                    f"node {node} persisted index {entry.index} term {entry.term} as "
                    f"(kind {fact[0]}, previous term {fact[2]}, {len(fact[1])} bytes); another node "
                    f"holds (kind {known[0]}, previous term {known[2]}, {len(known[1])} bytes)",
                )

    # -- State Machine Safety ------------------------------------------------------
    def observe_applied(self, node: int, entry: Entry) -> None:
        fact = (entry.term, int(entry.kind), entry.data)
        known = self.committed.setdefault(entry.index, fact)
        self.checks += 1
        if known != fact:
            raise SafetyViolation(
                "state-machine-safety",
                f"node {node} applied term {entry.term} at index {entry.index}; "
                f"another node applied term {known[0]} there",
            )

    def observe_snapshot(self, node: int, snapshot: Snapshot) -> None:
        index, term = snapshot.meta.index, snapshot.meta.term
        self.checks += 1
        committed = self.committed.get(index)
        if committed is not None and committed[0] != term:
            raise SafetyViolation(
                "state-machine-safety",
                f"node {node} holds a snapshot at index {index} of term {term}, "
                f"but term {committed[0]} was committed there",
            )
        known = self.snapshot_images.setdefault(index, (term, snapshot.data))
        if known != (term, snapshot.data):
            raise SafetyViolation(
                "state-machine-safety",
                f"node {node} holds a snapshot image at index {index} that differs from another node's",
            )
