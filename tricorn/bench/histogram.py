"""A latency histogram with bounded relative error, cheap to record into and to merge.

Log-linear buckets (the HdrHistogram idea): values below 2**(PRECISION+1) have a bucket each; above,
every power of two is split into 2**PRECISION buckets. A value is therefore known to within
2**-PRECISION of itself (0.8% with PRECISION 7), reported from the middle of its bucket (0.4%).
Values are integers, in microseconds here; 2,700 buckets reach past 100 seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PRECISION = 7
_SUB = 1 << PRECISION
_EXACT = 1 << (PRECISION + 1)


def bucket_of(value: int) -> int:
    if value < _EXACT:
        return max(0, value)
    shift = value.bit_length() - PRECISION - 1
    return (shift << PRECISION) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The values [low, high) that fall in bucket `index`."""
    if index < _EXACT:
        return index, index + 1
    shift = (index >> PRECISION) - 1
    low = ((index & (_SUB - 1)) + _SUB) << shift
    return low, low + (1 << shift)


class Histogram:
    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0  # the exact sum, for the mean
        self.max = 0
        self.min = 0

    def record(self, value: int) -> None:
        index = value if value < _EXACT else bucket_of(value)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        if not self.count or value < self.min:
            self.min = value
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        if other.count and (not self.count or other.min < self.min):
            self.min = other.min
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float:
        """The value at or below which p percent of the recorded values lie (0 when empty)."""
        if not self.count:
            return 0.0
        if p >= 100:
            return float(self.max)
        rank = p / 100 * self.count
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                low, high = bucket_bounds(index)
                return min(float(self.max), max(float(self.min), (low + high - 1) / 2))
        return float(self.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"counts": {str(k): v for k, v in sorted(self.counts.items())}, "count": self.count,
                "total": self.total, "max": self.max, "min": self.min}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Histogram:
        histogram = cls()
        counts = data["counts"]
        assert isinstance(counts, Mapping)
        histogram.counts = {int(k): int(v) for k, v in counts.items()}
        for name in ("count", "total", "max", "min"):
            value = data[name]
            assert isinstance(value, int)
            setattr(histogram, name, value)
        return histogram

    @classmethod
    def of(cls, values: Iterable[int]) -> Histogram:
        histogram = cls()
        for value in values:
            histogram.record(value)
        return histogram
