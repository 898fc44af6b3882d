"""Data-driven scenario scripts with golden output (etcd-io/raft style).

Each file in testdata/ is a sequence of cases:

    command arguments...
    ----
    expected output
    <blank line>

Commands drive a `harness.Network`; `stabilize` prints every message
delivered, so the scripts double as readable traces of the protocol. Run
with RINGBOLT_REWRITE=1 to regenerate the expected output after an
intended change, then review the diff.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from ringbolt.consensus.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotChunk,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from ringbolt.consensus.raft import ReadMode
from ringbolt.consensus.types import ConfChange, ConfChangeKind, ConsensusError, EntryKind
from tests.consensus.harness import ROUNDS_MAX, Network

TESTDATA = pathlib.Path(__file__).parent / "testdata"
REWRITE = os.environ.get("RINGBOLT_REWRITE") == "1"


def describe(m: Message) -> str:
    head = f"{m.sender}->{m.recipient} {m.kind.name} t{m.term}"
    if isinstance(m, VoteRequest):
        extra = " transfer" if m.transfer else ""
        return f"{head} last=({m.last_log_index},t{m.last_log_term}){extra}"
    if isinstance(m, VoteResponse):
        return f"{head} {'granted' if m.granted else 'rejected'}"
    if isinstance(m, AppendRequest):
        entries = " ".join(
            f"{e.index}/t{e.term}" + ("" if e.kind == EntryKind.NORMAL else f":{e.kind.name}")
            for e in m.entries
        )
        return f"{head} prev=({m.prev_log_index},t{m.prev_log_term}) commit={m.commit} [{entries}]"
    if isinstance(m, AppendResponse):
        if m.reject:
            return f"{head} reject index={m.index} hint=({m.hint_index},t{m.hint_term})"
        return f"{head} index={m.index}"
    if isinstance(m, Heartbeat):
        return f"{head} commit={m.commit} read_seq={m.read_seq}"
    if isinstance(m, HeartbeatResponse):
        return f"{head} read_seq={m.read_seq}"
    if isinstance(m, SnapshotChunk):
        return f"{head} snap={m.meta.index} bytes=[{m.offset},{m.offset + len(m.data)}) of {m.total_bytes}{' done' if m.done else ''}"
    if isinstance(m, SnapshotResponse):
        flags = " done" if m.done else " reject" if m.reject else ""
        return f"{head} snap={m.index} offset={m.offset}{flags}"
    if isinstance(m, ReadIndexRequest | ReadIndexResponse):
        index = f" index={m.index}" if isinstance(m, ReadIndexResponse) else ""
        return f"{head} ctx={m.context.decode()}{index}"
    assert isinstance(m, TimeoutNow)
    return head


class Interpreter:
    def __init__(self) -> None:
        self.net: Network | None = None

    def run(self, line: str) -> list[str]:
        name, *args = line.split()
        try:
            return getattr(self, "cmd_" + name.replace("-", "_"))(*args) or ["ok"]
        except ConsensusError as error:
            return [f"error: {type(error).__name__}: {error}"]

    @property
    def network(self) -> Network:
        assert self.net is not None, "start with `cluster`"
        return self.net

    def cmd_cluster(self, *args: str) -> list[str]:
        ids = [int(a) for a in args if "=" not in a]
        config: dict[str, object] = {}
        for option in (a for a in args if "=" in a):
            key, value = option.split("=")
            if key == "read_mode":
                config[key] = ReadMode(value)
            elif value in ("true", "false"):
                config[key] = value == "true"
            else:
                config[key] = int(value)
        self.net = Network(ids, **config)
        return []

    def cmd_stabilize(self) -> list[str]:
        net, out = self.network, []
        for _ in range(ROUNDS_MAX):
            busy = net.drain()
            if not net.queue and not busy:
                return out or ["(quiet)"]
            for m in net.queue:
                dropped = (m.sender, m.recipient) in net.cut or m.recipient in net.down
                out.append(describe(m) + ("  (dropped)" if dropped else ""))
            net.deliver()
        raise AssertionError("not quiet")

    def cmd_campaign(self, node: str) -> list[str]:
        raft = self.network.nodes[int(node)]
        while raft.role.name == "FOLLOWER":
            raft.tick()
        return [f"{node} is {raft.role.name} in term {raft.term}"]

    def cmd_tick(self, *args: str) -> list[str]:
        count = int(args[0]) if args else 1
        nodes = [int(n) for n in args[1].split(",")] if len(args) > 1 else self.network.ids
        for _ in range(count):
            for node in nodes:
                if node not in self.network.down:
                    self.network.nodes[node].tick()
        return []

    def cmd_propose(self, node: str, *commands: str) -> list[str]:
        placed = [self.network.nodes[int(node)].propose(c.encode()) for c in commands]
        return [" ".join(f"{c}@{index}/t{term}" for c, (term, index) in zip(commands, placed, strict=True))]

    def cmd_isolate(self, node: str) -> None:
        self.network.isolate(int(node))

    def cmd_heal(self) -> None:
        self.network.heal()

    def cmd_crash(self, node: str) -> None:
        self.network.crash(int(node))

    def cmd_restart(self, node: str) -> list[str]:
        raft = self.network.restart(int(node))
        return [f"{node} restarted: term={raft.term} vote={raft.vote} commit={raft.log.committed} last={raft.log.last_index}"]

    def cmd_compact(self, node: str) -> list[str]:
        return [f"{node} compacted through {self.network.compact(int(node))}"]

    def cmd_read(self, node: str, context: str) -> None:
        self.network.nodes[int(node)].read_index(context.encode())

    def cmd_transfer(self, node: str, target: str) -> None:
        self.network.nodes[int(node)].transfer_leadership(int(target))

    def cmd_conf(self, node: str, kind: str, target: str) -> list[str]:
        change = ConfChange(kind=ConfChangeKind[kind.upper().replace("-", "_")], node_id=int(target))
        term, index = self.network.nodes[int(node)].propose_conf_change(change)
        return [f"{kind} {target} @{index}/t{term}"]

    def cmd_add_node(self, node: str) -> None:
        self.network.add_node(int(node), voters=frozenset())

    def cmd_status(self) -> list[str]:
        out = []
        for node in self.network.ids:
            if node in self.network.down:
                out.append(f"{node}: down")
                continue
            s = self.network.nodes[node].status()
            voters = ",".join(map(str, sorted(s.conf.voters)))
            learners = ",".join(map(str, sorted(s.conf.learners))) or "-"
            out.append(
                f"{node}: {s.role.name} term={s.term} leader={s.leader} commit={s.commit} "
                f"applied={s.applied} last={s.last_index} voters={voters} learners={learners}"
            )
        return out

    def cmd_log(self, node: str) -> list[str]:
        log = self.network.nodes[int(node)].log
        entries = " ".join(
            f"{e.index}/t{e.term}:" + (e.data.decode() if e.kind == EntryKind.NORMAL else e.kind.name)
            for e in log.entries
        )
        return [f"snapshot={log.offset}/t{log.snapshot_term} {entries}"]

    def cmd_reads(self, node: str) -> list[str]:
        states = self.network.read_states[int(node)]
        return [" ".join(f"{r.context.decode()}@{r.index}" for r in states) or "(none)"]


def parse(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    cases: list[tuple[str, list[str]]] = []
    lines = path.read_text().splitlines()
    position = 0
    while position < len(lines):
        line = lines[position].strip()
        position += 1
        if not line or line.startswith("#"):
            continue
        assert lines[position] == "----", f"{path.name}:{position}: expected ----"
        position += 1
        expected = []
        while position < len(lines) and lines[position] != "":
            expected.append(lines[position])
            position += 1
        cases.append((line, expected))
    return cases


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_script(path: pathlib.Path) -> None:
    interpreter = Interpreter()
    rendered: list[str] = []
    mismatches: list[str] = []
    for command, expected in parse(path):
        actual = interpreter.run(command)
        rendered += [command, "----", *actual, ""]
        if actual != expected:
            mismatches.append(f"{command}\n  expected: {expected}\n  actual:   {actual}")
    if REWRITE:
        header = [line for line in path.read_text().splitlines() if line.startswith("#")][:3]
        path.write_text("\n".join([*header, "", *rendered]).rstrip("\n") + "\n")
        return
    assert not mismatches, "\n".join(mismatches)
