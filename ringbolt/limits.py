"""Project-wide limits. Units last in every name; relationships asserted below.

Package-specific limits live in each package's own `limits.py`; the ones here
are those a client can observe (sizes it may send) and that several layers
must agree on.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

key_bytes_max = 64 * KIB
"""Largest key accepted anywhere (RESP, client, storage). Redis allows 512 MiB;
we cap keys because they are copied into routing, WAL and LMDB B-tree pages."""

value_bytes_max = 1 * MIB
"""Largest value accepted by default (configurable per node, up to
`value_bytes_ceiling`)."""

value_bytes_ceiling = 64 * MIB
"""No configuration may raise `value_bytes_max` past this: one value must fit
comfortably in one Raft message and one WAL record."""

request_bytes_max = value_bytes_ceiling + 2 * key_bytes_max + 64 * KIB
"""Largest single RESP request a connection buffers before it is refused."""

assert key_bytes_max <= value_bytes_max <= value_bytes_ceiling
assert request_bytes_max > value_bytes_ceiling + key_bytes_max
