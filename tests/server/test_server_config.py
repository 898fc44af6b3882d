"""Config validation: every bad field gives one line naming it; good configs round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ringbolt.server.config import (
    Address,
    ConfigError,
    load_config,
    parse_config,
    render_config,
)


def good() -> dict[str, Any]:
    return {
        "node_id": 1,
        "client_address": "127.0.0.1:7379",
        "peer_address": "127.0.0.1:7479",
        "admin_address": "127.0.0.1:7579",
        "data_dir": "/tmp/ringbolt-test-node1",
        "shards": 4,
        "peers": {
            "1": {"address": "127.0.0.1:7479"},
            "2": {"address": "127.0.0.1:7480", "client_address": "127.0.0.1:7380"},
            "3": {"address": "10.0.0.3:7479"},
        },
        "limits": {"value_bytes_max": 4096},
    }


def test_good_config_parses_with_defaults() -> None:
    config = parse_config(good())
    assert config.node_id == 1
    assert config.client_address == Address("127.0.0.1", 7379)
    assert config.voters == frozenset({1, 2, 3})
    assert sorted(config.peers) == [2, 3]  # this node's own entry is skipped
    assert config.peers[2].client_address == Address("127.0.0.1", 7380)
    assert config.shards == 4
    assert config.fsync is True
    assert config.tick_ms == 10
    assert config.limits.value_bytes_max == 4096
    assert config.limits.key_bytes_max == 64 * 1024
    assert config.requirepass is None
    assert config.unsafe == frozenset() and config.join is False and config.replicas == 3


def test_render_then_load_gives_the_same_config(tmp_path: Path) -> None:
    document = good()
    document["requirepass"] = 'se"cret'
    document["fsync"] = False
    document["unsafe"] = ["read_without_read_index"]
    document["join"] = True
    document["replicas"] = 5
    document["split_keys_max"] = 0
    document["balance_leaders"] = False
    document["peers"]["3"]["dc"] = "east"
    document["admin_networks"] = ["127.0.0.0/8", "10.213.4.0/24"]
    config = parse_config(document)
    assert config.admin_networks == ("127.0.0.0/8", "10.213.4.0/24")
    assert config.unsafe == frozenset({"read_without_read_index"})
    assert config.peers[3].dc == "east"
    path = tmp_path / "node.toml"
    path.write_text(render_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize(("change", "expected"), [
    ({"peers": {"2": {"address": "x"}}}, 'config error: peers.2.address: expected "host:port", got "x"'),
    ({"client_address": "localhost"}, 'config error: client_address: expected "host:port", got "localhost"'),
    ({"peer_address": "h:99999"}, "config error: peer_address: port must be in 1..65535, got 99999"),
    ({"node_id": 0}, "config error: node_id: must be in 1..2147483648, got 0"),
    ({"node_id": "one"}, "config error: node_id: expected an integer, got 'one' (str)"),
    ({"shards": True}, "config error: shards: expected an integer, got True (bool)"),
    ({"fsync": "yes"}, "config error: fsync: expected true or false, got 'yes' (str)"),
    ({"limits": {"value_bytes_max": 0}}, "config error: limits.value_bytes_max: must be in 1..67108864, got 0"),
    ({"limits": {"values_max": 1}}, "config error: limits.values_max: unknown field"),
    ({"shard": 2}, "config error: shard: unknown field"),
    ({"peers": {"two": {"address": "h:1"}}}, "config error: peers.two: peer ids are positive integers, got 'two'"),
    ({"peers": {"2": {"adress": "h:1"}}}, "config error: peers.2.adress: unknown field"),
    ({"admin_address": "127.0.0.1:7379"}, "config error: admin_address: 127.0.0.1:7379 is already used by client_address"),
    ({"heartbeat_ticks": 50}, "config error: heartbeat_ticks: must be smaller than election_timeout_ticks"),
    ({"unsafe": ["no_fsync"]}, "config error: unsafe: unknown mutation 'no_fsync'; known: commit_old_terms, read_without_read_index, vote_without_log_check"),
    ({"unsafe": "read_without_read_index"}, "config error: unsafe: expected a list of mutation names, got 'read_without_read_index' (str)"),
    ({"replicas": 0}, "config error: replicas: must be in 1..7, got 0"),
    ({"split_keys_max": -1}, "config error: split_keys_max: must be in 0..1099511627776, got -1"),
    ({"balance_leaders": 1}, "config error: balance_leaders: expected true or false, got 1 (int)"),
    ({"admin_networks": ["10.0.0.0/33"]}, "config error: admin_networks: not a network: '10.0.0.0/33' (e.g. \"127.0.0.0/8\")"),
    ({"admin_networks": "127.0.0.1"}, "config error: admin_networks: expected a list of CIDR strings, got '127.0.0.1' (str)"),
    ({"log_level": "loud"}, "config error: log_level: expected one of debug, info, warning, error, got 'loud'"),
])
def test_bad_field_is_named_in_one_line(change: dict[str, Any], expected: str) -> None:
    document = good()
    document.update(change)
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert str(caught.value) == expected
    assert "\n" not in str(caught.value)


def test_missing_required_field() -> None:
    document = good()
    del document["data_dir"]
    with pytest.raises(ConfigError, match="^config error: data_dir: missing"):
        parse_config(document)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("node_id = = 1\n")
    with pytest.raises(ConfigError, match=f"^config error: {path}: not valid TOML"):
        load_config(path)


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    document = good()
    document["data_dir"] = "data/node1"
    assert parse_config(document, base_dir=tmp_path).data_dir == tmp_path / "data" / "node1"
