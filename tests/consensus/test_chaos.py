"""Randomized runs over a lossy, reordering, duplicating network with crashes
and compaction, checking Raft's safety properties after every step. (The
simulator in ringbolt/sim does this at scale; this is the core's own quick
guard.)"""

from __future__ import annotations

import random

import pytest

from ringbolt.consensus.raft import ReadMode
from ringbolt.consensus.types import EntryKind, Role
from tests.consensus.harness import Network


class Checker:
    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        self.committed_term: dict[int, int] = {}

    def check(self, net: Network) -> None:
        for node in net.ids:
            raft = net.nodes[node]
            if node in net.down:
                continue
            if raft.role == Role.LEADER:
                previous = self.leader_of_term.setdefault(raft.term, node)
                assert previous == node, f"two leaders in term {raft.term}"
            log = raft.log
            for index in range(max(log.first_index, log.committed - 20), log.committed + 1):
                term = log.term(index)
                if term is None:
                    continue
                known = self.committed_term.setdefault(index, term)
                assert known == term, f"committed entry {index} differs on node {node}"


def check_reads(net: Network, issued: dict[bytes, int]) -> None:
    """A read must see every entry committed anywhere before it was issued."""
    for node in net.ids:
        for state in net.read_states[node]:
            floor = issued.get(state.context)  # may repeat: the network duplicates requests
            assert floor is not None, "an answer to a read never issued"
            assert state.index >= floor, f"stale read {state.context!r}: {state.index} < {floor}"
        net.read_states[node] = []


def run(seed: int, steps: int, **config: object) -> Network:
    rng = random.Random(seed)
    net = Network([1, 2, 3, 4, 5], seed=seed, election_timeout_ticks=8, entries_per_msg_max=4,
                  inflight_msgs_max=4, snapshot_chunk_bytes_max=64, codec=True, **config)
    checker = Checker()
    proposed = 0
    issued: dict[bytes, int] = {}
    for step in range(steps):
        action = rng.random()
        if action < 0.08:
            node = rng.choice([n for n in net.ids if n not in net.down])
            context = b"read-%d" % step
            try:
                net.nodes[node].read_index(context)
                issued[context] = max(net.nodes[n].log.committed for n in net.ids)
            except Exception:
                pass
        elif action < 0.3:
            for node in net.ids:
                if node not in net.down:
                    net.nodes[node].tick()
        elif action < 0.5:
            for leader in net.leaders():
                for _ in range(rng.randrange(1, 6)):
                    try:
                        net.nodes[leader].propose(b"%d" % proposed)
                        proposed += 1
                    except Exception:
                        break
        elif action < 0.53 and len(net.down) < 2:
            net.crash(rng.choice(net.ids))
        elif action < 0.58 and net.down:
            net.restart(rng.choice(sorted(net.down)))
        elif action < 0.6:
            node = rng.choice([n for n in net.ids if n not in net.down])
            if net.nodes[node].log.applied > net.nodes[node].log.offset:
                net.compact(node)
        elif action < 0.62:
            net.heal()
            minority = rng.sample(net.ids, 2)
            net.partition(minority, [n for n in net.ids if n not in minority])
        elif action < 0.66:
            net.heal()
        net.drain()
        batch = net.queue
        rng.shuffle(batch)
        net.queue = [m for m in batch if rng.random() > 0.1]
        net.queue += [m for m in batch if rng.random() < 0.05]
        net.deliver()
        checker.check(net)
        check_reads(net, issued)
    # liveness: heal everything; a leader must emerge and commit a new entry
    net.heal()
    for node in sorted(net.down):
        net.restart(node)
    for _ in range(200):
        net.tick()
        checker.check(net)
        if net.leaders():
            break
    (leader,) = net.leaders()
    _, index = net.nodes[leader].propose(b"final")
    net.tick(count=3)
    checker.check(net)
    for node in net.ids:
        raft = net.nodes[node]
        assert raft.log.committed >= index
        entry = raft.log.entry(index)
        assert (entry.kind, entry.data) == (EntryKind.NORMAL, b"final")
    reference = net.applied[leader]
    for node in net.ids:
        assert net.applied[node] == reference
    return net


@pytest.mark.parametrize("seed", range(6))
def test_random_faults_keep_raft_safe_and_live(seed: int) -> None:
    run(seed, steps=400)


@pytest.mark.parametrize("seed", range(3))
def test_random_faults_with_lease_reads(seed: int) -> None:
    run(seed, steps=400, read_mode=ReadMode.LEASE)


def test_checker_catches_stale_reads_of_the_mutation() -> None:
    failures = 0
    for seed in range(20):
        try:
            run(seed, steps=400, check_quorum=False, unsafe=frozenset({"read_without_read_index"}))
        except AssertionError as error:
            failures += "stale read" in str(error)
    assert failures > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 300))
@pytest.mark.parametrize("mode", [ReadMode.SAFE, ReadMode.LEASE])
def test_random_faults_soak(seed: int, mode: ReadMode) -> None:
    run(seed, steps=3000, read_mode=mode)
