"""Run a node with a test-only Raft mutation switched on (harness self-test only).

Theory of operation
-------------------
``python -m ringbolt.jepsen.unsafe_serve --unsafe read_without_read_index
--config node.toml`` wraps the `RaftConfig` constructor the node uses so that
every group gets ``unsafe=frozenset({...})``, then runs the ordinary `serve`
command. The node config has no field for the switch yet; once it has one
(`unsafe = [...]` in the TOML), the harness should write it there instead and
this module can go. Never use it for anything but proving the harness finds
bugs.
"""

from __future__ import annotations

import functools
import sys

import click

from ringbolt.consensus.raft import UNSAFE_MUTATIONS, RaftConfig
from ringbolt.server import node as node_module
from ringbolt.server.cli import serve


@click.command()
@click.option("--unsafe", "mutations", required=True, help="Comma-separated Raft mutations.")
@click.option("--config", "config_path", required=True)
def main(mutations: str, config_path: str) -> None:
    chosen = frozenset(m for m in mutations.split(",") if m)
    unknown = chosen - UNSAFE_MUTATIONS
    if unknown:
        raise click.ClickException(f"unknown mutations: {', '.join(sorted(unknown))}")
    print(f"UNSAFE node: Raft mutations {sorted(chosen)} are ON", file=sys.stderr, flush=True)
    node_module.RaftConfig = functools.partial(RaftConfig, unsafe=chosen)  # type: ignore[misc,assignment]
    serve.main(["--config", config_path], standalone_mode=True)


if __name__ == "__main__":
    main()
