"""The sans-I/O RESP request parser and reply encoder."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbolt.server.resp import (
    NEED_DATA,
    ErrorReply,
    ParserLimits,
    ProtocolError,
    RequestParser,
    SimpleString,
    Verbatim,
    encode_bulk_array,
    encode_integer,
    encode_request,
    encode_value,
    split_inline,
)

SMALL = ParserLimits(inline_bytes_max=64, bulk_bytes_max=1000, array_items_max=8,
                     request_bytes_max=2000, buffered_bytes_max=4000)


def parse_all(data: bytes, limits: ParserLimits = SMALL, chunk: int = 0) -> list[list[bytes]]:
    parser = RequestParser(limits)
    found: list[list[bytes]] = []
    pieces = [data] if chunk == 0 else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        parser.feed(piece)
        found += parser.commands()
    return found


def test_array_request_whole_and_byte_by_byte() -> None:
    data = encode_request([b"SET", b"key", b"va\r\nlue"]) + encode_request([b"GET", b"key"])
    expected = [[b"SET", b"key", b"va\r\nlue"], [b"GET", b"key"]]
    assert parse_all(data) == expected
    assert parse_all(data, chunk=1) == expected
    assert parse_all(data, chunk=7) == expected


def test_next_command_returns_need_data_until_complete() -> None:
    parser = RequestParser(SMALL)
    assert parser.next_command() is NEED_DATA
    parser.feed(b"*2\r\n$3\r\nGET\r\n$1\r")
    assert parser.next_command() is NEED_DATA
    parser.feed(b"\nk\r\n*1\r\n$4\r\nPING\r\n")
    assert parser.next_command() == [b"GET", b"k"]
    assert parser.next_command() == [b"PING"]
    assert parser.next_command() is NEED_DATA
    assert parser.buffered_bytes() == 0


def test_commands_respects_limit_and_keeps_the_rest() -> None:
    parser = RequestParser(SMALL)
    parser.feed(encode_request([b"PING"]) * 5)
    assert len(parser.commands(2)) == 2
    assert len(parser.commands(10)) == 3
    assert parser.commands() == []


def test_inline_commands() -> None:
    data = b"PING\r\nset a  b\nGET \"sp ace\" 'x y' \"q\\n\"\r\n\r\n   \r\n"
    assert parse_all(data) == [[b"PING"], [b"set", b"a", b"b"],
                               [b"GET", b"sp ace", b"x y", b"q\n"]]
    assert parse_all(data, chunk=1) == parse_all(data)


def test_inline_unbalanced_quotes_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unbalanced quotes"):
        parse_all(b'SET "abc\r\n')
    with pytest.raises(ProtocolError, match="unbalanced quotes"):
        split_inline(b'"abc"def')


def test_empty_and_null_arrays_are_skipped() -> None:
    assert parse_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


@pytest.mark.parametrize(("data", "message"), [
    (b"*abc\r\n", "invalid multibulk length"),
    (b"*-2\r\n", "invalid multibulk length"),
    (b"*9\r\n", "invalid multibulk length"),
    (b"*+1\r\n", "invalid multibulk length"),
    (b"*1\r\n$abc\r\n", "invalid bulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$\r\n", "invalid bulk length"),
    (b"*1\r\n$1001\r\n", "invalid bulk length"),
    (b"*1\r\n:1\r\n", "expected '$', got ':'"),
    (b"*2\r\n*1\r\n$1\r\na\r\n", "expected '$', got '*'"),
    (b"*3\r\n$1000\r\n" + b"x" * 1000 + b"\r\n$1000\r\n" + b"y" * 1000 + b"\r\n$1\r\n",
     "request too large"),
    (b"A" * 65, "too big inline request"),
    (b"A" * 70 + b"\n", "too big inline request"),
    (b"*" + b"1" * 70, "too big mbulk count string"),
    (b"*1\r\n$" + b"1" * 70, "too big bulk count string"),
])
def test_malformed_requests_raise_protocol_error(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_all(data)
    assert str(caught.value) == f"ERR Protocol error: {message}"
    with pytest.raises(ProtocolError):
        parse_all(data, chunk=1)


def test_bytes_after_a_bulk_are_skipped_like_redis() -> None:
    # Redis skips the two bytes after a bulk without checking them.
    assert parse_all(b"*1\r\n$1\r\nabc\r\n*1\r\n$4\r\nPING\r\n") == [[b"a"], [b"PING"]]


def test_buffered_bytes_are_capped() -> None:
    parser = RequestParser(SMALL)
    parser.feed(b"*1\r\n$900\r\n")
    parser.feed(b"x" * 3000)  # complete-able bulk plus more: fine up to the cap
    with pytest.raises(ProtocolError, match="too much buffered data"):
        parser.feed(b"y" * 2000)


def test_trailing_garbage_after_valid_commands() -> None:
    parser = RequestParser(SMALL)
    parser.feed(encode_request([b"GET", b"a"]) + encode_request([b"PING"]) + b"*1\r\n$x\r\n")
    assert parser.commands() == [[b"GET", b"a"], [b"PING"]]
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        parser.commands()
    with pytest.raises(ProtocolError):  # the error is sticky
        parser.feed(encode_request([b"PING"]))
    with pytest.raises(ProtocolError):
        parser.next_command()


def test_large_bulk_in_many_chunks() -> None:
    limits = ParserLimits()
    value = bytes(range(256)) * 4096  # 1 MiB
    data = encode_request([b"SET", b"k", value]) + encode_request([b"GET", b"k"])
    parser = RequestParser(limits)
    found: list[list[bytes]] = []
    for start in range(0, len(data), 65536):
        parser.feed(data[start:start + 65536])
        found += parser.commands()
    assert found == [[b"SET", b"k", value], [b"GET", b"k"]]
    assert parser.buffered_bytes() == 0


def test_limits_relationships_are_asserted() -> None:
    with pytest.raises(AssertionError):
        ParserLimits(bulk_bytes_max=10, request_bytes_max=5)


arguments = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(commands=st.lists(arguments, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 400)))
def test_round_trip_with_arbitrary_splits(commands: list[list[bytes]], cuts: list[int]) -> None:
    data = b"".join(encode_request(command) for command in commands)
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    parser = RequestParser(ParserLimits())
    found: list[list[bytes]] = []
    previous = 0
    for point in [*points, len(data)]:
        parser.feed(data[previous:point])
        found += parser.commands()
        previous = point
    assert found == commands


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_parse_or_fail_typed(data: bytes) -> None:
    parser = RequestParser(SMALL)
    try:
        parser.feed(data)
        for command in parser.commands():
            assert command and all(isinstance(argument, bytes) for argument in command)
    except ProtocolError as error:
        assert str(error).startswith("ERR Protocol error: ")


# --- encoder ----------------------------------------------------------------------

def decode(data: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(data)
    value = reader.gets()
    assert reader.gets() is False, "exactly one reply"
    return value


def test_encode_scalars_resp2_and_resp3() -> None:
    assert encode_value(b"x", 2) == b"$1\r\nx\r\n"
    assert encode_value(None, 2) == b"$-1\r\n"
    assert encode_value(None, 3) == b"_\r\n"
    assert encode_value(True, 2) == b":1\r\n"
    assert encode_value(True, 3) == b"#t\r\n"
    assert encode_value(SimpleString("OK"), 2) == b"+OK\r\n"
    assert encode_value(ErrorReply("ERR bad\r\nthing"), 2) == b"-ERR bad  thing\r\n"
    assert encode_value({"a": 1}, 2) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert encode_value({"a": 1}, 3) == b"%1\r\n$1\r\na\r\n:1\r\n"
    assert encode_value(Verbatim("hi"), 3) == b"=6\r\ntxt:hi\r\n"
    assert encode_value(Verbatim("hi"), 2) == b"$2\r\nhi\r\n"
    assert encode_integer(-1) == b":-1\r\n"
    assert encode_integer(5000) == b":5000\r\n"
    assert encode_integer(-(2**63)) == b":-9223372036854775808\r\n"
    assert encode_bulk_array([b"a", None], 2) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert encode_bulk_array([b"a", None], 3) == b"*2\r\n$1\r\na\r\n_\r\n"
    with pytest.raises(AssertionError):
        encode_value(object(), 2)


replies = st.recursive(
    st.one_of(st.binary(max_size=30), st.integers(-(2**63), 2**63 - 1), st.none(),
              st.booleans()),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.binary(max_size=10), children, max_size=4)),
    max_leaves=20)


def expected_resp2(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        flat: list[object] = []
        for key, item in value.items():
            flat += [key, expected_resp2(item)]
        return flat
    if isinstance(value, list):
        return [expected_resp2(item) for item in value]
    return value


@settings(max_examples=300, deadline=None)
@given(value=replies)
def test_encoder_round_trips_through_hiredis(value: object) -> None:
    assert decode(encode_value(value, 3)) == value
    assert decode(encode_value(value, 2)) == expected_resp2(value)


def outcome(data: bytes, chunk: int) -> tuple[list[list[bytes]], str | None]:
    parser = RequestParser(SMALL)
    found: list[list[bytes]] = []
    pieces = [data] if chunk == 0 else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    try:
        for piece in pieces:
            parser.feed(piece)
            found += parser.commands()
        found += parser.commands()
    except ProtocolError as error:
        return found, str(error)
    return found, None


frame_parts = st.one_of(
    arguments.map(encode_request),
    st.sampled_from([b"*", b"$", b"\r\n", b"*1\r\n", b"$3\r\n", b"PING\r\n", b"-1", b"99", b":"]),
    st.binary(max_size=12))


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(frame_parts, max_size=10), chunk=st.integers(1, 9))
def test_whole_and_chunked_inputs_agree(parts: list[bytes], chunk: int) -> None:
    """The whole-request fast path and the incremental path accept, return
    and reject exactly the same things."""
    data = b"".join(parts)
    assert outcome(data, chunk) == outcome(data, 0)


def outcome_of(data: bytes, *, fast_path: bool) -> tuple[list[list[bytes]], str | None]:
    parser = RequestParser(ParserLimits(), fast_path=fast_path)
    found: list[list[bytes]] = []
    try:
        parser.feed(data)
        found += parser.commands()
        found += parser.commands()
    except ProtocolError as error:
        return found, str(error)
    return found, None


tricky_parts = st.one_of(
    arguments.map(encode_request),
    st.sampled_from([
        b"+OK\r\n", b"(123\r\n", b"~1\r\n", b">1\r\n", b"|1\r\n+a\r\n+b\r\n",
        b"%1\r\n$1\r\na\r\n$1\r\nb\r\n", b"=5\r\ntxt:a\r\n", b"$03\r\nabc\r\n",
        b"*1\r\n", b"*2\r\n", b"*0\r\n", b"*-1\r\n", b"$-1\r\n", b":1\r\n", b"_\r\n",
        b"$3\r\nabcXY", b"*1\r\n*1\r\n$1\r\na\r\n", b"PING\r\n", b"#t\r\n", b",1.5\r\n"]))


@settings(max_examples=500, deadline=None)
@given(head=arguments, parts=st.lists(tricky_parts, max_size=12))
def test_hiredis_fast_path_agrees_with_the_python_parser(head: list[bytes],
                                                        parts: list[bytes]) -> None:
    """Chunks long enough for the fast path, made of valid requests and every
    RESP type hiredis accepts: both paths return and reject the same."""
    data = encode_request([*head, b"x" * 200]) + b"".join(parts)
    assert outcome_of(data, fast_path=True) == outcome_of(data, fast_path=False)


def test_fast_path_is_used_for_pipelines() -> None:
    pipeline = b"".join(encode_request([b"SET", b"k%d" % i, b"v"]) for i in range(16))
    parser = RequestParser()
    parser.feed(pipeline)
    assert parser.buffered_bytes() == len(pipeline)  # decoded, held as ready requests
    assert len(parser.commands(10)) == 10
    assert len(parser.commands()) == 6
    assert parser.buffered_bytes() == 0
    parser.feed(pipeline[:-1])  # ends mid-request: the Python path takes it
    parser.feed(pipeline[-1:])
    assert parser.commands() == [[b"SET", b"k%d" % i, b"v"] for i in range(16)]
