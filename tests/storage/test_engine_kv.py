"""The store asks the kv layer: handlers get the entry's index and term, and
plain SETs take `ringbolt.kv.ops.fast_put` with the same outcome as the
general path (expiry, long keys, limits, commands in the older header form)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgpack
import pytest

from ringbolt.consensus.types import Entry
from ringbolt.kv import commands
from ringbolt.kv.codec import Op
from ringbolt.kv.machine import ApplyContext, CommandFailed, KeyValueBackend, Result
from ringbolt.kv.ops import OPS
from ringbolt.storage import keyspace
from ringbolt.storage.engine import StateMachineStore


def open_store(path: Path, **options: int) -> StateMachineStore:
    return StateMachineStore.open(path / "state", map_size_bytes=64 * 1024 * 1024, **options)


def test_handlers_get_the_entry_index_and_term(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ApplyContext] = []

    def spy(backend: KeyValueBackend, context: ApplyContext, args: tuple[()]) -> Result:
        seen.append(context)
        backend.put(b"at", b"%d/%d" % (context.index, context.term), 0)
        return None

    monkeypatch.setitem(OPS, Op.NOOP, dataclasses.replace(OPS[Op.NOOP], handler=spy))
    store = open_store(tmp_path)
    store.apply(1, [Entry(term=2, index=1, data=commands.put(b"k", b"v")),
                    Entry(term=3, index=2, data=commands.noop(now_ms=40))])
    assert seen == [ApplyContext(index=2, term=3, now_ms=40)]
    assert store.get(1, b"at") == (b"2/3", 0)
    store.close()


def test_fast_path_cases_match_the_general_path(tmp_path: Path) -> None:
    store = open_store(tmp_path, value_bytes_max=64)
    long_key = b"L" * (keyspace.INLINE_KEY_BYTES_MAX + 1)
    legacy = msgpack.packb([1, int(Op.PUT), 7, b"old", b"form", 0, 0, False])
    datas = [
        commands.put(b"a", b"1"),
        commands.put(b"a", b"2", expire_at_ms=2**63 - 1),  # overwrite: count unchanged
        commands.put(b"e", b"x", now_ms=5, expire_at_ms=10),
        commands.put(long_key, b"hashed"),  # not inline: general path
        commands.put(b"big", b"v" * 65),  # over the value limit: refused
        commands.encode(Op.PUT, 0, b"neg", b"v", -1, 0, False),  # refused
        commands.encode(Op.PUT, 0, b"huge", b"v", 2**63, 0, False),  # refused
        legacy,
    ]
    results = store.apply(1, [Entry(term=1, index=i + 1, data=d) for i, d in enumerate(datas)])
    assert results[:4] == [True, True, True, True]
    assert all(isinstance(r, CommandFailed) for r in results[4:7])
    assert results[7] is True
    assert store.get(1, b"a") == (b"2", 2**63 - 1)
    assert store.get(1, b"e") == (b"x", 10)
    assert store.get(1, long_key) == (b"hashed", 0)
    assert store.get(1, b"old") == (b"form", 0)
    for key in (b"big", b"neg", b"huge"):
        assert store.get(1, key) is None
    assert store.count(1) == 4
    store.close()
