"""Hand-written histories with known verdicts (tests/check/testdata/*.jsonl).

Each file opens with '#' lines saying what happens in it; WHY holds the reason
for the verdict, and the file name's prefix (good_/bad_) is the verdict.
"""

from __future__ import annotations

import pathlib

import pytest

from ringbolt.check.history import History
from ringbolt.check.linearizability import check_history

TESTDATA = pathlib.Path(__file__).parent / "testdata"

WHY = {
    "good_concurrent_read_sees_new": "a read overlapping a write may take effect after it",
    "good_concurrent_read_sees_old": "a read overlapping a write may take effect before it",
    "good_info_write_appears_later": "an indeterminate write may take effect long after its info",
    "good_info_never_applied": "an indeterminate (or never completed) write may never happen",
    "good_cas_semantics": "cas applies only on a match; failed cas ops are dropped",
    "good_delete": "keys start absent; delete makes them absent again",
    "good_deposed_leader_read_fixed": "the deposed-leader run with the stale read corrected",
    "bad_stale_read": "a read invoked after v2 was acknowledged cannot see v1",
    "bad_info_write_flickers": "v2 was observed, so v1 cannot come back without a write",
    "bad_cas_after_overwrite": "the cas could only apply if the value were a, but c replaced it",
    "bad_failed_cas_observed": "a failed cas did not happen, so its value cannot be read",
    "bad_read_after_delete": "the delete completed before the read was invoked",
    "bad_deposed_leader_read": "a deposed leader served v1 after v2 was acknowledged",
    "bad_read_never_written": "nothing ever wrote the value that was read",
}


def test_every_testdata_file_has_a_reason() -> None:
    assert {path.stem for path in TESTDATA.glob("*.jsonl")} == set(WHY)


@pytest.mark.parametrize("name", sorted(WHY))
def test_verdict(name: str) -> None:
    result = check_history(History.from_jsonl(TESTDATA / f"{name}.jsonl"))
    expected = name.startswith("good_")
    assert result.valid is expected, WHY[name]
    assert (result.violations == []) is expected
    assert result.unknown_keys == []


def test_deposed_leader_violation_names_the_stale_read() -> None:
    result = check_history(History.from_jsonl(TESTDATA / "bad_deposed_leader_read.jsonl"))
    assert result.ops_checked == 8
    assert result.keys_checked == 2
    [violation] = result.violations
    assert violation.key == "x"  # key "y" is fine
    assert violation.op is not None
    assert (violation.op.process, violation.op.f, violation.op.output) == (1, "read", "v1")
    assert violation.op.line == 15  # the invoke's line in the file
    assert violation.state == "v2"
    assert violation.linearized_ops == 4
    assert "cannot be placed" in violation.explanation
    assert "needs 'v1' but the value is 'v2'" in violation.explanation
    assert "[" not in violation.explanation  # callers print it through rich markup


def test_flicker_explanation_lists_the_concurrent_info_write() -> None:
    result = check_history(History.from_jsonl(TESTDATA / "bad_info_write_flickers.jsonl"))
    [violation] = result.violations
    assert [(op.f, op.value, op.status) for op in violation.concurrent] == [("write", "v2", "info")]


def test_value_never_written_fails_before_searching() -> None:
    result = check_history(History.from_jsonl(TESTDATA / "bad_read_never_written.jsonl"))
    [violation] = result.violations
    assert violation.linearized_ops == 0
    assert "could have produced that value" in violation.explanation
    assert "'garbage'" in violation.explanation
