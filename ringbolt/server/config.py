"""Node configuration: one TOML file per node, validated into a frozen `NodeConfig`.

Theory of operation
-------------------
`load_config(path)` reads the file with `tomllib`, checks every field and
returns a `NodeConfig`, or raises `ConfigError` whose message is ONE line
naming the offending field, e.g.::

    config error: peers.2.address: expected "host:port", got "x"

Unknown fields are errors too (a typo must not silently fall back to a
default). `render_config(config)` writes a config back as TOML (used by
`ringbolt cluster up`). An initial node derives the initial cluster map
from `shards`, `replicas` and the `[peers.*]` list (the same on every
initial node); a `join = true` node learns the map from the cluster.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringbolt import limits as project
from ringbolt.consensus import registry
from ringbolt.server import limits
from ringbolt.server.service import DEFAULT_ADMIN_NETWORKS


class ConfigError(Exception):
    """A bad config; `str(error)` is the single line shown to the operator."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"config error: {where}: {problem}")
        self.where = where


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    node_id: int
    address: Address
    """Peer (Raft) address."""
    client_address: Address | None = None
    admin_address: Address | None = None
    dc: str = ""
    zone: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeLimits:
    key_bytes_max: int = project.key_bytes_max
    value_bytes_max: int = project.value_bytes_max
    clients_max: int = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    node_id: int
    client_address: Address
    peer_address: Address
    admin_address: Address | None
    data_dir: Path
    peers: Mapping[int, PeerConfig] = field(default_factory=dict)
    shards: int = 1
    replicas: int = 3
    """Replicas per shard (capped by the number of nodes)."""
    split_keys_max: int = 1_000_000
    """A shard this node leads is split in two once it holds more keys (0: never)."""
    balance_leaders: bool = True
    """Shed leaderships above this node's fair share to less loaded replicas."""
    join: bool = False
    """True for a node added to a running cluster: it hosts nothing until the
    cluster map places shards on it (`ringbolt cluster add-node`)."""
    dc: str = ""
    zone: str = ""
    requirepass: str | None = None
    admin_networks: tuple[str, ...] = DEFAULT_ADMIN_NETWORKS
    """Client networks (CIDR) allowed admin commands without AUTH (loopback)."""
    fsync: bool = True
    tick_ms: int = limits.tick_ms_default
    election_timeout_ticks: int = limits.election_timeout_ticks_default
    heartbeat_ticks: int = limits.heartbeat_ticks_default
    limits: NodeLimits = field(default_factory=NodeLimits)
    log_level: str = "info"
    unsafe: frozenset[str] = frozenset()
    """TEST-ONLY mutations (`registry.consensus().unsafe_mutations`) that break
    safety on purpose, so that fault tests can prove they catch bugs."""

    @property
    def voters(self) -> frozenset[int]:
        return frozenset({self.node_id, *self.peers})


_TOP_FIELDS = {
    "node_id", "client_address", "peer_address", "admin_address", "data_dir", "peers",
    "shards", "dc", "zone", "requirepass", "fsync", "tick_ms", "election_timeout_ticks",
    "heartbeat_ticks", "limits", "log_level", "replicas", "join", "unsafe", "split_keys_max", "balance_leaders",
    "admin_networks",
}
_PEER_FIELDS = {"address", "client_address", "admin_address", "dc", "zone"}
_LIMIT_FIELDS = {"key_bytes_max", "value_bytes_max", "clients_max"}
_LOG_LEVELS = ("debug", "info", "warning", "error")


def load_config(path: Path) -> NodeConfig:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(str(path), f"cannot read: {error.strerror or error}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), f"not valid TOML: {error}") from None
    return parse_config(document, base_dir=path.parent)


def parse_config(document: Mapping[str, Any], *, base_dir: Path = Path(".")) -> NodeConfig:
    _no_unknown(document, _TOP_FIELDS, "")
    node_id = _integer(document, "node_id", "node_id", low=1, high=2**31)
    peers = _peers(document.get("peers", {}), node_id)
    data_dir_text = _string(document, "data_dir", "data_dir")
    if not data_dir_text:
        raise ConfigError("data_dir", "must not be empty")
    data_dir = Path(data_dir_text)
    if not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    admin = document.get("admin_address")
    requirepass = document.get("requirepass")
    if requirepass is not None and not isinstance(requirepass, str):
        raise ConfigError("requirepass", f"expected a string, got {requirepass!r}")
    config = NodeConfig(
        node_id=node_id,
        client_address=_address(document.get("client_address"), "client_address"),
        peer_address=_address(document.get("peer_address"), "peer_address"),
        admin_address=None if admin in (None, "") else _address(admin, "admin_address"),
        data_dir=data_dir,
        peers=peers,
        shards=_integer(document, "shards", "shards", low=1, high=limits.shards_max, default=1),
        dc=_string(document, "dc", "dc", default=""),
        zone=_string(document, "zone", "zone", default=""),
        requirepass=requirepass or None,
        admin_networks=_networks(document.get("admin_networks", list(DEFAULT_ADMIN_NETWORKS))),
        fsync=_boolean(document, "fsync", "fsync", default=True),
        tick_ms=_integer(document, "tick_ms", "tick_ms", low=1, high=1_000,
                         default=limits.tick_ms_default),
        election_timeout_ticks=_integer(document, "election_timeout_ticks",
                                        "election_timeout_ticks", low=3, high=10_000,
                                        default=limits.election_timeout_ticks_default),
        heartbeat_ticks=_integer(document, "heartbeat_ticks", "heartbeat_ticks", low=1,
                                 high=10_000, default=limits.heartbeat_ticks_default),
        limits=_limits(document.get("limits", {})),
        log_level=_string(document, "log_level", "log_level", default="info"),
        replicas=_integer(document, "replicas", "replicas", low=1, high=7, default=3),
        join=_boolean(document, "join", "join", default=False),
        split_keys_max=_integer(document, "split_keys_max", "split_keys_max", low=0,
                                high=2**40, default=1_000_000),
        balance_leaders=_boolean(document, "balance_leaders", "balance_leaders", default=True),
        unsafe=_unsafe(document.get("unsafe", [])),
    )
    if config.heartbeat_ticks >= config.election_timeout_ticks:
        raise ConfigError("heartbeat_ticks", "must be smaller than election_timeout_ticks")
    if config.log_level not in _LOG_LEVELS:
        raise ConfigError("log_level", f"expected one of {', '.join(_LOG_LEVELS)}, "
                                       f"got {config.log_level!r}")
    _distinct_addresses(config)
    return config


def _networks(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError("admin_networks", f"expected a list of CIDR strings, got {_show(raw)}")
    for item in raw:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError("admin_networks", f"not a network: {item!r} "
                                                "(e.g. \"127.0.0.0/8\")") from None
    return tuple(raw)


def _peers(raw: object, node_id: int) -> dict[int, PeerConfig]:
    if not isinstance(raw, Mapping):
        raise ConfigError("peers", "expected a table of node id -> {address = \"host:port\"}")
    if len(raw) > limits.peers_max:
        raise ConfigError("peers", f"at most {limits.peers_max} peers")
    peers: dict[int, PeerConfig] = {}
    for key, table in raw.items():
        where = f"peers.{key}"
        try:
            peer_id = int(key)
        except ValueError:
            raise ConfigError(where, f"peer ids are positive integers, got {key!r}") from None
        if peer_id < 1:
            raise ConfigError(where, f"peer ids are positive integers, got {key!r}")
        if not isinstance(table, Mapping):
            raise ConfigError(where, "expected a table with address = \"host:port\"")
        _no_unknown(table, _PEER_FIELDS, where + ".")
        if peer_id == node_id:
            continue  # a shared peer list may name this node too
        client = table.get("client_address")
        admin = table.get("admin_address")
        peers[peer_id] = PeerConfig(
            node_id=peer_id,
            address=_address(table.get("address"), where + ".address"),
            client_address=None if client is None else _address(client, where + ".client_address"),
            admin_address=None if admin is None else _address(admin, where + ".admin_address"),
            dc=_string(table, "dc", where + ".dc", default=""),
            zone=_string(table, "zone", where + ".zone", default=""),
        )
    return peers


def _unsafe(raw: object) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(name, str) for name in raw):
        raise ConfigError("unsafe", f"expected a list of mutation names, got {_show(raw)}")
    known = registry.consensus().unsafe_mutations
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError("unsafe", f"unknown mutation {unknown[0]!r}; known: "
                                    f"{', '.join(sorted(known))}")
    return frozenset(raw)


def _limits(raw: object) -> NodeLimits:
    if not isinstance(raw, Mapping):
        raise ConfigError("limits", "expected a table")
    _no_unknown(raw, _LIMIT_FIELDS, "limits.")
    defaults = NodeLimits()
    key_max = _integer(raw, "key_bytes_max", "limits.key_bytes_max", low=1,
                       high=project.key_bytes_max, default=defaults.key_bytes_max)
    value_max = _integer(raw, "value_bytes_max", "limits.value_bytes_max", low=1,
                         high=project.value_bytes_ceiling, default=defaults.value_bytes_max)
    clients = _integer(raw, "clients_max", "limits.clients_max", low=1, high=1_000_000,
                       default=defaults.clients_max)
    return NodeLimits(key_bytes_max=key_max, value_bytes_max=value_max, clients_max=clients)


def _distinct_addresses(config: NodeConfig) -> None:
    own = [("client_address", config.client_address), ("peer_address", config.peer_address)]
    if config.admin_address is not None:
        own.append(("admin_address", config.admin_address))
    seen: dict[Address, str] = {}
    for name, address in own:
        if address in seen:
            raise ConfigError(name, f"{address} is already used by {seen[address]}")
        seen[address] = name
    for peer in config.peers.values():
        if peer.address == config.peer_address:
            raise ConfigError(f"peers.{peer.node_id}.address",
                              f"{peer.address} is this node's own peer_address")


def _no_unknown(table: Mapping[str, Any], known: set[str], prefix: str) -> None:
    for name in table:
        if name not in known:
            raise ConfigError(f"{prefix}{name}", "unknown field")


def _address(value: object, where: str) -> Address:
    if not isinstance(value, str):
        raise ConfigError(where, f'expected "host:port", got {_show(value)}')
    host, separator, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not separator or not host or not port_text.isdigit():
        raise ConfigError(where, f'expected "host:port", got "{value}"')
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(where, f"port must be in 1..65535, got {port}")
    if any(c.isspace() for c in host):
        raise ConfigError(where, f'expected "host:port", got "{value}"')
    return Address(host, port)


def _integer(table: Mapping[str, Any], name: str, where: str, *, low: int, high: int,
             default: int | None = None) -> int:
    value = table.get(name, default)
    if value is None:
        raise ConfigError(where, "missing (required)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected an integer, got {_show(value)}")
    if not low <= value <= high:
        raise ConfigError(where, f"must be in {low}..{high}, got {value}")
    return value


def _string(table: Mapping[str, Any], name: str, where: str, default: str | None = None) -> str:
    value = table.get(name, default)
    if value is None:
        raise ConfigError(where, "missing (required)")
    if not isinstance(value, str):
        raise ConfigError(where, f"expected a string, got {_show(value)}")
    return value


def _boolean(table: Mapping[str, Any], name: str, where: str, default: bool) -> bool:
    value = table.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {_show(value)}")
    return value


def _show(value: object) -> str:
    return "nothing" if value is None else f"{value!r} ({type(value).__name__})"


def render_config(config: NodeConfig) -> str:
    """The TOML text that `load_config` reads back into an equal `NodeConfig`."""
    lines = [
        f"node_id = {config.node_id}",
        f'client_address = "{config.client_address}"',
        f'peer_address = "{config.peer_address}"',
    ]
    if config.admin_address is not None:
        lines.append(f'admin_address = "{config.admin_address}"')
    lines += [
        f"data_dir = {_quote(str(config.data_dir))}",
        f"shards = {config.shards}",
        f"replicas = {config.replicas}",
        f"split_keys_max = {config.split_keys_max}",
        f"balance_leaders = {'true' if config.balance_leaders else 'false'}",
        f"dc = {_quote(config.dc)}",
        f"zone = {_quote(config.zone)}",
        f"fsync = {'true' if config.fsync else 'false'}",
        f"tick_ms = {config.tick_ms}",
        f"election_timeout_ticks = {config.election_timeout_ticks}",
        f"heartbeat_ticks = {config.heartbeat_ticks}",
        f"log_level = {_quote(config.log_level)}",
    ]
    if config.join:
        lines.append("join = true")
    if config.unsafe:
        lines.append(f"unsafe = [{', '.join(_quote(name) for name in sorted(config.unsafe))}]")
    if config.requirepass:
        lines.append(f"requirepass = {_quote(config.requirepass)}")
    if config.admin_networks != DEFAULT_ADMIN_NETWORKS:
        lines.append("admin_networks = ["
                     f"{', '.join(_quote(network) for network in config.admin_networks)}]")
    lines += ["", "[limits]",
              f"key_bytes_max = {config.limits.key_bytes_max}",
              f"value_bytes_max = {config.limits.value_bytes_max}",
              f"clients_max = {config.limits.clients_max}"]
    for peer in config.peers.values():
        lines += ["", f"[peers.{peer.node_id}]", f'address = "{peer.address}"']
        if peer.client_address is not None:
            lines.append(f'client_address = "{peer.client_address}"')
        if peer.admin_address is not None:
            lines.append(f'admin_address = "{peer.admin_address}"')
        if peer.dc:
            lines.append(f"dc = {_quote(peer.dc)}")
        if peer.zone:
            lines.append(f"zone = {_quote(peer.zone)}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
