"""The `ringbolt` command.

Subcommands live next to the code they drive and are imported only when
invoked, so `ringbolt --help` is fast and one broken subsystem cannot take
the whole CLI down.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> ("module:attribute", one-line help). Keep alphabetical.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("ringbolt.bench.cli:bench", "Load-generate against a cluster and compare with peers."),
    "check": ("ringbolt.check.cli:check", "Check a recorded history file for linearizability."),
    "cluster": ("ringbolt.server.cluster_cli:cluster", "Run and inspect a cluster (up, status, ...)."),
    "demo": ("ringbolt.demo:demo", "Start a local 3-node cluster, fail the leader, verify."),
    "dev": ("ringbolt.server.local:dev", "Serve one in-memory node (no replication) over RESP."),
    "jepsen": ("ringbolt.jepsen.cli:jepsen", "Fault-test real processes in network namespaces."),
    "placement-sim": ("ringbolt.shard.cli:placement_sim", "Simulate shard placement at scale."),
    "serve": ("ringbolt.server.cli:serve", "Run one node from a TOML config file."),
    "sim": ("ringbolt.sim.cli:sim", "Run the deterministic simulator over many seeds."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target[0].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                return _unavailable(cmd_name, target[1])
            raise
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    def unavailable() -> None:
        raise click.ClickException(f"'{name}' is not available in this build")

    return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ringbolt")
def main() -> None:
    """ringbolt: a linearizable, sharded key-value store that speaks Redis."""


if __name__ == "__main__":
    main()
