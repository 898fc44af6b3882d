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
- Leader Completeness: a leader's log holds every committed entry. Checked
  when a node is first seen leading a term (against everything committed so
  far) and whenever an entry is first committed (against every leader of
  that term or later). "Committed" = applied by some node.
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
        self.logged: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        self.committed: dict[int, tuple[int, int, bytes]] = {}
        """index -> (term, kind, data) of the entry applied there."""
        self.snapshot_images: dict[int, tuple[int, bytes]] = {}
        self.checks = 0

    # -- Election Safety and Leader Completeness --------------------------------
    def observe_role(self, node: int, is_leader: bool, term: int, storage: DurableStorage) -> None:
        if not is_leader:
            self.current_leaders.pop(node, None)
            return
        if self.current_leaders.get(node) == term:
            return
        self.checks += 1
        other = self.leader_of_term.setdefault(term, node)
        if other != node:
            raise SafetyViolation("election-safety", f"nodes {other} and {node} both led term {term}")
        self.current_leaders[node] = term
        for index, (entry_term, _kind, _data) in self.committed.items():
            self._leader_has(node, term, storage, index, entry_term)

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
                f"but an entry of term {entry_term} was committed there",
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
    def observe_applied(self, node: int, entry: Entry,
                        storages: dict[int, DurableStorage]) -> None:
        fact = (entry.term, int(entry.kind), entry.data)
        known = self.committed.get(entry.index)
        self.checks += 1
        if known is None:
            self.committed[entry.index] = fact
            for leader, term in self.current_leaders.items():
                if term >= entry.term and leader in storages:
                    self._leader_has(leader, term, storages[leader], entry.index, entry.term)
        elif known != fact:
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
