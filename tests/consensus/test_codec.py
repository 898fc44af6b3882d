"""The message codec: round trips (property-tested) and garbage rejection."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbolt.consensus.codec import (
    ConfChangeDecodeError,
    MessageDecodeError,
    decode_bootstrap_conf,
    decode_conf_change,
    decode_message,
    encode_bootstrap_conf,
    encode_conf_change,
    encode_message,
)
from ringbolt.consensus.messages import (
    MESSAGE_TYPES,
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    MessageKind,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotChunk,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from ringbolt.consensus.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    SnapshotMeta,
)

ids = st.integers(min_value=1, max_value=2**63 - 1)
uints = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=2**40)
blobs = st.binary(max_size=64)


@st.composite
def confs(draw: st.DrawFn) -> ConfState:
    nodes = draw(st.lists(ids, max_size=6, unique=True))
    split = draw(st.integers(min_value=0, max_value=len(nodes)))
    return ConfState(voters=frozenset(nodes[:split]), learners=frozenset(nodes[split:]))


entries = st.builds(
    Entry, term=small, index=small, kind=st.sampled_from(list(EntryKind)), data=blobs
)
metas = st.builds(SnapshotMeta, index=small, term=small, conf=confs())
header = {"sender": ids, "recipient": ids, "term": uints}

messages = st.one_of(
    st.builds(VoteRequest, **header, last_log_index=uints, last_log_term=uints,
              pre_vote=st.booleans(), transfer=st.booleans()),
    st.builds(VoteResponse, **header, granted=st.booleans(), pre_vote=st.booleans()),
    st.builds(lambda e, p, **kw: AppendRequest(**kw, prev_log_index=p, entries=[
        Entry(term=x.term, index=p + i + 1, kind=x.kind, data=x.data) for i, x in enumerate(e)]),
        st.lists(entries, max_size=5), small, **header, prev_log_term=uints, commit=uints),
    st.builds(AppendResponse, **header, index=uints, reject=st.booleans(), hint_index=uints,
              hint_term=uints),
    st.builds(Heartbeat, **header, commit=uints, read_seq=uints, lease_tick=uints),
    st.builds(HeartbeatResponse, **header, read_seq=uints, lease_tick=uints),
    st.builds(SnapshotChunk, **header, meta=metas, offset=uints, total_bytes=uints, data=blobs,
              done=st.booleans()),
    st.builds(SnapshotResponse, **header, index=uints, offset=uints, done=st.booleans(),
              reject=st.booleans()),
    st.builds(ReadIndexRequest, **header, context=blobs),
    st.builds(ReadIndexResponse, **header, index=uints, context=blobs),
    st.builds(TimeoutNow, **header),
)


@settings(max_examples=400, deadline=None)
@given(messages)
def test_round_trip(message: object) -> None:
    encoded = encode_message(message)  # type: ignore[arg-type]
    assert decode_message(encoded) == message


def test_every_message_type_is_routable_frozen_and_kinded() -> None:
    for cls in MESSAGE_TYPES:
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        assert {"sender", "recipient", "term"} <= set(fields)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert len(MessageKind) == len(MESSAGE_TYPES) + 2  # Vote* carry two kinds each
    assert VoteRequest(sender=1, recipient=2, term=1, last_log_index=0, last_log_term=0,
                       pre_vote=True).kind == MessageKind.PRE_VOTE
    assert TimeoutNow(sender=1, recipient=2, term=1).kind == MessageKind.TIMEOUT_NOW


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_message_decode_error(data: bytes) -> None:
    try:
        decoded = decode_message(data)
    except MessageDecodeError:
        return
    assert type(decoded) in MESSAGE_TYPES


@settings(max_examples=300, deadline=None)
@given(messages, st.integers(min_value=0, max_value=500), st.integers(min_value=0, max_value=255))
def test_corrupted_messages_never_crash(message: object, position: int, value: int) -> None:
    encoded = bytearray(encode_message(message))  # type: ignore[arg-type]
    encoded[position % len(encoded)] = value
    try:
        decoded = decode_message(bytes(encoded))
    except MessageDecodeError:
        return
    assert type(decoded) in MESSAGE_TYPES


@pytest.mark.parametrize(
    "body",
    [
        [2, 11, 1, 2, 3],  # unknown version
        [1, 99, 1, 2, 3],  # unknown tag
        [1, 11, 1, 2],  # missing field
        [1, 11, 1, 2, 3, 4],  # extra field
        [1, 11, 0, 2, 3],  # node id 0
        [1, 11, 1, 2, -3],  # negative term
        [1, 11, 1, 2, True],  # bool is not an int
        [1, 11, 1, 2, "3"],  # string is not an int
        [1, 3, 1, 2, 3, 0, 0, 0, [[1, 1, 9, b""]]],  # unknown entry kind
        [1, 3, 1, 2, 3, 0, 0, 0, [[1, 1, 0]]],  # short entry
        [1, 3, 1, 2, 3, 0, 0, 0, [[1, 1, 0, b""], [1, 3, 0, b""]]],  # a gap
        {"not": "a list"},
    ],
)
def test_malformed_bodies_are_refused(body: object) -> None:
    with pytest.raises(MessageDecodeError):
        decode_message(msgpack.packb(body, use_bin_type=True))


@given(st.sampled_from(list(ConfChangeKind)), ids)
def test_conf_change_round_trip(kind: ConfChangeKind, node: int) -> None:
    change = ConfChange(kind=kind, node_id=node)
    assert decode_conf_change(encode_conf_change(change)) == change


@given(confs())
def test_bootstrap_conf_round_trip(conf: ConfState) -> None:
    assert decode_bootstrap_conf(encode_bootstrap_conf(conf)) == conf


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb([1, 7, 3]), msgpack.packb([1, 0, 0])])
def test_bad_conf_change_raises_typed_error(data: bytes) -> None:
    with pytest.raises(ConfChangeDecodeError):
        decode_conf_change(data)


def test_new_entry_builds_an_ordinary_frozen_entry() -> None:
    """The hot paths' constructor makes exactly what Entry(...) makes."""
    import dataclasses

    from ringbolt.consensus.types import new_entry

    built = new_entry(3, 7, EntryKind.CONFIG, b"x")
    assert built == Entry(term=3, index=7, kind=EntryKind.CONFIG, data=b"x")
    assert hash(built) == hash(Entry(term=3, index=7, kind=EntryKind.CONFIG, data=b"x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.term = 4  # type: ignore[misc]
