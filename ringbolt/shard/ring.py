"""Key -> shard: a consistent-hash ring cut into contiguous ranges.

Theory of operation
-------------------
Every key hashes with xxh3_64 to a point of the 64-bit hash space
[0, 2**64). The space is cut into contiguous, non-overlapping, half-open
ranges [start, end), one per shard, that together cover all of it: the first
range starts at 0 and the last ends at 2**64. So every key maps to exactly
one shard, and `shard_for_key` is one hash plus one bisect over the sorted
range starts.

Ranges rather than scattered virtual nodes make the two online operations
local: `split` cuts one range in two (only keys of that shard move, to the
new shard) and `merge` joins two adjacent ranges (only keys of the right
shard move, to the left one). A ring is immutable; each operation returns a
new ring whose `version` is one higher, so holders of a stale ring can tell.

Misuse (unknown shard, a split point outside the range, merging ranges that
are not neighbours) raises `RingError`; a broken internal invariant raises
AssertionError.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from ringbolt.shard.limits import HASH_SPACE, shards_max, split_width_min

key_hash = xxhash.xxh3_64_intdigest
"""The hash of a key on the ring: xxh3_64 of the raw key bytes, seed 0."""

RING_FORMAT_VERSION = 1


class RingError(ValueError):
    """A ring operation was asked for something the ring cannot do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardRange:
    """Shard `shard_id` owns hashes in [start, end); `end` may be 2**64."""

    shard_id: int
    start: int
    end: int

    def __contains__(self, hash_value: object) -> bool:
        return isinstance(hash_value, int) and self.start <= hash_value < self.end

    @property
    def width(self) -> int:
        return self.end - self.start


class Ring:
    """An immutable map from the 64-bit hash space to shard ids."""

    __slots__ = ("_starts", "_shard_ids", "_index_by_shard", "version")

    def __init__(self, starts: Sequence[int], shard_ids: Sequence[int], version: int = 0) -> None:
        _validate(starts, shard_ids, version)
        self._starts: list[int] = list(starts)
        self._shard_ids: list[int] = list(shard_ids)
        self._index_by_shard: dict[int, int] = {s: i for i, s in enumerate(self._shard_ids)}
        self.version: int = version
        assert len(self._index_by_shard) == len(self._shard_ids)

    # -- construction -----------------------------------------------------

    @classmethod
    def uniform(cls, shard_ids: Sequence[int]) -> Ring:
        """Equal ranges, in the order given: shard_ids[0] owns the lowest."""
        count = len(shard_ids)
        if count == 0:
            raise RingError("a ring needs at least one shard")
        if count > shards_max:
            raise RingError(f"{count} shards exceed shards_max={shards_max}")
        starts = [index * HASH_SPACE // count for index in range(count)]
        _check(starts, list(shard_ids), 0)
        return cls(starts, list(shard_ids))

    # -- lookups (hot path) -----------------------------------------------

    def shard_for_key(self, key: bytes) -> int:
        return self._shard_ids[bisect.bisect_right(self._starts, key_hash(key)) - 1]

    def shard_for_hash(self, hash_value: int) -> int:
        assert 0 <= hash_value < HASH_SPACE
        return self._shard_ids[bisect.bisect_right(self._starts, hash_value) - 1]

    def range_of(self, shard_id: int) -> ShardRange:
        index = self._index(shard_id)
        return ShardRange(shard_id=shard_id, start=self._starts[index], end=self._end(index))

    def ranges(self) -> list[ShardRange]:
        """All ranges in hash order."""
        return [
            ShardRange(shard_id=shard_id, start=start, end=self._end(index))
            for index, (start, shard_id) in enumerate(
                zip(self._starts, self._shard_ids, strict=True)
            )
        ]

    def shard_ids(self) -> list[int]:
        """Shard ids in hash order."""
        return list(self._shard_ids)

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._index_by_shard

    def __len__(self) -> int:
        return len(self._shard_ids)

    def same_ranges(self, other: Ring) -> bool:
        """Equal partitions, whatever the versions."""
        return self._starts == other._starts and self._shard_ids == other._shard_ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and self.version == other.version and self.same_ranges(other)

    def __hash__(self) -> int:
        return hash((self.version, tuple(self._starts), tuple(self._shard_ids)))

    def __repr__(self) -> str:
        return f"Ring(version={self.version}, shards={len(self)})"

    # -- online changes -----------------------------------------------------

    def split(self, shard_id: int, new_shard_id: int, at_hash: int | None = None) -> Ring:
        """Cut `shard_id`'s range at `at_hash` (default: its midpoint).

        `shard_id` keeps [start, at_hash); `new_shard_id` takes [at_hash, end).
        """
        index = self._index(shard_id)
        if new_shard_id in self._index_by_shard:
            raise RingError(f"shard {new_shard_id} already exists")
        if len(self) >= shards_max:
            raise RingError(f"ring already holds shards_max={shards_max} shards")
        start, end = self._starts[index], self._end(index)
        if end - start < split_width_min:
            raise RingError(f"range of shard {shard_id} is too narrow to split")
        cut = (start + end) // 2 if at_hash is None else at_hash
        if not start < cut < end:
            raise RingError(f"split point {cut} is not strictly inside [{start}, {end})")
        starts = self._starts[: index + 1] + [cut] + self._starts[index + 1 :]
        shard_ids = self._shard_ids[: index + 1] + [new_shard_id] + self._shard_ids[index + 1 :]
        return Ring(starts, shard_ids, self.version + 1)

    def merge(self, left_id: int, right_id: int) -> Ring:
        """Join `right_id`'s range into its left neighbour `left_id`."""
        left, right = self._index(left_id), self._index(right_id)
        if right != left + 1:
            raise RingError(f"shard {right_id} does not directly follow shard {left_id}")
        starts = self._starts[:right] + self._starts[right + 1 :]
        shard_ids = self._shard_ids[:right] + self._shard_ids[right + 1 :]
        return Ring(starts, shard_ids, self.version + 1)

    # -- serialization ----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data (ints and lists): fits msgpack (every start < 2**64) and JSON."""
        return {
            "format": RING_FORMAT_VERSION,
            "version": self.version,
            "starts": list(self._starts),
            "shard_ids": list(self._shard_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ring:
        """Inverse of `to_dict`; untrusted input raises `RingError`."""
        if data.get("format") != RING_FORMAT_VERSION:
            raise RingError(f"unknown ring format {data.get('format')!r}")
        starts, shard_ids, version = data.get("starts"), data.get("shard_ids"), data.get("version")
        if not isinstance(starts, list) or not isinstance(shard_ids, list):
            raise RingError("ring starts and shard_ids must be lists")
        if not isinstance(version, int) or isinstance(version, bool):
            raise RingError("ring version must be an integer")
        _check(starts, shard_ids, version)
        return cls(starts, shard_ids, version)

    def statistics(self) -> dict[str, int | float]:
        widths = [self._end(index) - start for index, start in enumerate(self._starts)]
        return {
            "version": self.version,
            "shards": len(self),
            "widest_range_fraction": max(widths) / HASH_SPACE,
            "narrowest_range_fraction": min(widths) / HASH_SPACE,
        }

    # -- internals ----------------------------------------------------------

    def _index(self, shard_id: int) -> int:
        index = self._index_by_shard.get(shard_id)
        if index is None:
            raise RingError(f"no shard {shard_id} in the ring")
        return index

    def _end(self, index: int) -> int:
        return self._starts[index + 1] if index + 1 < len(self._starts) else HASH_SPACE


def _check(starts: Sequence[object], shard_ids: Sequence[object], version: object) -> None:
    """Validate untrusted ring data; raise RingError on the first problem."""
    if not starts or len(starts) != len(shard_ids):
        raise RingError("a ring needs as many starts as shard ids, and at least one")
    if len(starts) > shards_max:
        raise RingError(f"{len(starts)} shards exceed shards_max={shards_max}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in [*starts, *shard_ids]):
        raise RingError("ring starts and shard ids must be integers")
    if not isinstance(version, int) or version < 0:
        raise RingError("ring version must be a non-negative integer")
    if starts[0] != 0:
        raise RingError("the first range must start at hash 0")
    if any(not a < b for a, b in zip(starts, starts[1:], strict=False)):  # type: ignore[operator]
        raise RingError("range starts must be strictly increasing")
    if starts[-1] >= HASH_SPACE:  # type: ignore[operator]
        raise RingError("range starts must lie below 2**64")
    if len(set(shard_ids)) != len(shard_ids):
        raise RingError("shard ids must be distinct")


def _validate(starts: Sequence[int], shard_ids: Sequence[int], version: int) -> None:
    """Internal construction: a failure here is a bug in this module."""
    try:
        _check(starts, shard_ids, version)
    except RingError as error:
        raise AssertionError(f"invalid ring: {error}") from error
