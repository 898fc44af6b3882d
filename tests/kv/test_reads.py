"""Reads decided from a stored record and the reader's clock, and their
agreement with what writes consider live."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringbolt.kv import commands
from ringbolt.kv.machine import DictBackend, apply_command, is_live, live_value
from ringbolt.kv.reads import (
    TTL_MISSING,
    TTL_PERSISTENT,
    read_exists,
    read_strlen,
    read_ttl,
    read_type,
    read_value,
)


def test_missing_key() -> None:
    assert read_value(None, 5) is None
    assert read_exists(None, 5) is False
    assert read_strlen(None, 5) == 0
    assert read_type(None, 5) == "none"
    assert read_ttl(None, 5) == TTL_MISSING


def test_key_without_expiry() -> None:
    record = (b"abc", 0)
    assert read_value(record, 10**15) == b"abc"
    assert read_exists(record, 10**15) is True
    assert read_strlen(record, 0) == 3
    assert read_type(record, 0) == "string"
    assert read_ttl(record, 0, 1000) == TTL_PERSISTENT


def test_expiry_is_exclusive_and_ttl_rounds_to_the_nearest_unit() -> None:
    record = (b"v", 10_000)
    assert read_value(record, 9_999) == b"v"
    assert read_value(record, 10_000) is None
    assert read_type(record, 10_000) == "none"
    assert read_ttl(record, 10_000) == TTL_MISSING
    assert read_ttl(record, 9_999) == 1
    assert read_ttl(record, 8_501, 1000) == 1  # 1499 ms
    assert read_ttl(record, 8_500, 1000) == 2  # 1500 ms rounds up, as the server did
    assert read_ttl(record, 0, 1000) == 10


@given(value=st.binary(max_size=8), expire_at_ms=st.integers(0, 100), now_ms=st.integers(0, 100))
def test_reads_agree_with_what_writes_see(value: bytes, expire_at_ms: int, now_ms: int) -> None:
    backend = DictBackend()
    apply_command(backend, commands.put(b"k", value, expire_at_ms=expire_at_ms))
    record = backend.get(b"k")
    live = is_live(record, now_ms)
    assert read_exists(record, now_ms) is live
    assert (read_value(record, now_ms) is not None) is live
    assert live_value(backend, b"k", now_ms) == read_value(record, now_ms)
    # NX at the same clock succeeds exactly when the read says "absent"
    put_nx = commands.put(b"k", b"new", now_ms=now_ms, condition=commands.PutCondition.IF_ABSENT)
    assert apply_command(backend, put_nx) is (not live)
