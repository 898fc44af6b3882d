"""Real Redis tools against the server: redis-cli (arguments and stdin) and
redis-benchmark."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from resp_harness import ServerThread

pytestmark = pytest.mark.skipif(
    shutil.which("redis-cli") is None or shutil.which("redis-benchmark") is None,
    reason="redis-tools not installed")


def cli(port: int, *arguments: str, stdin: str | None = None) -> str:
    result = subprocess.run(["redis-cli", "-p", str(port), *arguments], input=stdin,
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


def test_redis_cli_commands(shared_server: ServerThread) -> None:
    port = shared_server.port
    assert cli(port, "SET", "a", "b") == "OK\n"
    assert cli(port, "--no-raw", "GET", "a") == '"b"\n'
    assert cli(port, "--no-raw", "GET", "missing") == "(nil)\n"
    assert cli(port, "--no-raw", "INCR", "a") == (
        "(error) ERR value is not an integer or out of range\n")
    assert cli(port, "--no-raw", "MGET", "a", "missing") == '1) "b"\n2) (nil)\n'
    assert cli(port, "-3", "--no-raw", "GET", "missing") == "(nil)\n"
    assert "proto" in cli(port, "-3", "HELLO", "3")
    assert cli(port, "--no-raw", "CAS", "a", "b", "c") == "(integer) 1\n"
    assert cli(port, "--no-raw", "FOO") == (
        "(error) ERR unknown command 'FOO', with args beginning with: \n")


def test_redis_cli_reads_commands_from_stdin(shared_server: ServerThread) -> None:
    output = cli(shared_server.port, stdin='SET x 1\nINCR x\nGET x\nSET y "two words"\nGET y\n')
    assert output == "OK\n2\n2\nOK\ntwo words\n"


def test_redis_benchmark_completes(shared_server: ServerThread) -> None:
    result = subprocess.run(
        ["redis-benchmark", "-p", str(shared_server.port), "-t", "set,get", "-n", "20000",
         "-c", "20", "-q"], capture_output=True, text=True, timeout=120, check=True)
    lines = [line.rsplit("\r", 1)[-1] for line in result.stdout.splitlines()]
    finished = [line for line in lines if "requests per second" in line]
    assert [line.split(":")[0] for line in finished] == ["SET", "GET"]
    assert "error" not in result.stdout.lower() + result.stderr.lower()
    assert "WARNING" not in result.stderr


def test_dev_command_help() -> None:
    from click.testing import CliRunner

    from ringbolt.server.local import dev

    result = CliRunner().invoke(dev, ["--help"])
    assert result.exit_code == 0
    assert "--requirepass" in result.output
