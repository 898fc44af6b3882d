"""The simulator on the real Raft core: safety, linearizability, liveness,
determinism, and proof that it catches deliberately broken cores."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ringbolt.sim.cli import sim
from ringbolt.sim.params import parse_faults
from ringbolt.sim.runner import SeedResult, run_seed

ALL = parse_faults("all")


def _assert_clean(results: list[SeedResult]) -> None:
    for result in results:
        assert result.safety_violation is None, (result.seed, result.safety_violation)
        assert result.linearizability_violation is None, (result.seed, result.linearizability_violation)
    live = sum(result.liveness_ok for result in results)
    assert live >= 0.99 * len(results), [r.seed for r in results if not r.liveness_ok]
    assert sum(result.ops_checked for result in results) > 100 * len(results)


def test_five_nodes_all_faults_are_safe_linearizable_and_live() -> None:
    results = [run_seed(seed, nodes=5, faults=ALL) for seed in range(1, 81)]
    _assert_clean(results)
    kinds = set().union(*(result.faults for result in results))
    assert {"crash", "partition", "membership", "transfer", "snapshot_install"} <= kinds


def test_three_nodes_all_faults_are_safe_linearizable_and_live() -> None:
    _assert_clean([run_seed(seed, nodes=3, faults=ALL) for seed in range(1, 101)])


def test_early_messages_leave_before_slow_disks_and_crashes_stay_safe() -> None:
    """The sim runs the node's before-the-fsync rule (early_send) under faults."""
    results = [run_seed(seed, nodes=3, faults=parse_faults("slow_disk,crash"))
               for seed in range(1, 11)]
    _assert_clean(results)
    assert sum(r.statistics["early_messages"] for r in results) > 0
    assert sum(r.statistics["early_messages_before_disk"] for r in results) > 0


def test_same_seed_replays_byte_for_byte() -> None:
    first = run_seed(17, nodes=5, faults=ALL, trace=True)
    again = run_seed(17, nodes=5, faults=ALL, trace=True)
    assert first.trace_hash == again.trace_hash
    assert first.trace == again.trace
    assert first.statistics == again.statistics
    assert first.trace[0].split()[-2:] == ["seed", "17"]
    other = run_seed(18, nodes=5, faults=ALL)
    assert other.trace_hash != first.trace_hash


def _first_catch(mutation: str, nodes: int, faults: str) -> int | None:
    for seed in range(1, 2001):
        result = run_seed(seed, nodes=nodes, faults=parse_faults(faults), mutation=mutation)
        if result.safety_violation or result.linearizability_violation:
            return seed
    return None


@pytest.mark.parametrize(
    ("mutation", "nodes", "faults"),
    [
        # Figure 8 needs a leader cut off right after it wins or commits, and
        # small replication batches; partitions alone produce it most often.
        ("commit_old_terms", 3, "partition"),
        ("vote_without_log_check", 5, "all"),
        ("read_without_read_index", 5, "all"),
    ],
)
def test_each_unsafe_mutation_is_caught(mutation: str, nodes: int, faults: str) -> None:
    assert _first_catch(mutation, nodes, faults) is not None


def test_sim_command_prints_one_json_object() -> None:
    result = CliRunner().invoke(sim, ["--nodes", "3", "--seeds", "4", "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["seeds"] == 4
    for key in ("ops_checked", "safety_violations", "linearizability_violations",
                "liveness_failures", "faults", "failed_seeds"):
        assert key in summary
    assert summary["safety_violations"] == summary["linearizability_violations"] == 0


def test_sim_command_replays_one_seed_with_its_parameters_first() -> None:
    result = CliRunner().invoke(sim, ["--nodes", "3", "--seed", "5", "--trace", "--faults", "crash"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[-2:] == ["seed", "5"]
    assert any("faults = " in line for line in lines[:10])
    assert any("liveness: probe committed" in line for line in lines)


def test_sim_command_exits_non_zero_on_a_violation() -> None:
    result = CliRunner().invoke(sim, ["--nodes", "5", "--seeds", "40", "--workers", "1", "--json",
                                      "--mutation", "vote_without_log_check", "--stop-on-violation"])
    assert result.exit_code == 1
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["safety_violations"] + summary["linearizability_violations"] >= 1


def test_results_do_not_depend_on_the_number_of_workers() -> None:
    args = ["--nodes", "3", "--seeds", "6", "--json", "--faults", "crash,partition"]
    one = CliRunner().invoke(sim, [*args, "--workers", "1"])
    two = CliRunner().invoke(sim, [*args, "--workers", "2"])
    assert one.exit_code == two.exit_code == 0
    assert json.loads(one.output.splitlines()[-1]) == json.loads(two.output.splitlines()[-1])
