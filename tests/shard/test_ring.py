"""The key -> shard ring against a reference (linear scan over ranges)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbolt.shard.limits import HASH_SPACE
from ringbolt.shard.ring import Ring, RingError, ShardRange, key_hash

keys = st.binary(min_size=0, max_size=40)
shard_id_lists = st.lists(st.integers(0, 10_000), min_size=1, max_size=40, unique=True)


def reference_shard(ranges: list[ShardRange], key: bytes) -> int:
    owners = [r.shard_id for r in ranges if r.start <= key_hash(key) < r.end]
    assert len(owners) == 1
    return owners[0]


def test_uniform_ranges_tile_the_hash_space_in_order() -> None:
    ring = Ring.uniform([7, 3, 9, 1])
    ranges = ring.ranges()
    assert [r.shard_id for r in ranges] == [7, 3, 9, 1]
    assert ranges[0].start == 0
    assert ranges[-1].end == HASH_SPACE
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False))
    assert {r.width for r in ranges} == {HASH_SPACE // 4}
    assert ring.version == 0


def test_uniform_refuses_empty_and_duplicate_shards() -> None:
    with pytest.raises(RingError):
        Ring.uniform([])
    with pytest.raises(RingError):
        Ring.uniform([1, 2, 1])


@settings(max_examples=60, deadline=None)
@given(shard_id_lists, st.lists(keys, min_size=1, max_size=30))
def test_every_key_maps_to_exactly_one_shard(shard_ids: list[int], sample: list[bytes]) -> None:
    ring = Ring.uniform(shard_ids)
    ranges = ring.ranges()
    for key in sample:
        shard = ring.shard_for_key(key)
        assert shard == reference_shard(ranges, key)
        assert key_hash(key) in ring.range_of(shard)


@settings(max_examples=60, deadline=None)
@given(shard_id_lists, st.data(), st.lists(keys, min_size=1, max_size=40))
def test_split_moves_only_keys_of_the_split_shard_to_the_new_one(
    shard_ids: list[int], data: st.DataObject, sample: list[bytes]
) -> None:
    ring = Ring.uniform(shard_ids)
    victim = data.draw(st.sampled_from(shard_ids))
    new_id = max(shard_ids) + 1
    span = ring.range_of(victim)
    at = data.draw(st.none() | st.integers(span.start + 1, span.end - 1))
    split = ring.split(victim, new_id, at_hash=at)
    assert split.version == ring.version + 1
    cut = (span.start + span.end) // 2 if at is None else at
    assert split.range_of(victim) == ShardRange(shard_id=victim, start=span.start, end=cut)
    assert split.range_of(new_id) == ShardRange(shard_id=new_id, start=cut, end=span.end)
    for key in sample:
        before, after = ring.shard_for_key(key), split.shard_for_key(key)
        if before != victim:
            assert after == before
        else:
            assert after == (new_id if key_hash(key) >= cut else victim)


@settings(max_examples=60, deadline=None)
@given(shard_id_lists, st.data())
def test_merge_is_the_inverse_of_split(shard_ids: list[int], data: st.DataObject) -> None:
    ring = Ring.uniform(shard_ids)
    victim = data.draw(st.sampled_from(shard_ids))
    new_id = max(shard_ids) + 1
    merged = ring.split(victim, new_id).merge(victim, new_id)
    assert merged.same_ranges(ring)
    assert merged.version == ring.version + 2
    assert merged != ring  # versions differ: a holder can tell the map changed


@settings(max_examples=40, deadline=None)
@given(shard_id_lists, st.data())
def test_repeated_splits_and_merges_keep_a_tiling(
    shard_ids: list[int], data: st.DataObject
) -> None:
    ring = Ring.uniform(shard_ids)
    next_id = max(shard_ids) + 1
    for _ in range(data.draw(st.integers(1, 12))):
        ids = ring.shard_ids()
        if len(ids) > 1 and data.draw(st.booleans()):
            left = data.draw(st.integers(0, len(ids) - 2))
            ring = ring.merge(ids[left], ids[left + 1])
        else:
            ring = ring.split(data.draw(st.sampled_from(ids)), next_id)
            next_id += 1
        ranges = ring.ranges()
        assert ranges[0].start == 0
        assert ranges[-1].end == HASH_SPACE
        assert all(
            a.end == b.start and a.width > 0 for a, b in zip(ranges, ranges[1:], strict=False)
        )
    assert Ring.from_dict(ring.to_dict()) == ring


def test_split_and_merge_refuse_misuse() -> None:
    ring = Ring.uniform([1, 2, 3])
    span = ring.range_of(2)
    with pytest.raises(RingError, match="no shard"):
        ring.split(99, 100)
    with pytest.raises(RingError, match="already exists"):
        ring.split(1, 3)
    with pytest.raises(RingError, match="strictly inside"):
        ring.split(2, 100, at_hash=span.start)
    with pytest.raises(RingError, match="strictly inside"):
        ring.split(2, 100, at_hash=span.end)
    with pytest.raises(RingError, match="does not directly follow"):
        ring.merge(1, 3)
    with pytest.raises(RingError, match="does not directly follow"):
        ring.merge(2, 1)
    narrow = Ring.uniform([1]).split(1, 2, at_hash=1)
    with pytest.raises(RingError, match="too narrow"):
        narrow.split(1, 3)


def test_serialization_round_trips_through_msgpack() -> None:
    ring = Ring.uniform([5, 6, 7]).split(6, 8).split(5, 9, at_hash=3)
    data = msgpack.unpackb(msgpack.packb(ring.to_dict()))
    restored = Ring.from_dict(data)
    assert restored == ring
    assert restored.ranges() == ring.ranges()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"format": 2}, "format"),
        ({"starts": [1, 5]}, "start at hash 0"),
        ({"starts": [0, 0]}, "strictly increasing"),
        ({"starts": [0, HASH_SPACE]}, "below 2"),
        ({"shard_ids": [4, 4]}, "distinct"),
        ({"shard_ids": [4]}, "as many starts"),
        ({"shard_ids": [4, "x"]}, "integers"),
        ({"version": -1}, "version"),
        ({"starts": "0,5"}, "lists"),
    ],
)
def test_from_dict_rejects_malformed_data(patch: dict[str, object], message: str) -> None:
    data = {"format": 1, "version": 0, "starts": [0, 5], "shard_ids": [4, 5]} | patch
    with pytest.raises(RingError, match=message):
        Ring.from_dict(data)


def test_keys_spread_evenly_over_uniform_shards() -> None:
    ring = Ring.uniform(list(range(16)))
    counts = [0] * 16
    for index in range(16_000):
        counts[ring.shard_for_key(b"user:%d" % index)] += 1
    # 1000 expected per shard; binomial sd ~31, so 850..1150 is > 4.5 sd.
    assert min(counts) > 850
    assert max(counts) < 1150


def test_statistics_report_range_widths() -> None:
    stats = Ring.uniform([1, 2]).split(1, 3).statistics()
    assert stats["shards"] == 3
    assert stats["version"] == 1
    assert stats["widest_range_fraction"] == 0.5
    assert stats["narrowest_range_fraction"] == 0.25
