"""Property tests: the checker against histories that are linearizable by
construction, against deliberately broken ones, and against a brute-force
oracle on tiny histories."""

from __future__ import annotations

import random
from typing import Any

from check_reference import brute_force_linearizable
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbolt.check.generate import linearizable_history
from ringbolt.check.linearizability import check_history

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(
    seed=seeds,
    ops_total=st.integers(min_value=0, max_value=300),
    keys=st.integers(min_value=1, max_value=4),
    processes=st.integers(min_value=1, max_value=10),
    values=st.sampled_from([None, 2, 3, 8]),
    fail_probability=st.sampled_from([0.0, 0.1]),
    info_probability=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_histories_of_a_sequential_register_are_linearizable(
    seed: int,
    ops_total: int,
    keys: int,
    processes: int,
    values: int | None,
    fail_probability: float,
    info_probability: float,
) -> None:
    history = linearizable_history(
        random.Random(seed),
        ops_total=ops_total,
        keys=keys,
        processes=processes,
        values=values,
        fail_probability=fail_probability,
        info_probability=info_probability,
    )
    result = check_history(history)
    assert result.valid is True, [violation.explanation for violation in result.violations]
    assert result.ops_checked == ops_total


def _intervals(ops: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
    """(invoke index, completion index, completion record) of every completed op."""
    open_ops: dict[int, int] = {}
    result = []
    for index, record in enumerate(ops):
        if record["type"] == "invoke":
            open_ops[record["process"]] = index
        else:
            result.append((open_ops.pop(record["process"]), index, record))
    return result


@settings(max_examples=60, deadline=None)
@given(seed=seeds, processes=st.integers(min_value=1, max_value=8), pick=st.integers(0, 10**6))
def test_read_of_an_overwritten_value_is_caught(seed: int, processes: int, pick: int) -> None:
    """Every write is unique and definite, so a read that returns the value of
    write W, although another write or delete W2 completed after W completed
    and before the read was invoked, cannot be linearized."""
    ops = [
        dict(op)
        for op in linearizable_history(
            random.Random(seed), ops_total=120, keys=1, processes=processes, values=None
        ).ops
    ]
    done = [
        (start, end, record) for start, end, record in _intervals(ops) if record["type"] == "ok"
    ]
    effects = [(start, end, record) for start, end, record in done if record["f"] != "read"]
    mutations = []
    for read_start, _read_end, read in done:
        if read["f"] != "read":
            continue
        for write_start, write_end, write in effects:
            if write["f"] != "write":
                continue
            overwritten = any(
                write_end < start and end < read_start
                for start, end, _ in effects
                if start != write_start
            )
            if overwritten:
                mutations.append((read, ops[write_start]["value"]))
    if not mutations:
        return
    read, stale = mutations[pick % len(mutations)]
    read["value"] = stale
    result = check_history(ops)
    assert result.valid is False
    assert [violation.key for violation in result.violations] == ["k0"]


@settings(max_examples=300, deadline=None)
@given(
    seed=seeds,
    ops_total=st.integers(min_value=1, max_value=6),
    processes=st.integers(min_value=1, max_value=4),
    values=st.sampled_from([None, 2, 3]),
    mutate=st.booleans(),
    observed=st.sampled_from([None, "v0", "v1", "v2", "v3"]),
)
def test_agrees_with_brute_force_on_tiny_histories(
    seed: int,
    ops_total: int,
    processes: int,
    values: int | None,
    mutate: bool,
    observed: str | None,
) -> None:
    rng = random.Random(seed)
    history = linearizable_history(
        rng,
        ops_total=ops_total,
        processes=processes,
        values=values,
        fail_probability=0.15,
        info_probability=0.2,
    )
    ops = [dict(op) for op in history.ops]
    reads = [i for i, op in enumerate(ops) if op["type"] == "ok" and op["f"] == "read"]
    if mutate and reads:
        ops[rng.choice(reads)]["value"] = observed
    assert check_history(ops).valid is brute_force_linearizable(ops)
