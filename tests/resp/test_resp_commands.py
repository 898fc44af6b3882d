"""Command semantics and Redis-exact errors, through a real loopback server
(LocalService) with redis-py, RESP2 and RESP3."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from resp_harness import ServerThread, start_server

from ringbolt.server.local import LocalService
from ringbolt.server.resp import encode_request
from ringbolt.server.service import ServiceLimits


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(server: ServerThread, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    connection = redis.Redis(port=server.port, protocol=request.param, socket_timeout=10)
    yield connection
    connection.close()


def raw_command(client: redis.Redis, *arguments: object) -> object:
    """The reply as the protocol decodes it, without redis-py's callbacks."""
    connection = client.connection_pool.get_connection()
    try:
        connection.send_command(*arguments)
        return connection.read_response()
    finally:
        client.connection_pool.release(connection)


def error_of(client: redis.Redis, *arguments: object) -> str:
    with pytest.raises(redis.ResponseError) as caught:
        client.execute_command(*arguments)
    return str(caught.value)


def raw_exchange(port: int, data: bytes, *, expect_close: bool = False) -> bytes:
    """Send raw bytes; read until the server closes (or replies settle)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if not expect_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_strings(client: redis.Redis) -> None:
    assert client.ping() is True
    assert client.echo(b"hi") == b"hi"
    assert client.set("a", "1") is True
    assert client.get("a") == b"1"
    assert client.get("missing") is None
    assert client.incr("a") == 2
    assert client.incrby("a", 10) == 12
    assert client.decr("a") == 11
    assert client.decrby("a", 20) == -9
    assert client.append("a", "0") == 3
    assert client.strlen("a") == 3
    assert client.strlen("missing") == 0
    assert client.getset("a", "x") == b"-90"
    assert client.type("a") == b"string"
    assert client.type("missing") == b"none"
    assert client.mset({"b": "2", "c": "3"}) is True
    assert client.mget("a", "b", "missing", "c") == [b"x", b"2", None, b"3"]
    assert client.exists("a", "b", "missing", "a") == 3
    assert client.delete("a", "b", "missing") == 2
    assert client.exists("a") == 0
    assert client.setnx("n", "1") is True
    assert client.setnx("n", "2") is False
    assert client.execute_command("UNLINK", "n") == 1
    assert client.dbsize() == 1


def test_set_options(server: ServerThread, client: redis.Redis) -> None:
    assert client.set("k", "v", nx=True) is True
    assert client.set("k", "w", nx=True) is None
    assert client.set("absent", "w", xx=True) is None
    assert client.set("k", "w", xx=True) is True
    assert client.set("k", "z", get=True) == b"w"
    assert client.set("k2", "z", nx=True, get=True) is None
    assert client.get("k2") == b"z"
    assert client.set("k", "e", ex=10) is True
    assert 9_900 <= client.pttl("k") <= 10_000
    assert client.set("k", "p", px=1500) is True
    assert client.ttl("k") == 2  # 1.5 s rounds up, like Redis
    now_ms = server.clock.now
    assert client.set("k", "a", pxat=now_ms + 5000) is True
    assert client.pttl("k") == 5000
    assert client.set("k", "a", exat=now_ms // 1000 + 100) is True
    assert 99 <= client.ttl("k") <= 100
    assert error_of(client, "SET", "k", "v", "NX", "XX") == "syntax error"
    assert error_of(client, "SET", "k", "v", "EX", "1", "PX", "1") == "syntax error"
    assert error_of(client, "SET", "k", "v", "EX") == "syntax error"
    assert error_of(client, "SET", "k", "v", "BOGUS") == "syntax error"
    assert error_of(client, "SET", "k", "v", "EX", "x") == (
        "value is not an integer or out of range")
    assert error_of(client, "SET", "k", "v", "EX", "0") == "invalid expire time in 'set' command"
    assert error_of(client, "SET", "k", "v", "KEEPTTL") == "KEEPTTL is not supported"
    assert client.get("k") == b"a"  # nothing written by the refused commands


def test_expiry_with_a_moving_clock(server: ServerThread, client: redis.Redis) -> None:
    client.set("t", "v", ex=10)
    client.set("forever", "v")
    assert client.ttl("forever") == -1
    assert client.ttl("missing") == -2
    assert client.pttl("missing") == -2
    server.clock.advance(9_000)
    assert client.get("t") == b"v"
    assert client.ttl("t") == 1
    server.clock.advance(1_000)
    assert client.get("t") is None
    assert client.ttl("t") == -2
    assert client.exists("t") == 0
    client.set("e", "v")
    assert client.expire("e", 5) is True
    assert client.expire("missing", 5) is False
    assert client.persist("e") is True
    assert client.persist("e") is False
    assert client.ttl("e") == -1
    assert client.pexpire("e", 2500) is True
    assert client.pttl("e") == 2500
    assert client.expireat("e", server.clock.now // 1000 + 50) is True
    assert client.pexpireat("e", server.clock.now + 700) is True
    assert client.pttl("e") == 700
    assert client.expire("e", -1) is True  # a past time deletes
    assert client.get("e") is None
    client.execute_command("PSETEX", "ps", 300, "v")
    client.execute_command("SETEX", "se", 3, "v")
    server.clock.advance(301)
    assert client.get("ps") is None
    assert client.get("se") == b"v"
    assert error_of(client, "SETEX", "se", "0", "v") == (
        "invalid expire time in 'setex' command")
    assert error_of(client, "EXPIRE", "se", "9223372036854775807") == (
        "invalid expire time in 'expire' command")


def test_cas_extension(client: redis.Redis) -> None:
    assert client.execute_command("CAS", "c", "new") == 1  # absent -> set
    assert client.execute_command("CAS", "c", "again") == 0  # present now
    assert client.execute_command("CAS", "c", "wrong", "x") == 0
    assert client.get("c") == b"new"
    assert client.execute_command("CAS", "c", "new", "x") == 1
    assert client.get("c") == b"x"
    client.set("empty", "")
    assert client.execute_command("CAS", "empty", "", "filled") == 1
    assert client.execute_command("CAS", "missing", "", "filled") == 0
    assert error_of(client, "CAS", "c") == "wrong number of arguments for 'cas' command"
    assert error_of(client, "CAS", "c", "a", "b", "d") == (
        "wrong number of arguments for 'cas' command")


def test_redis_exact_errors_leave_the_connection_usable(client: redis.Redis) -> None:
    assert error_of(client, "FOO", "a", "b") == (
        "unknown command 'FOO', with args beginning with: 'a' 'b' ")
    assert error_of(client, "foo") == "unknown command 'foo', with args beginning with: "
    assert error_of(client, "GET") == "wrong number of arguments for 'get' command"
    assert error_of(client, "GET", "a", "b") == "wrong number of arguments for 'get' command"
    assert error_of(client, "MSET", "a", "1", "b") == (
        "wrong number of arguments for 'mset' command")
    assert error_of(client, "INCRBY", "a", "1.5") == "value is not an integer or out of range"
    for bad in ("01", "-0", "+1", " 1", "1_0", "", "0x1"):
        assert error_of(client, "INCRBY", "a", bad) == "value is not an integer or out of range"
    assert error_of(client, "INCRBY", "a", "9223372036854775808") == (
        "value is not an integer or out of range")
    client.set("s", "abc")
    assert error_of(client, "INCR", "s") == "value is not an integer or out of range"
    client.set("big", str(2**63 - 1))
    assert error_of(client, "INCR", "big") == "increment or decrement would overflow"
    assert error_of(client, "DECRBY", "big", str(-(2**63))) == "decrement would overflow"
    assert error_of(client, "SELECT", "1") == "DB index is out of range"
    assert client.execute_command("SELECT", "0") is True
    assert error_of(client, "SELECT", "x") == "value is not an integer or out of range"
    assert error_of(client, "CLIENT", "BOGUS") == (
        "unknown subcommand or wrong number of arguments for 'BOGUS'. Try CLIENT HELP.")
    assert client.get("s") == b"abc"
    assert client.ping() is True


def test_limits_refuse_large_keys_and_values() -> None:
    limits = ServiceLimits(key_bytes_max=8, value_bytes_max=16)
    running = start_server(lambda clock: LocalService(limits=limits, clock_ms=clock))
    try:
        client = redis.Redis(port=running.port, socket_timeout=10)
        assert error_of(client, "SET", "k" * 9, "v") == "key too large (max 8 bytes)"
        assert error_of(client, "SET", "k", "v" * 17) == "value too large (max 16 bytes)"
        assert error_of(client, "MSET", "a", "1", "b", "v" * 17) == (
            "value too large (max 16 bytes)")
        assert error_of(client, "GET", "k" * 9) == "key too large (max 8 bytes)"
        assert client.set("k", "v" * 16) is True
        assert client.mget("a", "b") == [None, None]
        assert client.dbsize() == 1
        client.close()
    finally:
        running.stop()


def test_mset_across_shards_is_refused() -> None:
    running = start_server(lambda clock: LocalService(shards=4, clock_ms=clock))
    try:
        client = redis.Redis(port=running.port, socket_timeout=10)
        service = running.service
        assert service is not None
        keys = [f"key{i}".encode() for i in range(40)]
        first = keys[0]
        same = next(k for k in keys[1:] if service.shard_of(k) == service.shard_of(first))
        other = next(k for k in keys[1:] if service.shard_of(k) != service.shard_of(first))
        assert client.mset({first: "1", same: "2"}) is True
        with pytest.raises(redis.ResponseError) as caught:
            client.mset({first: "3", other: "4"})
        assert str(caught.value) == "CROSSSHARD keys in request don't hash to the same shard"
        assert client.mget(first, other) == [b"1", None]
        # DEL over several shards works shard by shard and adds the counts
        assert client.delete(first, other, same, b"missing") == 2
        assert client.mget(first, other, same) == [None, None, None]
        client.close()
    finally:
        running.stop()


def test_authentication() -> None:
    limits = ServiceLimits(key_bytes_max=1024, value_bytes_max=1024, requirepass="s3cret")
    running = start_server(lambda clock: LocalService(limits=limits, clock_ms=clock))
    try:
        replies = raw_exchange(running.port, b"GET a\r\nAUTH wrong\r\nAUTH nobody s3cret\r\n"
                               b"HELLO 3\r\nPING\r\nAUTH s3cret\r\nSET a 1\r\nGET a\r\n")
        assert replies == (
            b"-NOAUTH Authentication required.\r\n"
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
            b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            b"HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
            b"select the RESP protocol version at the same time\r\n"
            b"-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n$1\r\n1\r\n")
        for protocol in (2, 3):
            anonymous = redis.Redis(port=running.port, protocol=protocol, socket_timeout=10,
                                    retry=Retry(NoBackoff(), 0))
            with pytest.raises(redis.AuthenticationError, match="authenticated|required"):
                anonymous.get("a")
            anonymous.close()
            authed = redis.Redis(port=running.port, password="s3cret", protocol=protocol,
                                 socket_timeout=10)
            assert authed.get("a") == b"1"
            authed.close()
            named = redis.Redis(port=running.port, username="default", password="s3cret",
                                protocol=protocol, socket_timeout=10)
            assert named.get("a") == b"1"
            named.close()
    finally:
        running.stop()


def test_auth_without_password_configured(server: ServerThread) -> None:
    replies = raw_exchange(server.port, b"AUTH x\r\nAUTH default anything\r\nPING\r\n")
    assert replies == (
        b"-ERR AUTH <password> called without any password configured for the default user. "
        b"Are you sure your configuration is correct?\r\n+OK\r\n+PONG\r\n")


def test_pipeline_answers_in_order(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"p{i}", i)
        pipe.get(f"p{i}")
        pipe.incr(f"p{i}")
    pipe.execute_command("BOGUS")
    pipe.get("p7")
    results = pipe.execute(raise_on_error=False)
    assert results[:6] == [True, b"0", 1, True, b"1", 2]
    assert results[3 * 1999:3 * 2000] == [True, b"1999", 2000]
    assert isinstance(results[-2], redis.ResponseError)
    assert results[-1] == b"8"


def test_resp3_replies(server: ServerThread) -> None:
    client = redis.Redis(port=server.port, protocol=3, socket_timeout=10)
    hello = client.execute_command("HELLO", "3")
    assert hello[b"proto"] == 3
    assert hello[b"server"] == b"ringbolt"
    client.set("a", "b")
    assert raw_command(client, "GET", "missing") is None
    assert raw_command(client, "CONFIG", "GET", "save") == {b"save": b""}
    assert raw_command(client, "CLUSTER", "LEADERS") == {b"0": b"local"}
    assert raw_command(client, "COMMAND", "DOCS") == {}
    assert client.info("keyspace")["db0"]["keys"] == 1
    assert error_of(client, "HELLO", "4") == "NOPROTO unsupported protocol version"
    client.close()


def test_hello_switches_protocol_on_a_raw_connection(server: ServerThread) -> None:
    replies = raw_exchange(server.port, b"HELLO 3 SETNAME me\r\nGET nothing\r\nHELLO 2\r\n"
                           b"GET nothing\r\nCLIENT GETNAME\r\n")
    assert replies.startswith(b"%7\r\n")
    assert b"_\r\n*14\r\n" in replies  # RESP3 null, then HELLO 2's flat map
    assert replies.endswith(b"$-1\r\n$2\r\nme\r\n")


def test_server_commands(server: ServerThread, client: redis.Redis) -> None:
    assert client.config_get("appendonly") == {"appendonly": "no"}
    assert client.config_get("nothing-like-this") == {}
    assert "maxclients" in client.config_get("max*")
    assert error_of(client, "CONFIG", "SET", "save", "").startswith("CONFIG SET is not supported")
    assert client.client_setname("tester") is True
    assert client.client_getname() in ("tester", b"tester")
    client_id = client.client_id()
    assert isinstance(client_id, int)
    assert any(entry["name"] == "tester" for entry in client.client_list())
    assert error_of(client, "CLIENT", "SETNAME", "bad name") == (
        "Client names cannot contain spaces, newlines or special characters.")
    count = client.command_count()
    assert count >= 30
    table = client.command()
    assert len(table) == count
    assert table["get"]["arity"] == 2
    assert "write" in table["set"]["flags"]
    assert raw_command(client, "COMMAND", "DOCS") in ([], {})
    info = raw_command(client, "COMMAND", "INFO", "get", "nope")
    assert isinstance(info, list)
    assert info[0][0] == b"get"
    assert info[1] is None
    assert client.info()["connected_clients"] >= 1
    assert "redis_version" in client.info("server")
    assert client.execute_command("READONLY") is True
    assert client.execute_command("READWRITE") is True
    assert len(client.time()) == 2


def test_readonly_requests_stale_reads(server: ServerThread, client: redis.Redis) -> None:
    service = server.service
    assert service is not None
    seen: list[bool] = []
    original = service.submit_read

    def recording(key: bytes, *, stale: bool = False) -> object:
        seen.append(stale)
        return original(key, stale=stale)

    service.submit_read = recording  # type: ignore[method-assign,assignment]
    client.get("a")
    client.execute_command("READONLY")
    client.get("a")
    client.mget("a", "b")
    client.execute_command("READWRITE")
    client.get("a")
    assert seen == [False, True, True, True, False]


def test_cluster_commands(client: redis.Redis) -> None:
    client.set("x", "1")
    info = client.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    assert "cluster_state:ok" in text
    assert "cluster_groups_with_leader:1" in text
    nodes = client.execute_command("CLUSTER", "NODES")
    line = (nodes.decode() if isinstance(nodes, bytes) else str(nodes)).splitlines()[0]
    assert line.split()[0] == "local"
    assert "leader_of=0" in line.split()
    groups = raw_command(client, "CLUSTER", "GROUPS")
    assert isinstance(groups, list)
    group = groups[0]
    fields = group if isinstance(group, dict) else dict(zip(group[::2], group[1::2], strict=True))
    assert fields[b"leader"] == b"local"
    assert fields[b"applied_index"] >= 1
    leaders = raw_command(client, "CLUSTER", "LEADERS")
    assert leaders in ([b"0", b"local"], {b"0": b"local"})
    assert client.execute_command("CLUSTER", "MYID") == b"local"
    assert error_of(client, "CLUSTER", "FOO").startswith("unknown subcommand")


def test_scan_visits_every_key_once(client: redis.Redis) -> None:
    keys = {f"user:{i}".encode() for i in range(300)} | {f"item:{i}".encode() for i in range(50)}
    client.mset({key: b"v" for key in keys})
    seen: list[Any] = []
    cursor = 0
    for _ in range(1000):
        cursor, batch = client.scan(cursor, count=17)
        seen += batch
        if cursor == 0:
            break
    assert cursor == 0
    assert sorted(seen) == sorted(keys)
    matched = set(client.scan_iter(match="item:*", count=40))
    assert matched == {key for key in keys if key.startswith(b"item:")}
    assert set(client.scan_iter(match="user:1?", count=100)) == {
        f"user:{i}".encode() for i in range(10, 20)}
    assert list(client.scan_iter(_type="hash")) == []
    assert error_of(client, "SCAN", "x") == "invalid cursor"
    assert error_of(client, "SCAN", "0", "COUNT", "0") == "syntax error"
    assert error_of(client, "SCAN", "0", "MATCH") == "syntax error"


def test_inline_commands_and_quit(server: ServerThread) -> None:
    replies = raw_exchange(server.port, b"PING\r\nSET greeting \"hello world\"\r\n"
                           b"GET greeting\r\nQUIT\r\nPING\r\n", expect_close=True)
    assert replies == b"+PONG\r\n+OK\r\n$11\r\nhello world\r\n+OK\r\n"


def test_protocol_error_answers_earlier_commands_then_closes(server: ServerThread) -> None:
    replies = raw_exchange(server.port, b"*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n*1\r\n$4\r\nPING\r\n",
                           expect_close=True)
    assert replies == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert server.registry.protocol_errors_total == 1
    client = redis.Redis(port=server.port, socket_timeout=10)
    assert client.ping() is True  # the server itself is fine
    client.close()


def test_reset(client: redis.Redis) -> None:
    client.execute_command("HELLO", "3")
    client.client_setname("x")
    assert raw_command(client, "RESET") == b"RESET"
    assert client.client_getname() is None


def test_unauthenticated_clients_get_small_caps() -> None:
    limits = ServiceLimits(key_bytes_max=1024, value_bytes_max=100_000, requirepass="pw")
    running = start_server(lambda clock: LocalService(limits=limits, clock_ms=clock))
    try:
        many = encode_request([b"MGET", *[b"k"] * 10])
        assert raw_exchange(running.port, many, expect_close=True) == (
            b"-ERR Protocol error: unauthenticated multibulk length\r\n")
        big = encode_request([b"AUTH", b"x" * 16385])
        assert raw_exchange(running.port, big, expect_close=True) == (
            b"-ERR Protocol error: unauthenticated bulk length\r\n")
        value = b"v" * 50_000  # AUTH in the same packet lifts the caps for what follows
        replies = raw_exchange(running.port, encode_request([b"AUTH", b"pw"]) + encode_request(
            [b"SET", b"k", value]) + encode_request([b"MGET", *[b"k"] * 10]))
        assert replies.startswith(b"+OK\r\n+OK\r\n*10\r\n$50000\r\n")
    finally:
        running.stop()
