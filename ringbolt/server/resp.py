"""RESP2/RESP3: a sans-I/O request parser and reply encoder.

Theory of operation
-------------------
`RequestParser.feed(data)` appends bytes; `commands(limit)` returns every
complete command in the buffer (up to `limit`), each a `list[bytes]`, so one
call serves a whole pipeline. `next_command()` returns one command or
`NEED_DATA`. Requests are either RESP arrays of bulk strings
(``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``) or inline commands (``PING\\r\\n``,
as telnet sends them). Anything else is the peer's fault and raises
`ProtocolError` with a Redis-like message; the parser then stays failed (every
later call raises the same error) because the stream cannot be resynchronised.
Commands that were complete before the bad bytes are still returned first: the
connection answers them, then the error, then closes.

Every size is capped (`ParserLimits`): an inline line, a bulk length, an array
length, the bytes of one request and the bytes buffered while waiting. Parsing
is incremental: a half-received array keeps its parsed arguments and its
pending bulk length, so a large value arriving in many chunks is neither
re-parsed nor re-concatenated (chunks are joined once, when the bulk is whole).

The encoder functions turn reply values into bytes for protocol 2 or 3; the
difference is confined to nulls, maps, booleans and verbatim strings.

Parsing is pure Python, with a hiredis fast path (measured in docs/protocol.md):
a chunk that holds several whole requests is decoded by hiredis.Reader and
kept only when it provably equals what the Python path would return
(`_fast_path`); anything else (partial requests, inline commands, errors, odd
encodings) goes through the Python path, which alone decides errors and caps.
hiredis alone caps neither bulk nor array lengths and cannot parse inline.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import hiredis

from ringbolt import limits as project


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid request; `str()` is the RESP
    error line without the leading '-'."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"ERR Protocol error: {detail}")


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
NeedData = _NeedData


@dataclass(frozen=True, slots=True, kw_only=True)
class ParserLimits:
    inline_bytes_max: int = 64 * project.KIB
    """Longest inline command or header line (Redis: PROTO_INLINE_MAX_SIZE)."""
    bulk_bytes_max: int = project.value_bytes_ceiling + project.key_bytes_max
    """Largest single argument; the service refuses values past its own,
    smaller, `value_bytes_max` with a normal error, not a protocol error."""
    array_items_max: int = 1_048_576
    """Most arguments in one request (Redis: 1024 * 1024)."""
    request_bytes_max: int = project.request_bytes_max
    """Sum of argument sizes of one request."""
    buffered_bytes_max: int = project.request_bytes_max + 64 * project.KIB
    """Bytes held while waiting for the rest of a request."""
    unauthenticated: bool = False
    """Limits for a client that has not authenticated yet (Redis' wording in
    errors: "unauthenticated multibulk length", "unauthenticated bulk length")."""

    def __post_init__(self) -> None:
        assert 16 <= self.inline_bytes_max <= self.buffered_bytes_max
        assert 0 < self.bulk_bytes_max <= self.request_bytes_max
        assert self.request_bytes_max <= self.buffered_bytes_max
        assert self.array_items_max > 0


DEFAULT_LIMITS = ParserLimits()

UNAUTHENTICATED_LIMITS = ParserLimits(
    bulk_bytes_max=16 * project.KIB, array_items_max=10, request_bytes_max=160 * project.KIB,
    buffered_bytes_max=256 * project.KIB, unauthenticated=True)
"""What a client may send before AUTH when a password is required (Redis: 10
arguments of at most 16 KiB): a stranger cannot make the server buffer much."""

FAST_CHUNK_BYTES_MAX = 256 * project.KIB
"""Largest input chunk the hiredis fast path decodes at once (one socket read
is at most 256 KiB with asyncio and uvloop). Also bounded by the bulk and
array caps, so anything it accepts is within them."""

FAST_CHUNK_BYTES_MIN = 192
"""Below this (one or two small requests) the fast path's fixed cost per
chunk exceeds what it saves; measured in tests/resp/bench_resp.py."""

_NOT_CANONICAL = re.compile(rb"\n[+(~>|%]")
"""Line starts of RESP types hiredis would decode into bytes or lists without
costing more bytes than a bulk string (see `RequestParser._fast_path`)."""

_CRLF = b"\r\n"
_STAR = 42  # '*'
_DOLLAR = 36  # '$'


class RequestParser:
    """Incremental parser of client requests (see module docstring)."""

    __slots__ = (
        "_limits", "_buffer", "_position", "_chunks", "_chunks_bytes", "_wanted_bytes",
        "_arguments", "_remaining", "_bulk_bytes", "_request_bytes", "_error",
        "_ready", "_ready_index", "_ready_bytes", "_fast_bytes_max", "_reader",
        "_fast_path_enabled",
    )

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS, *, fast_path: bool = True) -> None:
        self._limits = limits
        self._fast_path_enabled = fast_path
        self._buffer = b""
        self._position = 0
        # Chunks received while a known-size bulk is incomplete; joined once.
        self._chunks: list[bytes] = []
        self._chunks_bytes = 0
        self._wanted_bytes = 0
        # The array being parsed: arguments so far, arguments still expected,
        # the announced length of the next bulk (-1: header not read yet).
        self._arguments: list[bytes] = []
        self._remaining = 0
        self._bulk_bytes = -1
        self._request_bytes = 0
        self._error: ProtocolError | None = None
        # Commands decoded by the hiredis fast path, not yet handed out.
        self._ready: list[list[bytes]] = []
        self._ready_index = 0
        self._ready_bytes = 0
        self._fast_bytes_max = 0
        self._reader = hiredis.Reader()
        self.set_limits(limits)

    def set_limits(self, limits: ParserLimits) -> None:
        """Apply other caps from the next byte parsed on (e.g. after AUTH)."""
        self._limits = limits
        self._fast_bytes_max = min(FAST_CHUNK_BYTES_MAX, limits.bulk_bytes_max,
                                   limits.array_items_max) if self._fast_path_enabled else 0

    def buffered_bytes(self) -> int:
        return len(self._buffer) - self._position + self._chunks_bytes + self._ready_bytes

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if not data:
            return
        if self.buffered_bytes() + len(data) > self._limits.buffered_bytes_max:
            self._fail("too much buffered data")
        if (FAST_CHUNK_BYTES_MIN <= len(data) <= self._fast_bytes_max
                and self._position >= len(self._buffer)
                and self._remaining == 0 and self._wanted_bytes == 0 and self._fast_path(data)):
            return
        if self._wanted_bytes > 0:
            self._chunks.append(data)
            self._chunks_bytes += len(data)
            if self._chunks_bytes < self._wanted_bytes:
                return
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._chunks_bytes = 0
            self._wanted_bytes = 0
        if self._position >= len(self._buffer):
            self._buffer = bytes(data)
        else:
            self._buffer = self._buffer[self._position:] + data
        self._position = 0

    def next_command(self) -> list[bytes] | NeedData:
        batch = self.commands(1)
        return batch[0] if batch else NEED_DATA

    def commands(self, limit: int = 1 << 30) -> list[list[bytes]]:
        """Every complete command buffered (at most `limit`). Raises
        `ProtocolError` only when no complete command precedes the error."""
        assert limit > 0
        if self._error is not None:
            raise self._error
        found: list[list[bytes]] = []
        if self._ready:
            found = self._take_ready(limit)
            if len(found) == limit:
                return found
        try:
            self._parse_into(found, limit)
        except ProtocolError as error:
            self._error = error
            self._buffer = b""
            self._position = 0
            if not found:
                raise
        return found

    def _fast_path(self, data: bytes) -> bool:
        """Decode `data` with hiredis when that provably gives what the
        Python path would: it starts a request, ends exactly at a request
        boundary, and every decoded request is a list of bulk strings whose
        canonical encodings add up to exactly len(data). Every encoding hiredis
        accepts that is not a plain array of bulks is either rejected by the
        type checks or longer than canonical, except status and big-number
        elements and set/push arrays, which `_NOT_CANONICAL` screens out; so
        equal lengths mean the bytes were the canonical requests. Returns False
        (nothing consumed) when unsure: the Python path then parses `data`."""
        if data[0] != _STAR or not data.endswith(_CRLF) or _NOT_CANONICAL.search(data):
            return False
        reader = self._reader
        reader.feed(data)
        found: list[list[bytes]] = []
        try:
            while (request := reader.gets()) is not False:
                found.append(request)
            arguments = list(itertools.chain.from_iterable(found))
            payload_bytes = len(b"".join(arguments))
        except (hiredis.ProtocolError, TypeError):
            self._reader = hiredis.Reader()
            return False
        if set(map(type, found)) != {list} or not all(found):
            self._reader = hiredis.Reader()
            return False
        header_bytes = sum(map(len, map(str, map(len, arguments)))) + 5 * len(arguments)
        header_bytes += sum(map(len, map(str, map(len, found)))) + 3 * len(found)
        if payload_bytes + header_bytes != len(data):
            self._reader = hiredis.Reader()  # it may hold a partial request
            return False
        if self._ready_index:
            del self._ready[:self._ready_index]
            self._ready_index = 0
        self._ready += found
        self._ready_bytes += len(data)
        return True

    def _take_ready(self, limit: int) -> list[list[bytes]]:
        start = self._ready_index
        stop = min(len(self._ready), start + limit)
        taken = self._ready[start:stop] if start or stop < len(self._ready) else self._ready
        if stop == len(self._ready):
            self._ready = []
            self._ready_index = 0
            self._ready_bytes = 0
        else:
            self._ready_index = stop
        return taken

    def _fail(self, detail: str) -> NoReturn:
        self._error = ProtocolError(detail)
        raise self._error

    def _parse_into(self, found: list[list[bytes]], limit: int) -> None:
        buffer = self._buffer
        position = self._position
        end = len(buffer)
        found_count = len(found)
        while found_count < limit:
            if self._remaining == 0 and position < end and buffer[position] == _STAR:
                complete = self._scan_complete(buffer, position)
                if complete is not None:
                    found.append(complete[0])
                    found_count += 1
                    position = complete[1]
                    continue
            # The careful, incremental path: partial input, errors, inline.
            if self._remaining == 0:
                if position >= end:
                    break
                if buffer[position] == _STAR:
                    next_position = self._read_array_header(buffer, position)
                else:
                    next_position = self._read_inline(buffer, position, found)
                    found_count = len(found)
                if next_position < 0:
                    break
                position = next_position
                if self._remaining == 0:
                    continue
            position = self._read_bulks(buffer, position)
            if self._remaining > 0:
                break
            found.append(self._arguments)
            found_count += 1
            self._arguments = []
            self._request_bytes = 0
        self._position = position

    def _scan_complete(self, buffer: bytes, position: int) -> tuple[list[bytes], int] | None:
        """The hot path: one whole, well-formed array request starting at
        `position`, or None to let the incremental path handle (or reject) it.
        Accepts exactly what the incremental path accepts."""
        find = buffer.find
        line_end = find(_CRLF, position)
        if line_end < 0:
            return None
        text = buffer[position + 1:line_end]
        if not text.isdigit() or len(text) > 10:
            return None
        count = int(text)
        limits = self._limits
        if count == 0 or count > limits.array_items_max:
            return None
        bulk_max, request_max = limits.bulk_bytes_max, limits.request_bytes_max
        end = len(buffer)
        arguments: list[bytes] = []
        cursor = line_end + 2
        total = 0
        for _ in range(count):
            if cursor >= end or buffer[cursor] != _DOLLAR:
                return None
            line_end = find(_CRLF, cursor)
            if line_end < 0:
                return None
            text = buffer[cursor + 1:line_end]
            if not text.isdigit() or len(text) > 11:
                return None
            size = int(text)
            total += size
            start = line_end + 2
            stop = start + size
            if size > bulk_max or total > request_max or stop + 2 > end:
                return None
            arguments.append(buffer[start:stop])
            cursor = stop + 2
        return arguments, cursor

    def _read_array_header(self, buffer: bytes, position: int) -> int:
        line_end = buffer.find(_CRLF, position)
        if line_end < 0:
            if len(buffer) - position > self._limits.inline_bytes_max:
                self._fail("too big mbulk count string")
            return -1
        text = buffer[position + 1:line_end]
        if text.isdigit() and len(text) <= 10:
            count = int(text)
        elif text == b"-1":
            count = 0
        else:
            self._fail("invalid multibulk length")
        if count > self._limits.array_items_max:
            self._fail("unauthenticated multibulk length" if self._limits.unauthenticated
                       else "invalid multibulk length")
        self._remaining = count
        self._bulk_bytes = -1
        return line_end + 2

    def _read_inline(self, buffer: bytes, position: int, found: list[list[bytes]]) -> int:
        line_end = buffer.find(b"\n", position)
        if line_end < 0:
            if len(buffer) - position > self._limits.inline_bytes_max:
                self._fail("too big inline request")
            return -1
        if line_end - position > self._limits.inline_bytes_max:
            self._fail("too big inline request")
        line = buffer[position:line_end]
        if line.endswith(b"\r"):
            line = line[:-1]
        arguments = split_inline(line)
        if arguments:
            found.append(arguments)
        return line_end + 1

    def _read_bulks(self, buffer: bytes, position: int) -> int:
        end = len(buffer)
        arguments = self._arguments
        limits = self._limits
        while self._remaining > 0:
            size = self._bulk_bytes
            if size < 0:
                if position >= end:
                    return position
                if buffer[position] != _DOLLAR:
                    got = chr(buffer[position])
                    self._fail(f"expected '$', got '{got}'")
                line_end = buffer.find(_CRLF, position)
                if line_end < 0:
                    if end - position > limits.inline_bytes_max:
                        self._fail("too big bulk count string")
                    return position
                text = buffer[position + 1:line_end]
                if not text.isdigit() or len(text) > 11:
                    self._fail("invalid bulk length")
                size = int(text)
                if size > limits.bulk_bytes_max:
                    self._fail("unauthenticated bulk length" if limits.unauthenticated
                               else "invalid bulk length")
                self._request_bytes += size
                if self._request_bytes > limits.request_bytes_max:
                    self._fail("request too large")
                self._bulk_bytes = size
                position = line_end + 2
            stop = position + size
            if stop + 2 > end:
                # Wait for the whole bulk; join later chunks only once.
                self._wanted_bytes = stop + 2 - end if size >= 4096 else 0
                return position
            arguments.append(buffer[position:stop])
            position = stop + 2
            self._bulk_bytes = -1
            self._remaining -= 1
        return position


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command like Redis' sdssplitargs: whitespace-separated,
    with "double quotes" (backslash escapes) and 'single quotes'."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    arguments: list[bytes] = []
    index, end = 0, len(line)
    while True:
        while index < end and line[index:index + 1].isspace():
            index += 1
        if index >= end:
            return arguments
        current = bytearray()
        quote = 0
        while True:
            if index >= end:
                if quote:
                    raise ProtocolError("unbalanced quotes in request")
                break
            char = line[index]
            if quote == 0x22 and char == 0x5C and index + 1 < end:  # backslash in "..."
                index += 1
                current.append(_ESCAPES.get(line[index], line[index]))
            elif quote and char == quote:
                if index + 1 < end and not line[index + 1:index + 2].isspace():
                    raise ProtocolError("unbalanced quotes in request")
                index += 1
                break
            elif quote:
                current.append(char)
            elif char in (0x22, 0x27):
                quote = char
            elif line[index:index + 1].isspace():
                break
            else:
                current.append(char)
            index += 1
        arguments.append(bytes(current))


_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


# --- encoding ---------------------------------------------------------------

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
NULL_BULK_2 = b"$-1\r\n"
NULL_ARRAY_2 = b"*-1\r\n"
NULL_3 = b"_\r\n"
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"

_SMALL_INTEGERS = [b":%d\r\n" % number for number in range(-1, 1024)]


class SimpleString(str):
    """A status reply (+...)."""

    __slots__ = ()


class ErrorReply(str):
    """An error reply (-...); the text includes its prefix (ERR, WRONGTYPE...)."""

    __slots__ = ()


class Verbatim(str):
    """RESP3 verbatim text (INFO, CLIENT LIST); a bulk string in RESP2."""

    __slots__ = ()


def encode_simple(text: str) -> bytes:
    assert "\r" not in text and "\n" not in text
    return b"+" + text.encode() + _CRLF


def encode_error(text: str) -> bytes:
    text = text.replace("\r", " ").replace("\n", " ")
    return b"-" + text.encode() + _CRLF


def encode_integer(number: int) -> bytes:
    if -1 <= number < 1023:
        return _SMALL_INTEGERS[number + 1]
    return b":%d\r\n" % number


def encode_bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_null(protocol: int) -> bytes:
    return NULL_3 if protocol == 3 else NULL_BULK_2


def encode_null_array(protocol: int) -> bytes:
    return NULL_3 if protocol == 3 else NULL_ARRAY_2


def encode_array_header(count: int) -> bytes:
    return b"*%d\r\n" % count


def encode_bulk_array(items: Sequence[bytes | None], protocol: int) -> bytes:
    """An array of bulk strings or nulls (MGET, SCAN keys) in one join."""
    null = encode_null(protocol)
    parts = [b"*%d\r\n" % len(items)]
    parts.extend(null if item is None else b"$%d\r\n%b\r\n" % (len(item), item) for item in items)
    return b"".join(parts)


def encode_value(value: object, protocol: int) -> bytes:
    """Encode any reply value: bytes -> bulk, str -> bulk (utf-8),
    SimpleString/ErrorReply/Verbatim, int, bool, None, float, list/tuple,
    dict (map; a flat array in RESP2), set (RESP3 set; array in RESP2)."""
    assert protocol in (2, 3)
    parts: list[bytes] = []
    _encode_into(parts, value, protocol, 0)
    return b"".join(parts)


_DEPTH_MAX = 32


def _encode_into(parts: list[bytes], value: object, protocol: int, depth: int) -> None:
    assert depth <= _DEPTH_MAX, "reply nested too deeply"
    if isinstance(value, bytes):
        parts.append(b"$%d\r\n%b\r\n" % (len(value), value))
    elif isinstance(value, bool):
        if protocol == 3:
            parts.append(b"#t\r\n" if value else b"#f\r\n")
        else:
            parts.append(ONE if value else ZERO)
    elif isinstance(value, int):
        parts.append(encode_integer(value))
    elif value is None:
        parts.append(encode_null(protocol))
    elif isinstance(value, SimpleString):
        parts.append(encode_simple(value))
    elif isinstance(value, ErrorReply):
        parts.append(encode_error(value))
    elif isinstance(value, Verbatim):
        data = value.encode()
        if protocol == 3:
            parts.append(b"=%d\r\ntxt:%b\r\n" % (len(data) + 4, data))
        else:
            parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif isinstance(value, str):
        data = value.encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif isinstance(value, float):
        text = repr(value).encode()
        parts.append(b"," + text + _CRLF if protocol == 3 else b"$%d\r\n%b\r\n" % (len(text), text))
    elif isinstance(value, Mapping):
        header = b"%" if protocol == 3 else b"*"
        count = len(value) if protocol == 3 else 2 * len(value)
        parts.append(header + b"%d\r\n" % count)
        for key, item in value.items():
            _encode_into(parts, key, protocol, depth + 1)
            _encode_into(parts, item, protocol, depth + 1)
    elif isinstance(value, (set, frozenset)):
        parts.append((b"~" if protocol == 3 else b"*") + b"%d\r\n" % len(value))
        for item in sorted(value, key=repr):
            _encode_into(parts, item, protocol, depth + 1)
    elif isinstance(value, (list, tuple)):
        parts.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(parts, item, protocol, depth + 1)
    else:
        raise AssertionError(f"cannot encode reply of type {type(value).__name__}")


def encode_request(arguments: Sequence[bytes]) -> bytes:
    """A request as clients send it (tests, fuzzing, benchmarks)."""
    parts = [b"*%d\r\n" % len(arguments)]
    parts.extend(b"$%d\r\n%b\r\n" % (len(argument), argument) for argument in arguments)
    return b"".join(parts)
