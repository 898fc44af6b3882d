"""The LMDB state machine store: batches, idempotent replay, failures,
limits, long keys, scans, and the fast path agreeing with the KV machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbolt.consensus.types import ConfState, Entry, EntryKind, SnapshotMeta
from ringbolt.kv.commands import Op, PutCondition, encode
from ringbolt.kv.machine import CommandFailed, DictBackend, Result, apply_command
from ringbolt.storage import keyspace
from ringbolt.storage.engine import StateMachineStore, check_key, check_value
from ringbolt.storage.errors import KeyTooLarge, StorageDirectoryError, ValueTooLarge
from ringbolt.storage.wal import WriteAheadLog

MAP_SIZE_BYTES = 256 * 1024 * 1024


def put(index: int, key: bytes, value: bytes, expire_at_ms: int = 0) -> Entry:
    return Entry(term=1, index=index, data=encode(Op.PUT, 0, key, value, expire_at_ms, 0))


def open_store(path: Path, **options: int) -> StateMachineStore:
    return StateMachineStore.open(path / "state", map_size_bytes=MAP_SIZE_BYTES, **options)


def test_batch_applies_and_records_applied_index(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    results = store.apply(1, [put(1, b"a", b"1"), put(2, b"b", b"2", 99), Entry(term=2, index=3, kind=EntryKind.NOOP)])
    assert results == [True, True, None]
    assert store.applied(1) == (3, 2)
    assert store.get(1, b"a") == (b"1", 0)
    assert store.get(1, b"b") == (b"2", 99)
    assert store.get(2, b"a") is None  # groups have separate keyspaces
    assert store.count(1) == 2
    assert store.count(2) == 0
    store.close()


def test_replay_of_applied_entries_is_skipped(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    incr = [Entry(term=1, index=i, data=encode(Op.INCRBY, 0, b"n", 1)) for i in range(1, 4)]
    assert store.apply(1, incr) == [1, 2, 3]
    assert store.apply(1, incr + [Entry(term=1, index=4, data=encode(Op.INCRBY, 0, b"n", 1))]) == [None, None, None, 4]
    assert store.get(1, b"n") == (b"4", 0)
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.applied_index(1) == 4
    reopened.close()


def test_gap_is_a_bug(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with pytest.raises(AssertionError):
        store.apply(1, [put(2, b"a", b"1")])
    assert store.applied_index(1) == 0
    store.close()


def test_malformed_commands_fail_deterministically_and_apply_continues(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    entries = [
        Entry(term=1, index=1, data=b"\xc1garbage"),
        Entry(term=1, index=2, data=encode(Op.DELETE, 0, [b"x", 5])),  # non-bytes key mid-list
        Entry(term=1, index=3, data=encode(Op.PUT, 0, b"k", b"v", -5, 0)),  # negative expiry
        put(4, b"ok", b"yes"),
        Entry(term=1, index=5, data=encode(Op.INCRBY, 0, b"ok", 1)),
    ]
    assert store.apply(1, []) == []
    results = store.apply(1, entries)
    assert all(isinstance(r, CommandFailed) for r in results[:3])
    assert results[3] is True
    assert results[4] == CommandFailed("ERR value is not an integer or out of range")
    assert store.applied_index(1) == 5
    assert store.get(1, b"k") is None
    assert store.count(1) == 1
    store.close()


def test_limits_refuse_oversized_keys_and_values_writing_nothing(tmp_path: Path) -> None:
    store = open_store(tmp_path, value_bytes_max=1000)
    big_key = b"k" * (64 * 1024 + 1)
    entries = [
        put(1, b"v", b"x" * 1001),
        put(2, big_key, b"x"),
        Entry(term=1, index=3, data=encode(Op.MPUT, 0, [[b"a", b"1"], [b"b", b"x" * 1001]])),
        Entry(term=1, index=4, data=encode(Op.APPEND, 0, b"c", b"x" * 1000)),
        Entry(term=1, index=5, data=encode(Op.APPEND, 0, b"c", b"x")),
    ]
    results = store.apply(1, entries)
    assert [type(r) for r in results] == [CommandFailed, CommandFailed, CommandFailed, int, CommandFailed]
    assert isinstance(results[0], CommandFailed) and "1001 bytes" in results[0].message
    assert store.count(1) == 1
    assert store.get(1, b"a") is None
    assert store.get(1, b"c") == (b"x" * 1000, 0)
    with pytest.raises(KeyTooLarge):
        check_key(big_key)
    with pytest.raises(ValueTooLarge):
        check_value(b"x" * (1024 * 1024 + 1))
    check_key(b"k" * 64 * 1024)
    check_value(b"x" * 1024 * 1024)
    store.close()


def test_long_and_binary_keys(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    keys = [b"", b"\x00\xff\x00", b"a" * keyspace.INLINE_KEY_BYTES_MAX, b"b" * (keyspace.INLINE_KEY_BYTES_MAX + 1), b"c" * 64 * 1024]
    store.apply(1, [put(i + 1, key, key[:10] + b"!") for i, key in enumerate(keys)])
    for key in keys:
        assert store.get(1, key) == (key[:10] + b"!", 0)
    assert store.get(1, b"c" * (64 * 1024 - 1)) is None
    assert store.count(1) == len(keys)
    cursor, found = b"", []
    for _ in range(100):
        cursor, batch = store.scan(1, cursor, 2)
        found.extend(batch)
        if not cursor:
            break
    assert sorted(found) == sorted(keys)
    store.apply(1, [Entry(term=1, index=6, data=encode(Op.DELETE, 0, keys))])
    assert store.count(1) == 0
    store.close()


def test_scan_returns_every_key_once(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    keys = [b"key%05d" % i for i in range(1000)]
    store.apply(3, [put(i + 1, key, b"v") for i, key in enumerate(keys)])
    store.apply(4, [put(1, b"other", b"v")])
    seen: list[bytes] = []
    cursor = b""
    for _ in range(1000):
        cursor, batch = store.scan(3, cursor, 64)
        assert len(batch) <= 64
        seen.extend(batch)
        if not cursor:
            break
    assert seen == keys
    store.close()


def test_missing_parent_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageDirectoryError, match="does not exist"):
        StateMachineStore.open(tmp_path / "nope" / "state")


def test_checkpoint_protocol_lets_the_log_drop_applied_entries(tmp_path: Path) -> None:
    """LMDB sync, snapshot meta in the WAL, compact: after a restart the WAL
    returns only entries above the checkpoint and LMDB covers the rest."""
    wal = WriteAheadLog.open(tmp_path / "wal", segment_bytes_max=4096)
    store = open_store(tmp_path)
    entries = [put(i, b"k%d" % i, b"v" * 50) for i in range(1, 301)]
    for entry in entries:
        wal.append(1, entries=[entry])
        wal.sync()
    store.apply(1, entries[:250])
    index, term = store.checkpoint(1)
    assert (index, term) == (250, 1)
    wal.append(1, snapshot_meta=SnapshotMeta(index=index, term=term, conf=ConfState(voters=frozenset({1}))))
    wal.compact(1, index)
    wal.sync()
    assert wal.statistics()["segments_deleted"] > 0
    wal.close()
    store.close()
    wal = WriteAheadLog.open(tmp_path / "wal", segment_bytes_max=4096)
    store = open_store(tmp_path)
    state = wal.recovered()[1]
    assert state.snapshot is not None and state.snapshot.meta.index == 250
    assert [e.index for e in state.entries] == list(range(251, 301))
    replay = [e for e in state.entries if e.index > store.applied_index(1)]
    store.apply(1, replay)
    assert store.count(1) == 300
    assert store.get(1, b"k1") == (b"v" * 50, 0)
    wal.close()
    store.close()


_keys = st.sampled_from([b"a", b"b", b"c", b"\x00", b"n"])
_values = st.binary(max_size=8)
_now = st.integers(min_value=0, max_value=50)
_commands = st.one_of(
    st.builds(lambda k, v, e, c, n: encode(Op.PUT, n, k, v, e, c), _keys, _values,
              st.sampled_from([0, 10, 40]), st.sampled_from(list(PutCondition)), _now),
    st.builds(lambda k, v, n: encode(Op.PUT, n, k, v, 0, 0, True), _keys, _values, _now),
    st.builds(lambda ks, n: encode(Op.DELETE, n, ks), st.lists(_keys, max_size=3), _now),
    st.builds(lambda k, d, n: encode(Op.INCRBY, n, k, d), _keys, st.integers(-3, 3), _now),
    st.builds(lambda k, v, n: encode(Op.APPEND, n, k, v), _keys, _values, _now),
    st.builds(lambda k, e, n: encode(Op.EXPIRE, n, k, e), _keys, st.sampled_from([0, 5, 30]), _now),
    st.builds(lambda k, v, n: encode(Op.PUT, n, k, v, 0, 0), _keys, _values, _now),
    st.binary(max_size=6),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=st.lists(_commands, max_size=25), split=st.integers(min_value=1, max_value=25))
def test_store_agrees_with_the_reference_machine(tmp_path_factory: pytest.TempPathFactory, commands: list[bytes], split: int) -> None:
    store = open_store(tmp_path_factory.mktemp("agree"))
    reference = DictBackend()
    expected: list[Result] = []
    for data in commands:
        try:
            expected.append(apply_command(reference, data))
        except ValueError:
            expected.append(CommandFailed("malformed"))
    entries = [Entry(term=1, index=i + 1, data=d) for i, d in enumerate(commands)]
    actual: list[Result] = []
    for start in range(0, len(entries), split):
        actual.extend(store.apply(1, entries[start : start + split]))
    for want, got in zip(expected, actual, strict=True):
        if isinstance(want, CommandFailed) and want.message == "malformed":
            assert isinstance(got, CommandFailed)
        else:
            assert got == want
    for key in (b"a", b"b", b"c", b"\x00", b"n"):
        assert store.get(1, key) == reference.get(key)
    assert store.count(1) == len(reference.data)
    store.close()
