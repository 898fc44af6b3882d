"""The in-memory Raft log of one node.

Theory of operation
-------------------
The log is a snapshot (everything up to `offset`, whose last term is
`snapshot_term`) followed by `entries`, a Python list where
`entries[i].index == offset + 1 + i`. Four cursors move forward through it:

    applied <= applying <= committed <= last_index
    stable  <= offered  <= last_index

`offered` is the last entry handed to the driver in a Ready (to persist) and
`stable` the last one the driver acknowledged with `advance`; `applying` and
`applied` play the same roles for committed entries. Only a follower that
accepts a conflicting suffix from a new leader ever moves `stable`/`offered`
back (the suffix is re-offered); `committed` and `applied` never go back,
and a committed entry is never overwritten (asserted).

Slicing is the hot path: Ready entries, AppendEntries batches and committed
entries are list slices, with no per-entry work beyond a byte count when a
batch must respect `bytes_per_msg_max`.
"""

from __future__ import annotations

from operator import attrgetter

from ringbolt.consensus.types import Entry, Snapshot

_entry_data = attrgetter("data")


class Compacted(Exception):
    """The requested index is covered by the snapshot; send the snapshot."""


class RaftLog:
    __slots__ = (
        "entries",
        "offset",
        "snapshot_term",
        "committed",
        "applying",
        "applied",
        "stable",
        "offered",
        "pending_snapshot",
        "snapshot",
    )

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.offset = 0
        self.snapshot_term = 0
        self.committed = 0
        self.applying = 0
        self.applied = 0
        self.stable = 0
        self.offered = 0
        self.pending_snapshot: Snapshot | None = None
        """A snapshot received from a leader, to hand to the driver."""
        self.snapshot: Snapshot | None = None
        """The latest snapshot (driver's `compact` or one installed), kept to
        send to followers that fell behind the compacted prefix."""

    # --- reading -----------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    @property
    def first_index(self) -> int:
        return self.offset + 1

    def last_term(self) -> int:
        entries = self.entries
        return entries[-1].term if entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted or beyond the end."""
        position = index - self.offset
        if position == 0:
            return self.snapshot_term
        if position < 0 or position > len(self.entries):
            return None
        return self.entries[position - 1].term

    def entry(self, index: int) -> Entry:
        position = index - self.offset - 1
        assert 0 <= position < len(self.entries), f"entry {index} not in the log"
        return self.entries[position]

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft section 5.4.1: is a log ending at (last_index, last_term) at
        least as up to date as ours?"""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index)

    def slice(self, low: int, high: int, bytes_max: int) -> list[Entry]:
        """Entries [low, high), cut to at most `bytes_max` payload bytes (but at
        least one entry). Raises Compacted if `low` is in the snapshot."""
        if low <= self.offset:
            raise Compacted(low)
        high = min(high, self.last_index + 1)
        if low >= high:
            return []
        offset = self.offset
        batch = self.entries[low - offset - 1 : high - offset - 1]
        if sum(map(len, map(_entry_data, batch))) <= bytes_max:  # C loops: the common case
            return batch
        total = 0
        for position, entry in enumerate(batch):
            total += len(entry.data)
            if total > bytes_max and position > 0:
                del batch[position:]
                break
        return batch

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (i, term(i)) with i <= index and term(i) <= term; the
        snapshot boundary if no entry in memory qualifies."""
        index = min(index, self.last_index)
        while index > self.offset:
            entry_term = self.entries[index - self.offset - 1].term
            if entry_term <= term:
                return index, entry_term
            index -= 1
        return self.offset, self.snapshot_term

    # --- writing -----------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Leader append: `entries` continue the log exactly."""
        if not entries:
            return
        assert entries[0].index == self.last_index + 1, "appended entries must be contiguous"
        assert entries[-1].index == entries[0].index + len(entries) - 1
        self.entries += entries

    def maybe_append(self, prev_index: int, prev_term: int, entries: list[Entry]) -> int:
        """Follower append. Returns the first index written (0 if nothing new),
        or -1 if the log does not contain (prev_index, prev_term)."""
        if self.term(prev_index) != prev_term:
            return -1
        if not entries:
            return 0
        assert entries[0].index == prev_index + 1, "entries must follow prev_log_index"
        assert entries[-1].index == prev_index + len(entries), "entries must be contiguous"
        last = self.last_index
        if prev_index == last:  # the common case: the entries continue the log
            self.entries += entries
            return prev_index + 1
        skip = 0
        for entry in entries:  # find the first entry we do not already have
            if entry.index > last or self.term(entry.index) != entry.term:
                break
            skip += 1
        if skip == len(entries):
            return 0
        first = entries[skip].index
        assert first > self.committed, f"overwriting committed entry {first}"
        if first <= last:
            self._truncate_from(first)
        self.entries += entries[skip:]
        return first

    def _truncate_from(self, index: int) -> None:
        assert index > self.offset
        del self.entries[index - self.offset - 1 :]
        self.stable = min(self.stable, index - 1)
        self.offered = min(self.offered, index - 1)

    def commit_to(self, index: int) -> bool:
        if index <= self.committed:
            return False
        assert index <= self.last_index, f"commit {index} beyond last index {self.last_index}"
        self.committed = index
        return True

    # --- handing work to the driver --------------------------------------------

    def has_unstable(self) -> bool:
        return self.last_index > self.offered

    def take_unstable(self) -> list[Entry]:
        offset = self.offset
        batch = self.entries[self.offered - offset :]
        self.offered = self.last_index
        return batch

    def has_committed(self) -> bool:
        return self.committed > self.applying

    def take_committed(self, count_max: int) -> list[Entry]:
        high = min(self.committed, self.applying + count_max)
        offset = self.offset
        assert self.applying >= offset, "committed entries below the snapshot"
        batch = self.entries[self.applying - offset : high - offset]
        self.applying = high
        return batch

    def stable_to(self, index: int, term: int) -> None:
        if index > self.stable and self.term(index) == term:
            self.stable = index

    def applied_to(self, index: int) -> None:
        assert index <= self.committed, "applied beyond commit"
        if index > self.applied:
            self.applied = index

    # --- snapshots ------------------------------------------------------------

    def compact(self, index: int) -> None:
        """Drop entries up to `index` (which the driver has applied)."""
        assert index <= self.applied, f"compact({index}) beyond applied {self.applied}"
        if index <= self.offset:
            return
        term = self.term(index)
        assert term is not None
        del self.entries[: index - self.offset]
        self.offset = index
        self.snapshot_term = term

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with `snapshot` (follower install)."""
        index = snapshot.meta.index
        assert index > self.committed, "restoring a snapshot older than commit"
        self.entries = []
        self.offset = index
        self.snapshot_term = snapshot.meta.term
        self.committed = self.applying = self.applied = index
        self.stable = self.offered = index
        self.pending_snapshot = snapshot
        self.snapshot = snapshot

    def check(self) -> None:
        """Assert the cursor invariants (cheap; called at the end of steps in tests)."""
        assert self.applied <= self.applying <= self.committed <= self.last_index
        assert self.stable <= self.offered <= self.last_index
        assert self.offset <= self.applied
        if self.entries:
            assert self.entries[0].index == self.offset + 1
            assert self.entries[-1].index == self.last_index
