"""`ringbolt serve --config node.toml`: run one node until SIGTERM/SIGINT.

Theory of operation
-------------------
Startup failures an operator can fix -- a bad config field, an occupied port,
an unreadable/unwritable/corrupt data directory -- print ONE line on stderr
(``config error: ...`` or ``startup error: ...``) and exit non-zero, without a
traceback; bugs still crash loudly. A peer that cannot be reached is not a
startup error: Raft keeps retrying it (a peer address that does not parse is a
config error). SIGTERM or SIGINT stops the node gracefully: stop accepting
clients, finish the current round, sync the WAL, close LMDB, exit 0.
uvloop is used when it is installed (RINGBOLT_EVENT_LOOP=asyncio turns it off).
Once started, the process collects cycles less often (`tune_gc`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

import click

from ringbolt.server.config import ConfigError, NodeConfig, load_config

EXIT_CONFIG = 2
EXIT_STARTUP = 1


@click.command()
@click.option("--config", "config_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="The node's TOML config file (see docs/configuration.md).")
def serve(config_path: Path) -> None:
    """Run one node from a TOML config file."""
    try:
        config = load_config(config_path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_CONFIG)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s node{config.node_id} %(levelname)s %(name)s: %(message)s")
    runner = asyncio.run
    if _uvloop_usable():
        import uvloop

        runner = uvloop.run
    sys.exit(runner(run_node(config)))


async def run_node(config: NodeConfig) -> int:
    from ringbolt.server.node import Node, StartupError

    node = Node(config)
    try:
        await node.start()
    except StartupError as error:
        print(f"startup error: {error}", file=sys.stderr, flush=True)
        return EXIT_STARTUP
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopped = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(node.failed.wait())
    try:
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        failed.cancel()
        await node.stop()
    return EXIT_STARTUP if node.failed.is_set() else 0


def tune_gc() -> None:
    """Collect cycles less often than CPython's defaults (`limits.gc_thresholds`
    says why) and leave what start-up allocated out of every collection."""
    from ringbolt.server import limits

    gc.freeze()
    gc.set_threshold(*limits.gc_thresholds)


def _uvloop_usable() -> bool:
    if os.environ.get("RINGBOLT_EVENT_LOOP", "uvloop") != "uvloop":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
