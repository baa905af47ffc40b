"""The codec's context-modelled entropy coder: the adaptive-Rice binarisation of each residual
coded bit by bit with an adaptive binary range coder (compiled).

A residual ``u`` (mapped to >= 0) with the channel's Rice parameter ``k`` becomes the quotient
``q = u >> k`` in unary (bit ``i`` of it modelled in context ``(k, i)``) and the ``k`` low bits,
most significant first (modelled in context ``(k, min(q, 2), position)``); ``q >= 24`` escapes to
``u`` in 18 equiprobable bits. Probabilities are 11-bit, adapted by 1/32 of the error after each
bit, shared by the channels of a stream and reset at resynchronisation points. The range coder
is the carry-less-cache design of LZMA's: 32-bit range, normalised a byte at a time below 2**24;
the encoder flushes 5 bytes and the decoder starts by reading 5.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import (ESCAPE_Q, MAX_K, RAW_BITS, _choose, _nearest, _predict, _rice_k, _update,
                       _working_history)

PROB_BITS = 11
PROB_ONE = 1 << PROB_BITS
ADAPT = 5
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
def _shift_low(st, out):
    low = st[0]
    if low < 0xFF000000 or low >= 0x100000000:
        carry = low >> 32
        temp = st[2]
        while True:
            out[st[4]] = np.uint8((temp + carry) & 0xFF)
            st[4] += 1
            temp = 0xFF
            st[3] -= 1
            if st[3] == 0:
                break
        st[2] = (low >> 24) & 0xFF
    st[3] += 1
    st[0] = (low & 0x00FFFFFF) << 8


@njit(cache=True, inline="always")
def _enc_bit(st, out, probs, i, j, bit):
    p = probs[i, j]
    bound = (st[1] >> PROB_BITS) * p
    if bit == 0:
        st[1] = bound
        probs[i, j] = p + ((PROB_ONE - p) >> ADAPT)
    else:
        st[0] += bound
        st[1] -= bound
        probs[i, j] = p - (p >> ADAPT)
    while st[1] < TOP:
        st[1] <<= 8
        _shift_low(st, out)


@njit(cache=True, inline="always")
def _enc_direct(st, out, bit):
    st[1] >>= 1
    if bit:
        st[0] += st[1]
    while st[1] < TOP:
        st[1] <<= 8
        _shift_low(st, out)


@njit(cache=True)
def encode_range(data, hist, cost, acc, pu, pl, tables, toff, out):
    """Encode ``data`` (samples x channels, int16), time-major, into ``out``; return bytes used.
    Prediction and value tables as :func:`cortexlink.codec._kernels.encode_kernel`."""
    n, nc = data.shape
    limit = out.shape[0] - 2 * WORST_BYTES_PER_SAMPLE - 8
    wh = _working_history(hist, tables, toff)
    pl2 = pl.reshape((MAX_K + 1) * 3, MAX_K)
    # st: low, range, cache, cache_size, output position
    st = np.zeros(5, np.int64)
    st[1] = 0xFFFFFFFF
    st[3] = 1
    for t in range(n):
        for c in range(nc):
            x = np.int64(data[t, c])
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
            o = _choose(cost, c)
            p = _predict(wh[c, 0], wh[c, 1], wh[c, 2], o, lo, hi)
            e = w - p
            u = (e << 1) if e >= 0 else ((-e) << 1) - 1
            k = _rice_k(acc, c)
            q = u >> k
            if q >= ESCAPE_Q:
                for i in range(ESCAPE_Q):
                    _enc_bit(st, out, pu, k, i, 1)
                for j in range(RAW_BITS - 1, -1, -1):
                    _enc_direct(st, out, (u >> j) & 1)
            else:
                for i in range(q):
                    _enc_bit(st, out, pu, k, i, 1)
                _enc_bit(st, out, pu, k, q, 0)
                row = k * 3 + min(q, 2)
                for j in range(k):
                    _enc_bit(st, out, pl2, row, j, (u >> (k - 1 - j)) & 1)
            _update(wh, hist, cost, acc, c, w, x, u)
            if st[4] > limit:
                return -1
    for _ in range(5):
        _shift_low(st, out)
    return st[4]


@njit(cache=True, inline="always")
def _next_byte(payload, ds):
    # ds: range, code, position, bytes read past the end
    if ds[2] < payload.shape[0]:
        v = np.int64(payload[ds[2]])
    else:
        v = np.int64(0)
        ds[3] += 1
    ds[2] += 1
    return v


@njit(cache=True, inline="always")
def _dec_bit(payload, ds, probs, i, j):
    p = probs[i, j]
    bound = (ds[0] >> PROB_BITS) * p
    if ds[1] < bound:
        ds[0] = bound
        probs[i, j] = p + ((PROB_ONE - p) >> ADAPT)
        bit = 0
    else:
        ds[1] -= bound
        ds[0] -= bound
        probs[i, j] = p - (p >> ADAPT)
        bit = 1
    while ds[0] < TOP:
        ds[0] = (ds[0] << 8) & 0xFFFFFFFF
        ds[1] = ((ds[1] << 8) | _next_byte(payload, ds)) & 0xFFFFFFFF
    return bit


@njit(cache=True, inline="always")
def _dec_direct(payload, ds):
    ds[0] >>= 1
    bit = 0
    if ds[1] >= ds[0]:
        ds[1] -= ds[0]
        bit = 1
    while ds[0] < TOP:
        ds[0] = (ds[0] << 8) & 0xFFFFFFFF
        ds[1] = ((ds[1] << 8) | _next_byte(payload, ds)) & 0xFFFFFFFF
    return bit


@njit(cache=True)
def decode_range(payload, out, hist, cost, acc, pu, pl, tables, toff):
    """Decode ``out.shape`` samples from ``payload``; return the payload bytes read, or -1 for a
    payload that ends early or decodes to a value out of range."""
    n, nc = out.shape
    wh = _working_history(hist, tables, toff)
    pl2 = pl.reshape((MAX_K + 1) * 3, MAX_K)
    ds = np.zeros(4, np.int64)
    ds[0] = 0xFFFFFFFF
    for _ in range(5):
        ds[1] = ((ds[1] << 8) | _next_byte(payload, ds)) & 0xFFFFFFFF
    for t in range(n):
        for c in range(nc):
            k = _rice_k(acc, c)
            q = 0
            while q < ESCAPE_Q and _dec_bit(payload, ds, pu, k, q) == 1:
                q += 1
            if q == ESCAPE_Q:
                u = np.int64(0)
                for j in range(RAW_BITS):
                    u = (u << 1) | _dec_direct(payload, ds)
            else:
                row = k * 3 + min(q, 2)
                low = np.int64(0)
                for j in range(k):
                    low = (low << 1) | _dec_bit(payload, ds, pl2, row, j)
                u = (np.int64(q) << k) | low
            if ds[3] > 0:
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
    return ds[2]
