"""The run's trace: a digest of every notable event, and optionally its text.

Theory of operation
-------------------
Every notable event (faults, role changes, client outcomes, membership
changes, phase changes) goes through `Trace.event`, which feeds a BLAKE2b
digest; two runs of the same seed must end with the same `hexdigest()`.
Only when the trace is enabled (`ringbolt sim --seed N --trace`) are lines
kept, and only then are per-message deliveries described (`detail`), which
is what keeps the common case fast. Kept lines are bounded.
"""

from __future__ import annotations

import hashlib

trace_lines_max = 2_000_000


class Trace:
    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.lines: list[str] = []
        self._digest = hashlib.blake2b(digest_size=16)
        self.dropped_lines = 0

    def event(self, now: int, text: str) -> None:
        line = f"{now:>8} {text}"
        self._digest.update(line.encode())
        self._digest.update(b"\n")
        if self.enabled:
            self._keep(line)

    def detail(self, now: int, text: str) -> None:
        """Only for enabled traces (callers check `enabled` before formatting)."""
        assert self.enabled
        self._keep(f"{now:>8}   {text}")

    def _keep(self, line: str) -> None:
        if len(self.lines) < trace_lines_max:
            self.lines.append(line)
        else:
            self.dropped_lines += 1

    def feed(self, data: bytes) -> None:
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
