"""`ringbolt placement-sim` through the real CLI entry point, with the acceptance bounds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from ringbolt.cli import main


def run_sim(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["placement-sim", "--json", *args])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report


def assert_acceptance(report: dict[str, Any]) -> None:
    assert report["max_over_mean"] <= 1.10
    assert report["moves_on_add"] <= 1.15 * report["ideal_moves_on_add"]
    assert report["add_moves_all_to_new_node"] is True
    assert report["moves_on_remove"] == report["removed_node_replicas"] > 0
    assert report["remove_moves_only_removed_node"] is True
    assert report["dc_violations"] == 0
    assert report["cap_overflows"] == 0
    assert report["acceptance_failures"] == []


def test_small_cluster_meets_the_acceptance_bounds() -> None:
    report = run_sim("--nodes", "30", "--shards", "3000", "--replicas", "3", "--dcs", "3")
    assert report["replicas_total"] == 9000
    assert report["ideal_moves_on_add"] == pytest.approx(9000 / 31, abs=0.01)
    assert_acceptance(report)


def test_full_size_cluster_meets_the_acceptance_bounds() -> None:
    # 100 nodes x 10,000 shards x 3 replicas: about a second of placement.
    report = run_sim("--nodes", "100", "--shards", "10000", "--dcs", "3")
    assert report["replicas_total"] == 30_000
    assert report["mean"] == 300
    assert_acceptance(report)


def test_uneven_dcs_and_more_replicas_still_meet_the_bounds() -> None:
    report = run_sim("--nodes", "40", "--shards", "2000", "--replicas", "5", "--dcs", "4")
    assert_acceptance(report)


def test_check_flag_fails_when_a_bound_cannot_hold() -> None:
    # 15 replicas on 7 nodes: the cap ceil(1.01 * 15/7) = 3 is 1.4 x the mean,
    # so max/mean cannot stay within 1 + epsilon and --check must say so.
    result = CliRunner().invoke(
        main,
        [
            "placement-sim",
            "--json",
            "--check",
            "--nodes",
            "7",
            "--shards",
            "5",
            "--epsilon",
            "0.01",
        ],
    )
    report = json.loads(result.output)
    assert report["acceptance_failures"]
    assert result.exit_code == 1


def test_table_output_lists_the_figures() -> None:
    result = CliRunner().invoke(main, ["placement-sim", "--nodes", "6", "--shards", "60"])
    assert result.exit_code == 0, result.output
    for figure in ["max_over_mean", "moves_on_add", "ideal_moves_on_add", "moves_on_remove"]:
        assert figure in result.output
    assert "dc_violations" in result.output
