"""check_history on histories recorded in memory: verdicts, bounds, reporting."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from ringbolt.check import limits
from ringbolt.check.history import History, HistoryFormatError
from ringbolt.check.linearizability import check_history
from ringbolt.check.models import ModelError


def _write_then_stale_read(history: History, key: str) -> None:
    write = history.invoke(0, "write", key, "new")
    history.ok(write)
    read = history.invoke(1, "read", key)
    history.ok(read, None)  # absent, although "new" was acknowledged before


def test_empty_history_is_valid() -> None:
    result = check_history([])
    assert result.valid is True
    assert (result.ops_checked, result.keys_checked) == (0, 0)
    assert result.verdict == "valid"


def test_accepts_a_list_of_op_dicts_and_validates_it() -> None:
    history = History()
    _write_then_stale_read(history, "k")
    assert check_history([dict(op) for op in history.ops]).valid is False
    broken = [dict(op) for op in history.ops]
    broken[3]["process"] = 7  # a completion nobody invoked
    with pytest.raises(HistoryFormatError, match="never invoked"):
        check_history(broken)


def test_keys_are_checked_independently() -> None:
    history = History()
    _write_then_stale_read(history, "bad")
    for value in ("a", "b"):
        write = history.invoke(0, "write", "good", value)
        history.ok(write)
        read = history.invoke(1, "read", "good")
        history.ok(read, value)
    result = check_history(history)
    assert result.valid is False
    assert [violation.key for violation in result.violations] == ["bad"]
    assert (result.ops_checked, result.keys_checked) == (6, 2)


def test_write_of_current_value_is_not_forced_early() -> None:
    # The delete overlaps the cas and is a no-op at the start, but it must take
    # effect AFTER the cas: read -> absent comes after read -> v1.
    history = History()
    cas = history.invoke(1, "cas", "k", [None, "v1"])
    delete = history.invoke(0, "delete", "k")
    history.ok(cas)
    read_v1 = history.invoke(2, "read", "k")
    history.ok(delete)
    read_absent = history.invoke(0, "read", "k")
    history.ok(read_absent, None)
    history.ok(read_v1, "v1")
    assert check_history(history).valid is True


def test_failed_write_never_happened() -> None:
    history = History()
    write = history.invoke(0, "write", "k", "v1")
    history.fail(write)
    read = history.invoke(1, "read", "k")
    history.ok(read, "v1")
    assert check_history(history).valid is False


def test_pending_invoke_is_indeterminate() -> None:
    history = History()
    history.invoke(0, "write", "k", "v1")  # never completes
    read = history.invoke(1, "read", "k")
    history.ok(read, "v1")
    assert check_history(history).valid is True


def test_process_may_invoke_again_after_info() -> None:
    history = History()
    first = history.invoke(0, "write", "k", "v1")
    history.info(first)
    second = history.invoke(0, "write", "k", "v2")
    history.ok(second)
    read = history.invoke(1, "read", "k")
    history.ok(read, "v1")  # the indeterminate write landed late
    assert check_history(history).valid is True


def test_register_model_rejects_cas_and_checks_the_rest() -> None:
    history = History()
    _write_then_stale_read(history, "k")
    assert check_history(history, model="register").valid is False
    cas = history.invoke(2, "cas", "k", ["new", "newer"])
    history.ok(cas)
    with pytest.raises(ModelError, match="line 5"):
        check_history(history, model="register")
    with pytest.raises(ModelError, match="unknown model"):
        check_history(history, model="queue")


def _busy_history(keys: int) -> History:
    """Reads and writes of one value, overlapping enough to need many search steps."""
    history = History()
    for key in range(keys):
        ids = [history.invoke(process, "write", f"k{key}", "v") for process in range(6)]
        ids += [history.invoke(process, "read", f"k{key}") for process in range(6, 12)]
        for op_id in ids:
            history.ok(op_id, "v")
    return history


def _ticking_clock() -> Iterator[float]:
    return (float(tick) for tick in itertools.count())


def test_deadline_makes_keys_unknown_not_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "deadline_check_steps", 1)
    ticks = _ticking_clock()
    result = check_history(_busy_history(2), time_limit_s=3, clock=lambda: next(ticks))
    assert result.valid is None
    assert result.verdict == "unknown"
    assert result.unknown_keys == ["k0", "k1"]
    assert result.to_dict()["unknown_keys"] == ["k0", "k1"]


def test_violation_wins_over_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "search_cache_entries_max", 0)
    monkeypatch.setattr(limits, "deadline_check_steps", 1)
    history = _busy_history(1)
    read = history.invoke(0, "read", "never")
    history.ok(read, "ghost")  # rejected before any search, so not cut short
    result = check_history(history)
    assert result.valid is False
    assert result.unknown_keys == ["k0"]
    assert [violation.key for violation in result.violations] == ["never"]


def test_result_to_dict_is_json_ready() -> None:
    history = History()
    _write_then_stale_read(history, "k")
    report = check_history(history).to_dict()
    assert set(report) == {
        "valid",
        "verdict",
        "model",
        "ops_checked",
        "keys_checked",
        "violations",
        "unknown_keys",
        "statistics",
    }
    # the write is placed, then the read of absent cannot follow: one configuration
    statistics = report["statistics"]
    assert (statistics["ops_searched"], statistics["configurations"]) == (2, 1)
    assert statistics["steps"] > 0
    [violation] = report["violations"]
    assert violation["key"] == "k"
    assert violation["op"]["output"] is None
    assert violation["op"]["invoke_line"] == 3
