"""The dispatcher runs without an event loop: a command becomes a kv command
(or a read) plus a reply converter; MULTI refuses until EXEC/DISCARD; admin
commands need an admin connection."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from resp_harness import ServerThread, start_server

from ringbolt.client.client import WRITE_COMMANDS
from ringbolt.kv import commands as kv
from ringbolt.kv.codec import Op
from ringbolt.kv.machine import CommandFailed
from ringbolt.server.commands import COMMANDS, write_command_names
from ringbolt.server.dispatch import (
    NOPERM,
    Call,
    ClientRegistry,
    Read,
    Session,
    Write,
    WriteEach,
    execute,
)
from ringbolt.server.local import LocalService
from ringbolt.server.service import CrossShard, ServiceLimits

SERVER = Path(__file__).resolve().parents[2] / "ringbolt" / "server"
NOW_MS = 1_700_000_000_000


class Service:
    """A KeyValueService stand-in: two shards by the key's first byte, no loop."""

    def __init__(self, limits: ServiceLimits | None = None) -> None:
        self.limits = limits or ServiceLimits(key_bytes_max=64, value_bytes_max=64)

    def now_ms(self) -> int:
        return NOW_MS

    def group_of(self, keys: Sequence[bytes]) -> int:
        shards = {key[:1] < b"m" for key in keys}
        if len(shards) > 1:
            raise CrossShard("keys of one command must live in one shard")
        return int(shards.pop())

    def submit_write(self, keys: Sequence[bytes], command: bytes) -> Any:
        raise AssertionError("the dispatcher never submits")

    submit_read = submit_write

    def transfer_leadership(self, group_id: int, target: int) -> None:
        self.transferred = (group_id, target)


def session(address: str = "127.0.0.1:5000", limits: ServiceLimits | None = None) -> Session:
    opened = ClientRegistry().open(Service(limits), address)  # type: ignore[arg-type]
    assert opened is not None
    return opened


def test_the_handler_modules_import_no_event_loop() -> None:
    for name in ("dispatch.py", "strings.py", "admin_commands.py", "glob.py", "commands.py"):
        tree = ast.parse((SERVER / name).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert "asyncio" not in imported, name
        assert "ringbolt.server.replies" not in imported, name


def test_set_becomes_a_kv_put_and_its_converter_makes_the_reply() -> None:
    client = session()
    request = execute(client, [b"SET", b"k", b"v", b"PX", b"500"])
    assert isinstance(request, Write) and request.keys == [b"k"]
    decoded = kv.decode(request.data)
    assert decoded.op is Op.PUT and decoded.now_ms == NOW_MS
    assert decoded.args[:3] == (b"k", b"v", NOW_MS + 500)
    assert request.convert(client, True, request.context) == b"+OK\r\n"
    assert request.convert(client, False, request.context) == b"$-1\r\n"  # NX/XX not met
    with pytest.raises(Exception, match="boom"):
        request.convert(client, CommandFailed("ERR boom"), request.context)


def test_reads_are_requests_answered_through_kv_reads() -> None:
    client = session()
    get = execute(client, [b"GET", b"k"])
    assert isinstance(get, Read) and get.keys == [b"k"] and get.single
    assert get.convert(client, (b"v", 0), get.context) == b"$1\r\nv\r\n"
    assert get.convert(client, (b"v", NOW_MS), get.context) == b"$-1\r\n"  # expired now
    ttl = execute(client, [b"PTTL", b"k"])
    assert isinstance(ttl, Read)
    assert ttl.convert(client, (b"v", NOW_MS + 1234), ttl.context) == b":1234\r\n"
    assert ttl.convert(client, None, ttl.context) == b":-2\r\n"
    mget = execute(client, [b"MGET", b"a", b"z"])
    assert isinstance(mget, Read) and not mget.single
    assert mget.convert(client, [(b"1", 0), None], None) == b"*2\r\n$1\r\n1\r\n$-1\r\n"


def test_del_across_shards_is_one_delete_per_shard_summed() -> None:
    client = session()
    same = execute(client, [b"DEL", b"a", b"b"])
    assert isinstance(same, Write)
    spread = execute(client, [b"DEL", b"a", b"z", b"b"])
    assert isinstance(spread, WriteEach)
    assert sorted(keys for keys, _ in spread.groups) == [[b"a", b"b"], [b"z"]]
    for keys, data in spread.groups:
        assert kv.decode(data).op is Op.DELETE and list(kv.decode(data).args[0]) == keys
    assert spread.convert(client, [2, 1], None) == b":3\r\n"


def test_scan_and_dbsize_are_service_calls() -> None:
    request = execute(session(), [b"DBSIZE"])
    assert isinstance(request, Call)


def test_errors_are_replies_not_exceptions() -> None:
    client = session()
    assert execute(client, [b"SET", b"k" * 65, b"v"]).startswith(b"-ERR key too large")
    assert execute(client, [b"INCRBY", b"k", b"x"]) == (
        b"-ERR value is not an integer or out of range\r\n")
    assert execute(client, [b"NOPE"]).startswith(b"-ERR unknown command 'NOPE'")


def test_multi_refuses_every_command_until_exec_or_discard() -> None:
    client = session()
    assert execute(client, [b"MULTI"]).startswith(b"-ERR MULTI is not supported yet")
    assert execute(client, [b"SET", b"k", b"v"]).startswith(b"-ERR MULTI is not supported yet")
    assert execute(client, [b"GET", b"k"]).startswith(b"-ERR MULTI")
    assert execute(client, [b"MULTI"]) == b"-ERR MULTI calls can not be nested\r\n"
    assert execute(client, [b"EXEC"]).startswith(b"-EXECABORT")
    assert isinstance(execute(client, [b"SET", b"k", b"v"]), Write)  # out of MULTI again
    execute(client, [b"MULTI"])
    assert execute(client, [b"DISCARD"]) == b"+OK\r\n"
    assert isinstance(execute(client, [b"GET", b"k"]), Read)
    assert execute(client, [b"EXEC"]) == b"-ERR EXEC without MULTI\r\n"
    assert execute(client, [b"DISCARD"]) == b"-ERR DISCARD without MULTI\r\n"


def test_admin_commands_need_an_admin_connection() -> None:
    remote = session("10.1.2.3:4000")
    assert execute(remote, [b"CLUSTER", b"TRANSFER", b"0", b"2"]) == NOPERM
    assert execute(remote, [b"CLUSTER", b"ADDNODE", b"4", b"h:1", b"h:2"]) == NOPERM
    assert execute(remote, [b"CLUSTER", b"SPLIT", b"0"]) == NOPERM
    assert execute(remote, [b"CONFIG", b"GET", b"*"]) == NOPERM
    assert remote.registry.admin_refused_total == 4
    assert not execute(remote, [b"CLUSTER", b"MYID"]).startswith(b"-NOPERM")  # reads stay open
    local = session("127.0.0.1:4000")
    assert execute(local, [b"CLUSTER", b"TRANSFER", b"0", b"2"]) == b"+OK\r\n"
    assert session("[::1]:4000").admin
    listed = session("10.1.2.3:4000", ServiceLimits(64, 64, admin_networks=("10.1.2.0/24",)))
    assert listed.admin
    password = ServiceLimits(64, 64, requirepass="pw")
    with_password = session("10.1.2.3:4000", password)
    assert execute(with_password, [b"AUTH", b"pw"]) == b"+OK\r\n"
    assert with_password.admin


def test_every_write_command_is_classified_as_a_write_by_the_client() -> None:
    names = write_command_names()
    assert {"SETNX", "SETEX", "PSETEX", "UNLINK", "EXPIREAT", "PEXPIREAT"} <= names
    assert names == WRITE_COMMANDS
    for spec in COMMANDS.values():
        if "write" in spec.flags:
            assert spec.name.upper() in WRITE_COMMANDS
        else:
            assert spec.name.upper() not in WRITE_COMMANDS


@pytest.fixture()
def server_thread() -> Any:
    running: ServerThread = start_server(use_uvloop=True)
    yield running
    running.stop()


def test_a_redis_py_transaction_applies_nothing(server_thread: ServerThread) -> None:
    client = redis.Redis(port=server_thread.port, socket_timeout=10)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.set("tx-a", "1")
        pipe.incr("tx-b")
        with pytest.raises(redis.ResponseError, match="MULTI is not supported yet"):
            pipe.execute()
        assert client.get("tx-a") is None and client.get("tx-b") is None
        assert client.set("tx-a", "2") is True  # the connection is usable afterwards
        assert client.get("tx-a") == b"2"
    finally:
        client.close()


assert LocalService  # the harness serves a LocalService
