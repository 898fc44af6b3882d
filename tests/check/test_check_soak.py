"""Large generated histories (run with --run-slow); speed is in ringbolt.check.benchmark."""

from __future__ import annotations

import random

import pytest

from ringbolt.check.benchmark import make_stale_read
from ringbolt.check.generate import linearizable_history
from ringbolt.check.linearizability import check_history


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    ("keys", "processes", "info_probability"),
    [(50, 10, 0.05), (5, 20, 0.02), (1, 10, 0.0)],
)
def test_large_histories_valid_and_with_one_stale_read(
    seed: int, keys: int, processes: int, info_probability: float
) -> None:
    rng = random.Random(seed)
    history = linearizable_history(
        rng,
        ops_total=20_000,
        keys=keys,
        processes=processes,
        fail_probability=0.05,
        info_probability=info_probability,
    )
    assert check_history(history, time_limit_s=300).valid is True
    stale = check_history(make_stale_read(history.ops, rng), time_limit_s=300)
    assert stale.valid is False
    assert len(stale.violations) == 1
