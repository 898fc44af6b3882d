"""A brute-force linearizability oracle for tiny histories (tests only).

It tries every order of every admissible subset of ops, straight from the
definition, so it shares no code or idea with the WGL search it checks.
"""

from __future__ import annotations

import itertools
from typing import Any

from ringbolt.check.models import CAS_REGISTER, Model

INFINITY = float("inf")


def _intervals(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per op: f, key, value, status, output, call, ret (record positions)."""
    result: list[dict[str, Any]] = []
    open_ops: dict[int, dict[str, Any]] = {}
    for position, record in enumerate(ops):
        if record["type"] == "invoke":
            op = {
                "f": record["f"],
                "key": record["key"],
                "value": record.get("value"),
                "status": "pending",
                "output": None,
                "call": position,
                "ret": INFINITY,
            }
            open_ops[record["process"]] = op
            result.append(op)
        else:
            op = open_ops.pop(record["process"])
            op["status"] = record["type"]
            if record["type"] != "info":
                op["ret"] = position
            if record["type"] == "ok" and op["f"] == "read":
                op["output"] = record.get("value")
    return result


def _applies(model: Model, state: Any, op: dict[str, Any]) -> tuple[bool, Any]:
    transition = model.transition(op["f"], op["value"], op["output"])
    return model.step(state, transition)


def brute_force_linearizable(ops: list[dict[str, Any]], model: Model = CAS_REGISTER) -> bool:
    """Is every key's sub-history linearizable? Exponential: keep histories tiny."""
    intervals = [op for op in _intervals(ops) if op["status"] != "fail"]
    keys = {op["key"] for op in intervals}
    return all(_key_ok([op for op in intervals if op["key"] == key], model) for key in keys)


def _key_ok(ops: list[dict[str, Any]], model: Model) -> bool:
    required = [op for op in ops if op["status"] == "ok"]
    optional = [op for op in ops if op["status"] != "ok"]
    for count in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, count):
            for order in itertools.permutations(required + list(chosen)):
                if _order_ok(order, model):
                    return True
    return False


def _order_ok(order: tuple[dict[str, Any], ...], model: Model) -> bool:
    for earlier_position, earlier in enumerate(order):
        for later in order[earlier_position + 1 :]:
            if later["ret"] < earlier["call"]:
                return False  # `later` completed before `earlier` was invoked
    state = model.initial
    for op in order:
        applies, state = _applies(model, state, op)
        if not applies:
            return False
    return True
