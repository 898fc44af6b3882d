"""Parser micro-benchmarks in CPU time (prints numbers; not collected by pytest).

    python tests/resp/bench_resp.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import hiredis

from ringbolt.server.resp import RequestParser, encode_request


def rate(label: str, commands: int, run: Callable[[], int], rounds: int = 5) -> None:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        found = run()
        best = min(best, time.process_time() - start)
        assert found == commands, (found, commands)
    print(f"{label:<48} {commands / best / 1e6:6.2f} M commands/s")


def ours(chunks: list[bytes], fast_path: bool = True) -> Callable[[], int]:
    def run() -> int:
        parser = RequestParser(fast_path=fast_path)
        found = 0
        for chunk in chunks:
            parser.feed(chunk)
            found += len(parser.commands())
        return found
    return run


def reference(chunks: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        reader = hiredis.Reader()
        found = 0
        for chunk in chunks:
            reader.feed(chunk)
            while reader.gets() is not False:
                found += 1
        return found
    return run


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _split_pair(pair: bytes) -> list[bytes]:
    middle = pair.index(b"*2\r\n$3\r\nGET")
    return [pair[:middle], pair[middle:]]


def main() -> None:
    requests = [encode_request([b"SET", b"key:%012d" % i, b"xxx"]) + encode_request(
        [b"GET", b"key:%012d" % i]) for i in range(50_000)]
    small = b"".join(requests)
    pipelines = [b"".join(requests[i:i + 8]) for i in range(0, len(requests), 8)]
    cases = [("whole buffer", chunked(small, len(small))), ("64 KiB reads", chunked(small, 65536)),
             ("one request per read", [r for pair in requests for r in _split_pair(pair)]),
             ("16 requests per read (-P 16)", pipelines)]
    for label, chunks in cases:
        rate(f"ringbolt parser, small SET/GET, {label}", 100_000, ours(chunks))
        rate(f"  without the hiredis fast path, {label}", 100_000, ours(chunks, False))
        rate(f"hiredis.Reader, small SET/GET, {label}", 100_000, reference(chunks))
    big = b"".join(encode_request([b"SET", b"k", b"v" * 1_000_000]) for _ in range(20))
    rate("ringbolt parser, 1 MB values, 64 KiB reads", 20, ours(chunked(big, 65536)))
    rate("hiredis.Reader, 1 MB values, 64 KiB reads", 20, reference(chunked(big, 65536)))


if __name__ == "__main__":
    main()
