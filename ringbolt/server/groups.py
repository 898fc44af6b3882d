"""Reserved group ids and keys shared by the node's components (a leaf module).

The meta group holds the cluster map under `MAP_KEY` (membership.py); shard
ids stay far below `META_GROUP_ID` (splits take the next free id below it).
"""

from __future__ import annotations

META_GROUP_ID = 1_000_000
"""Shard ids stay far below it (splits take the next free id)."""
MAP_KEY = b"ringbolt:cluster-map"
SHARD_ID_KEY = b"ringbolt:shard-id-high-water"
