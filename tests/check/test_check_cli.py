"""`ringbolt check`: verdicts, exit codes and the --json report."""

from __future__ import annotations

import json
import pathlib

import pytest
from click.testing import CliRunner

from ringbolt.check import limits
from ringbolt.check.cli import check
from ringbolt.cli import main

TESTDATA = pathlib.Path(__file__).parent / "testdata"
GOOD = str(TESTDATA / "good_cas_semantics.jsonl")
BAD = str(TESTDATA / "bad_deposed_leader_read.jsonl")


def test_valid_history_exits_0() -> None:
    result = CliRunner().invoke(main, ["check", GOOD])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("VALID")
    assert "8 ops over 1 key," in result.output


def test_invalid_history_exits_1_and_explains() -> None:
    result = CliRunner().invoke(check, [BAD])
    assert result.exit_code == 1
    assert result.output.startswith("INVALID")
    assert "key 'x' is not linearizable" in result.output
    assert "p1 read -> 'v1' (invoked line 15, ok line 18) cannot be placed" in result.output
    assert "key 'y'" not in result.output


def test_json_report() -> None:
    result = CliRunner().invoke(check, [BAD, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert {"valid", "ops_checked", "keys_checked", "violations"} <= set(report)
    assert (report["valid"], report["ops_checked"], report["keys_checked"]) == (False, 8, 2)
    [violation] = report["violations"]
    assert violation["key"] == "x"
    assert violation["op"]["invoke_line"] == 15
    good = json.loads(CliRunner().invoke(check, [GOOD, "--json"]).stdout)
    assert (good["valid"], good["violations"]) == (True, [])


def test_history_from_stdin() -> None:
    text = (TESTDATA / "bad_stale_read.jsonl").read_text()
    result = CliRunner().invoke(check, ["-", "--json"], input=text)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["valid"] is False


def test_missing_file_exits_2(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = CliRunner().invoke(check, [str(missing)])
    assert result.exit_code == 2
    assert result.stderr == f"error: cannot read {missing}: No such file or directory\n"


def test_malformed_json_exits_2_naming_the_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "h.jsonl"
    lines = (TESTDATA / "good_delete.jsonl").read_text().splitlines()
    lines[4] = lines[4][:-1]  # drop the closing brace of the 5th line
    path.write_text("\n".join(lines))
    result = CliRunner().invoke(check, [str(path), "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"error: {path}: line 5: malformed JSON" in result.stderr


def test_model_without_cas_exits_2() -> None:
    result = CliRunner().invoke(check, [GOOD, "--model", "register"])
    assert result.exit_code == 2
    assert "model 'register' does not define f='cas'" in result.stderr
    result = CliRunner().invoke(check, [str(TESTDATA / "good_delete.jsonl"), "--model", "register"])
    assert result.exit_code == 0


def test_time_limit_gives_unknown_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "deadline_check_steps", 1)
    result = CliRunner().invoke(check, [GOOD, "--time-limit", "0", "--json"])
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert (report["valid"], report["verdict"], report["unknown_keys"]) == (None, "unknown", ["x"])
    text = CliRunner().invoke(check, [GOOD, "--time-limit", "0"])
    assert text.exit_code == 3
    assert text.output.startswith("UNKNOWN")
    assert "undecided keys (search cut short): 'x'" in text.output
