"""Snapshot streams: bounded chunks, consistency, verified atomic install."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringbolt.consensus.types import ConfState, Entry, Snapshot, SnapshotMeta
from ringbolt.kv.commands import Op, encode
from ringbolt.storage.engine import StateMachineStore
from ringbolt.storage.errors import SnapshotInvalid

CONF = ConfState(voters=frozenset({1, 2, 3}))


def put(index: int, key: bytes, value: bytes, term: int = 1) -> Entry:
    return Entry(term=term, index=index, data=encode(Op.PUT, 0, key, value, 7, 0))


@pytest.fixture
def store(tmp_path: Path) -> StateMachineStore:
    return StateMachineStore.open(tmp_path / "state", map_size_bytes=256 * 1024 * 1024)


def fill(store: StateMachineStore, group_id: int, count: int, value_bytes: int = 100) -> None:
    entries = [put(i + 1, b"key%06d" % i, bytes([i % 256]) * value_bytes, term=2) for i in range(count)]
    entries.append(put(count + 1, b"L" * 5000, b"long key", term=2))
    store.apply(group_id, entries)


def test_chunks_are_bounded_and_install_reproduces_the_state(store: StateMachineStore) -> None:
    fill(store, 1, 500)
    chunks = list(store.snapshot_chunks(1, chunk_bytes_max=4096))
    assert len(chunks) > 10
    assert all(0 < len(chunk) <= 4096 for chunk in chunks)
    store.apply(2, [put(1, b"stale", b"x"), put(2, b"key000001", b"old")])
    store.install_snapshot(2, iter(chunks), SnapshotMeta(index=501, term=2, conf=CONF))
    assert store.applied(2) == (501, 2)
    assert store.count(2) == 501
    assert store.get(2, b"stale") is None
    assert store.get(2, b"key000001") == (bytes([1]) * 100, 7)
    assert store.get(2, b"L" * 5000) == (b"long key", 7)
    assert store.snapshot_bytes(2) == b"".join(chunks)


def test_snapshot_is_consistent_while_writes_go_on(store: StateMachineStore) -> None:
    fill(store, 1, 100)
    stream = store.snapshot_chunks(1, chunk_bytes_max=512)
    first = next(stream)
    store.apply(1, [put(102, b"key000000", b"changed"), put(103, b"new", b"x")])
    data = first + b"".join(stream)
    store.install_snapshot(5, data)
    assert store.applied_index(5) == 101
    assert store.get(5, b"key000000") == (bytes([0]) * 100, 7)
    assert store.get(5, b"new") is None
    assert store.get(1, b"key000000") == (b"changed", 7)


def test_install_from_a_snapshot_object(store: StateMachineStore) -> None:
    fill(store, 1, 10)
    snapshot = Snapshot(meta=SnapshotMeta(index=11, term=2, conf=CONF), data=store.snapshot_bytes(1))
    store.install_snapshot(3, snapshot)
    assert store.count(3) == 11


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "drop_chunk", "empty"])
def test_damaged_stream_leaves_the_old_state(store: StateMachineStore, damage: str) -> None:
    fill(store, 1, 200)
    store.apply(2, [put(1, b"mine", b"keep")])
    chunks = list(store.snapshot_chunks(1, chunk_bytes_max=1000))
    whole = b"".join(chunks)
    if damage == "flip":
        broken = [whole[:5000] + bytes([whole[5000] ^ 1]) + whole[5001:]]
    elif damage == "truncate":
        broken = [whole[:-1]]
    elif damage == "extend":
        broken = [whole + b"\x00"]
    elif damage == "drop_chunk":
        broken = chunks[:3] + chunks[4:]
    else:
        broken = []
    with pytest.raises(SnapshotInvalid):
        store.install_snapshot(2, broken)
    assert store.applied(2) == (1, 1)
    assert store.get(2, b"mine") == (b"keep", 7)
    assert store.count(2) == 1


def test_meta_mismatch_is_refused(store: StateMachineStore) -> None:
    fill(store, 1, 10)
    with pytest.raises(SnapshotInvalid, match="expected index 12"):
        store.install_snapshot(2, store.snapshot_bytes(1), SnapshotMeta(index=12, term=2, conf=CONF))
    assert store.applied_index(2) == 0


def test_large_snapshot_spools_to_disk(store: StateMachineStore) -> None:
    fill(store, 1, 40, value_bytes=512 * 1024)  # ~20 MiB: beyond the in-memory spool
    chunks = store.snapshot_chunks(1)
    store.install_snapshot(2, chunks)
    assert store.count(2) == 41
    assert store.get(2, b"key000039") == (bytes([39]) * 512 * 1024, 7)
