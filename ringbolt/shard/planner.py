"""The working state of one placement: the four passes of `placement.place`.

Theory of operation
-------------------
`Planner` holds one call's mutable state -- slots per shard, load and held
shards per node, the bounds derived from fair shares -- and runs the passes
described in `ringbolt.shard.placement` (keep, shed, fill, steal), each a
method. Every assignment goes through `_assign`/`_vacate`, which keep load,
held sets and the "fresh" set (replicas placed by this call) consistent;
`result` re-counts everything and asserts the bookkeeping.

Rankings come from `_scorer`: xxh3_64(node id, seed=shard id), or the
weighted rendezvous key when weights differ. Nothing here iterates a set or
dict in an order that could differ between runs: the result depends only on
the input.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import xxhash

from ringbolt.shard.limits import (
    augmenting_path_steps_max,
    balance_scan_shards_max,
    epsilon_max,
    label_chars_max,
    node_weight_max,
    nodes_max,
    replicas_max,
    shards_max,
)

HASH_LIMIT = 1 << 64
ID_LIMIT = 1 << 63
"""Node and shard ids lie in [0, 2**63): they seed and feed xxh3_64."""

_LEVEL_SAME_DC = 4
_LEVEL_SAME_ZONE = 2
_LEVEL_ABOVE_TIGHT = 1


class PlacementError(ValueError):
    """The caller asked for a placement that cannot be computed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementNode:
    """What placement needs to know about a node."""

    node_id: int
    dc: str = ""
    zone: str = ""
    weight: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.node_id < ID_LIMIT:
            raise PlacementError(f"node id {self.node_id} outside [0, 2**63)")
        if not 1 <= self.weight <= node_weight_max:
            raise PlacementError(f"node weight {self.weight} outside [1, {node_weight_max}]")
        if len(self.dc) > label_chars_max or len(self.zone) > label_chars_max:
            raise PlacementError(f"labels longer than {label_chars_max} characters")


def fair_shares(
    nodes: Sequence[PlacementNode], shard_count: int, width: int
) -> dict[int, Fraction]:
    """Each node's fair share of the shard_count * width replicas.

    Proportional to weight, except that no node can hold more than one replica
    per shard: a node whose weighted share would exceed `shard_count` is held
    at `shard_count` and the rest is shared among the others (water-filling).
    """
    assert 1 <= width <= len(nodes)
    total = shard_count * width
    full: set[int] = set()
    while True:
        free_weight = sum(node.weight for node in nodes if node.node_id not in full)
        scale = Fraction(total - shard_count * len(full), free_weight)
        newly_full = {
            node.node_id
            for node in nodes
            if node.node_id not in full and scale * node.weight >= shard_count
        }
        if not newly_full:
            break
        full |= newly_full
        assert len(full) < len(nodes) or total == shard_count * len(nodes)
        if len(full) == len(nodes):
            break
    shares = {
        node.node_id: Fraction(shard_count) if node.node_id in full else scale * node.weight
        for node in nodes
    }
    assert sum(shares.values()) == total
    return shares


def is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < ID_LIMIT


class Planner:
    """The mutable working state of one `place` call."""

    def __init__(
        self,
        nodes: Sequence[PlacementNode],
        shard_ids: Sequence[int],
        replicas: int,
        epsilon: float,
    ) -> None:
        _check_inputs(nodes, shard_ids, replicas, epsilon)
        self.nodes = sorted(nodes, key=lambda node: node.node_id)
        self.node_ids = [node.node_id for node in self.nodes]
        self.by_id = {node.node_id: node for node in self.nodes}
        self.dc_of = {node.node_id: node.dc for node in self.nodes}
        self.zone_of = {node.node_id: (node.dc, node.zone) for node in self.nodes}
        self.shards = sorted(shard_ids)
        self.width = min(replicas, len(self.nodes))
        self.dc_quota = min(self.width, len({node.dc for node in self.nodes}))
        self.score = _scorer(self.nodes)
        self.uniform = len({node.weight for node in self.nodes}) == 1
        self.slots: dict[int, list[int | None]] = {}
        self.load = dict.fromkeys(self.node_ids, 0)
        self.held: dict[int, set[int]] = {node: set() for node in self.node_ids}
        self.evicted: dict[tuple[int, int], int] = {}
        """(shard, slot) -> the node the keep pass took out of that slot."""
        self.fresh: set[tuple[int, int]] = set()
        """(shard, node) replicas placed by this call: moving them again is free."""
        self.counters = dict.fromkeys(
            ["kept", "dropped", "shed", "filled", "stolen", "swapped", "cap_overflows"], 0
        )
        self._ranked: dict[int, list[int]] = {}
        self._hopeless: set[frozenset[str]] = set()
        """DC sets for which a DC-spreading augmenting path was not found."""
        slack = Fraction(epsilon).limit_denominator(1_000_000)
        shard_count = len(self.shards)
        self.cap, self.tight, self.lower, self.target = {}, {}, {}, {}
        for node_id, fair in fair_shares(self.nodes, shard_count, self.width).items():
            self.cap[node_id] = min(shard_count, math.ceil((1 + slack) * fair))
            self.tight[node_id] = min(shard_count, math.ceil(fair))
            self.lower[node_id] = max(0, math.floor((1 - slack) * fair))
            self.target[node_id] = math.floor(fair)
        assert sum(self.cap.values()) >= shard_count * self.width

    def ranked(self, shard: int) -> list[int]:
        """Nodes in the shard's rendezvous order, best first (cached)."""
        order = self._ranked.get(shard)
        if order is None:
            score = self.score
            order = sorted(self.node_ids, key=lambda node: score(shard, node), reverse=True)
            self._ranked[shard] = order
        return order

    def keep(self, previous: Mapping[int, tuple[int, ...]]) -> None:
        """Pass 1: keep previous replicas on active nodes, within the DC rule."""
        duplicates_allowed = self.width - self.dc_quota
        for shard in self.shards:
            before = previous.get(shard, ())
            slots: list[int | None] = []
            seen_dcs: set[str] = set()
            duplicates = 0
            for node in before:
                if len(slots) == self.width:
                    self.counters["dropped"] += 1
                    continue
                keep = node in self.by_id
                if keep and self.by_id[node].dc in seen_dcs:
                    keep = duplicates < duplicates_allowed
                    duplicates += keep
                if keep:
                    seen_dcs.add(self.by_id[node].dc)
                    self.counters["kept"] += 1
                else:
                    self.counters["dropped"] += 1
                    self.evicted[(shard, len(slots))] = node
                slots.append(None)
                if keep:
                    self._assign(shard, slots, len(slots) - 1, node, fresh=False)
            slots += [None] * (self.width - len(slots))
            self.slots[shard] = slots

    def _assign(
        self, shard: int, slots: list[int | None], index: int, node: int, fresh: bool = True
    ) -> None:
        assert slots[index] is None
        assert shard not in self.held[node]
        slots[index] = node
        self.held[node].add(shard)
        self.load[node] += 1
        if fresh:
            self.fresh.add((shard, node))

    def _vacate(self, shard: int, slots: list[int | None], node: int) -> int:
        index = slots.index(node)
        slots[index] = None
        self.held[node].remove(shard)
        self.load[node] -= 1
        self.fresh.discard((shard, node))
        return index

    def shed(self) -> None:
        """Pass 2: a node above its cap gives up the replicas it ranks lowest."""
        for node in self.node_ids:
            excess = self.load[node] - self.cap[node]
            if excess <= 0:
                continue
            # Lowest-ranked first, but spare shards that already lost a replica.
            worst_first = sorted(
                self.held[node],
                key=lambda shard: (None in self.slots[shard], self.score(shard, node)),
            )
            for shard in worst_first[:excess]:
                self._vacate(shard, self.slots[shard], node)
                self.counters["shed"] += 1
            assert self.load[node] == self.cap[node]

    def fill(self) -> None:
        """Pass 3: bounded-load consistent hashing for every empty slot."""
        for shard in self.shards:
            slots = self.slots[shard]
            for index, node in enumerate(slots):
                if node is None:
                    evicted = self.evicted.get((shard, index))
                    chosen = self._choose(shard, slots, evicted)
                    self._assign(shard, slots, index, chosen, fresh=chosen != evicted)
                    self.counters["filled"] += 1

    def _choose(self, shard: int, slots: list[int | None], evicted: int | None) -> int:
        holders = [node for node in slots if node is not None]
        used_dcs = {self.by_id[node].dc for node in holders}
        used_zones = {(self.by_id[node].dc, self.by_id[node].zone) for node in holders}
        need_new_dc = len(used_dcs) < self.dc_quota
        best, best_level = -1, _LEVEL_SAME_DC * 2
        load, cap, tight = self.load, self.cap, self.tight
        for node in self.ranked(shard):
            if load[node] >= cap[node] or node in holders:
                continue
            info = self.by_id[node]
            level = _LEVEL_SAME_DC if need_new_dc and info.dc in used_dcs else 0
            if (info.dc, info.zone) in used_zones:
                level += _LEVEL_SAME_ZONE
            if load[node] >= tight[node]:
                level += _LEVEL_ABOVE_TIGHT
            if level < best_level:
                best, best_level = node, level
                if level == 0:
                    break
        # The keep pass took `evicted` out (DC rule); unless another node adds
        # a DC the shard lacks, put it back rather than move the replica.
        if (
            evicted is not None
            and evicted in self.by_id
            and evicted not in holders
            and load[evicted] < cap[evicted]
            and (best < 0 or best_level >= _LEVEL_SAME_DC)
        ):
            return evicted
        if best < 0 or best_level >= _LEVEL_SAME_DC:
            avoid = frozenset(used_dcs if need_new_dc else ())
            freed = -1
            if avoid not in self._hopeless:
                freed = self._make_room(shard, holders, avoid, True)
                if freed < 0:
                    self._hopeless.add(avoid)  # loads only grow: do not search again
            if freed < 0 and best < 0:
                freed = self._make_room(shard, holders, frozenset(), False)
            best = freed if freed >= 0 else best
        if best < 0:
            # No swap frees a node either (tiny clusters): overflow the bound
            # onto the least loaded node.
            self.counters["cap_overflows"] += 1
            spare = [node for node in self.node_ids if node not in holders]
            assert spare, f"shard {shard}: no node left to hold a replica"
            best = min(spare, key=lambda node: (load[node] * 1.0 / self.by_id[node].weight, node))
        return best

    def _make_room(
        self, shard: int, holders: list[int], avoid_dcs: frozenset[str], strict: bool
    ) -> int:
        """No acceptable node is below cap: free one along an augmenting path.

        Breadth-first from the non-holders of `shard` (outside `avoid_dcs`):
        node x may pass one of its shards t to a node y that does not hold t
        (if `strict`, only when t keeps its DC and zone spread); the first y
        below cap ends the path, every hand-over along it is applied, and the
        path's first node has room for `shard`. Returns it, or -1. Without
        `strict` a path exists whenever the caps admit any placement; the
        search gives up after `augmenting_path_steps_max` steps.
        """
        starts = [x for x in self.ranked(shard) if x not in holders]
        starts = [x for x in starts if self.by_id[x].dc not in avoid_dcs]
        parent: dict[int, tuple[int, int] | None] = dict.fromkeys(starts)
        queue = deque(starts)
        steps = 0
        while queue:
            x = queue.popleft()
            for other in sorted(self.held[x]):
                other_slots = self.slots[other]
                steps += len(self.node_ids)
                if steps > augmenting_path_steps_max:
                    return -1
                for y in self.node_ids:
                    if y in parent or y in other_slots:
                        continue
                    if strict and not self._keeps_diversity(other_slots, x, y):
                        continue
                    parent[y] = (x, other)
                    if self.load[y] < self.cap[y]:
                        return self._augment(parent, y)
                    queue.append(y)
        return -1

    def _augment(self, parent: dict[int, tuple[int, int] | None], end: int) -> int:
        node = end
        step = parent[node]
        while step is not None:
            previous, moved = step
            slots = self.slots[moved]
            self._assign(moved, slots, self._vacate(moved, slots, previous), node)
            self.counters["swapped"] += 1
            node, step = previous, parent[previous]
        return node

    def _keeps_diversity(self, slots: list[int | None], holder: int, taker: int) -> bool:
        """Would replacing `holder` by `taker` keep the shard's DC and zone counts?

        The count drops exactly when the taker's DC (zone) is already used by
        another replica while the holder's DC (zone) is used by no other.
        """
        dc_of, zone_of = self.dc_of, self.zone_of
        others = [node for node in slots if node is not None and node != holder]
        other_dcs = {dc_of[node] for node in others}
        if dc_of[taker] in other_dcs and dc_of[holder] not in other_dcs:
            return False
        other_zones = {zone_of[node] for node in others}
        return not (zone_of[taker] in other_zones and zone_of[holder] not in other_zones)

    def steal(self) -> None:
        """Pass 4: nodes below their share take replicas from busier holders.

        Re-homing a replica placed by this very call costs no extra move, so
        any node below `target` may take those; only a node below `lower`
        (typically a new one) takes replicas that would otherwise have stayed.
        """
        fresh_shards = sorted({shard for shard, _ in self.fresh})
        for node in self.node_ids:
            if self.load[node] >= self.target[node]:
                continue
            starved = self.load[node] < self.lower[node]
            busiest = max(self.load.values()) if self.uniform else HASH_LIMIT
            candidates = self.shards if starved else fresh_shards
            mine = sorted(candidates, key=lambda shard: self.score(shard, node), reverse=True)
            if not starved:
                mine = mine[:balance_scan_shards_max]  # polishing only: bound the work
            for shard in mine:
                if self.load[node] >= self.target[node]:
                    break
                if self.load[node] + 2 > busiest:
                    break  # nobody is busy enough to give (unweighted case)
                slots = self.slots[shard]
                if node in slots:
                    continue
                donor = self._donor(shard, slots, node, starved)
                if donor is not None:
                    self._assign(shard, slots, self._vacate(shard, slots, donor), node)
                    self.counters["stolen"] += 1

    def _donor(self, shard: int, slots: list[int | None], taker: int, kept_too: bool) -> int | None:
        """The busiest holder that can hand `taker` its replica without loss."""
        taker_weight = self.by_id[taker].weight
        best: int | None = None
        for holder in slots:
            assert holder is not None
            if not kept_too and (shard, holder) not in self.fresh:
                continue
            holder_weight = self.by_id[holder].weight
            if self.load[holder] <= self.lower[holder]:
                continue  # never push a donor below its own lower bound
            if (self.load[holder] - 1) * taker_weight < (self.load[taker] + 1) * holder_weight:
                continue
            if not self._keeps_diversity(slots, holder, taker):
                continue
            if best is None or self._busier(holder, best, shard):
                best = holder
        return best

    def _busier(self, candidate: int, incumbent: int, shard: int) -> bool:
        """Higher load per weight; ties go to the node that ranks the shard lower."""
        left = self.load[candidate] * self.by_id[incumbent].weight
        right = self.load[incumbent] * self.by_id[candidate].weight
        if left != right:
            return left > right
        return self.score(shard, candidate) < self.score(shard, incumbent)

    def result(self) -> dict[int, tuple[int, ...]]:
        """shard -> replica node ids, every slot filled; checks the bookkeeping."""
        replicas: dict[int, tuple[int, ...]] = {}
        counted = dict.fromkeys(self.node_ids, 0)
        for shard in self.shards:
            slots = self.slots[shard]
            assert all(node is not None for node in slots), f"shard {shard} has an empty slot"
            replicas[shard] = tuple(node for node in slots if node is not None)
            assert len(set(replicas[shard])) == self.width
            for node in replicas[shard]:
                counted[node] += 1
        assert counted == self.load
        return replicas


def _scorer(nodes: Sequence[PlacementNode]) -> Callable[[int, int], float]:
    """Rendezvous score of (shard, node): higher means the shard prefers the node.

    With equal weights the raw 64-bit hash orders nodes exactly as the
    weighted key w / -ln(u) would, without floating point.
    """
    digest = xxhash.xxh3_64_intdigest
    node_bytes = {node.node_id: node.node_id.to_bytes(8, "little") for node in nodes}
    if len({node.weight for node in nodes}) <= 1:

        def plain(shard: int, node: int) -> float:
            return digest(node_bytes[node], seed=shard)

        return plain
    weight = {node.node_id: node.weight for node in nodes}
    scale = float(1 << 64) + 1.0

    def weighted(shard: int, node: int) -> float:
        unit = (digest(node_bytes[node], seed=shard) + 1.0) / scale
        return weight[node] / -math.log(unit)

    return weighted


def _check_inputs(
    nodes: Sequence[PlacementNode], shard_ids: Sequence[int], replicas: int, epsilon: float
) -> None:
    if not nodes:
        raise PlacementError("placement needs at least one node")
    if len(nodes) > nodes_max:
        raise PlacementError(f"{len(nodes)} nodes exceed nodes_max={nodes_max}")
    if len({node.node_id for node in nodes}) != len(nodes):
        raise PlacementError("node ids must be distinct")
    if len(shard_ids) > shards_max or len(set(shard_ids)) != len(shard_ids):
        raise PlacementError("shard ids must be distinct and at most shards_max")
    if not all(is_id(shard) for shard in shard_ids):
        raise PlacementError("shard ids must lie in [0, 2**63)")
    if not 1 <= replicas <= replicas_max:
        raise PlacementError(f"replicas {replicas} outside [1, {replicas_max}]")
    if not 0.0 < epsilon <= epsilon_max:
        raise PlacementError(f"epsilon {epsilon} outside (0, {epsilon_max}]")
