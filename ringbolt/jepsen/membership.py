"""Membership and shard-move faults: replace a node, split a shard -- during other faults.

Theory of operation
-------------------
Two fault kinds for the nemesis (`nemesis.FAULTS`), both driven through the
cluster's own admin commands over RESP (`ringbolt.client.admin`), exactly as
an operator would:

* ``replace``: at start, drain a random running node (`CLUSTER DRAINNODE`)
  and rebalance: every shard drops (or moves away) its replica there while
  clients and other faults go on. At heal, the drained node is removed from
  the map, its process killed and its data wiped, and a NEW node (a fresh
  id, ``join = true``) is started in the same namespace, added
  (`CLUSTER ADDNODE`) and given replicas again (`CLUSTER REBALANCE`): learner,
  snapshot, catch-up, promotion -- the full replica-move path.
* ``split``: split a random shard (`CLUSTER SPLIT`): the keys above the cut
  move to a new shard at one log index on every replica, the map follows,
  clients with old maps are refused and retry. Permanent, so its heal does
  nothing; at most `splits_max` per run keep the shard count bounded.

Every admin call is bounded (`limits.command_timeout_s` per connection, the
admin client's retry deadline) and a failure is raised, so the nemesis logs
it as an error of the run instead of hiding it.
"""

from __future__ import annotations

import random
import shutil
import time
from typing import TYPE_CHECKING

from ringbolt.client.admin import AdminError, ClusterAdmin
from ringbolt.jepsen import limits

if TYPE_CHECKING:
    from ringbolt.jepsen.nemesis import FaultContext, Heal

splits_max = 3
replace_converge_s = 30.0


def _admin(context: FaultContext, avoid: int | None = None) -> ClusterAdmin:
    cluster = context.cluster
    addresses = [f"{cluster.client_address(n)[0]}:{cluster.client_address(n)[1]}"
                 for n in context.nodes
                 if n != avoid and cluster.alive(n) and n not in cluster.paused]
    if not addresses:
        raise AdminError("no running node to send the admin command to")
    return ClusterAdmin(addresses, timeout_s=limits.command_timeout_s)


def split(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
    cluster = context.cluster
    if cluster.splits_done >= splits_max:
        return (), "skipped: split budget of this run used", lambda: None
    admin = _admin(context)
    shards = [s["id"] for s in admin.cluster_map()["shards"]]
    shard = rng.choice(shards)
    done = admin.split(shard)
    cluster.splits_done += 1
    return (), f"shard {shard} split at {done['at']}: new shard {done['child']}", lambda: None


def replace(context: FaultContext, rng: random.Random) -> tuple[tuple[int, ...], str, Heal]:
    cluster = context.cluster
    candidates = [n for n in context.nodes if cluster.alive(n) and n not in cluster.paused]
    if len(candidates) < 3:
        return (), "skipped: too few running nodes", lambda: None
    namespace = rng.choice(candidates)
    old_id = cluster.identity(namespace)
    admin = _admin(context, avoid=namespace)
    admin.drain_node(old_id)
    plan = admin.rebalance()

    def heal() -> None:
        survivor = _admin(context, avoid=namespace)
        deadline = time.monotonic() + replace_converge_s
        while True:  # the map no longer places anything on it: it may go
            try:
                survivor.remove_node(old_id)
                break
            except AdminError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        cluster.resume(namespace)
        cluster.kill(namespace)
        shutil.rmtree(cluster.data_dir(namespace), ignore_errors=True)
        new_id = cluster.rejoin(namespace)
        address = "{}:{}".format(*cluster.client_address(namespace))
        survivor.add_node(address)
        survivor.rebalance()
        survivor.wait_converged(replace_converge_s)
        del new_id

    return ((namespace,), f"node {old_id} drained ({len(plan['moves'])} moves); "
            "at heal replaced by a new node", heal)
