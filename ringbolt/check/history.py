"""Client histories: what clients asked for, and what they were told.

Theory of operation
-------------------
A history is a list of *records*, appended in the order events happened; that
order IS the real-time order the checker uses (`time` is informational). A
record is a plain dict, one JSON object per line on disk::

    {"process": 3, "type": "invoke", "f": "write", "key": "k", "value": "v1", "time": 17}

A process invokes one op, then completes it with at most one record of the
same process, f and key: ``ok`` (it took effect; a read's ``value`` is what it
observed, ``null`` for absent), ``fail`` (it definitely did not take effect)
or ``info`` (indeterminate: it may take effect at any time after its invoke,
or never). An invoke never completed is indeterminate too. A process has at
most one op outstanding; after any completion, ``info`` included, it may
invoke again. docs/history-format.md is the full reference.

`History` records histories (op ids are the index of the invoke record) and
reads/writes JSON lines. Everything it accepts is validated as it arrives: a
malformed file raises `HistoryFormatError` naming the line, misuse of the
recording API raises it naming the op. Nothing here does I/O except
`to_jsonl`/`from_jsonl`, and time comes from an injected clock (a counter by
default), so recording is deterministic under the simulator.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ringbolt.check import limits

FUNCTIONS = frozenset({"read", "write", "cas", "delete"})
TYPES = frozenset({"invoke", "ok", "fail", "info"})
COMPLETIONS = frozenset({"ok", "fail", "info"})

Record = dict[str, Any]


class HistoryFormatError(ValueError):
    """A record (or a call of the recording API) breaks the history format."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line is not None else message)


def _check_invoke_value(f: str, value: object) -> str | None:
    """Why an invoke `value` is wrong for `f`, or None when it is fine."""
    if f in ("read", "delete"):
        return None if value is None else f"{f} invoke value must be null, got {value!r}"
    if f == "write":
        return None if isinstance(value, str) else f"write value must be a string, got {value!r}"
    assert f == "cas"
    if not isinstance(value, list) or len(value) != 2:
        return f"cas value must be [expected-or-null, new], got {value!r}"
    expected, new = value
    if expected is not None and not isinstance(expected, str):
        return f"cas expected value must be a string or null, got {expected!r}"
    if not isinstance(new, str):
        return f"cas new value must be a string, got {new!r}"
    return None


def _check_fields(record: object) -> str | None:
    """Why `record` is not a well-typed record on its own, or None."""
    if not isinstance(record, dict):
        return f"a record must be a JSON object, got {type(record).__name__}"
    for field in ("process", "type", "f", "key"):
        if field not in record:
            return f"missing field {field!r}"
    process, kind, f, key = record["process"], record["type"], record["f"], record["key"]
    if not isinstance(process, int) or isinstance(process, bool):
        return f"process must be an integer, got {process!r}"
    if kind not in TYPES:
        return f"type must be one of {sorted(TYPES)}, got {kind!r}"
    if f not in FUNCTIONS:
        return f"f must be one of {sorted(FUNCTIONS)}, got {f!r}"
    if not isinstance(key, str):
        return f"key must be a string, got {key!r}"
    time = record.get("time")
    if time is not None and (not isinstance(time, int) or isinstance(time, bool)):
        return f"time must be an integer, got {time!r}"
    value = record.get("value")
    if kind == "invoke":
        return _check_invoke_value(f, value)
    if kind == "ok" and f == "read" and value is not None and not isinstance(value, str):
        return f"a read's ok value must be a string or null, got {value!r}"
    return None


class History:
    """An append-only, validated history of client operations.

    `clock` supplies `time` for records recorded without an explicit one; the
    default is a counter (0, 1, 2, ...), which needs no wall clock.
    """

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self.ops: list[Record] = []
        self._clock = clock if clock is not None else self._count
        self._counter = 0
        self._outstanding: dict[int, int] = {}  # process -> index of its open invoke
        self._lines: list[int] = []  # source line of each record (files only)

    def _count(self) -> int:
        self._counter += 1
        return self._counter - 1

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.ops)

    # -- recording --------------------------------------------------------

    def invoke(
        self, process: int, f: str, key: str, value: Any = None, *, time: int | None = None
    ) -> int:
        """Record that `process` invoked `f` on `key`; returns the op id."""
        record = {"process": process, "type": "invoke", "f": f, "key": key, "value": value}
        record["time"] = self._clock() if time is None else time
        self.append(record)
        return len(self.ops) - 1

    def ok(self, op_id: int, value: Any = None, *, time: int | None = None) -> None:
        """The op took effect. For a read, `value` is what it observed (None =
        absent); for other ops it is ignored and the invoke's value is copied."""
        self._complete(op_id, "ok", value, time)

    def fail(self, op_id: int, *, time: int | None = None) -> None:
        """The op definitely did not take effect."""
        self._complete(op_id, "fail", None, time)

    def info(self, op_id: int, *, time: int | None = None) -> None:
        """The outcome is unknown: the op may take effect at any later time, or never."""
        self._complete(op_id, "info", None, time)

    def _complete(self, op_id: int, kind: str, value: Any, time: int | None = None) -> None:
        if not 0 <= op_id < len(self.ops) or self.ops[op_id]["type"] != "invoke":
            raise HistoryFormatError(f"op id {op_id} is not an invoke of this history")
        invoke = self.ops[op_id]
        if kind == "ok" and invoke["f"] != "read":
            value = invoke.get("value")
        record = {
            "process": invoke["process"],
            "type": kind,
            "f": invoke["f"],
            "key": invoke["key"],
        }
        record["value"] = value
        record["time"] = self._clock() if time is None else time
        self.append(record)

    def append(self, record: Record, *, line: int | None = None) -> None:
        """Validate one record against the history so far, then append it."""
        problem = _check_fields(record)
        if problem is None:
            problem = self._check_sequence(record)
        if problem is not None:
            where = f"op {len(self.ops)}: " if line is None else ""
            raise HistoryFormatError(where + problem, line=line)
        if len(self.ops) >= limits.history_records_max:
            raise HistoryFormatError(f"more than {limits.history_records_max} records", line=line)
        process = record["process"]
        if record["type"] == "invoke":
            self._outstanding[process] = len(self.ops)
        else:
            del self._outstanding[process]
        self.ops.append(record)
        self._lines.append(line if line is not None else len(self.ops))

    def _check_sequence(self, record: Record) -> str | None:
        process = record["process"]
        open_index = self._outstanding.get(process)
        if record["type"] == "invoke":
            if open_index is not None:
                return f"process {process} invokes while op {open_index} is still outstanding"
            return None
        if open_index is None:
            return f"process {process} completes an op it never invoked (or completed already)"
        invoke = self.ops[open_index]
        for field in ("f", "key"):
            if record[field] != invoke[field]:
                return (
                    f"{record['type']} {field}={record[field]!r} does not match "
                    f"its invoke (line {self._lines[open_index]}): {invoke[field]!r}"
                )
        return None

    # -- reading ----------------------------------------------------------

    def line_of(self, index: int) -> int:
        """The 1-based source line of record `index` (its position if recorded in memory)."""
        return self._lines[index]

    def outstanding(self) -> dict[int, int]:
        """process -> op id of every invoke still without a completion."""
        return dict(self._outstanding)

    def statistics(self) -> dict[str, int]:
        counts = {kind: 0 for kind in sorted(TYPES)}
        for record in self.ops:
            counts[record["type"]] += 1
        counts["records"] = len(self.ops)
        counts["outstanding"] = len(self._outstanding)
        return counts

    @classmethod
    def from_ops(cls, ops: Iterable[Record]) -> History:
        """Validate and wrap a list of records (op dicts)."""
        history = cls()
        for record in ops:
            history.append(dict(record) if isinstance(record, dict) else record)
        return history

    @classmethod
    def from_jsonl(cls, path: str | pathlib.Path) -> History:
        """Read a JSON-lines history; blank lines and lines starting with '#' are skipped.

        Raises `OSError` if the file cannot be read and `HistoryFormatError`
        (with `.line`) for malformed content.
        """
        with open(path, "rb") as stream:
            return cls.from_lines(stream)

    @classmethod
    def from_lines(cls, lines: Iterable[bytes | str]) -> History:
        history = cls()
        for number, raw in enumerate(lines, start=1):
            if len(raw) > limits.history_line_bytes_max:
                raise HistoryFormatError(
                    f"line longer than {limits.history_line_bytes_max} bytes", line=number
                )
            try:
                text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            except UnicodeDecodeError as error:
                raise HistoryFormatError(f"not UTF-8: {error}", line=number) from error
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise HistoryFormatError(f"malformed JSON: {error.msg}", line=number) from error
            history.append(record, line=number)
        return history

    def to_jsonl(self, path: str | pathlib.Path) -> None:
        """Write one compact JSON object per line (round-trips through `from_jsonl`)."""
        with open(path, "w", encoding="utf-8") as stream:
            for record in self.ops:
                stream.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
                stream.write("\n")
