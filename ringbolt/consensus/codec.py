"""Wire codec for Raft messages and configuration-change entries.

Theory of operation
-------------------
A message is encoded with msgpack as ``[CODEC_VERSION, tag, *fields]`` where
`tag` names the message type and the fields follow the schema below, in
order. Entries are ``[term, index, kind, data]``; a `SnapshotMeta` is
``[index, term, [voters...], [learners...]]``. No pickle, no dicts keyed by
strings on the wire.

`decode_message` validates everything it reads -- version, tag, arity, the
type and sign of every field, entry kinds, that node ids are positive -- and
raises `MessageDecodeError` on anything else. Bad bytes are a peer's fault,
never a crash: no other exception escapes it.

A CONFIG entry's `data` is `encode_conf_change(change)`. The NOOP at index 1
(the first entry of a group) carries `encode_bootstrap_conf(conf)`: the
initial configuration, which is otherwise only in each founding member's
`RaftConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from ringbolt.consensus.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
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
    new_entry,
)

CODEC_VERSION = 1
CONF_CHANGE_VERSION = 1
MESSAGE_BYTES_MAX = 256 * 1024 * 1024
"""Refuse to even parse anything larger (a peer sending this is broken)."""


class MessageDecodeError(ValueError):
    """The bytes are not a valid message of a version we speak (peer's fault)."""


class ConfChangeDecodeError(ValueError):
    """A CONFIG entry does not hold a valid ConfChange."""


# --- field kinds: encoder and validating decoder -------------------------


def _decode_uint(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise MessageDecodeError(f"expected a non-negative integer, got {value!r:.40}")
    return value


def _decode_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise MessageDecodeError(f"expected a boolean, got {value!r:.40}")
    return value


def _decode_bytes(value: Any) -> bytes:
    if type(value) is not bytes:
        raise MessageDecodeError(f"expected bytes, got {type(value).__name__}")
    return value


def _encode_entries(entries: list[Entry]) -> list[list[Any]]:
    return [[e.term, e.index, int(e.kind), e.data] for e in entries]


_ENTRY_KINDS: dict[int, EntryKind] = {int(kind): kind for kind in EntryKind}


def _decode_entries(value: Any) -> list[Entry]:
    """The hot path of a follower (every replicated entry passes here): one
    loop with the checks inline, no Enum call per entry."""
    if type(value) is not list:
        raise MessageDecodeError("entries must be a list")
    kinds = _ENTRY_KINDS
    entries: list[Entry] = []
    append = entries.append
    for item in value:
        if type(item) is not list or len(item) != 4:
            raise MessageDecodeError("an entry must be [term, index, kind, data]")
        term, index, kind_value, data = item
        if type(term) is not int or term < 0 or type(index) is not int or index < 0:
            raise MessageDecodeError(f"entry term and index must be non-negative integers, "
                                     f"got {term!r:.20} and {index!r:.20}")
        kind = kinds.get(kind_value) if type(kind_value) is int else None
        if kind is None:
            raise MessageDecodeError(f"unknown entry kind {kind_value!r:.20}")
        if type(data) is not bytes:
            raise MessageDecodeError(f"entry data must be bytes, got {type(data).__name__}")
        append(new_entry(term, index, kind, data))
    return entries


def _decode_ids(value: Any) -> frozenset[int]:
    if type(value) is not list:
        raise MessageDecodeError("node ids must be a list")
    ids = frozenset(_decode_uint(v) for v in value)
    if 0 in ids:
        raise MessageDecodeError("node id 0 is reserved")
    return ids


def encode_meta(meta: SnapshotMeta) -> list[Any]:
    conf = meta.conf
    return [meta.index, meta.term, sorted(conf.voters), sorted(conf.learners)]


def decode_meta(value: Any) -> SnapshotMeta:
    if type(value) is not list or len(value) != 4:
        raise MessageDecodeError("snapshot meta must be [index, term, voters, learners]")
    voters, learners = _decode_ids(value[2]), _decode_ids(value[3])
    if voters & learners:
        raise MessageDecodeError("a node cannot be both voter and learner")
    return SnapshotMeta(
        index=_decode_uint(value[0]),
        term=_decode_uint(value[1]),
        conf=ConfState(voters=voters, learners=learners),
    )


def _identity(value: Any) -> Any:
    return value


_FIELD_CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "uint": (_identity, _decode_uint),
    "bool": (_identity, _decode_bool),
    "bytes": (_identity, _decode_bytes),
    "entries": (_encode_entries, _decode_entries),
    "meta": (encode_meta, decode_meta),
}

_HEADER = (("sender", "uint"), ("recipient", "uint"), ("term", "uint"))

_SCHEMAS: dict[int, tuple[type, tuple[tuple[str, str], ...]]] = {
    1: (VoteRequest, _HEADER + (("last_log_index", "uint"), ("last_log_term", "uint"),
                                ("pre_vote", "bool"), ("transfer", "bool"))),
    2: (VoteResponse, _HEADER + (("granted", "bool"), ("pre_vote", "bool"))),
    3: (AppendRequest, _HEADER + (("prev_log_index", "uint"), ("prev_log_term", "uint"),
                                  ("commit", "uint"), ("entries", "entries"))),
    4: (AppendResponse, _HEADER + (("index", "uint"), ("reject", "bool"),
                                   ("hint_index", "uint"), ("hint_term", "uint"))),
    5: (Heartbeat, _HEADER + (("commit", "uint"), ("read_seq", "uint"), ("lease_tick", "uint"))),
    6: (HeartbeatResponse, _HEADER + (("read_seq", "uint"), ("lease_tick", "uint"))),
    7: (SnapshotChunk, _HEADER + (("meta", "meta"), ("offset", "uint"), ("total_bytes", "uint"),
                                  ("data", "bytes"), ("done", "bool"))),
    8: (SnapshotResponse, _HEADER + (("index", "uint"), ("offset", "uint"), ("done", "bool"),
                                     ("reject", "bool"))),
    9: (ReadIndexRequest, _HEADER + (("context", "bytes"),)),
    10: (ReadIndexResponse, _HEADER + (("index", "uint"), ("context", "bytes"))),
    11: (TimeoutNow, _HEADER),
}
_TAG_OF_TYPE: dict[type, int] = {cls: tag for tag, (cls, _) in _SCHEMAS.items()}


def _check_contiguous(prev_log_index: int, entries: list[Entry]) -> None:
    for offset, entry in enumerate(entries, start=1):
        if entry.index != prev_log_index + offset:
            raise MessageDecodeError("appended entries must follow prev_log_index contiguously")


def encode_message(message: Message) -> bytes:
    tag = _TAG_OF_TYPE.get(type(message))
    assert tag is not None, f"not a Raft message: {type(message).__name__}"
    _, schema = _SCHEMAS[tag]
    body: list[Any] = [CODEC_VERSION, tag]
    for name, field_kind in schema:
        body.append(_FIELD_CODECS[field_kind][0](getattr(message, name)))
    encoded = msgpack.packb(body, use_bin_type=True)
    assert isinstance(encoded, bytes)
    return encoded


def decode_message(data: bytes) -> Message:
    """Parse one message; `MessageDecodeError` on anything malformed."""
    if len(data) > MESSAGE_BYTES_MAX:
        raise MessageDecodeError(f"message of {len(data)} bytes exceeds {MESSAGE_BYTES_MAX}")
    try:
        body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise MessageDecodeError(f"not msgpack: {error}") from None
    if type(body) is not list or len(body) < 2:
        raise MessageDecodeError("a message is a list [version, tag, ...]")
    if body[0] != CODEC_VERSION or type(body[0]) is not int:
        raise MessageDecodeError(f"unsupported codec version {body[0]!r:.20}")
    schema_entry = _SCHEMAS.get(body[1]) if type(body[1]) is int else None
    if schema_entry is None:
        raise MessageDecodeError(f"unknown message tag {body[1]!r:.20}")
    cls, schema = schema_entry
    if len(body) != 2 + len(schema):
        raise MessageDecodeError(f"{cls.__name__} needs {len(schema)} fields")
    values = {
        name: _FIELD_CODECS[field_kind][1](value)
        for (name, field_kind), value in zip(schema, body[2:], strict=True)
    }
    if values["sender"] == 0 or values["recipient"] == 0:
        raise MessageDecodeError("node id 0 is reserved")
    if cls is AppendRequest:
        _check_contiguous(values["prev_log_index"], values["entries"])
    message: Message = cls(**values)
    return message


def encode_conf_change(change: ConfChange) -> bytes:
    assert change.node_id > 0
    encoded = msgpack.packb([CONF_CHANGE_VERSION, int(change.kind), change.node_id])
    assert isinstance(encoded, bytes)
    return encoded


def decode_conf_change(data: bytes) -> ConfChange:
    try:
        body = msgpack.unpackb(data, raw=False)
    except Exception as error:
        raise ConfChangeDecodeError(f"not msgpack: {error}") from None
    if type(body) is not list or len(body) != 3 or body[0] != CONF_CHANGE_VERSION:
        raise ConfChangeDecodeError("a ConfChange is [version, kind, node_id]")
    kind, node_id = body[1], body[2]
    if type(kind) is not int or kind not in ConfChangeKind._value2member_map_:
        raise ConfChangeDecodeError(f"unknown conf change kind {kind!r:.20}")
    if type(node_id) is not int or node_id <= 0:
        raise ConfChangeDecodeError(f"bad node id {node_id!r:.20}")
    return ConfChange(kind=ConfChangeKind(kind), node_id=node_id)


def encode_bootstrap_conf(conf: ConfState) -> bytes:
    encoded = msgpack.packb([CONF_CHANGE_VERSION, sorted(conf.voters), sorted(conf.learners)])
    assert isinstance(encoded, bytes)
    return encoded


def decode_bootstrap_conf(data: bytes) -> ConfState:
    try:
        body = msgpack.unpackb(data, raw=False)
        if type(body) is not list or len(body) != 3 or body[0] != CONF_CHANGE_VERSION:
            raise ConfChangeDecodeError("a bootstrap configuration is [version, voters, learners]")
        voters, learners = _decode_ids(body[1]), _decode_ids(body[2])
    except (MessageDecodeError, ValueError) as error:
        raise ConfChangeDecodeError(str(error)) from None
    if voters & learners:
        raise ConfChangeDecodeError("a node cannot be both voter and learner")
    return ConfState(voters=voters, learners=learners)
