"""Numba kernels of the decoders' streaming steps (imported lazily, when a decoder is fitted or
loaded, so ``import cortexlink`` never loads numba and no step ever waits for a compilation).

A streaming step runs once per bin (every 20 ms). Between two bins the caches have usually been
through other work, so what a step costs is mostly how much code it touches: the numpy
expression of a steady-state Kalman step is seven array calls, each through numpy's generic
machinery; one compiled loop is a few hundred bytes of machine code (measured on a 2-vCPU VM
after a 20 ms pause: ~160 µs for the numpy sequence, ~50 µs for this kernel; ~8 vs ~3 µs hot).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def kalman_steady_step(K, c, M, y, x, out):  # pragma: no cover - compiled
    """``out = K @ x + c + M @ y`` for one bin ``x`` (float32 or float64); returns False, and
    writes nothing, when ``x`` holds NaN or Inf (``x @ x`` is not finite)."""
    m, F = K.shape
    s = 0.0
    for j in range(F):
        v = np.float64(x[j])
        s += v * v
    if not np.isfinite(s):
        return False
    for i in range(m):
        acc = c[i]
        for j in range(F):
            acc += K[i, j] * x[j]
        for j in range(m):
            acc += M[i, j] * y[j]
        out[i] = acc
    return True


_warmed = False


def warm(K: np.ndarray, c: np.ndarray, M: np.ndarray) -> None:
    """Compile (or load from the cache) the kernel for float32 and float64 bins, once per
    process, so no real step pays for it (the compiled code does not depend on the shapes)."""
    global _warmed
    if _warmed:
        return
    y = np.zeros(M.shape[0])
    out = np.empty(M.shape[0])
    for dt in (np.float32, np.float64):
        kalman_steady_step(K, c, M, y, np.zeros(K.shape[1], dt), out)
    _warmed = True
