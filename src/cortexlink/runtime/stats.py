"""Latency accounting: a preallocated ring of durations with percentiles, cheap to update."""

from __future__ import annotations

import numpy as np

__all__ = ["LatencyStats"]


class LatencyStats:
    """Durations (ns) kept in a fixed ring buffer, summarised in milliseconds.

    Parameters
    ----------
    capacity : int
        Most recent values kept for percentiles (default 2**20, about 17 minutes at 1 kHz).
        ``n``, ``max`` and ``n_over`` count every value ever added.

    Notes
    -----
    :meth:`add` does one array store and a few integer operations: safe on the hot path.
    """

    __slots__ = ("_buf", "_i", "n", "max_ns", "sum_ns")

    def __init__(self, capacity: int = 1 << 20) -> None:
        self._buf = np.zeros(int(capacity), np.int64)
        self._i = 0
        self.n = 0
        self.max_ns = 0
        self.sum_ns = 0

    def add(self, ns: int) -> None:
        """Record one duration in nanoseconds."""
        buf = self._buf
        buf[self._i] = ns
        self._i += 1
        if self._i == buf.size:
            self._i = 0
        self.n += 1
        self.sum_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns

    def values_ns(self) -> np.ndarray:
        """The kept values (the most recent ``capacity``), oldest first."""
        if self.n <= self._buf.size:
            return self._buf[:self.n].copy()
        return np.concatenate([self._buf[self._i:], self._buf[:self._i]])

    def summary(self) -> dict:
        """``n``, ``p50_ms``, ``p99_ms``, ``p999_ms``, ``max_ms``, ``mean_ms`` (None when empty)."""
        if self.n == 0:
            return {"n": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None, "mean_ms": None}
        v = self.values_ns()
        p50, p99, p999 = np.percentile(v, [50.0, 99.0, 99.9])
        return {"n": int(self.n), "p50_ms": float(p50) / 1e6, "p99_ms": float(p99) / 1e6,
                "p999_ms": float(p999) / 1e6, "max_ms": self.max_ns / 1e6, "mean_ms": self.sum_ns / self.n / 1e6}
