"""Latency histogram: a thin, typed wrapper over HdrHistogram.

Theory of operation
-------------------
Values are recorded in whole microseconds from 1 us to 60 s with three
significant digits, so any percentile is within 0.1% of the true value and
memory is fixed whatever the run length. Values above the range are clamped
to the top (and remain visible as the maximum). Worker processes ship their
histogram as HdrHistogram's compressed encoding; the parent adds them up with
`add_encoded`, which is exact: merging is counting, not averaging
percentiles. Readings are returned in milliseconds rounded to microseconds.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3


class LatencyHistogram:
    def __init__(self) -> None:
        self._h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def record(self, micros: int, count: int = 1) -> None:
        assert count >= 1
        value = min(max(int(micros), LOWEST_US), HIGHEST_US)
        ok = self._h.record_value(value, count)
        assert ok, value

    def encode(self) -> bytes:
        if self.count == 0:
            return b""
        encoded = self._h.encode()
        return encoded if isinstance(encoded, bytes) else bytes(encoded)

    def add_encoded(self, encoded: bytes) -> None:
        if encoded:
            self._h.decode_and_add(encoded)

    def percentile_ms(self, percentile: float) -> float:
        assert 0.0 <= percentile <= 100.0
        if self.count == 0:
            return 0.0
        return round(self._h.get_value_at_percentile(percentile) / 1000.0, 3)

    def max_ms(self) -> float:
        return round(self._h.get_max_value() / 1000.0, 3) if self.count else 0.0

    def mean_ms(self) -> float:
        return round(self._h.get_mean_value() / 1000.0, 3) if self.count else 0.0
