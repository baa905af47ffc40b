"""The codec's strongest mode: adaptive LMS prediction and a fully modelled binary range coder
(compiled).

Per channel, in the working domain (values, or indices into the channel's value table):

- Prediction: the last sample plus a sign-sign LMS filter of ``LMS_ORDER`` taps over the last
  first differences ``d`` (``d[n] = w[n] - w[n-1]``): ``P = sum(lw[j] * hd[j])`` in Q16 fixed
  point, the prediction ``w[n-1] + ((P + 2**15) >> 16)`` clamped to the domain. After each
  sample every weight moves by ``LMS_MU`` (Q16) in the direction ``sign(d - P/2**16) *
  sign(hd[j])``. A last tap holds the sample's distance from its running mean (so the filter
  can pull a wandering trace back). Sign-sign adaptation minimises the mean absolute error, so the rare large
  residuals of spikes do not drag the weights as they would a least-squares fit.
- Binarisation of the residual ``e``: a zero flag; for ``e != 0`` its sign, then ``m = |e|`` as
  the bit length ``nb = floor(log2 m)`` in unary (``nb`` ones then a zero, at most 16 bits),
  then the ``nb`` bits below ``m``'s leading one, most significant first: the top
  ``MODELLED_BITS`` modelled in the context of ``nb`` and the bits above them, the rest
  equiprobable (the range split in equal parts, up to 8 bits at a time).
- Every modelled bit has a 16-bit probability and a count; the probability moves toward the bit
  by ``1 / (count + 2)`` until the count reaches ``RATE_LIMIT``, then by ``1 / RATE_LIMIT``
  (fast learning at first, then a long memory). Models are shared by the stream's channels and
  selected by the channel's scale: the bit length of its running mean ``|e|`` (sum and count
  halved when the count reaches ``MAG_N``), so channels with different noise levels keep apart.
- The range coder is the LZMA design of :mod:`cortexlink.codec._range` (32-bit range,
  byte-wise carry-less normalisation, 5 flush bytes), with 16-bit probabilities.

All arithmetic is integer and identical in encoder and decoder.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

from ._kernels import _working_history
from ._range import TOP, _dec_group, _dec_normalise, _dec_start, _enc_group, _shift_low

LMS_ORDER = 16
#: The LMS step in Q16 (~0.0005).
LMS_MU = 32
#: Weights are held within +-W_LIMIT (Q16: +-256), so no stream, however long, overflows them.
W_LIMIT = np.int32(1 << 24)
#: The level tap's running mean forgets by 1/2**MEAN_SHIFT per sample.
MEAN_SHIFT = 5
MODELLED_BITS = 3
RATE_LIMIT = 4096
MAG_N = 256
#: Contexts (the channel's scale class) and nodes per context: zero flag, sign, 16 unary bits,
#: then 8 mantissa nodes per bit length 0..15.
N_CTX = 18
N_NODES = 18 + 16 * 8
#: Bytes a sample may take at worst (about 35 modelled bits at the least likely probability).
WORST_BYTES_PER_SAMPLE = 48
TYPICAL_BYTES_PER_SAMPLE = 3
#: Probabilities are kept with 22 bits (so slow adaptation still moves them) and coded with 16.
P_BITS = 22
P_ONE = 1 << P_BITS
P_MIN = 1 << (P_BITS - 11)
_RECIP = np.array([65536 // (n + 2) for n in range(RATE_LIMIT)] + [65536 // RATE_LIMIT], np.int64)


def init_lms_state(n_channels: int) -> tuple:
    """Fresh per-channel LMS state and shared models (as at a resynchronisation point):
    ``(hd, lw, mag, prob, count)``; ``mag[c]`` = (sum of |e|, count, running mean of ``w`` in Q8,
    whether the mean has started)."""
    hd = np.zeros((n_channels, LMS_ORDER + 1), np.int32)
    lw = np.zeros((n_channels, LMS_ORDER + 1), np.int32)
    mag = np.zeros((n_channels, 4), np.int64)
    mag[:, 0] = 4
    mag[:, 1] = 1
    prob = np.full((N_CTX, N_NODES), P_ONE // 2, np.int64)
    count = np.zeros((N_CTX, N_NODES), np.int64)
    return hd, lw, mag, prob, count


@njit(cache=True, inline="always")
def _context(mag, c):
    """The channel's scale class: the bit length of its mean ``|e|``, at most ``N_CTX - 1``."""
    m = mag[c, 0] // mag[c, 1]
    if m <= 0:
        return 0
    return min(64 - np.int64(leading_zeros(np.uint64(m))), N_CTX - 1)


@njit(cache=True, inline="always")
def _lms_sum(hd, lw, c):
    s = np.int64(0)
    for j in range(LMS_ORDER + 1):
        s += np.int64(lw[c, j]) * np.int64(hd[c, j])
    return s


@njit(cache=True, inline="always")
def _lms_update(hd, lw, mag, c, d, s, e, w):
    err = (d << 16) - s
    if err != 0:
        step = np.int32(LMS_MU if err > 0 else -LMS_MU)
        for j in range(LMS_ORDER + 1):
            h = hd[c, j]
            v = lw[c, j] + step * (np.int32(h > 0) - np.int32(h < 0))
            lw[c, j] = min(max(v, -W_LIMIT), W_LIMIT)
    for j in range(LMS_ORDER - 1, 0, -1):
        hd[c, j] = hd[c, j - 1]
    hd[c, 0] = d
    # the level tap: the sample against its running mean (Q8, 1/2**MEAN_SHIFT per sample)
    if mag[c, 3] == 0:
        mag[c, 2] = w << 8
        mag[c, 3] = 1
    else:
        mag[c, 2] += ((w << 8) - mag[c, 2]) >> MEAN_SHIFT
    hd[c, LMS_ORDER] = ((w << 8) - mag[c, 2]) >> 8
    mag[c, 0] += e if e >= 0 else -e
    mag[c, 1] += 1
    if mag[c, 1] >= MAG_N:
        mag[c, 0] >>= 1
        mag[c, 1] >>= 1


@njit(cache=True, inline="always")
def _adapt(prob, count, i, j, bit):
    p = prob[i, j]
    n = count[i, j]
    r = _RECIP[n]
    if bit:
        p += ((P_ONE - p) * r) >> 16
    else:
        p -= (p * r) >> 16
    if p < P_MIN:
        p = P_MIN
    elif p > P_ONE - P_MIN:
        p = P_ONE - P_MIN
    prob[i, j] = p
    if n < RATE_LIMIT:
        count[i, j] = n + 1


@njit(cache=True, inline="always")
def _enc16(low, rng, cache, csize, pos, out, prob, count, i, j, bit):
    bound = (rng >> 16) * ((P_ONE - prob[i, j]) >> (P_BITS - 16))
    if bit == 0:
        rng = bound
    else:
        low += bound
        rng -= bound
    _adapt(prob, count, i, j, bit)
    while rng < TOP:
        rng <<= 8
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, out)
    return low, rng, cache, csize, pos


@njit(cache=True, inline="always")
def _dec16(payload, size, rng, code, pos, over, prob, count, i, j):
    bound = (rng >> 16) * ((P_ONE - prob[i, j]) >> (P_BITS - 16))
    if code < bound:
        rng = bound
        bit = 0
    else:
        code -= bound
        rng -= bound
        bit = 1
    _adapt(prob, count, i, j, bit)
    rng, code, pos, over = _dec_normalise(payload, size, rng, code, pos, over)
    return bit, rng, code, pos, over


@njit(cache=True, inline="always")
def _domain(tables, toff, c):
    a = toff[c]
    b = toff[c + 1]
    if a == b:
        return a, b, np.int64(-32768), np.int64(32767)
    return a, b, np.int64(0), np.int64(b - a - 1)


@njit(cache=True, inline="always")
def _prediction(wh, hd, lw, c, lo, hi):
    s = _lms_sum(hd, lw, c)
    p = wh[c, 0] + ((s + 32768) >> 16)
    if p > hi:
        p = hi
    elif p < lo:
        p = lo
    return p, s


@njit(cache=True, nogil=True)
def encode_lms(data, hist, hd, lw, mag, prob, count, tables, toff, out):
    """Encode ``data`` (samples x channels, int16), time-major, into ``out``; return bytes used,
    or -1 when ``out`` is too small. Value tables as :func:`cortexlink.codec._kernels.encode_kernel`;
    every channel's table must hold every value it has in ``data``."""
    n, nc = data.shape
    limit = out.shape[0] - 2 * WORST_BYTES_PER_SAMPLE - 8
    wh = _working_history(hist, tables, toff)
    low = np.int64(0)
    rng = np.int64(0xFFFFFFFF)
    cache = np.int64(0)
    csize = np.int64(1)
    pos = np.int64(0)
    for t in range(n):
        for c in range(nc):
            x = np.int64(data[t, c])
            a, b, lo, hi = _domain(tables, toff, c)
            if a == b:
                w = x
            else:
                w = np.int64(np.searchsorted(tables[a:b], x))
            p, s = _prediction(wh, hd, lw, c, lo, hi)
            e = w - p
            k = _context(mag, c)
            low, rng, cache, csize, pos = _enc16(low, rng, cache, csize, pos, out, prob, count, k, 0,
                                                 1 if e == 0 else 0)
            if e != 0:
                low, rng, cache, csize, pos = _enc16(low, rng, cache, csize, pos, out, prob, count, k, 1,
                                                     1 if e < 0 else 0)
                m = e if e > 0 else -e
                nb = 63 - np.int64(leading_zeros(np.uint64(m)))      # floor(log2 m), m >= 1
                for i in range(nb):
                    low, rng, cache, csize, pos = _enc16(low, rng, cache, csize, pos, out, prob, count, k,
                                                         2 + i, 1)
                if nb < 16:
                    low, rng, cache, csize, pos = _enc16(low, rng, cache, csize, pos, out, prob, count, k,
                                                         2 + nb, 0)
                nm = min(nb, MODELLED_BITS)
                for j in range(nm):
                    bit = (m >> (nb - 1 - j)) & 1
                    node = 18 + nb * 8 + ((1 << j) | ((m >> (nb - j)) & ((1 << j) - 1)))
                    low, rng, cache, csize, pos = _enc16(low, rng, cache, csize, pos, out, prob, count, k,
                                                         node, bit)
                rest = nb - nm
                while rest > 0:
                    g = min(rest, 8)
                    rest -= g
                    low, rng, cache, csize, pos = _enc_group(low, rng, cache, csize, pos, out,
                                                             (m >> rest) & ((1 << g) - 1), g)
            _lms_update(hd, lw, mag, c, w - wh[c, 0], s, e, w)
            wh[c, 0] = w
            hist[c, 0] = x
            if pos > limit:
                return -1
    for _ in range(5):
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, out)
    return pos


@njit(cache=True, nogil=True)
def decode_lms(payload, out, hist, hd, lw, mag, prob, count, tables, toff):
    """Decode ``out.shape`` samples from ``payload``; return the payload bytes read, or -1 for a
    payload that ends early or decodes to a value out of range."""
    n, nc = out.shape
    size = payload.shape[0]
    wh = _working_history(hist, tables, toff)
    rng, code, pos, over = _dec_start(payload, size)
    for t in range(n):
        for c in range(nc):
            a, b, lo, hi = _domain(tables, toff, c)
            p, s = _prediction(wh, hd, lw, c, lo, hi)
            k = _context(mag, c)
            z, rng, code, pos, over = _dec16(payload, size, rng, code, pos, over, prob, count, k, 0)
            e = np.int64(0)
            if z == 0:
                neg, rng, code, pos, over = _dec16(payload, size, rng, code, pos, over, prob, count, k, 1)
                nb = 0
                while nb < 16:
                    bit, rng, code, pos, over = _dec16(payload, size, rng, code, pos, over, prob, count, k,
                                                       2 + nb)
                    if bit == 0:
                        break
                    nb += 1
                m = np.int64(1)
                nm = min(nb, MODELLED_BITS)
                for j in range(nm):
                    node = 18 + nb * 8 + ((1 << j) | (m & ((1 << j) - 1)))
                    bit, rng, code, pos, over = _dec16(payload, size, rng, code, pos, over, prob, count, k,
                                                       node)
                    m = (m << 1) | bit
                rest = nb - nm
                while rest > 0:
                    g = min(rest, 8)
                    rest -= g
                    v, rng, code, pos, over = _dec_group(payload, size, rng, code, pos, over, g)
                    m = (m << g) | v
                e = -m if neg else m
            if over > 0:
                return -1
            w = p + e
            if w < lo or w > hi:
                return -1
            x = w if a == b else np.int64(tables[a + w])
            out[t, c] = x
            _lms_update(hd, lw, mag, c, w - wh[c, 0], s, e, w)
            wh[c, 0] = w
            hist[c, 0] = x
    return pos
