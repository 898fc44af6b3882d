"""The KV state machine against a tiny reference model, plus its error paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringbolt.kv import commands
from ringbolt.kv.commands import CommandDecodeError, PutCondition
from ringbolt.kv.machine import CommandFailed, DictBackend, apply_command


def test_put_get_conditions() -> None:
    backend = DictBackend()
    assert apply_command(backend, commands.put(b"k", b"v1")) is True
    assert apply_command(backend, commands.put(b"k", b"v2", condition=PutCondition.IF_ABSENT)) is False
    assert backend.data[b"k"] == (b"v1", 0)
    assert apply_command(backend, commands.put(b"x", b"v", condition=PutCondition.IF_PRESENT)) is False
    assert b"x" not in backend.data
    assert apply_command(backend, commands.put(b"k", b"v3", return_old=True)) == b"v1"


def test_expiry_is_decided_by_the_command_clock() -> None:
    backend = DictBackend()
    apply_command(backend, commands.put(b"k", b"v", now_ms=1000, expire_at_ms=1500))
    # A later command at now_ms=2000 sees the key as absent: NX succeeds.
    put_nx = commands.put(b"k", b"w", now_ms=2000, condition=PutCondition.IF_ABSENT)
    assert apply_command(backend, put_nx) is True
    assert backend.data[b"k"] == (b"w", 0)


def test_delete_counts_only_live_keys() -> None:
    backend = DictBackend()
    apply_command(backend, commands.put(b"a", b"1", now_ms=0, expire_at_ms=10))
    apply_command(backend, commands.put(b"b", b"2"))
    assert apply_command(backend, commands.delete(b"a", b"b", b"c", now_ms=100)) == 1
    assert backend.data == {}


def test_cas_semantics() -> None:
    backend = DictBackend()
    assert apply_command(backend, commands.cas(b"k", None, b"1")) is True
    assert apply_command(backend, commands.cas(b"k", None, b"2")) is False
    assert apply_command(backend, commands.cas(b"k", b"1", b"2")) is True
    assert apply_command(backend, commands.cas(b"k", b"1", b"3")) is False
    assert backend.data[b"k"] == (b"2", 0)


def test_incr_errors_change_nothing() -> None:
    backend = DictBackend()
    apply_command(backend, commands.put(b"k", b"abc"))
    result = apply_command(backend, commands.incrby(b"k", 1))
    assert isinstance(result, CommandFailed)
    assert backend.data[b"k"] == (b"abc", 0)
    apply_command(backend, commands.put(b"n", str(2**63 - 1).encode()))
    overflow = apply_command(backend, commands.incrby(b"n", 1))
    assert isinstance(overflow, CommandFailed)
    assert "overflow" in overflow.message
    assert apply_command(backend, commands.incrby(b"new", -5)) == -5


def test_append_expire_getset_mput_purge() -> None:
    backend = DictBackend()
    assert apply_command(backend, commands.append(b"k", b"ab")) == 2
    assert apply_command(backend, commands.append(b"k", b"cd")) == 4
    assert apply_command(backend, commands.expire(b"k", 500, now_ms=100)) is True
    assert backend.data[b"k"] == (b"abcd", 500)
    assert apply_command(backend, commands.expire(b"missing", 500, now_ms=100)) is False
    assert apply_command(backend, commands.getset(b"k", b"new", now_ms=100)) == b"abcd"
    assert backend.data[b"k"] == (b"new", 0)
    assert apply_command(backend, commands.mput([(b"x", b"1"), (b"y", b"2")])) is True
    apply_command(backend, commands.put(b"t", b"v", now_ms=0, expire_at_ms=5))
    assert apply_command(backend, commands.purge_expired([b"t", b"x"], now_ms=10)) == 1
    assert b"t" not in backend.data
    assert b"x" in backend.data


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", commands.encode(commands.Op.PUT, 0)[:-1] + b"\x00", b"\x93\x02\x01\x00"],
)
def test_garbage_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        apply_command(DictBackend(), data)


def test_wrong_argument_types_are_typed_errors() -> None:
    with pytest.raises(CommandDecodeError):
        apply_command(DictBackend(), commands.encode(commands.Op.PUT, 0, "text", b"v", 0, 0))
    with pytest.raises(CommandDecodeError):
        apply_command(DictBackend(), commands.encode(commands.Op.INCRBY, 0, b"k", "1"))


operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "delete", "cas", "append"]),
        st.sampled_from([b"a", b"b"]),
        st.one_of(st.none(), st.sampled_from([b"1", b"2", b"3"])),
        st.sampled_from([b"1", b"2", b"3"]),
    ),
    max_size=40,
)


@given(operations)
def test_matches_a_reference_dictionary(ops: list[tuple[str, bytes, bytes | None, bytes]]) -> None:
    backend = DictBackend()
    reference: dict[bytes, bytes] = {}
    for name, key, expected, value in ops:
        if name == "put":
            apply_command(backend, commands.put(key, value))
            reference[key] = value
        elif name == "delete":
            assert apply_command(backend, commands.delete(key)) == (1 if key in reference else 0)
            reference.pop(key, None)
        elif name == "cas":
            swapped = apply_command(backend, commands.cas(key, expected, value))
            assert swapped == (reference.get(key) == expected)
            if swapped:
                reference[key] = value
        else:
            apply_command(backend, commands.append(key, value))
            reference[key] = reference.get(key, b"") + value
    assert {k: v for k, (v, _) in backend.data.items()} == reference
