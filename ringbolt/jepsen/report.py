"""What a run produced: counts, availability under faults, recovery times, files, a plot.

Theory of operation
-------------------
Everything here is computed from two inputs only: the history (records with
`time` in ms since the run started) and the nemesis events (start/stop in
seconds). An op belongs to a fault when it was *invoked* while the fault was
active; availability of a kind is the share of those ops that completed ok.
The recovery time after a heal is the time from the heal to the first ok
completion of an op invoked after it (None if nothing succeeded before the
run ended). The *rejoin* time after a heal is read from the node logs
instead: per target node, the time until its log says it knows a leader of
shard 0 again (the replica's "shard 0: leader is now N" line), 0 if it never
lost it; it isolates the cluster's recovery from the clients' op timeouts and
from the next fault. `write_run_directory` lays out one run::

    history.jsonl  nemesis.jsonl  errors.jsonl  summary.json  timeline.png  logs/n<i>.log

The plot needs matplotlib, imported lazily; without it the plot is skipped
with a warning in the summary.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ringbolt.check.history import History
from ringbolt.jepsen.nemesis import NemesisEvent

FINAL_PROCESS_MIN = 10_000
"""Processes from here on are the harness's final reads, not workload clients."""


def completed_ops(history: History) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(invoke, completion or None) pairs in invocation order; each invoke
    carries its op id (index in the history) as "op"."""
    pairs: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    open_by_process: dict[int, int] = {}
    for op_id, record in enumerate(history.ops):
        if record["type"] == "invoke":
            open_by_process[record["process"]] = len(pairs)
            pairs.append(({**record, "op": op_id}, None))
        else:
            index = open_by_process.pop(record["process"])
            pairs[index] = (pairs[index][0], record)
    return pairs


def counts(history: History) -> dict[str, int]:
    result = {"ops": 0, "ok": 0, "fail": 0, "info": 0}
    for _, completion in completed_ops(history):
        result["ops"] += 1
        result["info" if completion is None else completion["type"]] += 1
    return result


def availability(history: History, events: Sequence[NemesisEvent],
                 answered: frozenset[int] = frozenset()) -> dict[str, dict[str, Any]]:
    """kind -> {ops, ok, percent_ok} for client ops invoked during that kind of fault;
    'none' holds ops invoked while no fault was active. Ops in `answered` (op
    ids whose fail was the model's answer, e.g. CAS 0) count as available."""
    table: dict[str, list[int]] = {}
    for invoke, completion in completed_ops(history):
        if invoke["process"] >= FINAL_PROCESS_MIN:
            continue
        at_s = invoke["time"] / 1000
        kinds = {e.kind for e in events if e.start_s <= at_s <= e.stop_s} or {"none"}
        served = completion is not None and (completion["type"] == "ok"
                                             or invoke["op"] in answered)
        for kind in kinds:
            row = table.setdefault(kind, [0, 0])
            row[0] += 1
            row[1] += served
    return {kind: {"ops": total, "ok": ok, "percent_ok": round(100 * ok / total, 1)}
            for kind, (total, ok) in sorted(table.items())}


def recovery_times(history: History, events: Sequence[NemesisEvent]) -> list[dict[str, Any]]:
    """Per heal: seconds from the heal to the first ok op invoked after it
    (`first_ok_s`), and until EVERY client process had one (`all_clients_s`:
    the clients of the faulted nodes are back too). None = not before the end.
    A heal is `clean` when no other fault was active at it and every client was
    back before the next fault started; only clean heals measure recovery from
    that one fault (the others also wait for an overlapping or later fault)."""
    first_ok: dict[int, list[tuple[float, float]]] = {}
    for invoke, completion in completed_ops(history):
        if (completion is not None and completion["type"] == "ok"
                and invoke["process"] < FINAL_PROCESS_MIN):
            first_ok.setdefault(invoke["process"], []).append(
                (invoke["time"] / 1000, completion["time"] / 1000))
    result = []
    for event in events:
        per_process = [min((done for invoked, done in oks if invoked >= event.stop_s),
                           default=None) for oks in first_ok.values()]
        reached = [t for t in per_process if t is not None]
        first = min(reached, default=None)
        every = max(reached) if reached and len(reached) == len(per_process) else None
        others = [e for e in events if e is not event]
        overlapped = any(e.start_s <= event.stop_s < e.stop_s for e in others)
        next_start = min((e.start_s for e in others if e.start_s > event.stop_s), default=None)
        clean = (every is not None and not overlapped
                 and (next_start is None or every <= next_start))
        result.append({"kind": event.kind, "healed_s": round(event.stop_s, 3),
                       "first_ok_s": None if first is None else round(first - event.stop_s, 3),
                       "all_clients_s": None if every is None else round(every - event.stop_s, 3),
                       "clean": clean})
    return result


def recovery_summary(recoveries: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Means and maxima; `all_clients_s` over clean heals only (`clean_heals` of them)."""
    summary: dict[str, float | int | None] = {}
    for name in ("first_ok_s", "all_clients_s"):
        values = [r[name] for r in recoveries
                  if r[name] is not None and (name == "first_ok_s" or r.get("clean", True))]
        summary[f"{name}_mean"] = round(sum(values) / len(values), 3) if values else None
        summary[f"{name}_max"] = round(max(values), 3) if values else None
    summary["clean_heals"] = sum(1 for r in recoveries if r.get("clean", True))
    return summary


_LEADER_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) node\d+ \w+ ringbolt\.replica: "
    r"shard 0: leader is now (\w+)")
_START_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) node\d+ \w+ "
                         r"ringbolt\.node: node \d+ up")


def leader_timeline(log_path: Path, started_at_unix: float) -> list[tuple[float, bool, bool]]:
    """(seconds since the run started, knows a leader of shard 0?, is a (re)start?)
    from one node's log; a (re)start knows no leader yet."""
    timeline: list[tuple[float, bool, bool]] = []
    if not log_path.is_file():
        return timeline
    with open(log_path, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            leader, start = _LEADER_LINE.match(line), _START_LINE.match(line)
            match = leader or start
            if match is None:
                continue
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            at_s = stamp.timestamp() - started_at_unix
            timeline.append((at_s, leader is not None and leader.group(2) != "unknown",
                             start is not None))
    return timeline


def rejoin_times(log_dir: Path, events: Sequence[NemesisEvent],
                 started_at_unix: float) -> list[float | None]:
    """Per event: seconds from its heal until every target node knew a leader of
    shard 0 again (0.0 if none had lost it by then; None if one never did). A
    killed node's timeline starts at its restart (the harness restarts it before
    it records the heal, so it may know a leader already)."""
    timelines = {int(path.stem[1:]): leader_timeline(path, started_at_unix)
                 for path in log_dir.glob("n*.log") if path.stem[1:].isdigit()}
    result: list[float | None] = []
    for event in events:
        worst: float | None = 0.0
        for node in event.targets:
            timeline = timelines.get(node, [])
            if event.kind.startswith("kill"):
                restarts = [i for i, (at_s, _, start) in enumerate(timeline)
                            if start and at_s > event.start_s]
                timeline = timeline[restarts[0]:] if restarts else []
            before = [knows for at_s, knows, _ in timeline if at_s <= event.stop_s]
            if before and before[-1]:
                continue
            after = [at_s for at_s, knows, _ in timeline if at_s > event.stop_s and knows]
            if not after:
                worst = None
                break
            assert worst is not None
            worst = max(worst, after[0] - event.stop_s)
        result.append(None if worst is None else round(worst, 3))
    return result


NODE_FAILURES_MAX = 20


def node_failures(log_dir: Path) -> list[dict[str, Any]]:
    """CRITICAL lines of the node logs: a node that stopped itself (a failed
    driver task, a failed WAL). Such a run may still have a valid history,
    but it found a bug (or a broken disk), so it must not pass silently."""
    found: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("n*.log")):
        if not path.stem[1:].isdigit():
            continue
        with path.open("r", errors="replace") as handle:
            for line in handle:
                if " CRITICAL " in line:
                    found.append({"node_log": path.name, "line": line.strip()[:500]})
                    if len(found) >= NODE_FAILURES_MAX:
                        return found
    return found


def rejoin_summary(recoveries: list[dict[str, Any]]) -> dict[str, float | None]:
    values = [r["rejoin_s"] for r in recoveries if r.get("rejoin_s") is not None]
    return {"rejoin_s_mean": round(sum(values) / len(values), 3) if values else None,
            "rejoin_s_max": round(max(values), 3) if values else None}


def write_history(history: History, directory: Path) -> None:
    history.to_jsonl(directory / "history.jsonl")


def write_nemesis_log(events: Sequence[NemesisEvent], errors: Sequence[str],
                      directory: Path) -> None:
    with open(directory / "nemesis.jsonl", "w", encoding="utf-8") as stream:
        for event in events:
            stream.write(json.dumps(event.to_dict()) + "\n")
        for error in errors:
            stream.write(json.dumps({"error": error}) + "\n")


def write_errors(errors: dict[int, str], directory: Path) -> None:
    """Error replies by op id (the invoke's index in history.jsonl), for diagnosis."""
    with open(directory / "errors.jsonl", "w", encoding="utf-8") as stream:
        for op, text in sorted(errors.items()):
            stream.write(json.dumps({"op": op, "error": text}) + "\n")


def plot_timeline(history: History, events: Sequence[NemesisEvent], path: Path,
                  title: str) -> str | None:
    """Write the timeline PNG; returns a warning instead when matplotlib is missing."""
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency, imported when used
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return "matplotlib is not installed; no timeline plot (pip install matplotlib)"
    figure, axes = plt.subplots(figsize=(14, 6))
    colours = {"ok": "tab:green", "fail": "tab:red", "info": "tab:orange"}
    palette = plt.get_cmap("tab10")
    kinds = sorted({e.kind for e in events})
    for event in events:
        axes.axvspan(event.start_s, event.stop_s, alpha=0.15,
                     color=palette(kinds.index(event.kind) % 10), linewidth=0)
    for kind in kinds:
        axes.plot([], [], color=palette(kinds.index(kind) % 10), alpha=0.4, linewidth=8,
                  label=kind)
    for kind, colour in colours.items():
        xs, ys = [], []
        for invoke, completion in completed_ops(history):
            outcome = "info" if completion is None else completion["type"]
            if outcome != kind:
                continue
            end = invoke["time"] if completion is None else completion["time"]
            xs.append(end / 1000)
            ys.append(min(invoke["process"], FINAL_PROCESS_MIN // 1000 + 40))
        axes.scatter(xs, ys, s=4, color=colour, label=f"{kind} ({len(xs)})")
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("client process (final reads on top)")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None


def write_summary(summary: dict[str, Any], directory: Path) -> None:
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
