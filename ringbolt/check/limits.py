"""Limits of the history recorder and the linearizability checker.

Units last in every name; relationships asserted at import.
"""

from __future__ import annotations

history_line_bytes_max = 16 * 1024 * 1024
"""Longest JSON line accepted in a history file. One record holds one key and
at most two values; with the default `ringbolt.limits.value_bytes_max` (1 MiB)
and JSON escaping (up to 6 bytes per byte) a record stays under 13 MiB, so a
longer line is garbage, not a record."""

history_records_max = 20_000_000
"""Most records read from one history file (or held by one `History`): a
15-minute soak at 10,000 ops/s. The checker holds every op in memory (about
0.5 KiB each), so longer runs should be recorded as several histories."""

search_cache_entries_max = 4_000_000
"""Most configurations memoized while searching ONE key. One costs about 80
bytes (measured with tracemalloc; more when many indeterminate ops are kept),
so this bounds one key's search to roughly 0.3-1 GiB; past it the key is
reported as *unknown*, never as valid."""

explanation_ops_max = 8
"""How many ops an explanation lists (tail of the longest linearization,
concurrent ops): enough to read, short enough for a terminal."""

deadline_check_steps = 4096
"""The search consults its clock once every this many steps."""

assert history_line_bytes_max >= 13 * 1024 * 1024
assert search_cache_entries_max > 0
assert explanation_ops_max >= 1
assert deadline_check_steps & (deadline_check_steps - 1) == 0, "must be a power of two"
