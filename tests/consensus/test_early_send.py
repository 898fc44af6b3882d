"""Ready.early_messages: what a Raft core lets out before its own fsync.

Only a leader's AppendRequests and Heartbeats of its term, once a hard state
of that term has been advanced (made durable); never votes or responses;
nothing at all without early_send."""

from __future__ import annotations

from ringbolt.consensus.early_send import EARLY_KINDS
from ringbolt.consensus.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    Message,
)
from ringbolt.consensus.raft import Raft
from ringbolt.consensus.types import Ready, Role
from tests.consensus.harness import Network


class RecordingNetwork(Network):
    """Remembers every Ready it handled, with the node that produced it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.readies: list[tuple[int, Role, int, Ready]] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def handle_ready(self, node: int) -> Ready:
        raft = self.nodes[node]
        role, term = raft.role, raft.term  # as of ready(): nothing steps in between
        ready = super().handle_ready(node)
        self.readies.append((node, role, term, ready))
        return ready


def _campaign_holding_advance(net: Network, node: int) -> list[Ready]:
    """Elect `node` while never advancing its Readys: it sends (early
    messages first) but nothing it persisted is acknowledged as durable."""
    raft = net.nodes[node]
    held: list[Ready] = []

    def drive() -> None:
        while raft.has_ready():
            ready = raft.ready()
            held.append(ready)
            net.queue += ready.early_messages + ready.messages  # type: ignore[arg-type]

    for _ in range(2 * raft.config.election_timeout_ticks + 1):
        raft.tick()
        if raft.role != Role.FOLLOWER:
            break
    for _ in range(20):
        drive()
        for other in net.ids:
            if other != node:
                while net.nodes[other].has_ready():
                    net.handle_ready(other)
        if not net.deliver() and raft.role == Role.LEADER:
            break
    drive()
    assert raft.role == Role.LEADER, f"node {node} is {raft.role.name}"
    return held


def _advance_all(net: Network, node: int, held: list[Ready]) -> None:
    """The held Readys' fsync completed: persist them (in order) and advance."""
    raft = net.nodes[node]
    disk = net.disks[node]
    for ready in held:
        if ready.entries:
            first = ready.entries[0].index
            disk.entries = [e for e in disk.entries if e.index < first] + list(ready.entries)
        if ready.hard_state is not None:
            disk.hard_state = ready.hard_state
        raft.advance(ready)
    held.clear()


def _appends_and_heartbeats(messages: list[object]) -> list[object]:
    return [m for m in messages if isinstance(m, EARLY_KINDS)]


def test_a_fresh_leader_sends_nothing_early_until_its_hard_state_is_advanced() -> None:
    net = Network([1, 2, 3], early_send=True)
    held = _campaign_holding_advance(net, 1)
    leader = net.nodes[1]
    assert any(r.hard_state is not None and r.hard_state.term == leader.term for r in held)
    assert all(not r.early_messages for r in held)
    assert any(isinstance(m, AppendRequest) for r in held for m in r.messages), (
        "the new leader's first append waited for the fsync")
    leader.propose(b"still waiting")
    ready = leader.ready()
    held.append(ready)
    assert ready.early_messages == []
    assert any(isinstance(m, AppendRequest) for m in ready.messages)

    _advance_all(net, 1, held)  # the term and the vote are durable now
    leader.propose(b"early")
    ready = leader.ready()
    assert ready.entries, "the leader's own copy is not durable yet"
    assert {m.recipient for m in ready.early_messages} == {2, 3}  # type: ignore[attr-defined]
    assert all(isinstance(m, AppendRequest) and m.term == leader.term
               for m in ready.early_messages)
    assert _appends_and_heartbeats(ready.messages) == []
    leader.advance(ready)

    for _ in range(leader.config.heartbeat_ticks):
        leader.tick()
    beat = leader.ready()
    assert beat.early_messages, "heartbeats of a durable term leave early"
    assert all(isinstance(m, Heartbeat) for m in beat.early_messages)
    assert _appends_and_heartbeats(beat.messages) == []


def test_the_leader_does_not_count_its_unsynced_log_toward_commit() -> None:
    net = Network([1, 2, 3], early_send=True)
    leader = net.elect(1)
    _, index = leader.propose(b"x")
    ready = leader.ready()
    to_two = [m for m in ready.early_messages if m.recipient == 2]  # type: ignore[attr-defined]
    assert len(to_two) == 1
    follower = net.nodes[2]
    follower.step(to_two[0])
    answer = follower.ready()
    assert answer.early_messages == [], "a follower's answer waits for its fsync"
    follower.advance(answer)
    for message in answer.messages:
        assert isinstance(message, AppendResponse)
        leader.step(message)
    assert leader.status().commit < index, "committed on one durable copy of three"
    leader.advance(ready)  # the leader's own fsync completed
    assert leader.status().commit == index


def _scenario(net: RecordingNetwork) -> None:
    """Elections, proposals, heartbeats, a partitioned leader and a new one."""
    net.elect(1)
    net.propose(1, b"a", b"b")
    net.stabilize()
    net.tick(count=5)
    net.isolate(1)
    net.propose(1, b"lost")  # appended by a leader that cannot reach anyone
    net.stabilize()
    net.tick(nodes=[3], count=net.nodes[3].config.election_timeout_ticks)  # its lease lapses
    net.elect(2)
    net.propose(2, b"c")
    net.stabilize()
    net.heal()
    net.tick(count=30)
    net.propose(2, b"d")
    net.stabilize()
    net.crash(3)
    net.restart(3)
    net.tick(count=30)


def test_only_a_leaders_appends_and_heartbeats_of_its_term_are_early() -> None:
    net = RecordingNetwork([1, 2, 3], early_send=True)
    _scenario(net)
    assert len(net.leaders()) == 1
    early = 0
    for node, role, term, ready in net.readies:
        if not ready.early_messages:
            continue
        early += len(ready.early_messages)
        assert role == Role.LEADER, f"node {node} sent early as {role.name}"
        assert ready.hard_state is None or ready.hard_state.term == term
        for message in ready.early_messages:
            assert isinstance(message, (AppendRequest, Heartbeat)), message
            assert message.term == term
            assert message.sender == node
    assert early > 0
    followers_early = [r for n, role, _, r in net.readies if role != Role.LEADER and r.early_messages]
    assert followers_early == []
    # the two stable states agree with the plain driver: same applied commands
    plain = Network([1, 2, 3])
    _scenario(plain)
    assert net.applied == plain.applied


def test_without_early_send_early_messages_stay_empty() -> None:
    net = RecordingNetwork([1, 2, 3])
    _scenario(net)
    assert net.readies
    assert all(ready.early_messages == [] for _, _, _, ready in net.readies)
    assert any(isinstance(m, AppendRequest) for _, _, _, r in net.readies for m in r.messages)


def test_a_restarted_node_leading_a_new_term_waits_for_it_to_be_durable() -> None:
    """The restored hard state is durable, but a new term's is not until advanced."""
    net = Network([1, 2, 3], early_send=True, check_quorum=False)  # no leader lease
    net.elect(1)
    net.crash(1)
    raft: Raft = net.restart(1)
    held = _campaign_holding_advance(net, 1)
    assert raft.term > 1
    assert all(not r.early_messages for r in held)
    messages: list[Message] = []
    for ready in held:
        messages += ready.messages  # type: ignore[arg-type]
    assert any(isinstance(m, AppendRequest) for m in messages)
