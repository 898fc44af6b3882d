"""A tiny in-memory network of Raft nodes for unit tests.

Each node has an emulated disk (`PersistentState`) that receives exactly what
its Readys persist, so crash/restart is realistic. Messages are queued and
delivered in FIFO order; `stabilize` delivers until nothing is left to do.
Links can be cut one way or both ways; a cut link drops messages silently.
The state machine is a list of applied commands; its snapshot is msgpack.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import msgpack

from ringbolt.consensus.codec import decode_message, encode_message
from ringbolt.consensus.messages import Message
from ringbolt.consensus.raft import Raft, RaftConfig
from ringbolt.consensus.types import (
    Entry,
    EntryKind,
    PersistentState,
    ReadState,
    Ready,
    Role,
    Snapshot,
)

ROUNDS_MAX = 10_000


class Network:
    def __init__(
        self,
        ids: Iterable[int],
        *,
        seed: int = 1,
        voters: Iterable[int] | None = None,
        codec: bool = False,
        **config: object,
    ) -> None:
        self.ids = sorted(ids)
        self.voters = frozenset(self.ids if voters is None else voters)
        self.config = config
        self.rng = random.Random(seed)
        self.codec = codec
        self.disks: dict[int, PersistentState] = {}
        self.nodes: dict[int, Raft] = {}
        self.applied: dict[int, list[bytes]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.queue: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        self.transform: Callable[[Message], Message | None] | None = None
        """Applied to each message at delivery; None drops it."""
        self.sent: list[Message] = []
        for node in self.ids:
            self.add_node(node, voters=self.voters)

    def make_config(self, node: int, voters: frozenset[int]) -> RaftConfig:
        return RaftConfig(node_id=node, voters=voters, **self.config)  # type: ignore[arg-type]

    def add_node(self, node: int, *, voters: frozenset[int]) -> Raft:
        self.disks[node] = PersistentState()
        self.applied[node] = []
        self.read_states[node] = []
        raft = Raft(self.make_config(node, voters), random.Random(self.rng.randrange(1 << 30)))
        self.nodes[node] = raft
        if node not in self.ids:
            self.ids.append(node)
        return raft

    # --- faults ------------------------------------------------------------

    def isolate(self, node: int) -> None:
        for other in self.ids:
            if other != node:
                self.cut |= {(node, other), (other, node)}

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        for a in self.ids:
            for b in self.ids:
                if a != b and not any(a in s and b in s for s in sets):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    def crash(self, node: int) -> None:
        self.down.add(node)
        self.queue = [m for m in self.queue if m.recipient != node]

    def restart(self, node: int) -> Raft:
        self.down.discard(node)
        disk = self.disks[node]
        restored = PersistentState(
            hard_state=disk.hard_state, snapshot=disk.snapshot, entries=list(disk.entries)
        )
        raft = Raft(
            self.make_config(node, self.voters),
            random.Random(self.rng.randrange(1 << 30)),
            restored,
        )
        self.nodes[node] = raft
        self.applied[node] = self._decode_state(disk.snapshot) if disk.snapshot else []
        return raft

    # --- driving -----------------------------------------------------------

    def handle_ready(self, node: int) -> Ready:
        raft = self.nodes[node]
        ready = raft.ready()
        disk = self.disks[node]
        if ready.snapshot is not None:
            disk.snapshot = ready.snapshot
            disk.entries = []
            self.applied[node] = self._decode_state(ready.snapshot)
        if ready.entries:
            first = ready.entries[0].index
            disk.entries = [e for e in disk.entries if e.index < first] + list(ready.entries)
        if ready.hard_state is not None:
            disk.hard_state = ready.hard_state
        # persist -> early messages -> (fsync: the emulated disk is durable at
        # once) -> messages; the early ones only exist with early_send=True
        for message in ready.early_messages + ready.messages:
            assert isinstance(message, Message)  # type: ignore[misc,arg-type]
            self.sent.append(message)
            if self.codec:
                message = decode_message(encode_message(message))
            self.queue.append(message)
        for entry in ready.committed_entries:
            if entry.kind == EntryKind.NORMAL:
                self.applied[node].append(entry.data)
        self.read_states[node] += ready.read_states
        raft.advance(ready)
        raft.log.check()
        return ready

    def drain(self) -> bool:
        """Handle every pending Ready once; True if any had content."""
        busy = False
        for node in self.ids:
            if node not in self.down and self.nodes[node].has_ready():
                self.handle_ready(node)
                busy = True
        return busy

    def deliver(self) -> int:
        """Deliver every queued message once (new ones wait). Returns count."""
        batch, self.queue = self.queue, []
        delivered = 0
        for message in batch:
            if (message.sender, message.recipient) in self.cut or message.recipient in self.down:
                continue
            if message.recipient not in self.nodes:
                continue  # a node that does not exist (yet)
            if self.transform is not None:
                transformed = self.transform(message)
                if transformed is None:
                    continue
                message = transformed
            self.nodes[message.recipient].step(message)
            delivered += 1
        return delivered

    def stabilize(self) -> None:
        for _ in range(ROUNDS_MAX):
            busy = self.drain()
            if not self.queue and not busy:
                return
            self.deliver()
        raise AssertionError("the network did not go quiet")

    def tick(self, nodes: Iterable[int] | None = None, count: int = 1) -> None:
        for _ in range(count):
            for node in self.ids if nodes is None else nodes:
                if node not in self.down:
                    self.nodes[node].tick()
            self.stabilize()

    def campaign(self, node: int) -> None:
        """Tick only `node` until it starts an election, then stabilize."""
        raft = self.nodes[node]
        timeout = raft.config.election_timeout_ticks
        for _ in range(2 * timeout + 1):
            raft.tick()
            if raft.role != Role.FOLLOWER:
                break
        self.stabilize()

    def elect(self, node: int) -> Raft:
        self.campaign(node)
        raft = self.nodes[node]
        assert raft.role == Role.LEADER, f"node {node} is {raft.role.name}"
        return raft

    def leaders(self) -> list[int]:
        return [n for n in self.ids if n not in self.down and self.nodes[n].role == Role.LEADER]

    def propose(self, node: int, *commands: bytes) -> list[tuple[int, int]]:
        return [self.nodes[node].propose(c) for c in commands]

    # --- the toy state machine ------------------------------------------------

    def snapshot_data(self, node: int) -> bytes:
        packed = msgpack.packb(self.applied[node])
        assert isinstance(packed, bytes)
        return packed

    def compact(self, node: int) -> int:
        raft = self.nodes[node]
        index = raft.log.applied
        raft.compact(index, self.snapshot_data(node))
        disk = self.disks[node]
        disk.snapshot = raft.log.snapshot
        disk.entries = [e for e in disk.entries if e.index > index]
        return index

    @staticmethod
    def _decode_state(snapshot: Snapshot) -> list[bytes]:
        state = msgpack.unpackb(snapshot.data)
        assert isinstance(state, list)
        return state


def entry_terms(raft: Raft) -> list[int]:
    return [e.term for e in raft.log.entries]


def normal_entries(entries: Iterable[Entry]) -> list[bytes]:
    return [e.data for e in entries if e.kind == EntryKind.NORMAL]
