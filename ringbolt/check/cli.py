"""`ringbolt check HISTORY`: is a recorded history linearizable?

Exit status: 0 linearizable, 1 not linearizable, 2 bad input (unreadable or
malformed file, unknown model, op the model does not define), 3 unknown (a
key's search hit --time-limit or the memory bound before deciding). Human
output goes through rich; --json prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import time

import click
from rich.console import Console
from rich.text import Text

from ringbolt.check.history import History, HistoryFormatError
from ringbolt.check.linearizability import LinearizabilityResult, check_history
from ringbolt.check.models import DEFAULT_MODEL, MODELS, ModelError

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_BAD_INPUT = 2
EXIT_UNKNOWN = 3

_EXIT_CODES = {True: EXIT_VALID, False: EXIT_INVALID, None: EXIT_UNKNOWN}


@click.command(name="check")
@click.argument("history_path", metavar="HISTORY")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--model",
    type=click.Choice(sorted(MODELS)),
    default=DEFAULT_MODEL,
    show_default=True,
    help="Sequential model every key is checked against.",
)
@click.option(
    "--time-limit",
    "time_limit_s",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Seconds to search before giving up; unfinished keys are 'unknown' (exit 3).",
)
def check(history_path: str, as_json: bool, model: str, time_limit_s: float | None) -> None:
    """Check the JSON-lines HISTORY ('-' for stdin) for linearizability.

    Exit status: 0 linearizable, 1 not, 2 bad input, 3 unknown.
    """
    started = time.monotonic()
    try:
        history = _load(history_path)
        result = check_history(history, model=model, time_limit_s=time_limit_s)
    except (OSError, HistoryFormatError, ModelError) as error:
        click.echo(f"error: {_describe_error(history_path, error)}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    elapsed_s = time.monotonic() - started
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        _print_report(result, history_path, elapsed_s)
    sys.exit(_EXIT_CODES[result.valid])


def _load(path: str) -> History:
    if path == "-":
        return History.from_lines(sys.stdin.buffer)
    return History.from_jsonl(path)


def _describe_error(path: str, error: Exception) -> str:
    if isinstance(error, HistoryFormatError):
        return f"{path}: {error}"
    if isinstance(error, OSError):
        return f"cannot read {path}: {error.strerror or error}"
    return str(error)


def _print_report(result: LinearizabilityResult, path: str, elapsed_s: float) -> None:
    console = Console(highlight=False, soft_wrap=True)
    style = {"valid": "bold green", "invalid": "bold red", "unknown": "bold yellow"}
    headline = Text()
    headline.append(result.verdict.upper(), style=style[result.verdict])
    headline.append(
        f"  {path}: {_plural(result.ops_checked, 'op')} over "
        f"{_plural(result.keys_checked, 'key')}, "
        f"model {result.model}, checked in {elapsed_s:.2f} s"
    )
    console.print(headline)
    for violation in result.violations:
        console.print(Text(f"\nkey {violation.key!r} is not linearizable:", style="red"))
        console.print(Text(violation.explanation))
    if result.unknown_keys:
        shown = ", ".join(repr(key) for key in result.unknown_keys[:20])
        more = len(result.unknown_keys) - 20
        suffix = f" and {more} more" if more > 0 else ""
        console.print(Text(f"\nundecided keys (search cut short): {shown}{suffix}", style="yellow"))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
