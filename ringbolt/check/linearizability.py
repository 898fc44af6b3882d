"""Linearizability of a key-value history, one key at a time.

Theory of operation
-------------------
Linearizability is compositional (P-compositionality): a history of a map of
independent registers is linearizable iff each key's sub-history is. So the
history is split by key and each key is searched on its own, smallest first.

Per key, ops become intervals on the real-time axis given by record order:
an op may take effect anywhere between its invoke and its completion.
``fail`` ops definitely did not happen and are dropped. ``info`` ops (and
invokes never completed) may take effect anywhere after their invoke *or
never*: their completion is at +infinity and they are optional. Indeterminate
reads constrain nothing and are dropped; so are indeterminate writes whose
value no read or cas ever expects (placing one can never help, and removing
one from a valid order never breaks it). Reads that observe a value no write
could have produced yet fail fast, before any search.

The search is Wing & Gong's, with Lowe's memoization, as in Knossos and
porcupine: events sit in a doubly linked list in real-time order; walking it,
the search tentatively linearizes a call whose guard holds (lifting the call
and its return out of the list) and restarts at the head; meeting a return
whose op is not yet linearized means the current prefix is a dead end, so it
backtracks. The key is linearizable as soon as every required op is placed.
Three reductions keep it small, none of which changes the verdict:

* a read (a guarded op that changes nothing) whose guard holds and that may
  go next goes next, without branching;
* indeterminate ops with the same effect are interchangeable, so only the
  earliest-invoked unplaced one of each class is tried;
* a configuration (required ops placed, value) already met with a SUBSET of
  the indeterminate ops spent covers the new one, which is skipped (a plain
  memo hit is the equal case). Required ops are tried first so cheap
  configurations tend to come first.

The loop is iterative (an explicit stack); the configuration cache is
bounded (`limits.search_cache_entries_max`) and an optional deadline is
consulted every `limits.deadline_check_steps` steps; a key that hits either
bound is *unknown*, never valid.

Verdict: `valid` is False if any key has a violation, None ("unknown") if no
key has one but some search was cut short, True otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ringbolt.check import limits
from ringbolt.check.history import History, Record
from ringbolt.check.models import DEFAULT_MODEL, Model, ModelError, State, Transition, model_named

INFINITY = 1 << 62
"""Return position of indeterminate ops: after every record of any history."""


@dataclass(slots=True, kw_only=True)
class Operation:
    """One invoke and its completion, as the checker sees it."""

    index: int  # record index of the invoke
    line: int  # source line (or 1-based position) of the invoke
    process: int
    f: str
    key: str
    value: Any  # the invoke's value
    status: str = "pending"  # "ok" | "fail" | "info" | "pending" (no completion)
    output: Any = None  # a read's observed value
    return_index: int = INFINITY
    return_line: int | None = None

    @property
    def optional(self) -> bool:
        return self.status in ("info", "pending")

    def describe(self) -> str:
        if self.f == "read":
            what = "read" if self.status != "ok" else f"read -> {_show(self.output)}"
        elif self.f == "write":
            what = f"write {_show(self.value)}"
        elif self.f == "cas":
            what = f"cas {_show(self.value[0])} -> {_show(self.value[1])}"
        else:
            what = "delete"
        end = f"{self.status} line {self.return_line}" if self.return_line else "no completion"
        return f"p{self.process} {what} (invoked line {self.line}, {end})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "f": self.f,
            "key": self.key,
            "value": self.value,
            "status": self.status,
            "output": self.output,
            "invoke_line": self.line,
            "complete_line": self.return_line,
        }


def _show(value: State) -> str:
    return "absent" if value is None else repr(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyViolation:
    key: str
    explanation: str
    op: Operation | None  # the op that could not be placed
    concurrent: list[Operation]
    linearized_ops: int  # length of the longest linearizable prefix found
    state: State  # the key's value after that prefix

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "explanation": self.explanation,
            "op": None if self.op is None else self.op.to_dict(),
            "concurrent": [op.to_dict() for op in self.concurrent],
            "linearized_ops": self.linearized_ops,
            "state": self.state,
        }


@dataclass(slots=True, kw_only=True)
class LinearizabilityResult:
    valid: bool | None
    ops_checked: int
    keys_checked: int
    model: str
    violations: list[KeyViolation] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)
    statistics: dict[str, int] = field(default_factory=dict)
    """ops_searched (after dropping ops that cannot matter), configurations
    (memoized search states), steps (search loop iterations)."""

    @property
    def verdict(self) -> str:
        return {True: "valid", False: "invalid", None: "unknown"}[self.valid]

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "verdict": self.verdict,
            "model": self.model,
            "ops_checked": self.ops_checked,
            "keys_checked": self.keys_checked,
            "violations": [violation.to_dict() for violation in self.violations],
            "unknown_keys": list(self.unknown_keys),
            "statistics": dict(self.statistics),
        }


_Placement = tuple[int, int, int]


class SearchAborted(Exception):
    """A key's search hit the deadline or the cache bound."""


def check_history(
    ops_or_history: History | Iterable[Record],
    *,
    model: str = DEFAULT_MODEL,
    time_limit_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LinearizabilityResult:
    """Check a history (a `History` or a list of op dicts) for linearizability.

    Raises `HistoryFormatError` for a malformed history and `ModelError` for
    an op the model does not define.
    """
    history = (
        ops_or_history if isinstance(ops_or_history, History) else History.from_ops(ops_or_history)
    )
    spec = model_named(model)
    by_key = _operations_by_key(history)
    for operations in by_key.values():
        for operation in operations:
            if operation.f not in spec.functions:
                raise ModelError(
                    f"line {operation.line}: model {spec.name!r} does not define "
                    f"f={operation.f!r} (cas-register does)"
                )
    deadline = None if time_limit_s is None else clock() + time_limit_s
    result = LinearizabilityResult(
        valid=True,
        ops_checked=sum(len(operations) for operations in by_key.values()),
        keys_checked=len(by_key),
        model=spec.name,
        statistics={"ops_searched": 0, "configurations": 0, "steps": 0},
    )
    for key in sorted(by_key, key=lambda k: (len(by_key[k]), k)):
        try:
            violation = check_key(
                key, by_key[key], spec, deadline=deadline, clock=clock, statistics=result.statistics
            )
        except SearchAborted:
            result.unknown_keys.append(key)
            continue
        if violation is not None:
            result.violations.append(violation)
    result.violations.sort(key=lambda violation: violation.key)
    result.unknown_keys.sort()
    if result.violations:
        result.valid = False
    elif result.unknown_keys:
        result.valid = None
    return result


def _operations_by_key(history: History) -> dict[str, list[Operation]]:
    by_key: dict[str, list[Operation]] = {}
    open_ops: dict[int, Operation] = {}
    for index, record in enumerate(history.ops):
        process = record["process"]
        if record["type"] == "invoke":
            operation = Operation(
                index=index,
                line=history.line_of(index),
                process=process,
                f=record["f"],
                key=record["key"],
                value=record.get("value"),
            )
            open_ops[process] = operation
            by_key.setdefault(operation.key, []).append(operation)
            continue
        operation = open_ops.pop(process)
        assert operation.key == record["key"], "History validates completions"
        operation.status = record["type"]
        if operation.status != "info":  # info: may take effect after its record
            operation.return_index = index
        operation.return_line = history.line_of(index)
        if operation.status == "ok" and operation.f == "read":
            operation.output = record.get("value")
    return by_key


def check_key(
    key: str,
    operations: list[Operation],
    model: Model,
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    statistics: dict[str, int] | None = None,
) -> KeyViolation | None:
    """The violation of one key's sub-history, or None if it is linearizable.

    Raises `SearchAborted` past `deadline` or the cache bound; adds its
    counters to `statistics` (even then)."""
    searched = _relevant(operations, model)
    impossible = _impossible_read(key, searched, model)
    if impossible is not None:
        return impossible
    search = _Search(key, searched, model, deadline, clock)
    try:
        return search.run()
    finally:
        if statistics is not None:
            statistics["ops_searched"] = statistics.get("ops_searched", 0) + len(searched)
            statistics["configurations"] = (
                statistics.get("configurations", 0) + search.cache_entries
            )
            statistics["steps"] = statistics.get("steps", 0) + search.steps


def _relevant(operations: list[Operation], model: Model) -> list[Operation]:
    """Drop ops that cannot matter: failures, and indeterminate ops that change
    nothing (reads) or whose value no kept op ever expects (to a fixpoint:
    dropping an indeterminate cas may orphan the write it expected)."""
    kept = [op for op in operations if op.status != "fail"]
    transitions = {id(op): model.transition(op.f, op.value, op.output) for op in kept}

    def changes_value(op: Operation) -> bool:
        transition = transitions[id(op)]
        return not (transition.guarded and transition.expected == transition.new)

    kept = [op for op in kept if not op.optional or changes_value(op)]
    while True:
        observed = {transitions[id(op)].expected for op in kept if transitions[id(op)].guarded}
        pruned = [op for op in kept if not op.optional or transitions[id(op)].new in observed]
        if len(pruned) == len(kept):
            return kept
        kept = pruned


def _impossible_read(key: str, operations: list[Operation], model: Model) -> KeyViolation | None:
    """A completed op that expects a value no op could have produced before it returned."""
    earliest_call: dict[State, int] = {model.initial: -1}
    for op in operations:
        new = model.transition(op.f, op.value, op.output).new
        if op.f != "read" and op.index < earliest_call.get(new, INFINITY):
            earliest_call[new] = op.index
    for op in sorted(operations, key=lambda op: op.return_index):
        transition = model.transition(op.f, op.value, op.output)
        if op.optional or not transition.guarded:
            continue
        if earliest_call.get(transition.expected, INFINITY) < op.return_index:
            continue
        explanation = (
            f"{op.describe()} expects {_show(transition.expected)}, but no op on key {key!r} "
            f"invoked before it completed could have produced that value"
        )
        return KeyViolation(
            key=key,
            explanation=explanation,
            op=op,
            concurrent=_concurrent(op, operations),
            linearized_ops=0,
            state=model.initial,
        )
    return None


def _concurrent(target: Operation, operations: list[Operation]) -> list[Operation]:
    return [
        op
        for op in operations
        if op is not target and op.index < target.return_index and target.index < op.return_index
    ]


def _event_list(operations: list[Operation]) -> tuple[list[int], list[int]]:
    """(next, previous) links of every op's call (2*i) and return (2*i + 1)
    event in real-time order, behind a head sentinel numbered 2*len."""
    count = len(operations)
    events = sorted(
        [(op.index, 2 * i) for i, op in enumerate(operations)]
        + [(op.return_index, 2 * i + 1) for i, op in enumerate(operations)]
    )
    next_ = [-1] * (2 * count + 1)
    previous = [-1] * (2 * count + 1)
    order = [2 * count] + [event for _, event in events]
    for before, after in zip(order, order[1:], strict=False):
        next_[before] = after
        previous[after] = before
    return next_, previous


class _Search:
    """The WGL search over one key's ops; see the module docstring."""

    def __init__(
        self,
        key: str,
        operations: list[Operation],
        model: Model,
        deadline: float | None,
        clock: Callable[[], float],
    ) -> None:
        self.key = key
        self.operations = operations
        self.model = model
        self.deadline = deadline
        self.clock = clock
        transitions: list[Transition] = [
            model.transition(op.f, op.value, op.output) for op in operations
        ]
        self.guarded = [t.guarded for t in transitions]
        self.expected = [t.expected for t in transitions]
        self.new = [t.new for t in transitions]
        self.optional = [op.optional for op in operations]
        self.no_op = [t.guarded and t.expected == t.new for t in transitions]
        # Indeterminate ops with the same transition are interchangeable (same
        # effect, both open until +infinity), so only the earliest-invoked
        # unplaced one of each class is ever tried: k such ops give k + 1
        # configurations instead of 2**k.
        self.sibling = [-1] * len(operations)
        last_of_class: dict[tuple[bool, State, State], int] = {}
        for i, t in enumerate(transitions):
            if self.optional[i]:
                signature = (t.guarded, t.expected, t.new)
                self.sibling[i] = last_of_class.get(signature, -1)
                last_of_class[signature] = i
        self.placed = [False] * len(operations)
        self.cache: dict[tuple[int, int, State], list[int]] = {}
        self.cache_entries = 0
        self.steps = 0
        ranks = {False: 0, True: 0}  # ops are in invoke order; required/optional ranked apart
        self.rank: list[int] = []
        for is_optional in self.optional:
            self.rank.append(ranks[is_optional])
            ranks[is_optional] += 1
        self.head = 2 * len(operations)
        self.next, self.previous = _event_list(operations)
        # Best (longest) prefix seen at a dead end, for the explanation.
        self.best_prefix: list[int] = []
        self.best_state: State = model.initial

    def _lift(self, i: int) -> None:
        next_, previous = self.next, self.previous
        for event in (2 * i, 2 * i + 1):
            after = next_[event]
            next_[previous[event]] = after
            if after != -1:
                previous[after] = previous[event]

    def _unlift(self, i: int) -> None:
        next_, previous = self.next, self.previous
        for event in (2 * i + 1, 2 * i):
            after = next_[event]
            next_[previous[event]] = event
            if after != -1:
                previous[after] = event

    def run(self) -> KeyViolation | None:
        next_, head = self.next, self.head
        guarded, expected, new, optional = self.guarded, self.expected, self.new, self.optional
        required_left = optional.count(False)
        state: State = self.model.initial
        placement: _Placement = (0, 0, 0)
        stack: list[tuple[int, State, _Placement, bool]] = []  # (op, state before, ..., forced)
        entry, fresh, optional_pass, steps = head, True, False, 0
        while required_left:
            steps += 1
            if not steps & (limits.deadline_check_steps - 1):
                self.steps = steps
                self._check_bounds()
            i, forced = -1, False
            if fresh:  # a new configuration: a no-op that may go next goes next
                fresh, optional_pass, i = False, False, self._enabled_no_op(state)
                forced = i >= 0
                entry = next_[head]
            if i < 0:
                assert entry != -1, "a required op is unplaced, so its return is still listed"
                if not entry & 1:  # a call: try to linearize it here
                    i = entry >> 1
                    if (
                        optional[i] is not optional_pass
                        or (guarded[i] and state != expected[i])
                        or not self._first_of_class(i)
                    ):
                        entry = next_[entry]
                        continue
                elif not optional_pass:  # required ops tried; now indeterminate ones
                    optional_pass, entry = True, next_[head]
                    continue
            if i >= 0:
                candidate = self._placed(placement, i)
                if self._visit(candidate, new[i]):
                    stack.append((i, state, placement, forced))
                    placement, state = candidate, new[i]
                    required_left -= not optional[i]
                    self._lift(i)
                    self.placed[i] = True
                    fresh = True
                    continue
                if not forced:
                    entry = next_[entry]
                    continue
            # A dead end: an unplaced op's return, a covered or a doomed no-op.
            if len(stack) > len(self.best_prefix):
                self.best_prefix = [i for i, _, _, _ in stack]
                self.best_state = state
            while True:
                if not stack:
                    self.steps = steps
                    return self._violation()
                i, state, placement, forced = stack.pop()
                required_left += not optional[i]
                self._unlift(i)
                self.placed[i] = False
                if not forced:  # a forced no-op never hides a solution: keep unwinding
                    break
            entry, optional_pass = next_[2 * i], optional[i]
        self.steps = steps
        return None

    def _visit(self, placement: _Placement, state: State) -> bool:
        """Record a configuration; False if one seen before covers it.

        (low, window, state) equal and a seen optional set that is a SUBSET of
        this one covers it: with fewer indeterminate ops spent, the seen one
        can do everything this one can. The first visit of a configuration
        was either a dead end or is an ancestor whose other branches cover
        this one's futures. Required ops are tried before indeterminate ones,
        so configurations tend to be met with the fewest ops spent first."""
        low, window, optional_bits = placement
        seen = self.cache.get((low, window, state))
        if seen is None:
            self.cache[(low, window, state)] = [optional_bits]
        else:
            for other in seen:
                if not other & ~optional_bits:
                    return False
            seen.append(optional_bits)
        self.cache_entries += 1
        return True

    def _first_of_class(self, i: int) -> bool:
        sibling = self.sibling[i]
        return sibling < 0 or self.placed[sibling]

    def _enabled_no_op(self, state: State) -> int:
        """A read-like op (guarded, never changes the value) whose guard holds
        and that may take effect next, or -1.

        Placing it first loses nothing: in any completion from here it can be
        moved to the front (every op that must precede it is placed already,
        and it changes nothing wherever it sits), so the search never branches
        on it. A write of the current value does NOT qualify: later in a
        completion it may change a different value."""
        next_, no_op, expected = self.next, self.no_op, self.expected
        entry = next_[self.head]
        while entry != -1 and not entry & 1:
            i = entry >> 1
            if no_op[i] and expected[i] == state:
                return i
            entry = next_[entry]
        return -1

    def _placed(self, placement: _Placement, i: int) -> _Placement:
        """`placement` with op `i` added.

        A placement is (low, window, optional bits): every required op ranked
        below `low` is placed, `low` is not, bit j of `window` is op low+j;
        optional ops have their own bitset. Keys stay small however long the
        history is, so hashing them is cheap."""
        low, window, optional_bits = placement
        rank = self.rank[i]
        if self.optional[i]:
            return low, window, optional_bits | (1 << rank)
        assert rank >= low, "ops below low are all placed"
        window |= 1 << (rank - low)
        while window & 1:
            window >>= 1
            low += 1
        return low, window, optional_bits

    def _check_bounds(self) -> None:
        if self.cache_entries > limits.search_cache_entries_max:
            raise SearchAborted(
                f"key {self.key!r}: more than {limits.search_cache_entries_max} configurations"
            )
        if self.deadline is not None and self.clock() >= self.deadline:
            raise SearchAborted(f"key {self.key!r}: time limit reached")

    def _violation(self) -> KeyViolation:
        placed = set(self.best_prefix)
        waiting = [i for i, op in enumerate(self.operations) if i not in placed and not op.optional]
        assert waiting, "a dead end leaves a required op unplaced"
        stuck = min(waiting, key=lambda i: self.operations[i].return_index)
        op = self.operations[stuck]
        state = self.best_state
        if self.guarded[stuck] and state != self.expected[stuck]:
            why = f"it needs {_show(self.expected[stuck])} but the value is {_show(state)}"
        else:
            why = "every order of the ops that may precede its completion leads to a dead end"
        shown = limits.explanation_ops_max
        tail = [self.operations[i] for i in self.best_prefix[-shown:]]
        concurrent = _concurrent(op, self.operations)
        lines = [
            f"no linearization of the {len(self.operations)} ops on key {self.key!r} exists.",
            f"Longest linearizable prefix found: {len(self.best_prefix)} ops, "
            f"leaving the value {_show(state)}" + (f"; its last {len(tail)}:" if tail else "."),
        ]
        lines += [f"  {placed_op.describe()}" for placed_op in tail]
        lines.append(f"Then {op.describe()} cannot be placed: {why}.")
        if concurrent:
            more = len(concurrent) - shown
            lines.append(
                f"Concurrent with it ({len(concurrent)})"
                + (f", first {shown}:" if more > 0 else ":")
            )
            lines += [f"  {other.describe()}" for other in concurrent[:shown]]
        else:
            lines.append("No op was concurrent with it.")
        return KeyViolation(
            key=self.key,
            explanation="\n".join(lines),
            op=op,
            concurrent=concurrent,
            linearized_ops=len(self.best_prefix),
            state=state,
        )
