"""redis-benchmark SET throughput of a local 3-node cluster with 1 shard vs many.

Theory of operation
-------------------
For each shard count, start a `LocalCluster` (fsync on), wait until every
shard has its replicas and a leader, spread the leaders, then run Debian's
redis-benchmark (``-t set -d 100 -r 100000``) `--runs` times per shape:
clients on the leader of shard 0 ("one node") and clients spread over all
three nodes ("all nodes"), each without and with ``-P 16``. Prints one row
per shape with the median and the runs; `--json` prints one object. Bounded:
every redis-benchmark run has a request count and a timeout.

    python -m ringbolt.bench.shards --shards 1,16 --runs 3 --json
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import click

from ringbolt.client.admin import ClusterAdmin
from ringbolt.server.process import LocalCluster, find_base_port

_RESULT = re.compile(r"SET: ([\d.]+) requests per second")


def _redis_benchmark(ports: list[int], pipeline: int, requests: int, clients: int,
                     timeout_s: float) -> float | None:
    """Requests/s summed over one redis-benchmark per port (None if one failed)."""
    runs = [subprocess.Popen(
        ["redis-benchmark", "-p", str(port), "-t", "set", "-d", "100", "-r", "100000",
         "-n", str(requests // len(ports)), "-c", str(max(1, clients // len(ports))),
         "-P", str(pipeline), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for port in ports]
    total = 0.0
    failed = False
    for run in runs:
        try:
            output = run.communicate(timeout=timeout_s)[0].replace("\r", "\n")
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()
            failed = True
            continue
        found = _RESULT.findall(output)
        if not found:
            failed = True
            continue
        total += float(found[-1])
    return None if failed else total


@click.command()
@click.option("--shards", "shard_counts", default="1,16", show_default=True)
@click.option("--runs", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--clients", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--requests", default=60_000, show_default=True, type=click.IntRange(100, 10**7))
@click.option("--json", "as_json", is_flag=True)
def main(shard_counts: str, runs: int, clients: int, requests: int, as_json: bool) -> None:
    """Compare redis-benchmark SET throughput for several shard counts."""
    if shutil.which("redis-benchmark") is None:
        raise click.ClickException("redis-benchmark not found (apt-get install redis-tools)")
    results: dict[str, dict[str, object]] = {}
    for shards in (int(s) for s in shard_counts.split(",")):
        with tempfile.TemporaryDirectory(prefix="ringbolt-shards-") as directory, \
                LocalCluster(3, Path(directory), find_base_port(3), shards=shards) as cluster:
            cluster.start()
            admin = ClusterAdmin([f"127.0.0.1:{port}" for port in cluster.client_ports()])
            states = admin.wait_converged(120.0)
            admin.balance_leaders()
            leader = states[0].leader or 1
            for label, ports in (("one node", [cluster.client_port(leader)]),
                                 ("all nodes", cluster.client_ports())):
                for pipeline in (1, 16):
                    count = requests if pipeline == 1 else requests * 3
                    figures = [_redis_benchmark(ports, pipeline, count, clients, 600.0)
                               for _ in range(runs)]
                    good = [f for f in figures if f is not None]
                    key = f"{shards} shard(s), {label}, -P {pipeline}"
                    results[key] = {"median_ops_per_s": round(statistics.median(good)) if good
                                    else None, "runs": [None if f is None else round(f)
                                                        for f in figures]}
                    if not as_json:
                        click.echo(f"{key}: {results[key]}")
    if as_json:
        click.echo(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
