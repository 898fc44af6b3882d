"""The sans-I/O rule, enforced by reading imports, and the CLI's shape."""

from __future__ import annotations

import ast
import pathlib

from click.testing import CliRunner

from ringbolt.cli import SUBCOMMANDS, main

ROOT = pathlib.Path(__file__).resolve().parent.parent / "ringbolt"
SANS_IO_PACKAGES = ["consensus", "txn", "lock", "shard", "kv"]
SANS_IO_MODULES = ["server/resp.py"]
FORBIDDEN = {"asyncio", "socket", "time", "random", "os", "threading", "selectors", "subprocess"}
ALLOWED_CLI_MODULES = {"cli.py"}  # command-line glue may touch the OS


def _sans_io_files() -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for package in SANS_IO_PACKAGES:
        files += [p for p in (ROOT / package).rglob("*.py") if p.name not in ALLOWED_CLI_MODULES]
    files += [ROOT / m for m in SANS_IO_MODULES if (ROOT / m).exists()]
    return files


def _imported_roots(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_sans_io_cores_import_no_io() -> None:
    files = _sans_io_files()
    assert files, "no sans-I/O modules found"
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & FORBIDDEN) for path in files
    }
    offenders = {name: bad for name, bad in offenders.items() if bad}
    assert offenders == {}


def test_import_checker_detects_forbidden_import(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import time\nfrom asyncio import sleep\n")
    assert _imported_roots(sample) & FORBIDDEN == {"time", "asyncio"}


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output
