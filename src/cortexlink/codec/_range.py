"""The codec's context-modelled entropy coder: the adaptive-Rice binarisation of each residual
coded bit by bit with an adaptive binary range coder (compiled).

A residual ``u`` (mapped to >= 0) with the channel's Rice parameter ``k`` becomes the quotient
``q = u >> k`` in unary (bit ``i`` of it modelled in context ``(k, i)``) and the ``k`` low bits,
most significant first (the top three modelled in context ``(k, min(q, 2), position)``, the rest
in equiprobable groups of up to 8 bits); ``q >= 24`` escapes to
``u`` in 18 equiprobable bits. Probabilities are 11-bit, adapted by 1/32 of the error after each
bit, shared by the channels of a stream and reset at resynchronisation points. The range coder
is the carry-less-cache design of LZMA's: 32-bit range, normalised a byte at a time below 2**24;
the encoder flushes 5 bytes and the decoder starts by reading 5.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import (ESCAPE_Q, MAX_K, RAW_BITS, _choose, _predict, _residual, _rice_k, _update,
                       _working_history)

PROB_BITS = 11
PROB_ONE = 1 << PROB_BITS
ADAPT = 5
#: Low bits of ``u`` below the top ``MODELLED_LOW_BITS`` are coded as equiprobable groups of up to
#: 8 bits in one step (they are close to uniform; modelling them costs time, not bits).
MODELLED_LOW_BITS = 3
TOP = 1 << 24
#: Bytes one sample may take at worst: 40 modelled bits of about 6 bits each at the least likely
#: probability (31/2048). The encoder is first given ``TYPICAL_BYTES_PER_SAMPLE`` and, when a
#: frame needs more (returns -1), encodes it again with the worst case.
WORST_BYTES_PER_SAMPLE = 32
TYPICAL_BYTES_PER_SAMPLE = 3


def init_models() -> tuple[np.ndarray, np.ndarray]:
    """Fresh probability models: unary bits (k, i) and low bits (k, min(q, 2), position)."""
    pu = np.full((MAX_K + 1, ESCAPE_Q), PROB_ONE // 2, np.int32)
    pl = np.full((MAX_K + 1, 3, MAX_K), PROB_ONE // 2, np.int32)
    return pu, pl


@njit(cache=True, inline="always")
def _shift_low(low, cache, csize, pos, out):
    if low < 0xFF000000 or low >= 0x100000000:
        carry = low >> 32
        temp = cache
        while True:
            out[pos] = np.uint8((temp + carry) & 0xFF)
            pos += 1
            temp = 0xFF
            csize -= 1
            if csize == 0:
                break
        cache = (low >> 24) & 0xFF
    csize += 1
    low = (low & 0x00FFFFFF) << 8
    return low, cache, csize, pos


@njit(cache=True, inline="always")
def _enc_bit(low, rng, cache, csize, pos, out, probs, i, j, bit):
    p = probs[i, j]
    bound = (rng >> PROB_BITS) * p
    if bit == 0:
        rng = bound
        probs[i, j] = p + ((PROB_ONE - p) >> ADAPT)
    else:
        low += bound
        rng -= bound
        probs[i, j] = p - (p >> ADAPT)
    while rng < TOP:
        rng <<= 8
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, out)
    return low, rng, cache, csize, pos


@njit(cache=True, inline="always")
def _enc_direct(low, rng, cache, csize, pos, out, bit):
    rng >>= 1
    if bit:
        low += rng
    while rng < TOP:
        rng <<= 8
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, out)
    return low, rng, cache, csize, pos


@njit(cache=True, inline="always")
def _enc_group(low, rng, cache, csize, pos, out, value, nb):
    """``nb`` (<= 8) equiprobable bits in one step: the range split into 2**nb equal parts."""
    rng >>= nb
    low += value * rng
    while rng < TOP:
        rng <<= 8
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, out)
    return low, rng, cache, csize, pos


@njit(cache=True, nogil=True)
def encode_range(data, hist, cost, acc, pu, pl, tables, toff, out):
    """Encode ``data`` (samples x channels, int16), time-major, into ``out``; return bytes used,
    or -1 when ``out`` is too small. Prediction and value tables as
    :func:`cortexlink.codec._kernels.encode_kernel`."""
    n, nc = data.shape
    limit = out.shape[0] - 2 * WORST_BYTES_PER_SAMPLE - 8
    wh = _working_history(hist, tables, toff)
    pl2 = pl.reshape((MAX_K + 1) * 3, MAX_K)
    low = np.int64(0)
    rng = np.int64(0xFFFFFFFF)
    cache = np.int64(0)
    csize = np.int64(1)
    pos = np.int64(0)
    for t in range(n):
        for c in range(nc):
            x = np.int64(data[t, c])
            w, u, k = _residual(x, tables, toff, wh, cost, acc, c)
            q = u >> k
            if q >= ESCAPE_Q:
                for i in range(ESCAPE_Q):
                    low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, out, pu, k, i, 1)
                for j in range(RAW_BITS - 1, -1, -1):
                    low, rng, cache, csize, pos = _enc_direct(low, rng, cache, csize, pos, out, (u >> j) & 1)
            else:
                for i in range(q):
                    low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, out, pu, k, i, 1)
                low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, out, pu, k, q, 0)
                row = k * 3 + min(q, 2)
                nm = min(k, MODELLED_LOW_BITS)
                for j in range(nm):
                    low, rng, cache, csize, pos = _enc_bit(low, rng, cache, csize, pos, out, pl2, row, j,
                                                           (u >> (k - 1 - j)) & 1)
                rest = k - nm
                while rest > 0:
                    nb = min(rest, 8)
                    rest -= nb
                    low, rng, cache, csize, pos = _enc_group(low, rng, cache, csize, pos, out,
                                                             (u >> rest) & ((1 << nb) - 1), nb)
            _update(wh, hist, cost, acc, c, w, x, u)
            if pos > limit:
                return -1
    for _ in range(5):
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, out)
    return pos


@njit(cache=True, inline="always")
def _dec_start(payload, size):
    """The decoder's first state: the full range and the first 5 payload bytes in ``code``:
    ``(rng, code, pos, over)``."""
    rng = np.int64(0xFFFFFFFF)
    code = np.int64(0)
    pos = np.int64(0)
    over = np.int64(0)
    for _ in range(5):
        if pos < size:
            code = ((code << 8) | np.int64(payload[pos])) & 0xFFFFFFFF
        else:
            over += 1
        pos += 1
    return rng, code, pos, over


@njit(cache=True, inline="always")
def _dec_normalise(payload, size, rng, code, pos, over):
    """Shift bytes into ``code`` while the range is below 2**24 (past the payload's end: zeros,
    counted in ``over``)."""
    while rng < TOP:
        rng = (rng << 8) & 0xFFFFFFFF
        if pos < size:
            code = ((code << 8) | np.int64(payload[pos])) & 0xFFFFFFFF
        else:
            code = (code << 8) & 0xFFFFFFFF
            over += 1
        pos += 1
    return rng, code, pos, over


@njit(cache=True, inline="always")
def _dec_bit(payload, size, rng, code, pos, over, probs, i, j):
    p = probs[i, j]
    bound = (rng >> PROB_BITS) * p
    if code < bound:
        rng = bound
        probs[i, j] = p + ((PROB_ONE - p) >> ADAPT)
        bit = 0
    else:
        code -= bound
        rng -= bound
        probs[i, j] = p - (p >> ADAPT)
        bit = 1
    rng, code, pos, over = _dec_normalise(payload, size, rng, code, pos, over)
    return bit, rng, code, pos, over


@njit(cache=True, inline="always")
def _dec_direct(payload, size, rng, code, pos, over):
    rng >>= 1
    bit = 0
    if code >= rng:
        code -= rng
        bit = 1
    rng, code, pos, over = _dec_normalise(payload, size, rng, code, pos, over)
    return bit, rng, code, pos, over


@njit(cache=True, inline="always")
def _dec_group(payload, size, rng, code, pos, over, nb):
    rng >>= nb
    v = code // rng
    if v >= (1 << nb):
        v = (1 << nb) - 1
        over += 1
    code -= v * rng
    rng, code, pos, over = _dec_normalise(payload, size, rng, code, pos, over)
    return v, rng, code, pos, over


@njit(cache=True, nogil=True)
def decode_range(payload, out, hist, cost, acc, pu, pl, tables, toff):
    """Decode ``out.shape`` samples from ``payload``; return the payload bytes read, or -1 for a
    payload that ends early or decodes to a value out of range."""
    n, nc = out.shape
    size = payload.shape[0]
    wh = _working_history(hist, tables, toff)
    pl2 = pl.reshape((MAX_K + 1) * 3, MAX_K)
    rng, code, pos, over = _dec_start(payload, size)
    for t in range(n):
        for c in range(nc):
            k = _rice_k(acc, c)
            q = 0
            while q < ESCAPE_Q:
                bit, rng, code, pos, over = _dec_bit(payload, size, rng, code, pos, over, pu, k, q)
                if bit == 0:
                    break
                q += 1
            if q == ESCAPE_Q:
                u = np.int64(0)
                for _j in range(RAW_BITS):
                    bit, rng, code, pos, over = _dec_direct(payload, size, rng, code, pos, over)
                    u = (u << 1) | bit
            else:
                row = k * 3 + min(q, 2)
                low = np.int64(0)
                nm = min(k, MODELLED_LOW_BITS)
                for j in range(nm):
                    bit, rng, code, pos, over = _dec_bit(payload, size, rng, code, pos, over, pl2, row, j)
                    low = (low << 1) | bit
                rest = k - nm
                while rest > 0:
                    nb = min(rest, 8)
                    rest -= nb
                    v, rng, code, pos, over = _dec_group(payload, size, rng, code, pos, over, nb)
                    low = (low << nb) | v
                u = (np.int64(q) << k) | low
            if over > 0:
                return -1
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
