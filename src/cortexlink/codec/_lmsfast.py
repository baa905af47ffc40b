"""The codec's fast LMS mode: the LMS predictor of :mod:`cortexlink.codec._lms`, channel-parallel,
and a multi-symbol range coder with adaptive frequency tables (compiled).

Prediction is ``_lms``'s, to the bit (16-tap sign-sign LMS over the last first differences plus
the level tap, Q16 weights moved by ``LMS_MU``, clamped to ``W_LIMIT``): the residuals are the
same numbers. What differs is the order of work and the entropy stage.

Order of work, per sample row (one sample of every channel): the predictions and contexts of
every channel in one pass over the channels (state held structure-of-arrays, the past differences
in a ring shared by the channels, so the compiler vectorises it); the letters, coded in two
range-coder lanes (A: even channels, B: odd channels) so that two chains of dependent steps
interleave; the equiprobable bits in channel order; then, after the row, the rebuild of any
context whose interval ran out and one vectorised pass for the weights, the ring and the
statistics.

Coding of a residual ``e``:

- Its *letter*, one of ``NSYM`` = 112: 0 for ``e == 0``; ``|e|`` for ``|e| < 16``; otherwise
  ``16 + 8 (nb - 4) + t`` with ``nb = floor(log2 |e|)`` (4..15) and ``t`` the 3 bits below the
  leading one. The letter is range-coded with the frequencies of its context.
- Then, for ``e != 0``, ``nb - 3`` low bits (when ``nb > 3``) and the sign as the least
  significant bit: ``(low << 1) | (e < 0)``, equiprobable, appended least significant first to
  one bit stream.
- Context: the channel's scale, the bit length of ``mag >> MAG_SHIFT`` (at most ``N_CTX - 1``)
  where ``mag`` is a decayed sum of ``|e|`` (``mag += |e| - (mag >> MAG_SHIFT)``, starting at
  ``MAG_START``).
- Frequencies, out of ``M = 2**PROB_BITS``: each context counts its letters, starting from
  ``PRIOR_WEIGHT`` counts of a geometric ``|e|`` of mean ``2**(k - 0.5)`` spread over the letters
  (rounded down). A context's table is rebuilt from its counts after ``FIRST_INTERVAL`` letters,
  then after twice as many each time up to ``MAX_INTERVAL`` — at the end of the row in which the
  interval ran out: the counts are halved if they sum to ``COUNT_LIMIT`` or more, every letter
  gets ``1 + floor(count * ((M - NSYM) * 2**24 // total) / 2**24)``, and what is left of ``M``
  goes to the first of the most counted letters. Encoder and decoder rebuild at the same point,
  so tables are never sent.
- The range coder (one per lane): 32-bit range and low, normalised a byte at a time below
  ``2**24``; a letter narrows the range to ``(range >> PROB_BITS) * freq`` at its cumulative
  frequency; a carry out of ``low`` is added into the bytes already written; the encoder flushes
  the 4 bytes of ``low``, the decoder starts by reading 4. The decoder divides
  ``code // (range >> PROB_BITS)`` and finds the letter from a table of the first letter of each ``2**BUCKET_SHIFT`` slots.

Payload: ``LA``, ``LB`` (4-byte little-endian lengths of the lanes), lane A, lane B, the bit
stream (whole bytes, the last padded with zero bits; the decoder does not check the padding, nor
what the lanes' flush bytes hold beyond what it needs). The bit stream is written and read as
little-endian 32-bit words through array views: numba runs only on little-endian machines.

One letter per sample is range-coded, against ~10 adaptive binary decisions in ``_lms``. All
arithmetic is integer, identical in encoder and decoder.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

from ._kernels import _domain, _working_history
from ._lms import LMS_MU, LMS_ORDER, MEAN_SHIFT, W_LIMIT
from ._range import TOP

NSYM = 112
PROB_BITS = 16
M = 1 << PROB_BITS
BUCKET_SHIFT = 6
N_BUCKETS = M >> BUCKET_SHIFT
N_CTX = 18
MAG_SHIFT = 5
MAG_START = 64
FIRST_INTERVAL = 4
MAX_INTERVAL = 512
COUNT_LIMIT = 1 << 16
#: Bytes a sample may take at worst: a letter of frequency 1 (16 bits: 2 bytes of a lane) and 13
#: plain bits; the output buffer gets 5 a sample (plus the lanes' lengths and flush bytes).
WORST_BYTES_PER_SAMPLE = 5
_SPAN = np.int64(1) << 32
_MASK = _SPAN - 1
_W_HI = np.int32(W_LIMIT)
_W_LO = np.int32(-W_LIMIT)
_RING = LMS_ORDER                                      # a power of two: the ring index is masked
if _RING & (_RING - 1):
    raise ImportError(f"lms-fast needs a power-of-two LMS order; got {_RING}")

#: Starting counts of each context, in all.
PRIOR_WEIGHT = 256
#: Residuals with ``|e|`` below this take their letter and bits from tables.
LUT_SIZE = 1 << 12


def _letters_of(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Letter and count of low bits of each magnitude ``m >= 0`` (int64), as numpy arrays."""
    nb = np.zeros(m.shape, np.int64)
    nb[m > 0] = np.floor(np.log2(m[m > 0])).astype(np.int64)
    nlow = np.maximum(nb - 3, 0)
    return np.where(m < 16, m, 16 + 8 * (nb - 4) + ((m >> nlow) & 7)), nlow


def _prior() -> np.ndarray:
    """Starting counts per context: a geometric ``|e|`` of mean ``2**(k - 0.5)`` over the letters,
    ``PRIOR_WEIGHT`` in all, each rounded down."""
    m = np.arange(1 << 16, dtype=np.int64)
    sym = _letters_of(m)[0]
    out = np.zeros((N_CTX, NSYM), np.int32)
    for k in range(N_CTX):
        mu = 2.0 ** (k - 0.5)
        theta = mu / (1.0 + mu)
        p = (1 - theta) * theta ** m.astype(np.float64)
        mass = np.bincount(sym, weights=p, minlength=NSYM)
        out[k] = np.floor(mass / mass.sum() * PRIOR_WEIGHT).astype(np.int32)
    return out


_PRIOR = _prior()


def init_state(n_channels: int) -> tuple:
    """Fresh channel state and models (as at a resynchronisation point):
    ``(ring, lw, ch, head, cnt, cum, look, due, ivl)``. ``ring[j]``: the channels' first
    differences, ``head[0]`` the slot of the newest; ``lw``: the 17 weights (the level tap last);
    ``ch`` rows: level tap, decayed ``|e|`` sum, running mean (Q8), mean started; per context:
    letter counts, cumulative frequencies, slot lookup, symbols to the next rebuild, interval."""
    ring = np.zeros((_RING, n_channels), np.int32)
    lw = np.zeros((LMS_ORDER + 1, n_channels), np.int32)
    ch = np.zeros((4, n_channels), np.int32)
    ch[1] = MAG_START
    head = np.zeros(1, np.int64)
    cnt = _PRIOR.copy()
    cum = np.zeros((N_CTX, NSYM + 1), np.int32)
    look = np.zeros((N_CTX, N_BUCKETS), np.uint8)
    for k in range(N_CTX):
        _rebuild(cnt, cum, look, k, True)
    due = np.full(N_CTX, FIRST_INTERVAL, np.int32)
    ivl = np.full(N_CTX, FIRST_INTERVAL, np.int32)
    return ring, lw, ch, head, cnt, cum, look, due, ivl


@njit(cache=True)
def _rebuild(cnt, cum, look, k, with_look):
    """Context ``k``'s frequencies from its counts (halved first when they sum to
    ``COUNT_LIMIT``): the cumulative table and, for the decoder, the slot lookup."""
    t = np.int64(0)
    for s in range(NSYM):
        t += cnt[k, s]
    if t >= COUNT_LIMIT:
        t = 0
        for s in range(NSYM):
            v = cnt[k, s] >> 1
            cnt[k, s] = v
            t += v
    inv = (np.int64(M - NSYM) << 24) // t if t > 0 else np.int64(0)
    best = 0
    bestc = np.int64(-1)
    acc = np.int64(0)
    for s in range(NSYM):
        c = np.int64(cnt[k, s])
        f = 1 + ((c * inv) >> 24)
        cum[k, s + 1] = f
        acc += f
        if c > bestc:
            bestc = c
            best = s
    cum[k, best + 1] += M - acc
    cum[k, 0] = 0
    for s in range(NSYM):
        cum[k, s + 1] += cum[k, s]
    if with_look:
        s = 0
        for b in range(N_BUCKETS):
            slot = b << BUCKET_SHIFT
            while cum[k, s + 1] <= slot:
                s += 1
            look[k, b] = s


@njit(cache=True, inline="always")
def _tally(cnt, due, k, s):
    """Count letter ``s`` in context ``k``; True when the context is due for a rebuild."""
    cnt[k, s] += 1
    due[k] -= 1
    return due[k] <= 0


@njit(cache=True, inline="always")
def _rebuild_due(cnt, cum, look, due, ivl, with_look):
    """Rebuild every context whose interval ran out during the row (encoder and decoder both do
    it after the row's last symbol); each waits twice as long next time, up to MAX_INTERVAL."""
    for k in range(N_CTX):
        if due[k] <= 0:
            _rebuild(cnt, cum, look, k, with_look)
            ivl[k] = min(ivl[k] * 2, MAX_INTERVAL)
            due[k] = ivl[k]


def _letters() -> tuple[np.ndarray, ...]:
    """Tables of the binarisation: for ``|e| < LUT_SIZE`` its letter, the count of equiprobable
    bits after it (low bits and sign; 0 for ``e == 0``) and the mask of its low bits; per
    letter, the top of ``|e|`` it fixes and how many low bits follow."""
    m = np.arange(LUT_SIZE, dtype=np.int64)
    sym, nlow = _letters_of(m)
    length = np.where(m == 0, 0, nlow + 1)
    s = np.arange(NSYM)
    head = np.where(s < 16, s, 8 | ((s - 16) & 7))
    low_of = np.where(s < 16, 0, 4 + ((s - 16) >> 3) - 3)
    return (sym.astype(np.int32), length.astype(np.int32), ((1 << nlow) - 1).astype(np.int32),
            head.astype(np.int32), low_of.astype(np.int32))


_SYM, _LEN, _LOWMASK, _HEAD, _NLOW = _letters()


@njit(cache=True, inline="always")
def _letter(e):
    """``(letter, equiprobable bits, their count)`` of residual ``e`` (the sign the last bit)."""
    m = e if e >= 0 else -e
    neg = 1 if e < 0 else 0
    if m < LUT_SIZE:
        return np.int64(_SYM[m]), ((m & _LOWMASK[m]) << 1) | neg, np.int64(_LEN[m])
    nb = 63 - np.int64(leading_zeros(np.uint64(m)))
    nlow = nb - 3
    return 16 + 8 * (nb - 4) + ((m >> nlow) & 7), ((m & ((1 << nlow) - 1)) << 1) | neg, nlow + 1


@njit(cache=True, inline="always")
def _predict_row(ring, lw, ch, h0, head, lo, hi, S, P, K):
    """Every channel's LMS sum, clamped prediction and context for the next sample."""
    nc = S.shape[0]
    lev = ch[0]
    mag = ch[1]
    wl = lw[LMS_ORDER]
    for c in range(nc):
        S[c] = np.int64(wl[c]) * np.int64(lev[c])
    for j in range(LMS_ORDER):
        rr = ring[(head - j) & (_RING - 1)]
        wj = lw[j]
        for c in range(nc):
            S[c] += np.int64(wj[c]) * np.int64(rr[c])
    for c in range(nc):
        p = h0[c] + ((S[c] + 32768) >> 16)
        P[c] = min(max(p, lo[c]), hi[c])
        m = mag[c] >> MAG_SHIFT
        K[c] = min(32 - np.int64(leading_zeros(np.uint32(m))), N_CTX - 1)


@njit(cache=True, inline="always")
def _sign_step(wj, rr, STEP):
    """``wj += sign(rr) * STEP`` clamped to +-W_LIMIT, in int32 (so it is vectorised)."""
    for c in range(wj.shape[0]):
        h = rr[c]
        s = STEP[c]
        inc = np.int32(s) if h > 0 else np.int32(0)
        inc = np.int32(-s) if h < 0 else inc
        v = np.int32(wj[c] + inc)
        v = v if v < _W_HI else _W_HI
        wj[c] = v if v > _W_LO else _W_LO


@njit(cache=True, inline="always")
def _update_row(ring, lw, ch, h0, head, W, E, S, STEP):
    """The LMS update after a row: weights, ring, level tap, statistics; returns the new head."""
    nc = W.shape[0]
    for c in range(nc):
        d = np.int64(W[c] - h0[c])
        err = (d << 16) - S[c]
        STEP[c] = LMS_MU if err > 0 else (-LMS_MU if err < 0 else 0)
    for j in range(LMS_ORDER):
        _sign_step(lw[j], ring[(head - j) & (_RING - 1)], STEP)
    lev = ch[0]
    mag = ch[1]
    mean = ch[2]
    started = ch[3]
    _sign_step(lw[LMS_ORDER], lev, STEP)
    head = (head + 1) & (_RING - 1)
    rn = ring[head]
    for c in range(nc):
        w = W[c]
        rn[c] = w - h0[c]
        w8 = w << 8
        m0 = mean[c]
        m1 = m0 + ((w8 - m0) >> MEAN_SHIFT) if started[c] else w8
        mean[c] = m1
        started[c] = 1
        lev[c] = (w8 - m1) >> 8
        mag[c] += abs(E[c]) - (mag[c] >> MAG_SHIFT)
        h0[c] = w
    return head


@njit(cache=True, inline="always")
def _frame_setup(hist, tables, toff, nc):
    """Per frame: the last working value of each channel, the working domains, the channels with
    a value table, and the per-row arrays ``W, E, P, K, S, STEP``."""
    h0 = _working_history(hist, tables, toff)[:, 0].astype(np.int32)
    lo, hi = _domain(toff)
    with_table = np.flatnonzero(toff[1:] != toff[:-1])
    return (h0, lo, hi, with_table, np.empty(nc, np.int32), np.empty(nc, np.int32), np.empty(nc, np.int32),
            np.empty(nc, np.int32), np.empty(nc, np.int64), np.empty(nc, np.int32))


@njit(cache=True, inline="always")
def _put(low, rng, pos, out, a, f):
    """Narrow the range to the letter at ``a`` of frequency ``f`` (of ``2**PROB_BITS``): a range
    coder whose carry runs back into the bytes already written (never past the first: the coded
    value stays below 1), and whose byte output needs no branch (at most 2 bytes per letter:
    ``range >> PROB_BITS >= 2**8``; each candidate byte is stored and kept by moving ``pos``)."""
    r = rng >> PROB_BITS
    low += r * a
    rng = r * f
    if low >= _SPAN:
        low -= _SPAN
        i = pos - 1
        while out[i] == 0xFF:
            out[i] = 0
            i -= 1
        out[i] += 1
    for _ in range(2):
        more = rng < TOP
        out[pos] = np.uint8((low >> 24) & 0xFF)
        pos += 1 if more else 0
        low = ((low << 8) & _MASK) if more else low
        rng = (rng << 8) if more else rng
    return low, rng, pos


@njit(cache=True, inline="always")
def _flush(low, pos, out):
    for _ in range(4):
        out[pos] = np.uint8((low >> 24) & 0xFF)
        low = (low << 8) & _MASK
        pos += 1
    return pos


@njit(cache=True, inline="always")
def _start(pl, size):
    """A lane decoder's first state ``(rng, code, pos, over)``: the lane's first 4 bytes."""
    code = np.int64(0)
    over = np.int64(0)
    for i in range(4):
        code = (code << 8) | (np.int64(pl[i]) if i < size else np.int64(0))
        over += 1 if i >= size else 0
    return np.int64(_MASK), code, np.int64(4), over


@njit(cache=True, inline="always")
def _pack(bitbuf, nbits, rpos, raw32, v, nv):
    """Append ``nv`` bits of ``v`` (least significant first); a whole 32-bit word is kept once
    there is one (stored every time, kept by moving ``rpos``: no branch to mispredict)."""
    bitbuf |= np.uint64(v) << np.uint64(nbits)
    nbits += nv
    raw32[rpos] = np.uint32(bitbuf & np.uint64(0xFFFFFFFF))
    full = nbits >> 5
    rpos += full
    bitbuf >>= np.uint64(full << 5)
    nbits -= full << 5
    return bitbuf, nbits, rpos


@njit(cache=True, inline="always")
def _lane(first, E, K, cum, cnt, due, V, NV, low, rng, pos, out):
    """Code the letters of channels ``first, first + 2, …`` of a row into one lane; keep their
    equiprobable bits in ``V``/``NV``; return the lane's coder state and whether a context is due."""
    pend = False
    for c in range(first, E.shape[0], 2):
        k = K[c]
        sy, v, nv = _letter(np.int64(E[c]))
        a = np.int64(cum[k, sy])
        low, rng, pos = _put(low, rng, pos, out, a, np.int64(cum[k, sy + 1]) - a)
        pend |= _tally(cnt, due, k, sy)
        V[c] = v
        NV[c] = nv
    return low, rng, pos, pend


@njit(cache=True)
def scratch_sizes(n, nc):
    """Elements of the encoder's work buffers for ``n`` x ``nc`` samples: lane B's bytes (at most
    2 per letter, 2 candidate bytes, 4 flush bytes) and the bit stream's 32-bit words (at most
    13 bits per sample)."""
    return 2 * ((n * nc + 1) // 2) + 16, (13 * n * nc) // 32 + 4


@njit(cache=True, nogil=True)
def encode_fast(data, hist, ring, lw, ch, head, cnt, cum, look, due, ivl, tables, toff, out, outb, raw32):
    """Encode ``data`` (samples x channels, int16), time-major, into ``out``; return bytes used,
    or -1 when ``out`` is too small. Value tables as :func:`cortexlink.codec._lms.encode_lms`.

    Payload: the byte lengths ``LA``, ``LB`` of the two range-coded lanes (4 bytes each,
    little-endian), lane A (the letters of even channels), lane B (odd channels), then the
    equiprobable bits of every sample in coding order, least significant first, the last byte
    padded with zeros. Two lanes halve the chain of dependent range-coder steps. ``outb`` (uint8)
    and ``raw32`` (uint32) are work buffers of at least :func:`scratch_sizes` elements: a caller
    that encodes frame after frame keeps them (fresh memory on every frame costs page faults)."""
    n, nc = data.shape
    h0, lo, hi, with_table, W, E, P, K, S, STEP = _frame_setup(hist, tables, toff, nc)
    V = np.empty(nc, np.int64)
    NV = np.empty(nc, np.int64)
    nb_min, nw_min = scratch_sizes(n, nc)
    # lane A: at most 2 bytes a letter, 2 candidate bytes, 4 flush bytes, after the 8 of lengths
    if outb.shape[0] < nb_min or raw32.shape[0] < nw_min or out.shape[0] < 16 + 2 * n * ((nc + 1) // 2):
        return -1
    raw = raw32.view(np.uint8)
    hd = head[0]
    low0 = np.int64(0)
    rng0 = np.int64(_MASK)
    pos0 = np.int64(8)
    low1 = np.int64(0)
    rng1 = np.int64(_MASK)
    pos1 = np.int64(0)
    bitbuf = np.uint64(0)
    nbits = 0
    rpos = 0
    pend = False
    for t in range(n):
        row = data[t]
        for c in range(nc):
            W[c] = row[c]
        for c in with_table:
            W[c] = np.searchsorted(tables[toff[c]:toff[c + 1]], row[c])
        _predict_row(ring, lw, ch, h0, hd, lo, hi, S, P, K)
        for c in range(nc):
            E[c] = W[c] - P[c]
        low0, rng0, pos0, due0 = _lane(0, E, K, cum, cnt, due, V, NV, low0, rng0, pos0, out)    # even channels
        low1, rng1, pos1, due1 = _lane(1, E, K, cum, cnt, due, V, NV, low1, rng1, pos1, outb)   # odd channels
        pend |= due0 | due1
        for c in range(nc):                               # the equiprobable bits, in channel order
            bitbuf, nbits, rpos = _pack(bitbuf, nbits, rpos, raw32, V[c], NV[c])
        if pend:
            _rebuild_due(cnt, cum, look, due, ivl, False)
            pend = False
        hd = _update_row(ring, lw, ch, h0, hd, W, E, S, STEP)
    pos0 = _flush(low0, pos0, out)
    pos1 = _flush(low1, pos1, outb)
    rpos *= 4
    while nbits > 0:
        raw[rpos] = np.uint8(bitbuf & np.uint64(0xFF))
        rpos += 1
        bitbuf >>= np.uint64(8)
        nbits -= 8
    total = pos0 + pos1 + rpos
    if total > out.shape[0]:
        return -1
    la = pos0 - 8
    for i in range(4):
        out[i] = np.uint8((la >> (8 * i)) & 0xFF)
        out[4 + i] = np.uint8((pos1 >> (8 * i)) & 0xFF)
    out[pos0:pos0 + pos1] = outb[:pos1]
    out[pos0 + pos1:total] = raw[:rpos]
    head[0] = hd
    for c in range(nc):
        hist[c, 0] = data[n - 1, c]
    return total


@njit(cache=True, inline="always")
def _get(pl, size, rng, code, pos, over, cum, look, k):
    """The next letter of one lane in context ``k``."""
    r = rng >> PROB_BITS
    v = code // r
    if v >= M:
        v = M - 1
        over += 1
    s = np.int64(look[k, v >> BUCKET_SHIFT])
    while cum[k, s + 1] <= v:
        s += 1
    a = np.int64(cum[k, s])
    code -= r * a
    rng = r * (np.int64(cum[k, s + 1]) - a)
    while rng < TOP:                                      # past the lane's end: zeros, counted
        if pos < size:
            code = ((code << 8) | np.int64(pl[pos])) & _MASK
        else:
            code = (code << 8) & _MASK
            over += 1
        pos += 1
        rng <<= 8
    return s, rng, code, pos, over


@njit(cache=True, inline="always")
def _unpack(words, last, wi, bitbuf, nbits, s):
    """The residual of letter ``s`` with its equiprobable bits (at most 13), read from the
    little-endian 32-bit ``words`` (past ``last``: zeros); no branch but the sign's select."""
    nlow = np.int64(_NLOW[s])
    need = nlow + 1 if s != 0 else 0
    more = nbits < 32
    word = np.uint64(words[min(wi, last)]) if more else np.uint64(0)
    bitbuf |= word << np.uint64(nbits)
    wi += 1 if more else 0
    nbits += 32 if more else 0
    u = np.int64(bitbuf & ((np.uint64(1) << np.uint64(need)) - np.uint64(1)))
    bitbuf >>= np.uint64(need)
    nbits -= need
    m = (np.int64(_HEAD[s]) << nlow) | (u >> 1)
    return (-m if u & 1 else m), wi, bitbuf, nbits


@njit(cache=True, nogil=True)
def decode_fast(payload, out, hist, ring, lw, ch, head, cnt, cum, look, due, ivl, tables, toff):
    """Decode ``out.shape`` samples from ``payload``; return the payload bytes read, or -1 for a
    payload that ends early or decodes to a value out of range."""
    n, nc = out.shape
    total = payload.shape[0]
    if total < 8:
        return -1
    la = np.int64(0)
    lb = np.int64(0)
    for i in range(4):
        la |= np.int64(payload[i]) << (8 * i)
        lb |= np.int64(payload[4 + i]) << (8 * i)
    if la > total - 8 or lb > total - 8 - la:
        return -1
    pa = payload[8:8 + la]
    pb = payload[8 + la:8 + la + lb]
    h0, lo, hi, with_table, W, E, P, K, S, STEP = _frame_setup(hist, tables, toff, nc)
    hd = head[0]
    rng0, code0, pos0, over0 = _start(pa, la)
    rng1, code1, pos1, over1 = _start(pb, lb)
    rp = 8 + la + lb
    nraw = total - rp
    words = np.zeros(nraw // 4 + 2, np.uint32)
    words.view(np.uint8)[:nraw] = payload[rp:]
    last = words.shape[0] - 1
    wi = 0
    bitbuf = np.uint64(0)
    nbits = 0
    odd = nc & 1
    pend = False
    for t in range(n):
        _predict_row(ring, lw, ch, h0, hd, lo, hi, S, P, K)
        bad = False
        for c in range(0, nc - odd, 2):                    # the letters, two lanes
            k0 = K[c]
            k1 = K[c + 1]
            s0, rng0, code0, pos0, over0 = _get(pa, la, rng0, code0, pos0, over0, cum, look, k0)
            s1, rng1, code1, pos1, over1 = _get(pb, lb, rng1, code1, pos1, over1, cum, look, k1)
            pend |= _tally(cnt, due, k0, s0) | _tally(cnt, due, k1, s1)
            e0, wi, bitbuf, nbits = _unpack(words, last, wi, bitbuf, nbits, s0)
            e1, wi, bitbuf, nbits = _unpack(words, last, wi, bitbuf, nbits, s1)
            w0 = P[c] + e0
            w1 = P[c + 1] + e1
            bad |= (w0 < lo[c]) | (w0 > hi[c]) | (w1 < lo[c + 1]) | (w1 > hi[c + 1])
            W[c] = w0
            W[c + 1] = w1
            E[c] = e0
            E[c + 1] = e1
        if odd:
            c = nc - 1
            k0 = K[c]
            s0, rng0, code0, pos0, over0 = _get(pa, la, rng0, code0, pos0, over0, cum, look, k0)
            pend |= _tally(cnt, due, k0, s0)
            e0, wi, bitbuf, nbits = _unpack(words, last, wi, bitbuf, nbits, s0)
            w0 = P[c] + e0
            bad |= (w0 < lo[c]) | (w0 > hi[c])
            W[c] = w0
            E[c] = e0
        if bad or over0 > 0 or over1 > 0:
            return -1
        orow = out[t]
        for c in range(nc):
            orow[c] = W[c]
        for c in with_table:
            orow[c] = tables[toff[c] + W[c]]
        if pend:
            _rebuild_due(cnt, cum, look, due, ivl, True)
            pend = False
        hd = _update_row(ring, lw, ch, h0, hd, W, E, S, STEP)
    # every equiprobable bit read was in the payload, and the payload holds no more
    if pos0 != la or pos1 != lb or (32 * wi - nbits + 7) // 8 != nraw:
        return -1
    head[0] = hd
    for c in range(nc):
        hist[c, 0] = out[n - 1, c]
    return total
