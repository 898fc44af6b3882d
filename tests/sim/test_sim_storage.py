"""The simulator's durable storage keeps exactly the Ready contract's rules."""

from __future__ import annotations

import pytest

from ringbolt.consensus.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from ringbolt.sim.storage import DurableStorage


def _entries(first: int, terms: list[int]) -> list[Entry]:
    return [Entry(term=t, index=first + i, data=bytes([i])) for i, t in enumerate(terms)]


def _snapshot(index: int, term: int) -> Snapshot:
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=ConfState(voters=frozenset({1}))),
                    data=b"image")


def test_append_truncates_conflicting_suffix() -> None:
    storage = DurableStorage()
    storage.persist(None, _entries(1, [1, 1, 1, 1]), HardState(term=1))
    storage.persist(None, _entries(3, [2]), HardState(term=2, vote=1))
    assert [(e.index, e.term) for e in storage.entries] == [(1, 1), (2, 1), (3, 2)]
    assert storage.hard_state == HardState(term=2, vote=1)
    assert storage.persistent_state().entries == storage.entries


def test_append_with_gap_is_a_bug() -> None:
    storage = DurableStorage()
    storage.persist(None, _entries(1, [1]), None)
    with pytest.raises(AssertionError):
        storage.persist(None, _entries(3, [1]), None)


def test_installed_snapshot_replaces_the_log() -> None:
    storage = DurableStorage()
    storage.persist(None, _entries(1, [1, 1, 2, 2]), None)
    storage.persist(_snapshot(2, 1), _entries(3, [3]), None)
    assert [(e.index, e.term) for e in storage.entries] == [(3, 3)]
    assert storage.term_at(2) == 1
    storage.persist(_snapshot(5, 3), [], None)
    assert storage.entries == []
    assert storage.last_index == 5
    with pytest.raises(AssertionError):
        storage.persist(_snapshot(4, 3), [], None)


def test_compaction_drops_covered_entries() -> None:
    storage = DurableStorage()
    storage.persist(None, _entries(1, [1, 1, 1]), None)
    storage.compact(_snapshot(2, 1))
    assert storage.snapshot_index == 2
    assert [e.index for e in storage.entries] == [3]
    with pytest.raises(AssertionError):
        storage.compact(_snapshot(3, 7))


def test_hard_state_term_never_goes_back() -> None:
    storage = DurableStorage()
    storage.persist(None, [], HardState(term=3))
    with pytest.raises(AssertionError):
        storage.persist(None, [], HardState(term=2))
