"""Everything one simulated run depends on, drawn from its seed.

Theory of operation
-------------------
A run is fully determined by `(seed, nodes, allowed fault kinds, mutation)`.
`draw_params` turns the seed into a `SimParams` using the run's one
`random.Random(seed)`: which of the allowed fault kinds are switched on for
this seed (swarm testing: a seed that never crashes a node explores message
loss more deeply, and vice versa), their rates, the message delays, the Raft
timeouts, the client mix and the phase lengths. The runner prints these
first, so a trace can be read knowing exactly what was in play.

Time is counted in *units*; one Raft tick is `TICK_UNITS` units, so network
and disk latencies can be shorter than a tick.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

TICK_UNITS = 10
"""Virtual time units per Raft tick."""

FAULT_KINDS: tuple[str, ...] = (
    "loss",
    "duplicate",
    "reorder",
    "partition",
    "one_way",
    "crash",
    "slow_disk",
    "membership",
    "transfer",
    "compaction",
)
"""Every fault kind `--faults` may name. Variable message delay is always on."""

MUTATIONS: tuple[str, ...] = ("commit_old_terms", "vote_without_log_check", "read_without_read_index")
"""The test-only `RaftConfig.unsafe` switches the simulator can turn on."""

fault_phase_ticks_min = 500
fault_phase_ticks_max = 1500
liveness_budget_ticks = 400
"""After healing, a leader must be elected and a fresh proposal committed
within this many ticks (20+ election timeouts with the slowest timeout)."""
clients_max = 5
keys_max = 3


def parse_faults(text: str) -> frozenset[str]:
    """`all`, `none`, or a comma list of fault kinds."""
    text = text.strip()
    if text == "all":
        return frozenset(FAULT_KINDS)
    if text in ("none", ""):
        return frozenset()
    kinds = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = kinds - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    return kinds


@dataclass(frozen=True, slots=True, kw_only=True)
class SimParams:
    seed: int
    nodes: int
    faults: frozenset[str]
    mutation: str | None
    election_timeout_ticks: int
    heartbeat_ticks: int
    entries_per_msg_max: int
    """Small batches split a new leader's catch-up from its first entry, which
    is what exposes commit-rule bugs (Raft figure 8)."""
    inflight_msgs_max: int
    delay_min_units: int
    delay_max_units: int
    loss_per_mille: int
    duplicate_per_mille: int
    partition_per_mille: int
    """Chance per tick that a partition starts (when none is active)."""
    partition_ticks_max: int
    leader_isolation_per_mille: int
    """Chance that a newly elected leader is cut off a moment after winning."""
    one_way_per_mille: int
    crash_per_mille: int
    """Chance per tick that one node crashes."""
    down_ticks_max: int
    slow_disk_per_mille: int
    disk_delay_max_units: int
    membership_per_mille: int
    transfer_per_mille: int
    compaction_entries: int
    """A node compacts once it has applied this many entries past its snapshot
    (0 = never)."""
    clients: int
    keys: int
    client_timeout_ticks: int
    client_think_ticks_max: int
    fault_phase_ticks: int

    def describe(self) -> list[str]:
        lines = []
        for name, value in asdict(self).items():
            if isinstance(value, frozenset):
                value = ",".join(sorted(value)) or "-"
            lines.append(f"  {name} = {value}")
        return lines


def draw_params(rng: random.Random, *, seed: int, nodes: int, allowed: frozenset[str],
                mutation: str | None = None) -> SimParams:
    """Draw every parameter of one run. Each allowed fault kind is on with
    probability 3/4 (swarm testing); rates are drawn per seed."""
    assert nodes >= 1
    assert allowed <= set(FAULT_KINDS)
    assert mutation is None or mutation in MUTATIONS
    enabled = frozenset(kind for kind in FAULT_KINDS if kind in allowed and rng.random() < 0.75)

    def rate(kind: str, low: int, high: int) -> int:
        return rng.randint(low, high) if kind in enabled else 0

    delay_min = rng.randint(1, 3)
    delay_max = delay_min + (rng.randint(10, 40) if "reorder" in enabled else rng.randint(0, 4))
    election_timeout = rng.choice((10, 10, 15, 20))
    return SimParams(
        seed=seed,
        nodes=nodes,
        faults=enabled,
        mutation=mutation,
        election_timeout_ticks=election_timeout,
        heartbeat_ticks=rng.choice((1, 2, 3)),
        entries_per_msg_max=rng.choice((1, 1, 2, 3, 16, 4096)),
        inflight_msgs_max=rng.choice((1, 2, 8, 256)),
        delay_min_units=delay_min,
        delay_max_units=delay_max,
        loss_per_mille=rate("loss", 5, 150),
        duplicate_per_mille=rate("duplicate", 5, 100),
        partition_per_mille=rate("partition", 5, 40),
        partition_ticks_max=rng.randint(20, 200),
        leader_isolation_per_mille=rng.choice((0, 250, 500, 900)) if "partition" in enabled else 0,
        one_way_per_mille=rate("one_way", 5, 30),
        crash_per_mille=rate("crash", 3, 25),
        down_ticks_max=rng.randint(5, 150),
        slow_disk_per_mille=rate("slow_disk", 5, 50),
        disk_delay_max_units=rng.randint(5, 60),
        membership_per_mille=rate("membership", 5, 40),
        transfer_per_mille=rate("transfer", 5, 40),
        compaction_entries=rate("compaction", 5, 60),
        clients=rng.randint(2, clients_max),
        keys=rng.randint(1, keys_max),
        client_timeout_ticks=rng.randint(20, 60),
        client_think_ticks_max=rng.randint(1, 10),
        fault_phase_ticks=rng.randint(fault_phase_ticks_min, fault_phase_ticks_max),
    )
