"""A stand-in history recorder with the same API and format as
`ringbolt.check.history.History`, used only when the check package is absent.

Theory of operation
-------------------
Ops are dicts ``{process, type, f, key, value, time}``; `time` is a strictly
increasing event counter, so real-time order between a completion and a
later invocation is never ambiguous. Each invoke gets exactly one completion.
"""

from __future__ import annotations

import json
from typing import Any


class History:
    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self._open: dict[int, dict[str, Any]] = {}
        self._busy: set[int] = set()

    def invoke(self, process: int, f: str, key: str, value: object) -> int:
        assert process not in self._busy, "a process has at most one op outstanding"
        op = {"process": process, "type": "invoke", "f": f, "key": key, "value": value,
              "time": len(self.ops)}
        self.ops.append(op)
        op_id = len(self.ops) - 1
        self._open[op_id] = op
        self._busy.add(process)
        return op_id

    def _complete(self, op_id: int, kind: str, value: object) -> None:
        invoked = self._open.pop(op_id)
        self._busy.discard(invoked["process"])
        self.ops.append({"process": invoked["process"], "type": kind, "f": invoked["f"],
                         "key": invoked["key"], "value": value, "time": len(self.ops)})

    def ok(self, op_id: int, value: object = None) -> None:
        invoked = self._open[op_id]
        self._complete(op_id, "ok", value if invoked["f"] == "read" else invoked["value"])

    def fail(self, op_id: int) -> None:
        self._complete(op_id, "fail", self._open[op_id]["value"])

    def info(self, op_id: int) -> None:
        self._complete(op_id, "info", self._open[op_id]["value"])

    def to_jsonl(self, path: str) -> None:
        with open(path, "w") as file:
            for op in self.ops:
                file.write(json.dumps(op) + "\n")
