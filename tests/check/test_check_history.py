"""Recording, validating, writing and reading histories."""

from __future__ import annotations

import itertools
import json
import pathlib

import pytest

from ringbolt.check.history import History, HistoryFormatError


def test_recording_api_produces_the_documented_records() -> None:
    history = History()
    write = history.invoke(0, "write", "k", "v1")
    read = history.invoke(1, "read", "k")
    history.ok(write)
    history.ok(read, "v1")
    cas = history.invoke(1, "cas", "k", ["v1", "v2"])
    history.fail(cas)
    delete = history.invoke(0, "delete", "k")
    history.info(delete)
    assert (write, read, cas, delete) == (0, 1, 4, 6)
    assert history.ops == [
        {"process": 0, "type": "invoke", "f": "write", "key": "k", "value": "v1", "time": 0},
        {"process": 1, "type": "invoke", "f": "read", "key": "k", "value": None, "time": 1},
        {"process": 0, "type": "ok", "f": "write", "key": "k", "value": "v1", "time": 2},
        {"process": 1, "type": "ok", "f": "read", "key": "k", "value": "v1", "time": 3},
        {"process": 1, "type": "invoke", "f": "cas", "key": "k", "value": ["v1", "v2"], "time": 4},
        {"process": 1, "type": "fail", "f": "cas", "key": "k", "value": None, "time": 5},
        {"process": 0, "type": "invoke", "f": "delete", "key": "k", "value": None, "time": 6},
        {"process": 0, "type": "info", "f": "delete", "key": "k", "value": None, "time": 7},
    ]
    assert history.statistics() == {
        "fail": 1,
        "info": 1,
        "invoke": 4,
        "ok": 2,
        "records": 8,
        "outstanding": 0,
    }


def test_clock_is_injectable_and_time_can_be_given() -> None:
    ticks = itertools.count(100, 10)
    history = History(clock=lambda: next(ticks))
    op = history.invoke(0, "write", "k", "v")
    history.ok(op, time=5)
    read = history.invoke(1, "read", "k", time=7)
    assert [record["time"] for record in history.ops] == [100, 5, 7]
    assert history.outstanding() == {1: read}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda h: h.invoke(0, "write", "k", "other"), "still outstanding"),
        (lambda h: h.ok(99), "not an invoke"),
        (lambda h: h.invoke(1, "incr", "k"), "f must be one of"),
        (lambda h: h.invoke(1, "write", b"k", "v"), "key must be a string"),
        (lambda h: h.invoke(1, "write", "k", 3), "write value must be a string"),
        (lambda h: h.invoke(1, "cas", "k", ["a"]), "cas value must be"),
        (lambda h: h.invoke(1, "read", "k", "x"), "read invoke value must be null"),
        (lambda h: h.invoke(True, "read", "k"), "process must be an integer"),
    ],
)
def test_recording_misuse_is_refused(call: object, message: str) -> None:
    history = History()
    history.invoke(0, "write", "k", "v")
    with pytest.raises(HistoryFormatError, match=message):
        call(history)  # type: ignore[operator]
    assert len(history) == 1  # nothing half-recorded


def test_a_read_observing_a_non_string_is_refused() -> None:
    history = History()
    read = history.invoke(0, "read", "k")
    with pytest.raises(HistoryFormatError, match="read's ok value"):
        history.ok(read, 42)


def test_jsonl_round_trip(tmp_path: pathlib.Path) -> None:
    history = History()
    first = history.invoke(0, "cas", "ключ", [None, "значение"])
    history.invoke(1, "read", "ключ")
    history.ok(first)
    path = tmp_path / "history.jsonl"
    history.to_jsonl(path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    again = History.from_jsonl(path)
    assert again.ops == history.ops
    assert again.outstanding() == {1: 1}


def _file(tmp_path: pathlib.Path, *lines: object) -> pathlib.Path:
    path = tmp_path / "h.jsonl"
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(text) + "\n")
    return path


INVOKE = {"process": 0, "type": "invoke", "f": "write", "key": "k", "value": "v", "time": 1}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"process": 2, "type": "ok", "f": "write", "key": "k"}, "never invoked"),
        ({"process": 1, "type": "invoke", "f": "read", "key": "k"}, "still outstanding"),
        ({"process": 2, "type": "done", "f": "write", "key": "k"}, "type must be one of"),
        ({"process": 2, "type": "invoke", "f": "write"}, "missing field 'key'"),
        ({"process": 2, "type": "invoke", "f": "read", "key": "k", "time": "x"}, "time must be"),
        ({"process": 2, "type": "invoke", "f": "cas", "key": "k", "value": [1, "a"]}, "expected"),
    ],
)
def test_malformed_files_name_the_line(
    tmp_path: pathlib.Path, bad_line: object, message: str
) -> None:
    pending_read = {"process": 1, "type": "invoke", "f": "read", "key": "k", "value": None}
    path = _file(tmp_path, "# a comment", INVOKE, "", pending_read, bad_line)
    with pytest.raises(HistoryFormatError, match=message) as caught:
        History.from_jsonl(path)
    assert caught.value.line == 5
    assert str(caught.value).startswith("line 5: ")


def test_completion_must_match_its_invoke(tmp_path: pathlib.Path) -> None:
    other_key = {"process": 0, "type": "ok", "f": "write", "key": "q", "value": "v"}
    with pytest.raises(HistoryFormatError, match="key='q' does not match") as caught:
        History.from_jsonl(_file(tmp_path, INVOKE, other_key))
    assert caught.value.line == 2


def test_line_numbers_survive_comments_and_blank_lines(tmp_path: pathlib.Path) -> None:
    history = History.from_jsonl(_file(tmp_path, "# header", "", INVOKE))
    assert history.line_of(0) == 3


def test_invalid_utf8_is_a_format_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(json.dumps(INVOKE).encode() + b"\n\xff\xfe\n")
    with pytest.raises(HistoryFormatError, match="not UTF-8") as caught:
        History.from_jsonl(path)
    assert caught.value.line == 2
