"""The nemesis: injects the faults a seed enabled, once per tick.

Theory of operation
-------------------
During the fault phase `step()` runs every tick and, for each enabled fault
kind, rolls the seed's per-mille rate: cut the network (a symmetric
partition of a random minority or of the leader, or a single one-way link;
each cut heals on its own timer), crash a node (it restarts after a
random downtime, from its storage), slow a node's disk for a while, change
membership (one server at a time, through the leader: add a removed node
back as a learner, promote a learner, or remove a voter while enough voters
remain), or ask the leader to hand leadership to another voter. Loss,
duplication and reordering live in `Network`.

`heal()` ends the fault phase: cuts and loss stop, disks are fast again and
every crashed node restarts.

Counts of injected faults by kind go to `counts`.
"""

from __future__ import annotations

import random
from collections import Counter

from ringbolt.consensus.types import ConfChange, ConfChangeKind, ConsensusCore
from ringbolt.sim.cluster import ACTION, RESTART, Cluster, SimNode
from ringbolt.sim.params import TICK_UNITS, SimParams

slow_disk_ticks_max = 100


class Nemesis:
    def __init__(self, cluster: Cluster, rng: random.Random, params: SimParams) -> None:
        self._cluster = cluster
        self._rng = rng
        self._params = params
        self.counts: Counter[str] = Counter()
        self._cuts: list[tuple[int, list[tuple[int, int]]]] = []
        """(heal at, links) of every active cut."""
        self._slow_until: dict[int, int] = {}
        self.active = True
        cluster.on_new_leader = self._on_new_leader
        cluster.on_leader_commit = self._on_leader_commit

    def _roll(self, per_mille: int) -> bool:
        return per_mille > 0 and self._rng.randrange(1000) < per_mille

    def step(self) -> None:
        if not self.active:
            return
        cluster, params, now = self._cluster, self._params, self._cluster.now
        for cut in [cut for cut in self._cuts if cut[0] <= now]:
            self._cuts.remove(cut)
            cluster.network.remove_cut(cut[1])
            cluster.trace.event(now, f"cut heals: {cut[1]}")
        if self._roll(params.partition_per_mille):
            self._partition()
        if self._roll(params.one_way_per_mille):
            self._one_way()
        if self._roll(params.crash_per_mille):
            self._crash()
        for node_id, until in list(self._slow_until.items()):
            if now >= until:
                cluster.nodes[node_id].disk_delay_units = 0
                del self._slow_until[node_id]
        if self._roll(params.slow_disk_per_mille):
            self._slow_disk()
        if self._roll(params.membership_per_mille):
            self._membership()
        if self._roll(params.transfer_per_mille):
            self._transfer()

    def _cut(self, links: list[tuple[int, int]], ticks_max: int) -> None:
        ticks = self._rng.randint(3, ticks_max)
        self._cuts.append((self._cluster.now + ticks * TICK_UNITS, links))
        self._cluster.network.add_cut(links)

    def _on_new_leader(self, node: SimNode) -> None:
        """Targeted faults: a new leader is sometimes cut off or crashed a
        moment after it wins (before or after its first entry spreads) --
        the histories that expose commit-rule bugs (Raft figure 8)."""
        if not self.active:
            return
        params = self._params
        isolate = self._roll(params.leader_isolation_per_mille)
        crash = params.crash_per_mille and self._rng.randrange(8) == 0
        if not (isolate or crash):
            return
        delay = self._rng.randint(0, 3 * TICK_UNITS)
        node_id = node.node_id

        def strike() -> None:
            target = self._cluster.nodes[node_id]
            if not self.active or target.core is None:
                return
            if isolate:
                self._partition(frozenset({node_id}), 3 * self._params.election_timeout_ticks)
            else:
                self._crash(target)

        self._cluster.push(self._cluster.now + delay, ACTION, strike)

    def _on_leader_commit(self, node: SimNode) -> None:
        """Sometimes cut a leader off right after it advanced its commit index
        (its next appends, still in flight, are lost)."""
        if self.active and self._roll(self._params.leader_isolation_per_mille // 8):
            self._partition(frozenset({node.node_id}), 3 * self._params.election_timeout_ticks)

    def _partition(self, side: frozenset[int] | None = None, ticks_max: int = 0) -> None:
        members = frozenset(self._cluster.nodes)
        if side is None:
            leaders = self._cluster.leaders()
            if leaders and self._rng.randrange(2) == 0:
                side = frozenset({self._rng.choice(leaders).node_id})
            else:
                size = self._rng.randint(1, max(1, len(members) // 2))
                side = frozenset(self._rng.sample(sorted(members), size))
        self._cut(self._cluster.network.partition_links(side, members),
                  ticks_max or self._params.partition_ticks_max)
        self.counts["partition"] += 1
        self._cluster.trace.event(self._cluster.now, f"partition {sorted(side)} | "
                                  f"{sorted(members - side)}")

    def _one_way(self) -> None:
        if len(self._cluster.nodes) < 2:
            return
        sender, recipient = self._rng.sample(sorted(self._cluster.nodes), 2)
        self._cut([(sender, recipient)], self._params.partition_ticks_max)
        self.counts["one_way"] += 1
        self._cluster.trace.event(self._cluster.now, f"cut one way {sender} -> {recipient}")

    def _crash(self, node: SimNode | None = None) -> None:
        if node is None:
            running = self._cluster.running()
            if not running:
                return
            leaders = self._cluster.leaders()
            pool = leaders if leaders and self._rng.randrange(2) == 0 else running
            node = self._rng.choice(pool)
        self._cluster.crash(node)
        down = self._rng.randint(1, self._params.down_ticks_max) * TICK_UNITS
        self._cluster.push(self._cluster.now + down, RESTART, node.node_id)
        self.counts["crash"] += 1

    def _slow_disk(self) -> None:
        node = self._rng.choice(sorted(self._cluster.nodes.values(), key=lambda n: n.node_id))
        node.disk_delay_units = self._rng.randint(1, self._params.disk_delay_max_units)
        ticks = self._rng.randint(5, slow_disk_ticks_max)
        self._slow_until[node.node_id] = self._cluster.now + ticks * TICK_UNITS
        self.counts["slow_disk"] += 1
        self._cluster.trace.event(self._cluster.now, f"slow disk node {node.node_id}: "
                                  f"up to {node.disk_delay_units} units for {ticks} ticks")

    def _leader(self) -> SimNode | None:
        leaders = self._cluster.leaders()
        return self._rng.choice(leaders) if leaders else None

    def _membership(self) -> None:
        leader = self._leader()
        if leader is None or leader.core is None:
            return
        conf = leader.core.status().conf
        everyone = sorted(self._cluster.nodes)
        outside = [i for i in everyone if i not in conf.members]
        voters_min = max(2, len(everyone) - 2)
        if conf.learners:
            change = ConfChange(kind=ConfChangeKind.ADD_VOTER, node_id=min(conf.learners))
        elif outside:
            change = ConfChange(kind=ConfChangeKind.ADD_LEARNER, node_id=self._rng.choice(outside))
        elif len(conf.voters) > voters_min:
            change = ConfChange(kind=ConfChangeKind.REMOVE_NODE,
                                node_id=self._rng.choice(sorted(conf.voters)))
        else:
            return

        def propose(core: ConsensusCore) -> None:
            core.propose_conf_change(change)

        if self._cluster.try_core(leader, propose):
            self.counts["membership"] += 1
            self._cluster.trace.event(self._cluster.now, f"leader {leader.node_id} proposes "
                                      f"{change.kind.name} {change.node_id}")

    def _transfer(self) -> None:
        leader = self._leader()
        if leader is None or leader.core is None:
            return
        voters = sorted(leader.core.status().conf.voters - {leader.node_id})
        if not voters:
            return
        target = self._rng.choice(voters)

        def transfer(core: ConsensusCore) -> None:
            core.transfer_leadership(target)

        if self._cluster.try_core(leader, transfer):
            self.counts["transfer"] += 1
            self._cluster.trace.event(self._cluster.now,
                                      f"leader {leader.node_id} transfers to {target}")

    def heal(self) -> None:
        cluster = self._cluster
        self.active = False
        self._cuts.clear()
        cluster.network.heal()
        for node in cluster.nodes.values():
            node.disk_delay_units = 0
        self._slow_until.clear()
        for node_id in sorted(cluster.crashed):
            cluster.restart(cluster.nodes[node_id])
        cluster.trace.event(cluster.now, "heal: network reliable, disks fast, all nodes up")
