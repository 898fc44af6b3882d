"""The string and keyspace commands: each a kv command (or read) plus a reply converter.

Loop-free (dispatch.py): a handler parses and checks its arguments and returns
the bytes of an error or OK-style answer, or a `Write`/`WriteEach`/`Read`/
`Call` request with the converter that turns the store's answer into the
reply. Writes are encoded with `ringbolt.kv.commands`; what a read answers
(expiry, TTL, type) is decided by `ringbolt.kv.reads` with this node's
clock, the same functions the state machine's writes use.
"""

from __future__ import annotations

import functools

from ringbolt.kv import commands as kv
from ringbolt.kv import reads
from ringbolt.kv.machine import INT64_MIN, CommandFailed, Result
from ringbolt.server import resp
from ringbolt.server.dispatch import (
    COMMANDS,
    SYNTAX,
    Call,
    CommandError,
    CommandSpec,
    Read,
    Reply,
    Session,
    Write,
    WriteEach,
    check_key,
    check_value,
    command,
    expire_at,
    parse_integer,
    printable,
)
from ringbolt.server.glob import compile_glob
from ringbolt.server.service import CrossShard

ScanResult = tuple[int, list[bytes]]
Record = tuple[bytes, int] | None


def live(session: Session, record: Record) -> bytes | None:
    return reads.read_value(record, session.service.now_ms())


# --- result converters (module functions: no closure per request) -----------

def _bulk_or_null(session: Session, result: Result, context: object) -> bytes:
    if isinstance(result, CommandFailed):
        raise CommandError(result.message)
    if result is None:
        return resp.encode_null(session.protocol)
    assert isinstance(result, bytes)
    return resp.encode_bulk(result)


def _read_value(session: Session, record: tuple[bytes, int] | None, context: object) -> bytes:
    value = live(session, record)
    if value is None:
        return resp.encode_null(session.protocol)
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _ok_or_null(session: Session, result: Result, context: object) -> bytes:
    if isinstance(result, CommandFailed):
        raise CommandError(result.message)
    return resp.OK if result else resp.encode_null(session.protocol)


def _ok(session: Session, result: Result, context: object) -> bytes:
    if isinstance(result, CommandFailed):
        raise CommandError(result.message)
    return resp.OK


def _integer(session: Session, result: Result, context: object) -> bytes:
    if isinstance(result, CommandFailed):
        raise CommandError(result.message)
    assert isinstance(result, int)  # bool is an int: True -> 1
    return resp.encode_integer(int(result))


# --- string commands ------------------------------------------------------------

@command("get", 2, "readonly", "fast", keys=(1, 1, 1))
def _get(session: Session, arguments: list[bytes]) -> Reply:
    return Read([check_key(session, arguments[1])], _read_value)


@command("set", -3, "write", keys=(1, 1, 1))
def _set(session: Session, arguments: list[bytes]) -> Reply:
    key, value = check_key(session, arguments[1]), check_value(session, arguments[2])
    condition = kv.PutCondition.ALWAYS
    expire_at_ms = 0
    return_old = False
    seen: set[bytes] = set()
    index = 3
    while index < len(arguments):
        option = arguments[index].upper()
        if option in seen and option not in (b"GET",):
            raise CommandError(SYNTAX)
        seen.add(option)
        if option == b"NX" and b"XX" not in seen:
            condition = kv.PutCondition.IF_ABSENT
        elif option == b"XX" and b"NX" not in seen:
            condition = kv.PutCondition.IF_PRESENT
        elif option == b"GET":
            return_old = True
        elif option == b"KEEPTTL":
            raise CommandError("ERR KEEPTTL is not supported")
        elif option in _EXPIRY_UNITS and index + 1 < len(arguments) and len(seen & _EXPIRY_SET) == 1:
            unit_ms, absolute = _EXPIRY_UNITS[option]
            amount = parse_integer(arguments[index + 1])
            if amount <= 0:
                raise CommandError("ERR invalid expire time in 'set' command")
            expire_at_ms = expire_at(session, amount, unit_ms, absolute, "set")
            index += 1
        else:
            raise CommandError(SYNTAX)
        index += 1
    data = kv.put(key, value, now_ms=session.service.now_ms(), expire_at_ms=expire_at_ms,
                  condition=condition, return_old=return_old)
    return Write([key], data, _bulk_or_null if return_old else _ok_or_null)


_EXPIRY_UNITS = {b"EX": (1000, False), b"PX": (1, False), b"EXAT": (1000, True), b"PXAT": (1, True)}
_EXPIRY_SET = frozenset(_EXPIRY_UNITS)


@command("setnx", 3, "write", "fast", keys=(1, 1, 1))
def _setnx(session: Session, arguments: list[bytes]) -> Reply:
    key, value = check_key(session, arguments[1]), check_value(session, arguments[2])
    data = kv.put(key, value, now_ms=session.service.now_ms(),
                  condition=kv.PutCondition.IF_ABSENT)
    return Write([key], data, _integer)


def _set_with_expiry(session: Session, arguments: list[bytes], *, unit_ms: int,
                     name: str) -> Reply:
    """SETEX / PSETEX key amount value."""
    key, value = check_key(session, arguments[1]), check_value(session, arguments[3])
    amount = parse_integer(arguments[2])
    if amount <= 0:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    data = kv.put(key, value, now_ms=session.service.now_ms(),
                  expire_at_ms=expire_at(session, amount, unit_ms, False, name))
    return Write([key], data, _ok)


for _name, _unit_ms in (("setex", 1000), ("psetex", 1)):
    command(_name, 4, "write", keys=(1, 1, 1))(
        functools.partial(_set_with_expiry, unit_ms=_unit_ms, name=_name))


@command("getset", 3, "write", "fast", keys=(1, 1, 1))
def _getset(session: Session, arguments: list[bytes]) -> Reply:
    key, value = check_key(session, arguments[1]), check_value(session, arguments[2])
    return Write([key], kv.getset(key, value, now_ms=session.service.now_ms()),
                 _bulk_or_null)


@command("del", -2, "write", keys=(1, -1, 1))
def _del(session: Session, arguments: list[bytes]) -> Reply:
    """Keys of one shard are deleted atomically; keys of several shards are
    deleted shard by shard (one write each, concurrently) and the counts
    added -- not atomic across shards (docs/protocol.md)."""
    keys = [check_key(session, key) for key in arguments[1:]]
    service = session.service
    now_ms = service.now_ms()
    try:
        service.group_of(keys)
    except CrossShard:
        by_shard: dict[int, list[bytes]] = {}
        for key in keys:
            by_shard.setdefault(service.group_of([key]), []).append(key)
        return WriteEach([(group, kv.delete(*group, now_ms=now_ms))
                          for group in by_shard.values()], _deleted_sum)
    return Write(keys, kv.delete(*keys, now_ms=now_ms), _integer)


def _deleted_sum(session: Session, results: list[Result], context: object) -> bytes:
    for result in results:
        if isinstance(result, CommandFailed):
            raise CommandError(result.message)
    return resp.encode_integer(sum(int(r) for r in results if isinstance(r, int)))


COMMANDS[b"UNLINK"] = COMMANDS[b"unlink"] = CommandSpec(
    name="unlink", arity=-2, flags=("write", "fast"), handler=_del,
    first_key=1, last_key=-1, key_step=1)


def _mget_reply(session: Session, records: list[tuple[bytes, int] | None], context: object
                ) -> bytes:
    return resp.encode_bulk_array([live(session, record) for record in records], session.protocol)


def _exists_reply(session: Session, records: list[Record], context: object) -> bytes:
    now_ms = session.service.now_ms()
    return resp.encode_integer(sum(reads.read_exists(record, now_ms) for record in records))


@command("mget", -2, "readonly", "fast", keys=(1, -1, 1))
def _mget(session: Session, arguments: list[bytes]) -> Reply:
    return Read([check_key(session, key) for key in arguments[1:]], _mget_reply, single=False)


@command("exists", -2, "readonly", "fast", keys=(1, -1, 1))
def _exists(session: Session, arguments: list[bytes]) -> Reply:
    return Read([check_key(session, key) for key in arguments[1:]], _exists_reply,
                single=False)


@command("mset", -3, "write", keys=(1, -1, 2))
def _mset(session: Session, arguments: list[bytes]) -> Reply:
    if len(arguments) % 2 == 0:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    pairs = [(check_key(session, arguments[i]), check_value(session, arguments[i + 1]))
             for i in range(1, len(arguments), 2)]
    keys = [key for key, _ in pairs]
    return Write(keys, kv.mput(pairs, now_ms=session.service.now_ms()), _ok)


def _incrby(session: Session, arguments: list[bytes], *, sign: int) -> Reply:
    """INCR/DECR (sign +1/-1, no delta argument) and INCRBY/DECRBY."""
    key = check_key(session, arguments[1])
    delta = parse_integer(arguments[2]) if len(arguments) == 3 else 1
    if sign < 0 and delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    command_data = kv.incrby(key, sign * delta, now_ms=session.service.now_ms())
    return Write([key], command_data, _integer)


for _name, _arity, _sign in (("incr", 2, 1), ("decr", 2, -1), ("incrby", 3, 1), ("decrby", 3, -1)):
    command(_name, _arity, "write", "fast", keys=(1, 1, 1))(
        functools.partial(_incrby, sign=_sign))


@command("append", 3, "write", "fast", keys=(1, 1, 1))
def _append(session: Session, arguments: list[bytes]) -> Reply:
    key, suffix = check_key(session, arguments[1]), check_value(session, arguments[2])
    return Write([key], kv.append(key, suffix, now_ms=session.service.now_ms()), _integer)


def _strlen_reply(session: Session, record: Record, context: object) -> bytes:
    return resp.encode_integer(reads.read_strlen(record, session.service.now_ms()))


@command("strlen", 2, "readonly", "fast", keys=(1, 1, 1))
def _strlen(session: Session, arguments: list[bytes]) -> Reply:
    return Read([check_key(session, arguments[1])], _strlen_reply)


def _type_reply(session: Session, record: Record, context: object) -> bytes:
    return resp.encode_simple(reads.read_type(record, session.service.now_ms()))


@command("type", 2, "readonly", "fast", keys=(1, 1, 1))
def _type(session: Session, arguments: list[bytes]) -> Reply:
    return Read([check_key(session, arguments[1])], _type_reply)


# --- expiry ---------------------------------------------------------------------

def _expire(session: Session, arguments: list[bytes], *, unit_ms: int, absolute: bool,
            name: str) -> Reply:
    key = check_key(session, arguments[1])
    amount = parse_integer(arguments[2])
    if len(arguments) > 3:
        raise CommandError(f"ERR unsupported option {printable(arguments[3], 32)}")
    moment = expire_at(session, amount, unit_ms, absolute, name)
    return Write([key], kv.expire(key, moment, now_ms=session.service.now_ms()), _integer)


for _name, _unit_ms, _absolute in (("expire", 1000, False), ("pexpire", 1, False),
                                     ("expireat", 1000, True), ("pexpireat", 1, True)):
    command(_name, -3, "write", "fast", keys=(1, 1, 1))(
        functools.partial(_expire, unit_ms=_unit_ms, absolute=_absolute, name=_name))


@command("persist", 2, "write", "fast", keys=(1, 1, 1))
def _persist(session: Session, arguments: list[bytes]) -> Reply:
    key = check_key(session, arguments[1])
    return Write([key], kv.expire(key, 0, now_ms=session.service.now_ms()), _integer)


def _ttl_reply(session: Session, record: Record, unit_ms: object) -> bytes:
    assert isinstance(unit_ms, int)
    return resp.encode_integer(reads.read_ttl(record, session.service.now_ms(), unit_ms))


def _ttl(session: Session, arguments: list[bytes], *, unit_ms: int) -> Reply:
    return Read([check_key(session, arguments[1])], _ttl_reply, unit_ms)


command("ttl", 2, "readonly", "fast", keys=(1, 1, 1))(functools.partial(_ttl, unit_ms=1000))
command("pttl", 2, "readonly", "fast", keys=(1, 1, 1))(functools.partial(_ttl, unit_ms=1))


# --- ringbolt extension: compare-and-swap -------------------------------------------

@command("cas", -3, "write", "fast", keys=(1, 1, 1))
def _cas(session: Session, arguments: list[bytes]) -> Reply:
    """CAS key expected new -> 1 if the live value equalled `expected` and was
    replaced; CAS key new -> 1 if the key was absent and is now set; else 0."""
    if len(arguments) > 4:
        raise CommandError("ERR wrong number of arguments for 'cas' command")
    key = check_key(session, arguments[1])
    expected = check_value(session, arguments[2]) if len(arguments) == 4 else None
    new = check_value(session, arguments[-1])
    return Write([key], kv.cas(key, expected, new, now_ms=session.service.now_ms()),
                 _integer)


# --- keyspace -------------------------------------------------------------------------

SCAN_COUNT_MAX = 10_000
"""Keys one SCAN call may ask a service for (bounds the reply and the work)."""


def _dbsize_call(service: object) -> object:
    return service.dbsize()  # type: ignore[attr-defined]


def _dbsize_reply(session: Session, count: int, context: object) -> bytes:
    return resp.encode_integer(count)


@command("dbsize", 1, "readonly", "fast")
def _dbsize(session: Session, arguments: list[bytes]) -> Reply:
    return Call(_dbsize_call, _dbsize_reply)


def _scan_reply(session: Session, result: ScanResult, context: object) -> bytes:
    cursor, keys = result
    match, type_ok = context if isinstance(context, tuple) else (None, True)
    if not type_ok:
        keys = []
    elif match is not None:
        keys = [key for key in keys if match(key)]
    return b"*2\r\n" + resp.encode_bulk(b"%d" % cursor) + resp.encode_bulk_array(keys, 2)


@command("scan", -2, "readonly")
def _scan(session: Session, arguments: list[bytes]) -> Reply:
    cursor_text = arguments[1]
    if not cursor_text.isdigit() or int(cursor_text) >= 1 << 64:
        raise CommandError("ERR invalid cursor")
    count, match, type_ok = 10, None, True
    index = 2
    while index < len(arguments):
        option = arguments[index].upper()
        if index + 1 >= len(arguments):
            raise CommandError(SYNTAX)
        value = arguments[index + 1]
        if option == b"COUNT":
            count = parse_integer(value)
            if count < 1:
                raise CommandError(SYNTAX)
        elif option == b"MATCH":
            match = None if value == b"*" else compile_glob(value)
        elif option == b"TYPE":
            type_ok = value.lower() == b"string"
        else:
            raise CommandError(SYNTAX)
        index += 2
    cursor, wanted = int(cursor_text), min(count, SCAN_COUNT_MAX)
    return Call(lambda service: service.scan(cursor, wanted), _scan_reply, (match, type_ok))
