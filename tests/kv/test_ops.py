"""The operation registry: every op round-trips through its encode helper,
the envelope codec, its parser and its keys; stamping replaces only now_ms;
the fast path agrees with the handler; apply_entry hands over the entry."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringbolt.kv import commands
from ringbolt.kv.codec import HEADER_BYTES, NOW_MS_OFFSET, CommandDecodeError, Op, PutCondition
from ringbolt.kv.machine import (
    ApplyContext,
    DictBackend,
    KeyValueBackend,
    apply_command,
    apply_entry,
)
from ringbolt.kv.ops import OPS, command_keys, fast_put, parse_command
from ringbolt.kv.types import Result
from ringbolt.server.split import Split, encode_range, encode_split
from ringbolt.shard import mapcodec
from ringbolt.shard.clustermap import DrainNode, MergeShards, SetLeaderHint, SplitShard

keys = st.binary(min_size=0, max_size=12)
values = st.binary(max_size=40)
now = st.integers(min_value=0, max_value=2**64 - 1)
expiries = st.integers(min_value=0, max_value=2**63 - 1)

# (encoded command, op, now_ms, expected parsed arguments, expected keys)
Case = tuple[bytes, Op, int, tuple[Any, ...], list[bytes]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    op = draw(st.sampled_from(list(Op)))
    now_ms = draw(now)
    key = draw(keys)
    if op is Op.PUT:
        value, expire_at_ms = draw(values), draw(expiries)
        condition, return_old = draw(st.sampled_from(list(PutCondition))), draw(st.booleans())
        data = commands.put(key, value, now_ms=now_ms, expire_at_ms=expire_at_ms,
                            condition=condition, return_old=return_old)
        return data, op, now_ms, (key, value, expire_at_ms, condition, return_old), [key]
    if op in (Op.DELETE, Op.PURGE_EXPIRED):
        many = draw(st.lists(keys, max_size=5))
        data = (commands.delete(*many, now_ms=now_ms) if op is Op.DELETE
                else commands.purge_expired(many, now_ms=now_ms))
        return data, op, now_ms, (many,), many
    if op is Op.CAS:
        expected, new = draw(st.none() | values), draw(values)
        return commands.cas(key, expected, new, now_ms=now_ms), op, now_ms, (key, expected, new), [key]
    if op is Op.INCRBY:
        delta = draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))
        return commands.incrby(key, delta, now_ms=now_ms), op, now_ms, (key, delta), [key]
    if op is Op.APPEND:
        suffix = draw(values)
        return commands.append(key, suffix, now_ms=now_ms), op, now_ms, (key, suffix), [key]
    if op is Op.EXPIRE:
        moment = draw(expiries)
        return commands.expire(key, moment, now_ms=now_ms), op, now_ms, (key, moment), [key]
    if op is Op.MPUT:
        pairs = draw(st.lists(st.tuples(keys, values), max_size=4))
        return (commands.mput(pairs, now_ms=now_ms), op, now_ms, (pairs,),
                [k for k, _ in pairs])
    if op is Op.GETSET:
        value = draw(values)
        return commands.getset(key, value, now_ms=now_ms), op, now_ms, (key, value), [key]
    assert op is Op.NOOP
    return commands.noop(now_ms=now_ms), op, now_ms, (), []


def test_every_op_is_declared_once() -> None:
    assert set(OPS) == set(Op)
    for op, spec in OPS.items():
        assert spec.op is op
        assert spec.arguments.stop - 1 == len(spec.args._fields)
    assert OPS[Op.PUT].arguments == range(4, 6)  # return_old may be left off
    assert OPS[Op.PUT].fast_path is fast_put
    assert all(spec.fast_path is None for op, spec in OPS.items() if op is not Op.PUT)


@given(cases())
def test_round_trip_through_codec_parser_and_keys(case: Case) -> None:
    data, op, now_ms, arguments, touched = case
    spec, decoded_now_ms, parsed = parse_command(data)
    assert spec.op is op
    assert decoded_now_ms == now_ms
    assert tuple(parsed) == arguments
    assert isinstance(parsed, spec.args)
    assert command_keys(data) == touched
    assert commands.decode(data) == commands.Command(op, now_ms, commands.decode(data).args)


@given(cases())
def test_now_ms_sits_at_a_fixed_offset(case: Case) -> None:
    data, _, now_ms, _, _ = case
    assert data[NOW_MS_OFFSET - 1] == 0xCF
    assert int.from_bytes(data[NOW_MS_OFFSET:HEADER_BYTES], "big") == now_ms


@given(cases(), now)
def test_stamp_replaces_only_now_ms(case: Case, stamped_ms: int) -> None:
    data, op, _, arguments, touched = case
    stamped = commands.stamp(data, stamped_ms)
    assert len(stamped) == len(data)
    assert stamped[:NOW_MS_OFFSET] == data[:NOW_MS_OFFSET]
    assert stamped[HEADER_BYTES:] == data[HEADER_BYTES:]
    spec, now_ms, parsed = parse_command(stamped)
    assert (spec.op, now_ms, tuple(parsed)) == (op, stamped_ms, arguments)
    assert command_keys(stamped) == touched
    assert commands.stamp(stamped, 7) == commands.stamp(data, 7)


def _map_commands() -> list[bytes]:
    big = 2**40  # a uint64 where a command's now_ms sits
    return [mapcodec.encode_command(command) for command in (
        DrainNode(node_id=big), SplitShard(shard_id=big, new_shard_id=big + 1, at_hash=big),
        MergeShards(left_id=big, right_id=big + 1), SetLeaderHint(shard_id=big, node_id=big),
    )]


@pytest.mark.parametrize("payload", [
    b"", b"\x00", b"garbage", encode_split(Split(child=3, lo=0, at=2**40, hi=2**63, voters=(1, 2))),
    encode_range(0, 2**63), msgpack.packb([1, 2, 2**40]), msgpack.packb([1, 2, 2**40, 5]),
    msgpack.packb([2, 1, 2**40, b"k", b"v", 0, 0]), msgpack.packb([1, 11, 2**40, b"k"]),
    commands.noop(now_ms=5) + b"\x00", commands.put(b"k", b"v")[:HEADER_BYTES],
    *_map_commands(),
])
def test_stamp_leaves_other_payloads_unchanged(payload: bytes) -> None:
    assert commands.stamp(payload, 12345) is payload


@given(st.binary(max_size=40), st.binary(min_size=1, max_size=30))
def test_stamp_touches_at_most_the_now_ms_bytes(payload: bytes, tail: bytes) -> None:
    header = commands.append(b"k", b"v", now_ms=1)[:HEADER_BYTES]
    for data in (payload, header[:4] + payload, header + tail):
        stamped = commands.stamp(data, 99)
        assert len(stamped) == len(data)
        assert stamped[:NOW_MS_OFFSET] == data[:NOW_MS_OFFSET]
        assert stamped[HEADER_BYTES:] == data[HEADER_BYTES:]


@pytest.mark.parametrize("now_ms", [0, 5, 200, 70_000, 2**33])
def test_decoding_accepts_now_ms_in_any_integer_form(now_ms: int) -> None:
    legacy = msgpack.packb([1, int(Op.PUT), now_ms, b"k", b"v", 0, 0, False])
    assert legacy != commands.put(b"k", b"v", now_ms=now_ms) or now_ms >= 2**32
    spec, decoded_ms, parsed = parse_command(legacy)
    assert (spec.op, decoded_ms, tuple(parsed)) == (Op.PUT, now_ms, (b"k", b"v", 0, 0, False))
    backend = DictBackend()
    assert apply_entry(backend, legacy, 1, 1) is True
    assert backend.data == {b"k": (b"v", 0)}
    assert fast_put(legacy) is None or now_ms >= 2**32  # old form: the general path


@pytest.mark.parametrize("data", [
    commands.encode(Op.NOOP, 0, b"extra"), commands.encode(Op.PUT, 0, b"k", b"v", 0),
    commands.encode(Op.PUT, 0, b"k", b"v", 0, 0, False, 1), commands.encode(Op.DELETE, 0, b"k"),
    commands.encode(Op.DELETE, 0, [b"k", 1]), commands.encode(Op.MPUT, 0, [[b"k"]]),
    commands.encode(Op.CAS, 0, b"k", 1, b"v"), commands.encode(Op.PUT, 0, b"k", b"v", 0, 7),
    commands.encode(Op.EXPIRE, 0, b"k", "soon"),
])
def test_malformed_arguments_are_typed_errors_and_touch_no_keys(data: bytes) -> None:
    backend = DictBackend()
    with pytest.raises(CommandDecodeError):
        apply_entry(backend, data, 1, 1)
    assert backend.data == {}
    assert command_keys(data) == []


@given(key=keys, value=values, expire_at_ms=expiries, now_ms=now,
       condition=st.sampled_from(list(PutCondition)), return_old=st.booleans())
def test_fast_path_agrees_with_the_handler(key: bytes, value: bytes, expire_at_ms: int,
                                           now_ms: int, condition: PutCondition,
                                           return_old: bool) -> None:
    data = commands.put(key, value, now_ms=now_ms, expire_at_ms=expire_at_ms,
                        condition=condition, return_old=return_old)
    write = fast_put(data)
    plain = condition is PutCondition.ALWAYS and not return_old
    assert (write is not None) == plain
    if write is not None:
        backend = DictBackend()
        backend.put(key, b"old", 0)
        assert apply_entry(backend, data, 1, 1) is True
        assert write == (key, value, expire_at_ms)
        assert backend.data[key] == (value, expire_at_ms)


def test_fast_path_declines_other_commands() -> None:
    assert fast_put(commands.put(b"k", b"v", now_ms=1)[:-1]) is None
    assert fast_put(commands.encode(Op.PUT, 1, b"k", b"v", 0, 0)) == (b"k", b"v", 0)
    assert fast_put(commands.encode(Op.PUT, 1, "k", b"v", 0, 0)) is None
    assert fast_put(commands.encode(Op.PUT, 1, b"k", b"v", 0, 0, 0)) is None
    assert fast_put(commands.cas(b"k", None, b"v")) is None
    assert fast_put(b"") is None


def test_apply_entry_hands_the_entry_to_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ApplyContext] = []

    def spy(backend: KeyValueBackend, context: ApplyContext, args: tuple[()]) -> Result:
        seen.append(context)
        return None

    monkeypatch.setitem(OPS, Op.NOOP, dataclasses.replace(OPS[Op.NOOP], handler=spy))
    apply_entry(DictBackend(), commands.noop(now_ms=77), 12, 3)
    apply_command(DictBackend(), commands.noop(now_ms=78))
    assert seen == [ApplyContext(index=12, term=3, now_ms=77),
                    ApplyContext(index=0, term=0, now_ms=78)]
