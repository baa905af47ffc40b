"""The codec's per-sample reference loops: per-channel predictor selection and adaptive Rice coding.

The Rice coder runs the channel-parallel kernels of :mod:`cortexlink.codec._rice`, which code
exactly these kernels' stream (tested); the range coder shares the helpers here.

Encoder and decoder run the same integer arithmetic in the same order, so their states agree
bit for bit. State per channel (arrays the caller owns and carries from frame to frame):

- ``hist[c, 0:3]``: the last three samples (newest first), int32;
- ``cost[c, 0:3]``: decayed sums of |residual| of the order-1, -2 and -3 fixed predictors;
- ``acc[c, 0:2]``: the Rice statistics (sum of mapped residuals, count) of the channel.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

#: Quotients at or above this are escaped: ``ESCAPE_Q`` one-bits, a zero, then the value raw.
ESCAPE_Q = 24
#: Bits of an escaped value (mapped residuals are < 2**17 because predictions are clamped).
RAW_BITS = 18
#: Rice statistics are halved when the count reaches this (the adaptation's memory).
RESET_N = 32
#: Predictor costs decay by 1/2**COST_SHIFT per sample.
COST_SHIFT = 4
MAX_K = 16
#: Worst case bytes per sample of a payload (escape, zero, raw value) plus slack.
WORST_BITS = ESCAPE_Q + 1 + RAW_BITS


def init_state(n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fresh state (the one every resynchronisation point starts from)."""
    hist = np.zeros((n_channels, 3), np.int32)
    cost = np.zeros((n_channels, 3), np.int64)
    acc = np.zeros((n_channels, 2), np.int64)
    acc[:, 0] = 16
    acc[:, 1] = 1
    return hist, cost, acc


@njit(cache=True, inline="always")
def _predict(h0, h1, h2, order, lo, hi):
    if order == 0:
        p = h0
    elif order == 1:
        p = 2 * h0 - h1
    else:
        p = 3 * h0 - 3 * h1 + h2
    if p > hi:
        p = hi
    elif p < lo:
        p = lo
    return p


@njit(cache=True, inline="always")
def _choose(cost, c):
    best = 0
    if cost[c, 1] < cost[c, best]:
        best = 1
    if cost[c, 2] < cost[c, best]:
        best = 2
    return best


@njit(cache=True, inline="always")
def _k_of(a, n):
    """The smallest ``k <= MAX_K`` with ``n << k >= a`` (``a``: the sum of mapped residuals,
    ``n``: their count), from the operands' bit lengths — the same value as counting ``k`` up."""
    if n >= a:
        return np.int64(0)
    k = np.int64(leading_zeros(np.uint64(n))) - np.int64(leading_zeros(np.uint64(a)))
    if (n << k) < a:
        k += 1
    return min(k, MAX_K)


@njit(cache=True, inline="always")
def _rice_k(acc, c):
    """Channel ``c``'s Rice parameter from its statistics ``acc[c] = (A, N)``."""
    return _k_of(np.int64(acc[c, 0]), np.int64(acc[c, 1]))


@njit(cache=True, inline="always")
def _update(wh, hist, cost, acc, c, w, x, u):
    h0 = np.int64(wh[c, 0])
    h1 = np.int64(wh[c, 1])
    h2 = np.int64(wh[c, 2])
    for o in range(3):
        e = w - _predict(h0, h1, h2, o, -32768, 32767)
        if e < 0:
            e = -e
        cost[c, o] = cost[c, o] - (cost[c, o] >> COST_SHIFT) + e
    wh[c, 2] = wh[c, 1]
    wh[c, 1] = wh[c, 0]
    wh[c, 0] = w
    hist[c, 2] = hist[c, 1]
    hist[c, 1] = hist[c, 0]
    hist[c, 0] = x
    acc[c, 0] += u
    acc[c, 1] += 1
    if acc[c, 1] >= RESET_N:
        acc[c, 0] >>= 1
        acc[c, 1] >>= 1


@njit(cache=True, inline="always")
def _domain(toff):
    """Each channel's working domain ``lo[c]..hi[c]`` (int32): int16 values, or indices into its
    value table ``0..len - 1``."""
    nc = toff.shape[0] - 1
    lo = np.empty(nc, np.int32)
    hi = np.empty(nc, np.int32)
    for c in range(nc):
        if toff[c] == toff[c + 1]:
            lo[c] = -32768
            hi[c] = 32767
        else:
            lo[c] = 0
            hi[c] = np.int32(toff[c + 1] - toff[c] - 1)
    return lo, hi


@njit(cache=True, nogil=True)
def _nearest(tables, a, b, x):
    """Index (relative to ``a``) of the entry of the sorted ``tables[a:b]`` nearest to ``x``."""
    lo = a
    hi = b
    while lo < hi:
        mid = (lo + hi) >> 1
        if tables[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    if lo == b:
        return b - 1 - a
    if lo > a and x - tables[lo - 1] <= tables[lo] - x:
        return lo - 1 - a
    return lo - a


@njit(cache=True, inline="always")
def _residual(x, tables, toff, wh, cost, acc, c):
    """What the encoders code for sample ``x`` of channel ``c``: its value or table index ``w``,
    the zig-zag residual ``u`` of ``w`` against the channel's prediction, and the Rice parameter."""
    a = toff[c]
    b = toff[c + 1]
    if a == b:
        w = x
        lo = -32768
        hi = 32767
    else:
        w = _nearest(tables, a, b, x)
        lo = 0
        hi = b - a - 1
    e = w - _predict(wh[c, 0], wh[c, 1], wh[c, 2], _choose(cost, c), lo, hi)
    u = (e << 1) if e >= 0 else ((-e) << 1) - 1
    return w, u, _rice_k(acc, c)


@njit(cache=True, nogil=True)
def _working_history(hist, tables, toff):
    """The history in each channel's working domain: values, or indices into its value table."""
    nc = hist.shape[0]
    wh = np.empty((nc, 3), np.int64)
    for c in range(nc):
        a = toff[c]
        b = toff[c + 1]
        for j in range(3):
            wh[c, j] = hist[c, j] if a == b else _nearest(tables, a, b, hist[c, j])
    return wh


@njit(cache=True, inline="always")
def _put_rice(u, k, bitbuf, nbits, pos, out):
    """Append the Rice code of ``u`` with parameter ``k`` to the bit buffer (most significant
    first) and write its whole bytes to ``out``; return the new ``(bitbuf, nbits, pos)``.
    ``nbits < 8`` on entry and on return."""
    q = u >> k
    if q < ESCAPE_Q:
        # q ones, a zero, then k low bits: at most 24 + 1 + 16 bits, fits with < 8 pending
        code = ((np.uint64(1) << np.uint64(q)) - np.uint64(1)) << np.uint64(1)
        code = (code << np.uint64(k)) | np.uint64(u & ((1 << k) - 1))
        bitbuf = (bitbuf << np.uint64(q + 1 + k)) | code
        nbits += q + 1 + k
    else:
        code = ((np.uint64(1) << np.uint64(ESCAPE_Q)) - np.uint64(1)) << np.uint64(1)
        bitbuf = (bitbuf << np.uint64(ESCAPE_Q + 1)) | code
        nbits += ESCAPE_Q + 1
        while nbits >= 8:
            nbits -= 8
            out[pos] = np.uint8((bitbuf >> np.uint64(nbits)) & np.uint64(0xFF))
            pos += 1
        bitbuf = (bitbuf << np.uint64(RAW_BITS)) | np.uint64(u)
        nbits += RAW_BITS
    while nbits >= 8:
        nbits -= 8
        out[pos] = np.uint8((bitbuf >> np.uint64(nbits)) & np.uint64(0xFF))
        pos += 1
    return bitbuf, nbits, pos


@njit(cache=True, nogil=True)
def encode_kernel(data, hist, cost, acc, tables, toff, out):
    """Encode ``data`` (samples x channels, int16), time-major, into ``out``; return bytes used.

    Channel ``c`` with a value table (``tables[toff[c]:toff[c+1]]``, sorted, holding every value
    of the channel in ``data``) is coded as indices into it; the others as values."""
    n, nc = data.shape
    wh = _working_history(hist, tables, toff)
    pos = 0
    bitbuf = np.uint64(0)
    nbits = 0
    for t in range(n):
        for c in range(nc):
            x = np.int64(data[t, c])
            w, u, k = _residual(x, tables, toff, wh, cost, acc, c)
            bitbuf, nbits, pos = _put_rice(u, k, bitbuf, nbits, pos, out)
            _update(wh, hist, cost, acc, c, w, x, u)
    if nbits > 0:
        out[pos] = np.uint8((bitbuf << np.uint64(8 - nbits)) & np.uint64(0xFF))
        pos += 1
    return pos


@njit(cache=True, nogil=True)
def decode_kernel(payload, out, hist, cost, acc, tables, toff):
    """Decode ``out.shape`` samples from ``payload`` into ``out`` (int16, samples x channels).

    Returns the number of payload bytes read, or -1 if the payload ends early or holds a value
    out of range (a corrupt frame that passed its CRC by chance)."""
    n, nc = out.shape
    size = payload.shape[0]
    wh = _working_history(hist, tables, toff)
    pos = 0
    bitbuf = np.uint64(0)
    nbits = 0
    for t in range(n):
        for c in range(nc):
            # unary quotient
            q = 0
            while True:
                if nbits == 0:
                    if pos >= size:
                        return -1
                    bitbuf = np.uint64(payload[pos])
                    pos += 1
                    nbits = 8
                nbits -= 1
                if (bitbuf >> np.uint64(nbits)) & np.uint64(1):
                    q += 1
                    if q > ESCAPE_Q:
                        return -1
                else:
                    break
            k = _rice_k(acc, c)
            width = RAW_BITS if q == ESCAPE_Q else k
            while nbits < width:
                if pos >= size:
                    return -1
                bitbuf = ((bitbuf & ((np.uint64(1) << np.uint64(nbits)) - np.uint64(1))) << np.uint64(8)) \
                    | np.uint64(payload[pos])
                pos += 1
                nbits += 8
            nbits -= width
            low = np.int64((bitbuf >> np.uint64(nbits)) & ((np.uint64(1) << np.uint64(width)) - np.uint64(1)))
            bitbuf = bitbuf & ((np.uint64(1) << np.uint64(nbits)) - np.uint64(1))
            u = low if q == ESCAPE_Q else (np.int64(q) << k) | low
            e = (u >> 1) if (u & 1) == 0 else -((u + 1) >> 1)
            a = toff[c]
            b = toff[c + 1]
            if a == b:
                lo = -32768
                hi = 32767
            else:
                lo = 0
                hi = b - a - 1
            o = _choose(cost, c)
            w = _predict(wh[c, 0], wh[c, 1], wh[c, 2], o, lo, hi) + e
            if w < lo or w > hi:
                return -1
            x = w if a == b else np.int64(tables[a + w])
            out[t, c] = x
            _update(wh, hist, cost, acc, c, w, x, u)
    return pos
