"""Limits of the sharding layer. Units last in every name; relationships asserted below.

They bound what a cluster map may describe (and so what a decoded map from a
peer or a file may make us allocate), and the knobs of placement.
"""

from __future__ import annotations

HASH_SPACE = 1 << 64
"""Keys hash (xxh3_64) into [0, 2**64); shards own contiguous ranges of it."""

shards_max = 1 << 20
"""Shards in one ring. A million ranges keep `shard_for_key` at ~20 bisect
steps and a cluster map of a few tens of MiB; far beyond what one meta group
needs to describe."""

nodes_max = 10_000
"""Nodes in one cluster map, including draining and removed ones."""

replicas_max = 7
"""Replicas of one shard. Raft groups larger than 7 add latency and no
meaningful availability."""

replicas_default = 3

node_weight_max = 1_000
"""Integer placement weight of a node (1 = an ordinary node). A node of weight
w is meant to hold w times the replicas of a weight-1 node."""

epsilon_default = 0.10
"""Bounded-load slack: no node holds more than ceil((1 + epsilon) * its fair
share) replicas. 0.1 keeps max/mean <= 1.10 while leaving every node room
to absorb a failed peer's replicas without cascading moves."""

epsilon_max = 4.0
"""Beyond a slack of 5x the fair share there is no bound worth the name."""

balance_scan_shards_max = 1024
"""A node a little below its share (but above the lower bound) may take
replicas placed in the same planning call, which costs no extra move; it looks
at its this-many most preferred shards only. This polish is optional, so it is
capped to keep a 10,000-shard, 100-node placement to about a second."""

augmenting_path_steps_max = 200_000
"""Node visits one augmenting-path search may make (about 0.1 s of Python).
Paths are needed only when caps are nearly exhausted; in tiny clusters they
are short, and in large ones a failed search must not cost minutes."""

label_chars_max = 64
"""Length of a `dc` or `zone` label."""

address_chars_max = 256
"""Length of a "host:port" address string in the cluster map."""

map_bytes_max = 64 * 1024 * 1024
"""Largest encoded cluster map `clustermap.decode` accepts."""

split_width_min = 2
"""A shard range narrower than this cannot be split (both halves non-empty)."""

assert shards_max < HASH_SPACE // split_width_min
assert 1 <= replicas_default <= replicas_max
assert 0.0 < epsilon_default <= epsilon_max
assert nodes_max * node_weight_max < HASH_SPACE
