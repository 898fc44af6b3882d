"""One PySyncObj node with a minimal RESP front end, for `bench compare`.

Theory of operation
-------------------
PySyncObj has no network client protocol: applications call replicated
methods inside the node process. To drive it with the same load generator
as the other systems, this process runs a PySyncObj `ReplDict` (its own
threads; followers forward commands to the leader) and an asyncio RESP
server on `--port`. SET calls the replicated `set` with a callback; the
callback (on PySyncObj's thread) hands the result back to the event loop,
which answers `+OK`, or `-ERR <error>` when PySyncObj reports a failure.
GET reads the local replica (not linearizable) and PING answers PONG.
Nothing is fsynced: PySyncObj keeps its log in memory (default settings).
At most `MAX_PENDING` writes per connection wait for replication.

    python -m ringbolt.bench.pysyncobj_node --port P --self 127.0.0.1:A \
        --partner 127.0.0.1:B --partner 127.0.0.1:C
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import hiredis

MAX_PENDING = 1024


def bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


async def handle(store: Any, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    parser = hiredis.Reader()
    pending: asyncio.Queue[asyncio.Future[bytes]] = asyncio.Queue(MAX_PENDING)

    async def answer() -> None:
        while True:
            reply = await (await pending.get())
            writer.write(reply)

    def done(future: asyncio.Future[bytes]) -> Any:
        def callback(result: Any, error: Any) -> None:
            reply = b"+OK\r\n" if error == 0 else b"-ERR pysyncobj %s\r\n" % str(error).encode()
            loop.call_soon_threadsafe(future.set_result, reply)
        return callback

    answering = asyncio.create_task(answer())
    try:
        while data := await reader.read(1 << 16):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                future: asyncio.Future[bytes] = loop.create_future()
                name = command[0].upper() if isinstance(command, list) and command else b""
                if name == b"SET" and len(command) == 3:
                    store.set(command[1], command[2], callback=done(future))
                elif name == b"GET" and len(command) == 2:
                    future.set_result(bulk(store.get(command[1])))
                elif name == b"PING":
                    future.set_result(b"+PONG\r\n")
                else:
                    future.set_result(b"-ERR unsupported command\r\n")
                await pending.put(future)
    finally:
        answering.cancel()
        writer.close()


async def serve(port: int, own: str, partners: list[str]) -> None:
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    store = ReplDict()
    # Batching off: with it on, a lone write waits for the 100 ms append period.
    conf = SyncObjConf(dynamicMembershipChange=False, appendEntriesUseBatch=False)
    SyncObj(own, partners, consumers=[store], conf=conf)
    server = await asyncio.start_server(
        lambda r, w: handle(store, r, w), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--self", dest="own", required=True)
    parser.add_argument("--partner", action="append", default=[])
    options = parser.parse_args()
    asyncio.run(serve(options.port, options.own, options.partner))


if __name__ == "__main__":
    main()
