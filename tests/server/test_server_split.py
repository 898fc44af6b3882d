"""The split entry on a real store: keys move once, ranges fence, repeats are recognised."""

from __future__ import annotations

from pathlib import Path

from ringbolt.consensus.types import Entry
from ringbolt.kv import commands as kv
from ringbolt.kv.machine import CommandFailed
from ringbolt.server.split import (
    CHILD_INIT_INDEX,
    RANGE_KEY,
    FencedStore,
    Split,
    command_keys,
    decode_split,
    encode_split,
)
from ringbolt.shard.limits import HASH_SPACE
from ringbolt.shard.ring import key_hash
from ringbolt.storage.engine import StateMachineStore

CUT = HASH_SPACE // 2


def test_split_moves_the_upper_keys_fences_them_and_recognises_a_repeat(tmp_path: Path) -> None:
    store = StateMachineStore.open(str(tmp_path))
    started: list[tuple[int, Split, int]] = []
    fenced = FencedStore(store, lambda parent, split, index: started.append((parent, split, index)),
                         lambda storage_id: False)
    keys = [f"key{i}".encode() for i in range(200)]
    fenced.apply(1, [Entry(term=1, index=i + 1, data=kv.put(k, b"v" + k))
                     for i, k in enumerate(keys)])
    split = Split(child=7, lo=0, at=CUT, hi=HASH_SPACE, voters=(1, 2, 3))
    assert decode_split(encode_split(split)) == split
    [result] = fenced.apply(1, [Entry(term=1, index=201, data=encode_split(split))])
    assert result == 7 and started == [(1, split, 201)]
    upper = [k for k in keys if key_hash(k) >= CUT]
    assert 50 < len(upper) < 150
    for key in keys:
        in_child = store.get(8, key) is not None  # child shard 7 is stored as group 8
        assert in_child == (key in upper) and (store.get(1, key) is None) == in_child
    assert store.count(1) == len(keys) - len(upper) + 1  # + the range record
    assert store.count(8) == len(upper) + 1
    assert store.applied(1) == (201, 1) and store.applied(8)[0] == CHILD_INIT_INDEX
    assert fenced.range_of(1) == (0, CUT) and fenced.range_of(8) == (CUT, HASH_SPACE)

    moved, kept = upper[0], next(k for k in keys if k not in upper)
    results = fenced.apply(1, [Entry(term=1, index=202, data=kv.put(moved, b"late")),
                               Entry(term=1, index=203, data=kv.put(kept, b"fine")),
                               Entry(term=1, index=204, data=kv.delete(kept, moved))])
    assert isinstance(results[0], CommandFailed) and results[0].message.startswith("TRYAGAIN")
    assert "not executed" in results[0].message
    assert isinstance(results[2], CommandFailed)  # one key outside: nothing of it happens
    assert store.get(1, moved) is None and store.get(8, moved) == (b"v" + moved, 0)
    assert store.get(1, kept) == (b"fine", 0) and store.applied(1)[0] == 204
    assert not fenced.in_range(1, moved) and fenced.in_range(8, moved)

    # the same request again (its first answer was lost): recognised, nothing moves
    [again] = fenced.apply(1, [Entry(term=1, index=205, data=encode_split(split))])
    assert again == 7 and len(started) == 1
    stale = Split(child=9, lo=0, at=CUT // 2, hi=HASH_SPACE, voters=(1, 2, 3))
    [refused] = fenced.apply(1, [Entry(term=1, index=206, data=encode_split(stale))])
    assert refused is False and store.count(1) == len(keys) - len(upper) + 1
    store.close()


def test_reopened_store_keeps_the_fence(tmp_path: Path) -> None:
    store = StateMachineStore.open(str(tmp_path))
    fenced = FencedStore(store, lambda *args: None, lambda storage_id: False)
    fenced.apply(1, [Entry(term=2, index=1, data=encode_split(
        Split(child=1, lo=0, at=CUT, hi=HASH_SPACE, voters=(1,))))])
    store.close()
    store = StateMachineStore.open(str(tmp_path))
    assert FencedStore(store, lambda *args: None, lambda sid: False).range_of(1) == (0, CUT)
    assert store.get(1, RANGE_KEY) is not None
    store.close()


def test_command_keys() -> None:
    assert command_keys(kv.delete(b"a", b"b")) == [b"a", b"b"]
    assert command_keys(kv.mput([(b"x", b"1"), (b"y", b"2")])) == [b"x", b"y"]
    assert command_keys(kv.cas(b"k", None, b"v")) == [b"k"]
    assert command_keys(kv.purge_expired([b"z"], now_ms=1)) == [b"z"]
    assert command_keys(kv.noop()) == [] and command_keys(b"garbage") == []
