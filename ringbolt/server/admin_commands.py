"""Connection, introspection and cluster commands (HELLO, AUTH, CLIENT, INFO,
CONFIG, COMMAND, CLUSTER, PING, MULTI ...), loop-free like every handler
(dispatch.py): the few that need the store return a `Call`.
"""

from __future__ import annotations

import hmac
import json

from ringbolt.server import resp
from ringbolt.server.dispatch import (
    COMMANDS,
    MULTI_REFUSED,
    SYNTAX,
    Call,
    CommandError,
    Reply,
    Session,
    command,
    parse_integer,
    refuse_admin,
    unknown_subcommand,
)
from ringbolt.server.glob import compile_glob
from ringbolt.server.service import ServiceError

# --- connection commands ------------------------------------------------------------

@command("ping", -1, "fast", "stale")
def _ping(session: Session, arguments: list[bytes]) -> Reply:
    if len(arguments) > 2:
        raise CommandError("ERR wrong number of arguments for 'ping' command")
    return resp.PONG if len(arguments) == 1 else resp.encode_bulk(arguments[1])


@command("echo", 2, "fast", "stale")
def _echo(session: Session, arguments: list[bytes]) -> Reply:
    return resp.encode_bulk(arguments[1])


@command("quit", -1, "fast", "no-auth", "stale")
def _quit(session: Session, arguments: list[bytes]) -> Reply:
    session.closing = True
    return resp.OK


@command("select", 2, "fast", "stale")
def _select(session: Session, arguments: list[bytes]) -> Reply:
    if parse_integer(arguments[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    return resp.OK


@command("readonly", 1, "fast", "stale")
def _readonly(session: Session, arguments: list[bytes]) -> Reply:
    session.readonly = True
    return resp.OK


@command("readwrite", 1, "fast", "stale")
def _readwrite(session: Session, arguments: list[bytes]) -> Reply:
    session.readonly = False
    return resp.OK


@command("time", 1, "fast", "stale")
def _time(session: Session, arguments: list[bytes]) -> Reply:
    seconds, milliseconds = divmod(session.service.now_ms(), 1000)
    return resp.encode_bulk_array([b"%d" % seconds, b"%d" % (milliseconds * 1000)], 2)


def _authenticate(session: Session, user: bytes, password: bytes) -> bool:
    expected = session.service.limits.requirepass
    if user != b"default":
        return False
    if expected is not None and not hmac.compare_digest(password, expected.encode()):
        return False
    session.authenticated = True
    return True


@command("auth", -2, "fast", "no-auth", "stale")
def _auth(session: Session, arguments: list[bytes]) -> Reply:
    if len(arguments) > 3:
        raise CommandError(SYNTAX)
    if len(arguments) == 2 and session.service.limits.requirepass is None:
        raise CommandError(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?")
    user = arguments[1] if len(arguments) == 3 else b"default"
    if not _authenticate(session, user, arguments[-1]):
        raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    return resp.OK


def _check_client_name(name: bytes) -> bytes:
    if any(byte <= 0x20 or byte >= 0x7F for byte in name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters.")
    return name


@command("hello", -1, "fast", "no-auth", "stale")
def _hello(session: Session, arguments: list[bytes]) -> Reply:
    protocol = session.protocol
    if len(arguments) > 1:
        protocol = parse_integer(
            arguments[1], "ERR Protocol version is not an integer or out of range")
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    index, name = 2, None
    while index < len(arguments):
        option = arguments[index].upper()
        if option == b"AUTH" and index + 2 < len(arguments):
            if not _authenticate(session, arguments[index + 1], arguments[index + 2]):
                raise CommandError(
                    "WRONGPASS invalid username-password pair or user is disabled.")
            index += 3
        elif option == b"SETNAME" and index + 1 < len(arguments):
            name = _check_client_name(arguments[index + 1])
            index += 2
        else:
            option_text = arguments[index].decode("latin-1")[:64]
            raise CommandError(f"ERR Syntax error in HELLO option '{option_text}'")
    if not session.authenticated:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise "
            "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
            "client and select the RESP protocol version at the same time")
    session.protocol = protocol
    if name is not None:
        session.name = name
    reply = {"server": "ringbolt", "version": "7.0.0", "proto": protocol,
             "id": session.client_id, "mode": "standalone", "role": "master", "modules": []}
    return resp.encode_value(reply, protocol)


@command("reset", 1, "fast", "no-auth", "stale")
def _reset(session: Session, arguments: list[bytes]) -> Reply:
    session.protocol = 2
    session.name = b""
    session.readonly = False
    session.in_multi = False
    session.authenticated = session.service.limits.requirepass is None
    return b"+RESET\r\n"


def _client_line(session: Session, now_ms: int) -> str:
    return (f"id={session.client_id} addr={session.address} "
            f"name={session.name.decode('latin-1')} age={(now_ms - session.created_ms) // 1000} "
            f"db=0 flags={'R' if session.readonly else 'N'} "
            f"cmd={session.last_command.decode('latin-1').lower()} user=default "
            f"resp={session.protocol} lib-name={session.library_name.decode('latin-1')} "
            f"lib-ver={session.library_version.decode('latin-1')}\n")


@command("client", -2, "stale")
def _client(session: Session, arguments: list[bytes]) -> Reply:
    sub = arguments[1].upper()
    count = len(arguments)
    if sub == b"ID" and count == 2:
        return resp.encode_integer(session.client_id)
    if sub == b"GETNAME" and count == 2:
        return resp.encode_bulk(session.name) if session.name else resp.encode_null(
            session.protocol)
    if sub == b"SETNAME" and count == 3:
        session.name = _check_client_name(arguments[2])
        return resp.OK
    if sub == b"SETINFO" and count == 4:
        attribute = arguments[2].upper()
        if attribute == b"LIB-NAME":
            session.library_name = _check_client_name(arguments[3])
        elif attribute == b"LIB-VER":
            session.library_version = _check_client_name(arguments[3])
        else:
            raise CommandError(f"ERR Unrecognized option '{arguments[2].decode('latin-1')}'")
        return resp.OK
    now_ms = session.service.now_ms()
    if sub == b"INFO" and count == 2:
        return resp.encode_value(resp.Verbatim(_client_line(session, now_ms)), session.protocol)
    if sub == b"LIST":
        sessions = list(session.registry.sessions.values())[:10_000]
        text = "".join(_client_line(other, now_ms) for other in sessions)
        return resp.encode_value(resp.Verbatim(text), session.protocol)
    if sub in (b"NO-EVICT", b"NO-TOUCH") and count == 3:
        return resp.OK
    return unknown_subcommand(arguments)


# --- introspection --------------------------------------------------------------------------

def _plain(value: object, depth: int = 0) -> object:
    """A cluster/INFO value reduced to what the RESP encoder accepts."""
    if depth > 8:
        return str(value)
    if isinstance(value, dict):
        return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item, depth + 1) for item in value]
    if value is None or isinstance(value, (bytes, str, int, float)):
        return value
    return str(value)


def _info_text(session: Session, wanted: set[str]) -> str:
    sections: dict[str, dict[str, object]] = dict(session.service.info())
    sections["clients"] = {**sections.get("clients", {}), **session.registry.statistics()}
    everything = not wanted or wanted & {"all", "everything", "default"}
    lines: list[str] = []
    for name, fields in sections.items():
        if not everything and name.lower() not in wanted:
            continue
        if lines:
            lines.append("")
        lines.append(f"# {name.capitalize()}")
        for key, value in fields.items():
            if isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in value.items())
            lines.append(f"{key}:{value}".replace("\r", " ").replace("\n", " "))
    return "\r\n".join(lines) + "\r\n"


@command("info", -1, "stale")
def _info(session: Session, arguments: list[bytes]) -> Reply:
    wanted = {argument.decode("latin-1").lower() for argument in arguments[1:]}
    return resp.encode_value(resp.Verbatim(_info_text(session, wanted)), session.protocol)


def _config_parameters(session: Session) -> dict[str, str]:
    limits = session.service.limits
    return {
        "appendonly": "no", "save": "", "databases": "1", "maxmemory": "0", "timeout": "0",
        "maxclients": str(session.registry.clients_max),
        "proto-max-bulk-len": str(limits.value_bytes_max),
        "ringbolt-key-bytes-max": str(limits.key_bytes_max),
        "ringbolt-value-bytes-max": str(limits.value_bytes_max),
    }


@command("config", -2, "admin", "stale")
def _config(session: Session, arguments: list[bytes]) -> Reply:
    sub = arguments[1].upper()
    if sub == b"GET" and len(arguments) >= 3:
        parameters = _config_parameters(session)
        found: dict[str, str] = {}
        for pattern in arguments[2:]:
            match = compile_glob(pattern.lower())
            found.update((k, v) for k, v in parameters.items() if match(k.encode()))
        return resp.encode_value(found, session.protocol)
    if sub == b"SET" and len(arguments) >= 4:
        raise CommandError("ERR CONFIG SET is not supported: ringbolt is configured by its "
                           "node configuration file")
    if sub == b"RESETSTAT" and len(arguments) == 2:
        return resp.OK
    return unknown_subcommand(arguments)


def _command_info(name: str) -> list[object]:
    spec = COMMANDS[name.encode()]
    flags = {resp.SimpleString(flag) for flag in spec.flags}
    return [spec.name, spec.arity, flags, spec.first_key, spec.last_key, spec.key_step,
            [], [], [], []]


@command("command", -1, "stale")
def _command(session: Session, arguments: list[bytes]) -> Reply:
    names = sorted({spec.name for spec in COMMANDS.values()})
    if len(arguments) == 1:
        return resp.encode_value([_command_info(name) for name in names], session.protocol)
    sub = arguments[1].upper()
    if sub == b"COUNT" and len(arguments) == 2:
        return resp.encode_integer(len(names))
    if sub == b"DOCS":
        return resp.encode_value({}, session.protocol)
    if sub == b"LIST" and len(arguments) == 2:
        return resp.encode_value(names, session.protocol)
    if sub == b"INFO":
        wanted = [argument.decode("latin-1").lower() for argument in arguments[2:]]
        return resp.encode_value(
            [_command_info(name) if name.encode() in COMMANDS else None for name in wanted],
            session.protocol)
    return unknown_subcommand(arguments)


def _cluster_nodes_text(description: dict[str, object]) -> str:
    groups = description.get("groups")
    leads: dict[str, list[str]] = {}
    for group in groups if isinstance(groups, list) else []:
        if isinstance(group, dict) and group.get("leader") is not None:
            leads.setdefault(str(group["leader"]), []).append(str(group.get("id")))
    lines = []
    nodes = description.get("nodes")
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        node_id = str(node.get("id"))
        fields = [f"{key}={value}" for key, value in sorted(node.items())
                  if key not in ("id", "address") and not isinstance(value, (dict, list))]
        fields.append(f"leader_of={','.join(leads.get(node_id, [])) or '-'}")
        lines.append(" ".join([node_id, str(node.get("address", "-")), *fields]) + "\n")
    return "".join(lines)


def _cluster_info_text(description: dict[str, object]) -> str:
    lines = [f"{key}:{value}" for key, value in description.items()
             if isinstance(value, (str, int, float)) or value is None]
    nodes, groups = description.get("nodes"), description.get("groups")
    if isinstance(nodes, list):
        lines.append(f"cluster_known_nodes:{len(nodes)}")
    if isinstance(groups, list):
        led = sum(1 for g in groups if isinstance(g, dict) and g.get("leader") is not None)
        lines.append(f"cluster_groups:{len(groups)}")
        lines.append(f"cluster_groups_with_leader:{led}")
    return "".join(line.replace("\r", " ").replace("\n", " ") + "\r\n" for line in lines)


def _cluster_transfer(session: Session, arguments: list[bytes]) -> Reply:
    try:
        group_id, target = int(arguments[2]), int(arguments[3])
    except ValueError:
        return resp.encode_error("ERR value is not an integer or out of range")
    try:
        session.service.transfer_leadership(group_id, target)
    except ServiceError as error:
        return resp.encode_error(str(error))
    return resp.encode_simple("OK")


_CLUSTER_ADMIN = frozenset({b"MAP", b"ADDNODE", b"DRAINNODE", b"REMOVENODE", b"REBALANCE",
                            b"SPLIT"})
_CLUSTER_CHANGES = frozenset({b"ADDNODE", b"DRAINNODE", b"REMOVENODE", b"REBALANCE", b"SPLIT",
                              b"TRANSFER"})
"""Subcommands that change the cluster: they need an admin connection."""


def _admin_reply(session: Session, result: bytes, context: object) -> bytes:
    return resp.encode_value(result, session.protocol)


@command("cluster", -2, "stale")
def _cluster(session: Session, arguments: list[bytes]) -> Reply:
    if arguments[1].upper() in _CLUSTER_CHANGES and not session.admin:
        return refuse_admin(session)
    if len(arguments) == 4 and arguments[1].upper() == b"TRANSFER":
        return _cluster_transfer(session, arguments)
    if arguments[1].upper() in _CLUSTER_ADMIN:
        admin = getattr(session.service, "cluster_admin", None)
        if admin is None:
            return resp.encode_error("ERR this server has no cluster map")
        words = arguments[1:]
        return Call(lambda service: admin(words), _admin_reply)
    if len(arguments) != 2:
        return unknown_subcommand(arguments)
    sub = arguments[1].upper()
    if sub == b"DESCRIBE":
        return resp.encode_value(json.dumps(session.service.cluster_description(),
                                            sort_keys=True, default=str).encode(), session.protocol)
    description = _plain(session.service.cluster_description())
    assert isinstance(description, dict)
    groups = description.get("groups", [])
    protocol = session.protocol
    if sub == b"INFO":
        return resp.encode_value(resp.Verbatim(_cluster_info_text(description)), protocol)
    if sub == b"NODES":
        return resp.encode_value(resp.Verbatim(_cluster_nodes_text(description)), protocol)
    if sub in (b"GROUPS", b"SHARDS"):
        return resp.encode_value(groups if isinstance(groups, list) else [], protocol)
    if sub == b"LEADERS":
        leaders = {str(g.get("id")): g.get("leader") for g in groups if isinstance(g, dict)}
        return resp.encode_value(leaders, protocol)
    if sub == b"MYID":
        return resp.encode_value(str(description.get("node_id", "")), protocol)
    return unknown_subcommand(arguments)


# --- MULTI / EXEC: refused until transactions exist ---------------------------------

MULTI_UNSUPPORTED = (
    "ERR MULTI is not supported yet: the commands up to EXEC or DISCARD will be refused and "
    "nothing queued or run")


@command("multi", 1, "fast", "stale")
def _multi(session: Session, arguments: list[bytes]) -> Reply:
    if session.in_multi:
        raise CommandError("ERR MULTI calls can not be nested")
    session.in_multi = True
    raise CommandError(MULTI_UNSUPPORTED)


@command("exec", 1, "stale")
def _exec(session: Session, arguments: list[bytes]) -> Reply:
    if not session.in_multi:
        raise CommandError("ERR EXEC without MULTI")
    session.in_multi = False
    raise CommandError("EXECABORT Transaction discarded: MULTI is not supported yet, "
                       "nothing ran")


@command("discard", 1, "fast", "stale")
def _discard(session: Session, arguments: list[bytes]) -> Reply:
    if not session.in_multi:
        raise CommandError("ERR DISCARD without MULTI")
    session.in_multi = False
    return resp.OK


@command("watch", -2, "fast", "stale")
def _watch(session: Session, arguments: list[bytes]) -> Reply:
    raise CommandError("ERR WATCH is not supported yet (transactions are not implemented)")


@command("unwatch", 1, "fast", "stale")
def _unwatch(session: Session, arguments: list[bytes]) -> Reply:
    return resp.OK  # nothing can be watched


assert MULTI_REFUSED.startswith(b"-ERR MULTI")
