"""redis-benchmark against LocalService behind the real protocol layer, with
the server's own CPU cost per command (robust on a shared, loaded machine).

    python tests/resp/bench_server.py --loop uvloop -n 100000 -c 50

Prints, per run: requests/s as redis-benchmark saw them, and server CPU
microseconds per command (process time / commands processed): 1e6 divided by
it is the ceiling of one core running the protocol layer alone.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

from ringbolt.server.connection import serve_clients
from ringbolt.server.dispatch import ClientRegistry
from ringbolt.server.local import LocalService


async def run(requests: int, clients: int, pipelines: list[int], tests: str) -> None:
    registry = ClientRegistry()
    service = LocalService()
    server = await serve_clients(service, "127.0.0.1", 0, registry=registry)
    port = server.sockets[0].getsockname()[1]
    for pipeline in pipelines:
        for test in tests.split(","):
            before_cpu, before_commands = time.process_time(), registry.commands_total
            process = await asyncio.create_subprocess_exec(
                "redis-benchmark", "-p", str(port), "-t", test, "-n", str(requests),
                "-c", str(clients), "-P", str(pipeline), "-q",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            output, _ = await process.communicate()
            cpu_s = time.process_time() - before_cpu
            commands = registry.commands_total - before_commands
            line = output.decode().replace("\r", "\n").strip().splitlines()[-1]
            print(f"-P {pipeline:<3} {line.strip():<60} server CPU "
                  f"{cpu_s / commands * 1e6:6.1f} us/command over {commands} commands")
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("-c", type=int, default=50)
    parser.add_argument("-P", default="1,16")
    parser.add_argument("-t", default="set,get")
    options = parser.parse_args()
    if options.loop == "uvloop":
        uvloop.install()
    print(f"loop={options.loop} -n {options.n} -c {options.c}")
    asyncio.run(run(options.n, options.c, [int(p) for p in options.P.split(",")], options.t))


if __name__ == "__main__":
    main()
