"""The consensus seam: registry lookup, Raft's codec and factory behind it."""

from __future__ import annotations

import ast
import pathlib
import random

import pytest

from ringbolt.consensus import codec, interface, registry
from ringbolt.consensus.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotChunk,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from ringbolt.consensus.raft import UNSAFE_MUTATIONS, Raft
from ringbolt.consensus.types import ConsensusCore, HardState, PersistentState, Role

ROOT = pathlib.Path(__file__).resolve().parents[2] / "ringbolt"


def test_the_default_consensus_is_raft() -> None:
    found = registry.consensus()
    assert found is registry.consensus("raft")
    assert found.name == "raft"
    assert registry.NAMES == ("raft",)
    assert found.unsafe_mutations == UNSAFE_MUTATIONS


def test_an_unknown_name_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown consensus 'paxos'.*raft"):
        registry.consensus("paxos")


def test_the_decode_error_is_the_codecs_own() -> None:
    assert interface.MessageDecodeError is codec.MessageDecodeError
    with pytest.raises(interface.MessageDecodeError):
        registry.consensus().codec.decode(b"\xc1 not msgpack")


def test_make_core_applies_the_settings() -> None:
    settings = interface.CoreSettings(node_id=2, voters=frozenset({1, 2, 3}),
                                      learners=frozenset({4}), election_timeout_ticks=12,
                                      heartbeat_ticks=3, unsafe=frozenset({"commit_old_terms"}),
                                      early_send=True, inflight_msgs_max=7,
                                      entries_per_msg_max=9)
    core = registry.consensus().make_core(settings, random.Random(1), None)
    assert isinstance(core, ConsensusCore)
    assert isinstance(core, Raft)
    config = core.config
    assert (config.node_id, config.voters, config.learners) == (2, {1, 2, 3}, {4})
    assert (config.election_timeout_ticks, config.heartbeat_ticks) == (12, 3)
    assert config.unsafe == {"commit_old_terms"}
    assert config.early_send
    assert (config.inflight_msgs_max, config.entries_per_msg_max) == (7, 9)
    assert core.status().role == Role.FOLLOWER
    restored = PersistentState(hard_state=HardState(term=5, vote=1))
    again = registry.consensus().make_core(settings, random.Random(1), restored)
    assert again.status().term == 5


def test_the_codec_round_trips_and_classifies() -> None:
    raft = registry.consensus().codec
    header = {"sender": 1, "recipient": 2, "term": 3}
    wants = [
        AppendRequest(**header, prev_log_index=0, prev_log_term=0, entries=[], commit=0),
        Heartbeat(**header, commit=0, read_seq=1),
        VoteRequest(**header, last_log_index=0, last_log_term=0),
        VoteRequest(**header, last_log_index=0, last_log_term=0, pre_vote=True),
    ]
    for message in wants:
        assert raft.decode(raft.encode(message)) == message
        assert raft.wants_replica(message)
        assert not raft.is_read_request(message)
    read = ReadIndexRequest(**header, context=b"c")
    assert raft.decode(raft.encode(read)) == read
    assert raft.is_read_request(read)
    assert not raft.wants_replica(read)
    others = [AppendResponse, HeartbeatResponse, ReadIndexResponse, TimeoutNow, VoteResponse]
    assert SnapshotChunk in registry._WANTS_REPLICA
    assert not set(others) & set(registry._WANTS_REPLICA)


def test_the_interface_module_names_no_raft() -> None:
    tree = ast.parse((ROOT / "consensus" / "interface.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert "ringbolt.consensus.raft" not in imported
    assert "ringbolt.consensus.leader" not in imported


def test_drivers_reach_raft_only_through_the_registry() -> None:
    drivers = [ROOT / "sim" / "runner.py", ROOT / "sim" / "cluster.py", ROOT / "bench" / "core.py",
               ROOT / "server" / "config.py"]
    for path in drivers:
        tree = ast.parse(path.read_text())
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "ringbolt.consensus.raft" not in modules, path.name
