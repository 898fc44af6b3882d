"""Online shard splits: a log entry that cuts a group's key range in two.

Theory of operation
-------------------
A split of shard P at hash `at` is ONE entry in P's Raft log (`encode_split`:
the child shard id, P's range [lo, hi), the cut `at`, and P's voters). Every
replica of P applies it at the same index, so every replica does the same
thing there (`FencedStore.apply`): in one store transaction the keys of P that
hash into [at, hi) move to the child's keyspace, both groups record their new
range, P's applied index becomes the split's and the child's becomes
`CHILD_INIT_INDEX`. Then the node starts the child group on the same voters,
from a snapshot at (`CHILD_INIT_INDEX`, `CHILD_INIT_TERM`) that every replica
built identically -- no data crosses the network. The cluster map learns the
new shard afterwards (`Membership.split`), and clients follow it.

Ranges are replicated state: the range of a group that was split, or born of
a split, is a record in its own keyspace under the reserved key `RANGE_KEY`
(so snapshots carry it). From the split on, a write in P's log for a key
outside P's range -- proposed by a node whose map was stale, or in flight
while the split committed -- is applied as a no-op on every replica and
answered ``TRYAGAIN ... not executed``; reads of such keys are refused the
same way (`FencedStore.in_range`). The client retries with a fresh map.

The leader refuses a split while P's membership is changing (the voters in
the entry must be exactly P's configuration), and a split whose [lo, hi) no
longer matches P's recorded range (a repeated or stale request) is applied as
a no-op that answers False.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from ringbolt.consensus.types import Entry, EntryKind
from ringbolt.kv.machine import CommandFailed, Result
from ringbolt.kv.ops import command_keys
from ringbolt.shard.limits import HASH_SPACE
from ringbolt.shard.ring import key_hash
from ringbolt.storage.engine import StateMachineStore

RANGE_KEY = b"\xffringbolt:range"
"""Reserved key holding a group's [lo, hi) once it was split or born of a split."""
SPLIT_PREFIX = b"\x00split:"
"""Never the start of a KV command (those are msgpack arrays)."""
CHILD_INIT_INDEX = 5
CHILD_INIT_TERM = 5
"""Where a child group's log starts: every replica builds the same snapshot there."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Split:
    child: int
    lo: int
    at: int
    hi: int
    voters: tuple[int, ...]

    def __post_init__(self) -> None:
        assert 0 <= self.lo < self.at < self.hi <= HASH_SPACE
        assert self.voters and self.child >= 0


def encode_split(split: Split) -> bytes:
    # hi may be 2**64, one past what msgpack carries: the last hash is sent
    return SPLIT_PREFIX + msgpack.packb(
        [split.child, split.lo, split.at, split.hi - 1, list(split.voters)])


def decode_split(data: bytes) -> Split | None:
    """The split an entry carries, or None (not a split, or malformed)."""
    if not data.startswith(SPLIT_PREFIX):
        return None
    try:
        child, lo, at, hi, voters = msgpack.unpackb(data[len(SPLIT_PREFIX):])
        return Split(child=int(child), lo=int(lo), at=int(at), hi=int(hi) + 1,
                     voters=tuple(int(v) for v in voters))
    except (ValueError, TypeError, AssertionError, msgpack.UnpackException):
        return None


def encode_range(lo: int, hi: int, last_split: tuple[int, int, int] | None = None) -> bytes:
    """[lo, hi) and, for a parent, its latest split (old hi, cut, child id)."""
    extra = [] if last_split is None else [last_split[0] - 1, *last_split[1:]]
    return msgpack.packb([lo, hi - 1, *extra])


def decode_range_record(data: bytes) -> tuple[tuple[int, int], tuple[int, int, int] | None]:
    fields = msgpack.unpackb(data)
    bounds = (int(fields[0]), int(fields[1]) + 1)
    last = None if len(fields) < 5 else (int(fields[2]) + 1, int(fields[3]), int(fields[4]))
    return bounds, last


def decode_range(data: bytes) -> tuple[int, int] | None:
    try:
        return decode_range_record(data)[0]
    except (ValueError, TypeError, IndexError, msgpack.UnpackException):
        return None


def in_range(key: bytes, bounds: tuple[int, int] | None) -> bool:
    if bounds is None:
        return True
    return bounds[0] <= key_hash(key) < bounds[1]


OnSplit = Callable[[int, Split, int], None]
"""(parent storage id, split, split index): start the child group."""


class FencedStore:
    """The node's state-machine store as replicas see it: applies splits and
    fences keys outside a group's range. Everything else is delegated."""

    def __init__(self, store: StateMachineStore, on_split: OnSplit,
                 child_exists: Callable[[int], bool]) -> None:
        self.store = store
        self.on_split = on_split
        self.child_exists = child_exists
        """(child storage id) -> the node already holds state for that group."""
        self._ranges: dict[int, tuple[int, int] | None] = {}

    def range_of(self, group_id: int) -> tuple[int, int] | None:
        if group_id not in self._ranges:
            found = self.store.get(group_id, RANGE_KEY)
            self._ranges[group_id] = None if found is None else decode_range(found[0])
        return self._ranges[group_id]

    def in_range(self, group_id: int, key: bytes) -> bool:
        return in_range(key, self.range_of(group_id))

    def apply(self, group_id: int, entries: list[Entry]) -> list[Result]:
        results: list[Result] = []
        pending: list[Entry] = []
        fenced: dict[int, CommandFailed] = {}
        bounds = self.range_of(group_id)
        for entry in entries:
            if entry.kind is not EntryKind.NORMAL:
                pending.append(entry)
                continue
            split = decode_split(entry.data)
            if split is not None:
                results += self._flush(group_id, pending, fenced)
                pending, fenced = [], {}
                results.append(self._split(group_id, split, entry))
                bounds = self.range_of(group_id)
                continue
            if bounds is not None and not all(in_range(k, bounds) for k in
                                               command_keys(entry.data)):
                fenced[entry.index] = CommandFailed(
                    "TRYAGAIN the key moved to another shard (split); not executed, retry")
                pending.append(Entry(term=entry.term, index=entry.index, kind=EntryKind.NOOP))
                continue
            pending.append(entry)
        results += self._flush(group_id, pending, fenced)
        return results

    def _flush(self, group_id: int, entries: list[Entry],
               fenced: dict[int, CommandFailed]) -> list[Result]:
        if not entries:
            return []
        results = self.store.apply(group_id, entries)
        if fenced:
            results = [fenced.get(e.index, r) for e, r in zip(entries, results, strict=True)]
        return results

    def _split(self, group_id: int, split: Split, entry: Entry) -> Result:
        """The child's id (also for a repeat of the split that already
        happened, so a retried request can finish), or False (refused)."""
        current = self.range_of(group_id)
        if current is not None and current != (split.lo, split.hi):
            self.store.apply(group_id, [Entry(term=entry.term, index=entry.index,
                                              kind=EntryKind.NOOP)])
            found = self.store.get(group_id, RANGE_KEY)
            last = decode_range_record(found[0])[1] if found is not None else None
            if last is not None and current == (split.lo, split.at) and last[:2] == (
                    split.hi, split.at):
                return last[2]  # this very split happened already
            return False  # stale: nothing changes
        child_id = split.child + 1  # storage id of the child shard
        keep_child = self.child_exists(child_id)

        def belongs(key: bytes) -> bool:
            return key != RANGE_KEY and split.at <= key_hash(key) < split.hi

        records = {group_id: [(RANGE_KEY, encode_range(
            split.lo, split.at, (split.hi, split.at, split.child)))]}
        if not keep_child:
            records[child_id] = [(RANGE_KEY, encode_range(split.at, split.hi))]
        self.store.split_off(group_id, child_id, belongs,
                             parent_applied=(entry.index, entry.term),
                             child_applied=(CHILD_INIT_INDEX, CHILD_INIT_TERM),
                             records=records, keep_child=keep_child)
        self._ranges.pop(group_id, None)
        self._ranges.pop(child_id, None)
        if not keep_child:
            self.on_split(group_id, split, entry.index)
        return split.child

    # -- delegated ---------------------------------------------------------------------

    def applied_index(self, group_id: int) -> int:
        return self.store.applied_index(group_id)

    def get(self, group_id: int, key: bytes) -> tuple[bytes, int] | None:
        return self.store.get(group_id, key)

    def snapshot_bytes(self, group_id: int) -> bytes:
        return self.store.snapshot_bytes(group_id)

    def checkpoint(self, group_id: int) -> tuple[int, int]:
        return self.store.checkpoint(group_id)

    def count(self, group_id: int) -> int:
        return self.store.count(group_id)

    def install_snapshot(self, group_id: int, snapshot: object) -> None:
        self._ranges.pop(group_id, None)
        self.store.install_snapshot(group_id, snapshot)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)
