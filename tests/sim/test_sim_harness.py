"""The simulator's own machinery, exercised with a one-node stand-in core."""

from __future__ import annotations

import json
import random

import pytest

from ringbolt.sim.clients import Clients
from ringbolt.sim.network import Network
from ringbolt.sim.params import FAULT_KINDS, draw_params, parse_faults
from ringbolt.sim.runner import run_seed
from tests.sim.fake_core import solo_factory


def test_parse_faults() -> None:
    assert parse_faults("all") == frozenset(FAULT_KINDS)
    assert parse_faults("none") == frozenset()
    assert parse_faults("crash, loss") == frozenset({"crash", "loss"})
    with pytest.raises(ValueError, match="bogus"):
        parse_faults("crash,bogus")


def test_params_only_enable_allowed_faults_and_depend_only_on_the_seed() -> None:
    allowed = frozenset({"crash", "loss"})
    first = draw_params(random.Random(7), seed=7, nodes=5, allowed=allowed)
    again = draw_params(random.Random(7), seed=7, nodes=5, allowed=allowed)
    assert first == again
    assert first.faults <= allowed
    seen = set()
    for seed in range(40):
        seen |= draw_params(random.Random(seed), seed=seed, nodes=5, allowed=allowed).faults
    assert seen == allowed


class _Message:
    def __init__(self, sender: int, recipient: int, n: int) -> None:
        self.sender, self.recipient, self.n = sender, recipient, n


def test_network_cuts_drop_messages_in_flight_and_fifo_without_reorder() -> None:
    params = draw_params(random.Random(1), seed=1, nodes=3, allowed=frozenset())
    scheduled: list[tuple[int, object]] = []
    network = Network(random.Random(1), params, lambda at, m: scheduled.append((at, m)))
    for n in range(20):
        network.send(_Message(1, 2, n), now=n)
    times = [at for at, _ in scheduled]
    assert times == sorted(times)  # FIFO per link without the reorder fault
    network.add_cut(network.partition_links(frozenset({1}), frozenset({1, 2, 3})))
    assert not network.arrive(scheduled[0][1])
    network.send(_Message(2, 1, 99), now=30)
    assert len(scheduled) == 20  # cut at send time: never scheduled
    network.heal()
    assert network.arrive(scheduled[1][1])
    assert network.statistics()["dropped"] == 2


def test_solo_core_runs_are_valid_live_and_replayable() -> None:
    faults = parse_faults("crash,slow_disk,compaction")
    for seed in range(1, 6):
        result = run_seed(seed, nodes=1, faults=faults, core_factory=solo_factory())
        assert result.safety_violation is None, result.safety_violation
        assert result.linearizability_violation is None
        assert result.liveness_ok
        assert result.ops_checked > 50
        again = run_seed(seed, nodes=1, faults=faults, core_factory=solo_factory())
        assert again.trace_hash == result.trace_hash


def test_history_is_well_formed(tmp_path: object) -> None:
    result_ops: list[dict[str, object]] = []

    def capture(params: object, rng: random.Random):  # type: ignore[no-untyped-def]
        return solo_factory()(params, rng)

    original = Clients.stop

    def stop(self: Clients) -> None:
        original(self)
        result_ops.extend(self.history.ops)

    Clients.stop = stop  # type: ignore[method-assign]
    try:
        run_seed(3, nodes=1, faults=parse_faults("crash"), core_factory=capture)
    finally:
        Clients.stop = original  # type: ignore[method-assign]
    open_by_process: dict[object, dict[str, object]] = {}
    for op in result_ops:
        json.dumps(op)
        if op["type"] == "invoke":
            assert op["process"] not in open_by_process
            open_by_process[op["process"]] = op
        else:
            invoked = open_by_process.pop(op["process"])
            assert (invoked["f"], invoked["key"]) == (op["f"], op["key"])
    assert open_by_process == {}
    assert {op["f"] for op in result_ops} == {"read", "write", "cas", "delete"}
