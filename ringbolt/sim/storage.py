"""A node's durable storage in the simulator: snapshot, log, hard state.

Theory of operation
-------------------
`DurableStorage` holds exactly what a node's Readys persisted, and nothing
else: a crash throws away the core and the in-memory state machine, and a
restart builds a new core from `persistent_state()`.

Rules kept (and asserted):
- the log is contiguous and starts right after the snapshot's index;
- an append whose first index is at or below the last index first truncates
  the conflicting suffix (the Ready contract), and never reaches into the
  snapshot;
- installing a snapshot received from a leader replaces the whole log, as
  the core does (the entries after it, if any, come in the same or a later
  Ready);
- a local compaction (`compact`) only covers entries the node has.

Persisting a Ready is atomic here (snapshot, entries and hard state land
together or, on a crash before the disk finished, not at all).
"""

from __future__ import annotations

from ringbolt.consensus.types import Entry, HardState, PersistentState, Snapshot


class DurableStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.writes = 0

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    @property
    def snapshot_term(self) -> int:
        return self.snapshot.meta.term if self.snapshot is not None else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def term_at(self, index: int) -> int | None:
        """Term of the entry at `index`, the snapshot's term at its index, or None."""
        if index == self.snapshot_index:
            return self.snapshot_term
        offset = index - self.snapshot_index - 1
        if 0 <= offset < len(self.entries):
            entry = self.entries[offset]
            assert entry.index == index
            return entry.term
        return None

    def entry_at(self, index: int) -> Entry | None:
        offset = index - self.snapshot_index - 1
        if 0 <= offset < len(self.entries):
            return self.entries[offset]
        return None

    def persist(self, snapshot: Snapshot | None, entries: list[Entry],
                hard_state: HardState | None) -> None:
        self.writes += 1
        if snapshot is not None:
            self._install(snapshot)
        if entries:
            self._append(entries)
        if hard_state is not None:
            assert hard_state.term >= self.hard_state.term, "persisted term went backwards"
            self.hard_state = hard_state

    def _install(self, snapshot: Snapshot) -> None:
        index, term = snapshot.meta.index, snapshot.meta.term
        assert index > self.snapshot_index, "a snapshot not newer than the one on disk"
        assert term >= self.snapshot_term
        self.entries = []
        self.snapshot = snapshot

    def _append(self, entries: list[Entry]) -> None:
        first = entries[0].index
        for previous, entry in zip(entries, entries[1:], strict=False):
            assert entry.index == previous.index + 1, "non-contiguous entries in a Ready"
            assert entry.term >= previous.term, "terms decrease along a Ready's entries"
        assert first > self.snapshot_index, "append reaches into the snapshot"
        assert first <= self.last_index + 1, "append leaves a gap in the log"
        keep = first - self.snapshot_index - 1
        del self.entries[keep:]
        self.entries.extend(entries)

    def compact(self, snapshot: Snapshot) -> None:
        """A local snapshot taken by the driver at an index it has applied."""
        index = snapshot.meta.index
        assert index > self.snapshot_index
        assert self.term_at(index) == snapshot.meta.term, "compacting past the log or at a wrong term"
        self.entries = [entry for entry in self.entries if entry.index > index]
        self.snapshot = snapshot

    def persistent_state(self) -> PersistentState:
        return PersistentState(hard_state=self.hard_state, snapshot=self.snapshot,
                               entries=list(self.entries))
