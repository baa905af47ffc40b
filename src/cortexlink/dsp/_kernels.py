"""Numba kernels of the feature chain (imported lazily: ``import cortexlink`` never loads numba).

Layout is samples x channels, C order: the loops run over samples outside and channels
inside, so every inner loop walks contiguous float32 rows that LLVM vectorises (SIMD).
One pass per sample fuses the stages: scale to µV, the biquad cascade, the common-average
sum, threshold crossings with dead time, spike-band power and bin accumulation.

``fastmath`` is restricted to flags that keep NaN/Inf semantics (no ``nnan``/``ninf``):
the kernels rely on ``abs(x) < 3e38`` being False for NaN and Inf to detect bad samples.
``reassoc`` lets the channel reductions vectorise; their summation order depends only on
the number of channels, never on the chunking, so results are chunk-size invariant.

Scalar state lives in ``ist`` (int64 array) so that a kernel can stop early (end of a
calibration window, full event buffer) and be resumed exactly where it stopped.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FM = {"nsz", "arcp", "contract", "afn", "reassoc"}

# indices into the integer state vector ``ist``
BIN_FILL = 0      # samples already accumulated in the current bin
N_OUT = 1         # bins written to the output arrays during this step
CAL_LEFT = 2      # samples still to collect for calibration (0: not collecting)
CAL_PHASE = 3     # decimation phase of the calibration collection
CAL_ROW = 4       # next row of the calibration buffer
N_EV = 5          # events in the event buffer
N_PEND = 6        # channels with an open trough window
N_NEED_INIT = 7   # channels whose filter waits for a finite sample to initialise

# indices into the LFP state vector
L_PHASE = 0
L_N_IN_BIN = 1
L_BIN_FILL = 2
L_N_OUT = 3
L_N_NEED_INIT = 4


#: channels per block: a block's filter state and tile rows stay in L1 cache
BLOCK = 4096
#: samples per tile: the tile of filtered rows (TILE x n_channels float32) stays in L2
TILE = 8


@njit(cache=True, fastmath=_FM)
def chain(raw, pos, stop, seg_start, mode, gain, offset, sos, zi, z, need_init, nonfinite,
          refmask, V, v0, thr, armed, dead, dead_n, tx_acc, sbp_acc, W, out_tx, out_sbp,
          cal_buf, cal_stride, keep_events, trough_n, pend_left, pend_cross, pend_idx, pend_val,
          ev_ch, ev_cross, ev_trough, ev_val, ist, Yt, tmean, tn):  # pragma: no cover - compiled
    """Run rows ``pos:stop`` of ``raw`` through the chain; return the row index reached.

    mode 0: fused filter + common average (``refmask``; an all-zero mask means no
    reference) + features. mode 1: filter only, filtered rows written to ``V[t - v0]``.
    mode 2: features only, from already referenced rows ``V[t - v0]``.

    The rows are processed in tiles of ``Yt.shape[0]`` samples. Phase 1 filters a tile
    block by block of ``BLOCK`` channels (time inner, so a block's state stays in L1)
    and sums the reference per sample; phase 2 computes the features block by block.
    Every per-channel recursion runs in sample order and every cross-channel sum in a
    fixed block order, so the result does not depend on tiling or chunking.
    """
    C = Yt.shape[1]
    L = Yt.shape[0]
    S = sos.shape[0]
    G = S // 2
    big = np.float32(3.0e38)
    fzero = np.float32(0.0)
    inv_w = np.float32(1.0) / np.float32(W)
    ev_cap = ev_ch.shape[0]
    for ts in range(pos, stop, L):
        te = min(ts + L, stop)
        nt = te - ts
        if keep_events and mode != 1 and ist[N_EV] + C * nt > ev_cap:
            return ts
        if mode != 2:
            # ---------------- phase 1: scale, biquads, reference sums ---------------------
            for i in range(nt):
                tmean[i] = fzero
                tn[i] = 0
            if mode == 1:  # filter straight into the output rows
                dst = V
                dbase = ts - v0
            else:
                dst = Yt
                dbase = 0
            for cb in range(0, C, BLOCK):
                ce = min(cb + BLOCK, C)
                nb = ce - cb
                # block views: indices from 0 let numba drop wraparound checks and LLVM vectorise
                g_b = gain[cb:ce]
                o_b = offset[cb:ce]
                ref_b = refmask[cb:ce]
                ni_b = need_init[cb:ce]
                nf_b = nonfinite[cb:ce]
                for i in range(nt):
                    t = ts + i
                    row = dst[dbase + i, cb:ce]
                    r_in = raw[t, cb:ce]
                    if ist[N_NEED_INIT] > 0:  # (re)initialise channels waiting for a finite sample
                        for c in range(nb):    # (rare; scalar) then filter them like all the others
                            if ni_b[c] != 0:
                                x = np.float32(r_in[c]) * g_b[c] + o_b[c]
                                if abs(x) < big:
                                    for s in range(S):
                                        z[s, 0, cb + c] = zi[s, 0] * x
                                        z[s, 1, cb + c] = zi[s, 1] * x
                                    ni_b[c] = 0
                                    ist[N_NEED_INIT] -= 1
                    acc = fzero
                    n_ref = np.int32(0)
                    n_bad = np.int32(0)
                    # biquads two at a time (S is even), transposed direct form II; the
                    # first pair also scales the raw samples, the last one sums the reference
                    for gi in range(G):
                        s0 = 2 * gi
                        b0 = sos[s0, 0]
                        b1 = sos[s0, 1]
                        b2 = sos[s0, 2]
                        a1 = sos[s0, 3]
                        a2 = sos[s0, 4]
                        e0 = sos[s0 + 1, 0]
                        e1 = sos[s0 + 1, 1]
                        e2 = sos[s0 + 1, 2]
                        d1 = sos[s0 + 1, 3]
                        d2 = sos[s0 + 1, 4]
                        za1 = z[s0, 0, cb:ce]
                        za2 = z[s0, 1, cb:ce]
                        zb1 = z[s0 + 1, 0, cb:ce]
                        zb2 = z[s0 + 1, 1, cb:ce]
                        from_raw = gi == 0
                        if gi == G - 1:
                            if from_raw:
                                for c in range(nb):
                                    x = np.float32(r_in[c]) * g_b[c] + o_b[c]
                                    y = b0 * x + za1[c]
                                    za1[c] = b1 * x - a1 * y + za2[c]
                                    za2[c] = b2 * x - a2 * y
                                    x = y
                                    y = e0 * x + zb1[c]
                                    zb1[c] = e1 * x - d1 * y + zb2[c]
                                    zb2[c] = e2 * x - d2 * y
                                    row[c] = y
                                    fin = abs(y) < big
                                    use = fin & (ref_b[c] != 0)  # no short-circuit: vectorises
                                    acc += y if use else fzero
                                    n_ref += np.int32(use)
                                    n_bad += np.int32(not fin)
                            else:
                                for c in range(nb):
                                    x = row[c]
                                    y = b0 * x + za1[c]
                                    za1[c] = b1 * x - a1 * y + za2[c]
                                    za2[c] = b2 * x - a2 * y
                                    x = y
                                    y = e0 * x + zb1[c]
                                    zb1[c] = e1 * x - d1 * y + zb2[c]
                                    zb2[c] = e2 * x - d2 * y
                                    row[c] = y
                                    fin = abs(y) < big
                                    use = fin & (ref_b[c] != 0)  # no short-circuit: vectorises
                                    acc += y if use else fzero
                                    n_ref += np.int32(use)
                                    n_bad += np.int32(not fin)
                        elif from_raw:
                            for c in range(nb):
                                x = np.float32(r_in[c]) * g_b[c] + o_b[c]
                                y = b0 * x + za1[c]
                                za1[c] = b1 * x - a1 * y + za2[c]
                                za2[c] = b2 * x - a2 * y
                                x = y
                                y = e0 * x + zb1[c]
                                zb1[c] = e1 * x - d1 * y + zb2[c]
                                zb2[c] = e2 * x - d2 * y
                                row[c] = y
                        else:
                            for c in range(nb):
                                x = row[c]
                                y = b0 * x + za1[c]
                                za1[c] = b1 * x - a1 * y + za2[c]
                                za2[c] = b2 * x - a2 * y
                                x = y
                                y = e0 * x + zb1[c]
                                zb1[c] = e1 * x - d1 * y + zb2[c]
                                zb2[c] = e2 * x - d2 * y
                                row[c] = y
                    if n_bad > 0:  # non-finite: NaN out, count, restart that channel's filter
                        for c in range(nb):
                            if not (abs(row[c]) < big):
                                nf_b[c] += 1
                                row[c] = np.float32(np.nan)
                                for s in range(S):
                                    z[s, 0, cb + c] = fzero
                                    z[s, 1, cb + c] = fzero
                                if ni_b[c] == 0:
                                    ni_b[c] = 1
                                    ist[N_NEED_INIT] += 1
                    tmean[i] += acc
                    tn[i] += n_ref
            # calibration collection (decimated filtered rows, before the reference)
            for i in range(nt):
                if ist[CAL_LEFT] > 0:
                    if ist[CAL_PHASE] == 0:
                        r = ist[CAL_ROW]
                        row = dst[dbase + i]
                        for c in range(C):
                            cal_buf[r, c] = row[c]
                        ist[CAL_ROW] = r + 1
                    ph = ist[CAL_PHASE] + 1
                    if ph >= cal_stride:
                        ph = 0
                    ist[CAL_PHASE] = ph
                    ist[CAL_LEFT] -= 1
            if mode == 1:
                continue
            for i in range(nt):
                tmean[i] = tmean[i] / np.float32(tn[i]) if tn[i] > 0 else fzero
            src = Yt
            base = 0
        else:
            for i in range(nt):
                tmean[i] = fzero
            src = V
            base = ts - v0
        # ---------------- phase 2: features, events, bins --------------------------------
        bf0 = ist[BIN_FILL]
        k0 = ist[N_OUT]
        bf = bf0
        k = k0
        for cb in range(0, C, BLOCK):
            ce = min(cb + BLOCK, C)
            nb = ce - cb
            sbp_b = sbp_acc[cb:ce]
            tx_b = tx_acc[cb:ce]
            thr_b = thr[cb:ce]
            arm_b = armed[cb:ce]
            dead_b = dead[cb:ce]
            bf = bf0
            k = k0
            for i in range(nt):
                row = src[base + i, cb:ce]
                mean = tmean[i]
                n_cr = np.int32(0)
                for c in range(nb):
                    v = row[c] - mean
                    sbp_b[c] += abs(v)
                    th = thr_b[c]
                    d = dead_b[c]
                    cr = (v < th) & (arm_b[c] != 0) & (d <= 1)  # no short-circuit: vectorises
                    tx_b[c] += np.int32(cr)
                    arm_b[c] = np.int32(v >= th)
                    dd = d - 1
                    dead_b[c] = dead_n if cr else (dd if dd > 0 else 0)
                    n_cr += np.int32(cr)
                if keep_events and (n_cr > 0 or ist[N_PEND] > 0):
                    abs_t = seg_start + ts + i
                    for cc in range(nb):
                        c = cb + cc
                        crossed = n_cr > 0 and dead_b[cc] == dead_n
                        pl = pend_left[c]
                        if pl > 0 or crossed:
                            v = row[cc] - mean
                            if pl > 0:
                                if crossed:
                                    pl = 0
                                else:
                                    if v < pend_val[c]:
                                        pend_val[c] = v
                                        pend_idx[c] = abs_t
                                    pl -= 1
                                pend_left[c] = pl
                                if pl == 0:
                                    e = ist[N_EV]
                                    ev_ch[e] = c
                                    ev_cross[e] = pend_cross[c]
                                    ev_trough[e] = pend_idx[c]
                                    ev_val[e] = pend_val[c]
                                    ist[N_EV] = e + 1
                                    ist[N_PEND] -= 1
                            if crossed:
                                pend_cross[c] = abs_t
                                pend_idx[c] = abs_t
                                pend_val[c] = v
                                if trough_n > 1:
                                    pend_left[c] = trough_n - 1
                                    ist[N_PEND] += 1
                                else:
                                    e = ist[N_EV]
                                    ev_ch[e] = c
                                    ev_cross[e] = abs_t
                                    ev_trough[e] = abs_t
                                    ev_val[e] = v
                                    ist[N_EV] = e + 1
                bf += 1
                if bf >= W:
                    otx = out_tx[k, cb:ce]
                    osb = out_sbp[k, cb:ce]
                    for c in range(nb):
                        otx[c] = np.float32(tx_b[c])
                        osb[c] = sbp_b[c] * inv_w
                        tx_b[c] = 0
                        sbp_b[c] = fzero
                    k += 1
                    bf = 0
        ist[BIN_FILL] = bf
        ist[N_OUT] = k
    return stop


@njit(cache=True)
def assemble(starts, tx, sbp, kinds, good, forced, cal_until, data, vmask):  # pragma: no cover - compiled
    """Lay out completed bins as decoder input in one pass (the real-time case of the
    extractor's ``_assemble``: one block of bins, no gap, no LFP).

    ``data[b, j*C + c]`` is ``tx`` or ``sbp`` (``kinds[j]`` 0 or 1) of channel ``c`` in bin
    ``b``; ``vmask`` says which entries are valid: the channel is good, its spike-band power
    is finite, and the bin is neither ``forced`` invalid nor before ``cal_until``. Invalid
    entries are NaN. One compiled call instead of a dozen array operations matters most when
    the caches are cold, as they are once per bin.
    """
    nb, C = sbp.shape
    nan = np.float32(np.nan)
    for b in range(nb):
        row_ok = not forced and starts[b] >= cal_until
        for j in range(kinds.shape[0]):
            o = j * C
            for c in range(C):
                v = tx[b, c] if kinds[j] == 0 else sbp[b, c]
                ok = row_ok and good[c] and np.isfinite(sbp[b, c])
                vmask[b, o + c] = ok
                data[b, o + c] = v if ok else nan


@njit(cache=True, fastmath=_FM)
def lfp(raw, pos, stop, gain, offset, decim, sos, zi, z, need_init, acc, pacc, W, out, ist,
        xb):  # pragma: no cover - compiled
    """LFP band power: box-car decimate by ``decim``, float64 biquads, mean y² per bin."""
    C = xb.shape[0]
    S = sos.shape[0]
    big = 1.0e300
    inv_d = 1.0 / decim
    for t in range(pos, stop):
        for c in range(C):
            acc[c] += np.float64(np.float32(raw[t, c]) * gain[c] + offset[c])
        ph = ist[L_PHASE] + 1
        if ph >= decim:
            ph = 0
            for c in range(C):
                xb[c] = acc[c] * inv_d
                acc[c] = 0.0
            if ist[L_N_NEED_INIT] > 0:
                for c in range(C):
                    if need_init[c] != 0:
                        x = xb[c]
                        if abs(x) < big:
                            for s in range(S):
                                z[s, 0, c] = zi[s, 0] * x
                                z[s, 1, c] = zi[s, 1] * x
                            need_init[c] = 0
                            ist[L_N_NEED_INIT] -= 1
            for s in range(S):
                b0 = sos[s, 0]
                b1 = sos[s, 1]
                b2 = sos[s, 2]
                a1 = sos[s, 3]
                a2 = sos[s, 4]
                z1 = z[s, 0]
                z2 = z[s, 1]
                for c in range(C):
                    x = xb[c]
                    y = b0 * x + z1[c]
                    z1[c] = b1 * x - a1 * y + z2[c]
                    z2[c] = b2 * x - a2 * y
                    xb[c] = y
            n_bad = 0
            for c in range(C):
                y = xb[c]
                pacc[c] += y * y
                n_bad += 0 if abs(y) < big else 1
            if n_bad > 0:
                for c in range(C):
                    if not (abs(xb[c]) < big):
                        pacc[c] = np.nan
                        for s in range(S):
                            z[s, 0, c] = 0.0
                            z[s, 1, c] = 0.0
                        if need_init[c] == 0:
                            need_init[c] = 1
                            ist[L_N_NEED_INIT] += 1
            ist[L_N_IN_BIN] += 1
        ist[L_PHASE] = ph
        bf = ist[L_BIN_FILL] + 1
        if bf >= W:
            k = ist[L_N_OUT]
            nb = ist[L_N_IN_BIN]
            o = out[k]
            for c in range(C):
                o[c] = np.float32(pacc[c] / nb) if nb > 0 else np.float32(np.nan)
                pacc[c] = 0.0
            ist[L_N_IN_BIN] = 0
            ist[L_N_OUT] = k + 1
            bf = 0
        ist[L_BIN_FILL] = bf
    return stop


def filter_block(x, gain, offset, coef, zi, z, need_init, nonfinite, ist, out):
    """Filter a float32 block with :func:`chain` in mode 1 (no reference, no features)."""
    c = x.shape[1]
    i32 = np.zeros(c, np.int32)
    f32 = np.zeros(c, np.float32)
    i64 = np.zeros(c, np.int64)
    ist[CAL_LEFT] = 0
    chain(x, 0, x.shape[0], 0, 1, gain, offset, coef, zi, z, need_init, nonfinite,
          i32, out, 0, f32, i32, i32, 1, i32, f32, 1, np.zeros((0, c), np.float32),
          np.zeros((0, c), np.float32), np.zeros((0, c), np.float32), 1, False, 1,
          i32, i64, i64, f32, np.zeros(0, np.int32), np.zeros(0, np.int64),
          np.zeros(0, np.int64), np.zeros(0, np.float32), ist, *scratch(c))
    return out


def scratch(n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-extractor scratch buffers of :func:`chain`: the tile rows and per-sample sums."""
    return (np.zeros((TILE, n_channels), np.float32), np.zeros(TILE, np.float32),
            np.zeros(TILE, np.int64))
