"""Numba kernels of the feature chain (imported lazily: ``import cortexlink`` never loads numba).

Layout is samples x channels, C order: the loops run over samples outside and channels
inside, so every inner loop walks contiguous float32 rows that LLVM vectorises (SIMD).
A tile of samples goes through two phases: :func:`_filter_rows` (scale to µV, the biquad
cascade, the per-group common-average sums) and, once the reference mean of each sample
is known, :func:`_feature_rows` (threshold crossings with dead time, crossing events,
spike-band power, bins). :func:`chain` runs the phases block by block on one thread;
:func:`chain_parallel` runs them on one part of the channels per thread.

``fastmath`` is restricted to flags that keep NaN/Inf semantics (no ``nnan``/``ninf``):
the kernels rely on ``abs(x) < 3e38`` being False for NaN and Inf to detect bad samples.
``reassoc`` lets the channel reductions vectorise; the reference sum is taken per group of
:data:`GROUP` channels and the groups' sums added in order, so it depends only on the
number of channels, never on the chunking, tiling or threads: results are identical.

Scalar state lives in ``ist`` (int64 array) so that a kernel can stop early (end of a
calibration window, full event buffer) and be resumed exactly where it stopped.
The LFP, rail-statistics and output-layout kernels are in :mod:`cortexlink.dsp._side_kernels`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_FM = {"nsz", "arcp", "contract", "afn", "reassoc"}

# indices into the integer state vector ``ist``
BIN_FILL = 0      # samples already accumulated in the current bin
N_OUT = 1         # bins written to the output arrays during this step
CAL_LEFT = 2      # samples still to collect for calibration (0: not collecting)
CAL_PHASE = 3     # decimation phase of the calibration collection
CAL_ROW = 4       # next row of the calibration buffer
N_EV = 5          # events in the event buffer
N_PEND = 6        # (unused by these kernels: open trough windows are pend_left > 0)
N_NEED_INIT = 7   # channels whose filter waits for a finite sample to initialise

#: channels per reference group: the per-sample reference sum is taken group by group
#: and the groups' sums added in group order, so the result depends neither on chunking,
#: tiling, blocking nor the number of threads
GROUP = 256
#: channels per block of the one-thread kernel (a multiple of GROUP): long runs of each
#: row keep the hardware prefetchers busy; a block's filter state stays in L2
BLOCK = 4096
#: samples per tile of the one-thread kernel: its filtered rows (TILE x n_channels float32)
#: stay in L2 between the filter and the feature pass
TILE = 8
#: samples per tile of the parallel kernel: a whole 1 ms chunk at 30 kHz, so that the
#: threads meet twice per chunk (after the filter, after the features); each thread's share
#: of the rows is C / threads columns
TILE_PAR = 32


@njit(cache=True, fastmath=_FM)
def _filter_rows(raw, ts, nt, cb, ce, gain, offset, sos, zi, z, need_init, nonfinite, refmask,
                 dst, dbase, psum, pn, gate):  # pragma: no cover - compiled
    """Phase 1 for channels ``cb:ce`` and rows ``ts:ts+nt``: scale, biquads, reference sums.

    ``cb`` is a multiple of :data:`GROUP`. Writes the filtered rows to
    ``dst[dbase + i, cb:ce]``, the reference sum and count of group ``g`` at sample ``i``
    to ``psum[g, i]``/``pn[g, i]``; returns the change in the number of
    channels waiting for a finite sample to (re)initialise their filter. ``gate``: whether
    any channel may be waiting (then the block looks for them).
    """
    nb = ce - cb
    ngb = (nb + GROUP - 1) // GROUP
    g0 = cb // GROUP
    S = sos.shape[0]
    G = S // 2
    big = np.float32(3.0e38)
    fzero = np.float32(0.0)
    # block views: indices from 0 let numba drop wraparound checks and LLVM vectorise
    g_b = gain[cb:ce]
    o_b = offset[cb:ce]
    ref_b = refmask[cb:ce]
    ni_b = need_init[cb:ce]
    nf_b = nonfinite[cb:ce]
    d_init = 0
    for i in range(nt):
        t = ts + i
        row = dst[dbase + i, cb:ce]
        r_in = raw[t, cb:ce]
        if gate:  # (re)initialise channels waiting for a finite sample (rare; scalar)
            n_wait = 0
            for c in range(nb):
                if ni_b[c] != 0:
                    x = np.float32(r_in[c]) * g_b[c] + o_b[c]
                    if abs(x) < big:
                        for s in range(S):
                            z[s, 0, cb + c] = zi[s, 0] * x
                            z[s, 1, cb + c] = zi[s, 1] * x
                        ni_b[c] = 0
                        d_init -= 1
                    else:
                        n_wait += 1
            gate = n_wait > 0
        n_bad = np.int32(0)
        # biquads two at a time (S is even), transposed direct form II; the first pair
        # also scales the raw samples, the last one counts non-finite outputs
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
                        n_bad += np.int32(not (abs(y) < big))
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
                        n_bad += np.int32(not (abs(y) < big))
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
                        d_init += 1
            gate = True
        # reference sums, group by group (a second pass over the row, still in L1)
        for gg in range(ngb):
            lo = gg * GROUP
            rg = row[lo:min(lo + GROUP, nb)]
            fg = ref_b[lo:min(lo + GROUP, nb)]
            acc = fzero
            n_ref = np.int32(0)
            for c in range(rg.shape[0]):
                y = rg[c]
                use = (abs(y) < big) & (fg[c] != 0)  # no short-circuit: vectorises
                acc += y if use else fzero
                n_ref += np.int32(use)
            psum[g0 + gg, i] = acc
            pn[g0 + gg, i] = n_ref
    return d_init


@njit(cache=True, fastmath=_FM)
def _feature_rows(src, base, tmean, nt, cb, ce, thr, armed, dead, dead_n, tx_acc, sbp_acc, W, bf0,
                  k0, out_tx, out_sbp, keep_events, t0, trough_n, pend_left, pend_cross, pend_idx,
                  pend_val, ev_ch, ev_cross, ev_trough, ev_val, e0, need):  # pragma: no cover - compiled
    """Phase 2 for channels ``cb:ce``: referenced value, crossings with dead time, spike-band
    power, bins and (``keep_events``) crossing events written from ``ev_*[e0]`` on; returns
    the number of events written.

    Events: one vectorised pass per sample updates every open trough window (running
    minimum, samples left) and marks the channels that need more (a crossing, a window
    that closes: ``pend_left`` -1) in ``need`` (one byte per channel, padded to a multiple
    of 8 past the last channel); a scalar pass then visits only the marked channels,
    skipping 8 unmarked ones at a time.
    """
    nb = ce - cb
    fzero = np.float32(0.0)
    inv_w = np.float32(1.0) / np.float32(W)
    sbp_b = sbp_acc[cb:ce]
    tx_b = tx_acc[cb:ce]
    thr_b = thr[cb:ce]
    arm_b = armed[cb:ce]
    dead_b = dead[cb:ce]
    pl_b = pend_left[cb:ce]
    pc_b = pend_cross[cb:ce]
    pi_b = pend_idx[cb:ce]
    pv_b = pend_val[cb:ce]
    nd_b = need[cb:ce]
    n_words = (nb + 7) // 8
    nd_w = need[cb:cb + 8 * n_words].view(np.uint64)
    bf = bf0
    k = k0
    e = e0
    for i in range(nt):
        row = src[base + i, cb:ce]
        mean = tmean[i]
        if keep_events:
            abs_t = t0 + i
            n_need = np.int32(0)
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
                pl = pl_b[c]
                better = (pl > 0) & (not cr) & (v < pv_b[c])
                pv_b[c] = v if better else pv_b[c]
                pi_b[c] = abs_t if better else pi_b[c]
                # open window: one sample less, -1 when it closes now; a crossing: left as is
                pl_b[c] = pl if cr else (pl - 1 if pl > 1 else (-1 if pl == 1 else 0))
                nd = cr | (pl == 1)
                nd_b[c] = np.uint8(nd)
                n_need += np.int32(nd)
            if n_need > 0:
                for w in range(n_words):  # 8 flags at a time: most words are 0
                    if nd_w[w] == 0:
                        continue
                    for c in range(8 * w, min(8 * w + 8, nb)):
                        if nd_b[c] == 0:
                            continue
                        pl = pl_b[c]
                        if pl == -1:  # trough window closed: emit it
                            ev_ch[e] = cb + c
                            ev_cross[e] = pc_b[c]
                            ev_trough[e] = pi_b[c]
                            ev_val[e] = pv_b[c]
                            e += 1
                            pl_b[c] = 0
                        elif dead_b[c] == dead_n:  # crossed at this sample
                            v = row[c] - mean
                            if pl > 0:  # a new crossing closes the open window
                                ev_ch[e] = cb + c
                                ev_cross[e] = pc_b[c]
                                ev_trough[e] = pi_b[c]
                                ev_val[e] = pv_b[c]
                                e += 1
                            pc_b[c] = abs_t
                            pi_b[c] = abs_t
                            pv_b[c] = v
                            if trough_n > 1:
                                pl_b[c] = trough_n - 1
                            else:
                                pl_b[c] = 0
                                ev_ch[e] = cb + c
                                ev_cross[e] = abs_t
                                ev_trough[e] = abs_t
                                ev_val[e] = v
                                e += 1
        else:
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
    return e - e0


@njit(cache=True)
def _collect_calibration(dst, dbase, nt, cal_buf, cal_stride, ist):  # pragma: no cover - compiled
    """Keep every ``cal_stride``-th filtered row (before the reference) for the calibration."""
    C = dst.shape[1]
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


@njit(cache=True)
def _tile_mean(psum, pn, nt, tmean):  # pragma: no cover - compiled
    """Per-sample reference mean from the groups' sums, added in group order."""
    for i in range(nt):
        s = np.float32(0.0)
        n = 0
        for g in range(psum.shape[0]):
            s += psum[g, i]
            n += pn[g, i]
        tmean[i] = s / np.float32(n) if n > 0 else np.float32(0.0)


@njit(cache=True)
def _part(p, n_parts, C):  # pragma: no cover - compiled
    """Channels ``cb:ce`` of part ``p`` of ``n_parts``: whole groups, as even as can be."""
    ng = (C + GROUP - 1) // GROUP
    return (p * ng // n_parts) * GROUP, min(((p + 1) * ng // n_parts) * GROUP, C)


@njit(cache=True)
def _gather_events(n_parts, C, L, ecnt, sev_ch, sev_cross, sev_trough, sev_val, ev_ch, ev_cross, ev_trough,
                   ev_val, ist):  # pragma: no cover - compiled
    """Append the parts' event segments (part ``p`` from its first channel x ``L`` on)."""
    e = ist[N_EV]
    for p in range(n_parts):
        o = _part(p, n_parts, C)[0] * L
        for j in range(ecnt[p]):
            ev_ch[e] = sev_ch[o + j]
            ev_cross[e] = sev_cross[o + j]
            ev_trough[e] = sev_trough[o + j]
            ev_val[e] = sev_val[o + j]
            e += 1
    ist[N_EV] = e


@njit(cache=True, fastmath=_FM)
def chain(raw, pos, stop, seg_start, mode, gain, offset, sos, zi, z, need_init, nonfinite,
          refmask, V, v0, thr, armed, dead, dead_n, tx_acc, sbp_acc, W, out_tx, out_sbp,
          cal_buf, cal_stride, keep_events, trough_n, pend_left, pend_cross, pend_idx, pend_val,
          ev_ch, ev_cross, ev_trough, ev_val, ist, Yt, tmean, psum, pn, need):  # pragma: no cover - compiled
    """Run rows ``pos:stop`` of ``raw`` through the chain on one thread; return the row
    index reached (earlier than ``stop`` when the event buffer must be drained first).

    mode 0: fused filter + common average (``refmask``; an all-zero mask means no
    reference) + features. mode 1: filter only, filtered rows written to ``V[t - v0]``.
    mode 2: features only, from already referenced rows ``V[t - v0]``.

    The rows are processed in tiles of ``Yt.shape[0]`` samples: phase 1
    (:func:`_filter_rows`) block by block of ``BLOCK`` channels, the reference mean of
    each sample from the groups' sums in group order, then phase 2
    (:func:`_feature_rows`) block by block. Every per-channel recursion runs in sample
    order and every cross-channel sum in the same group order, so the result depends
    neither on tiling nor chunking. :func:`chain_parallel` takes the same arguments and
    its per-part counters and event segments (``dinit``, ``ecnt``, ``sev_*``).
    """
    C = Yt.shape[1]
    L = Yt.shape[0]
    ev_cap = ev_ch.shape[0]
    for ts in range(pos, stop, L):
        te = min(ts + L, stop)
        nt = te - ts
        if keep_events and mode != 1 and ist[N_EV] + C * nt > ev_cap:
            return ts
        if mode != 2:
            dst = V if mode == 1 else Yt
            dbase = ts - v0 if mode == 1 else 0
            gate = ist[N_NEED_INIT] > 0
            for cb in range(0, C, BLOCK):
                ist[N_NEED_INIT] += _filter_rows(raw, ts, nt, cb, min(cb + BLOCK, C), gain, offset, sos, zi,
                                                 z, need_init, nonfinite, refmask, dst, dbase, psum, pn, gate)
            if ist[CAL_LEFT] > 0:
                _collect_calibration(dst, dbase, nt, cal_buf, cal_stride, ist)
            if mode == 1:
                continue
            _tile_mean(psum, pn, nt, tmean)
            src = Yt
            base = 0
        else:
            tmean[:nt] = np.float32(0.0)
            src = V
            base = ts - v0
        bf0 = ist[BIN_FILL]
        k0 = ist[N_OUT]
        for cb in range(0, C, BLOCK):
            ist[N_EV] += _feature_rows(src, base, tmean, nt, cb, min(cb + BLOCK, C), thr, armed, dead, dead_n,
                                       tx_acc, sbp_acc, W, bf0, k0, out_tx, out_sbp, keep_events,
                                       seg_start + ts, trough_n, pend_left, pend_cross, pend_idx, pend_val,
                                       ev_ch, ev_cross, ev_trough, ev_val, ist[N_EV], need)
        ist[BIN_FILL] = (bf0 + nt) % W
        ist[N_OUT] = k0 + (bf0 + nt) // W
    return stop


@njit(cache=True, fastmath=_FM, parallel=True)
def chain_parallel(raw, pos, stop, seg_start, mode, gain, offset, sos, zi, z, need_init, nonfinite,
                   refmask, V, v0, thr, armed, dead, dead_n, tx_acc, sbp_acc, W, out_tx, out_sbp,
                   cal_buf, cal_stride, keep_events, trough_n, pend_left, pend_cross, pend_idx, pend_val,
                   ev_ch, ev_cross, ev_trough, ev_val, ist, Yt, tmean, psum, pn, need, dinit, ecnt, sev_ch,
                   sev_cross, sev_trough, sev_val):  # pragma: no cover - compiled
    """:func:`chain` with the channels split into ``dinit.shape[0]`` parts of whole groups,
    one per thread (``numba.set_num_threads``), each phase run on the parts in parallel
    (``numba.prange``). A part writes only its own channels, its groups' reference sums and
    its own event segment (``sev_*``), combined afterwards in group and part order, so the
    features are identical to :func:`chain`'s and the events the same set."""
    C = Yt.shape[1]
    L = Yt.shape[0]
    n_parts = dinit.shape[0]
    ev_cap = ev_ch.shape[0]
    for ts in range(pos, stop, L):
        te = min(ts + L, stop)
        nt = te - ts
        if keep_events and mode != 1 and ist[N_EV] + C * nt > ev_cap:
            return ts
        if mode != 2:
            dst = V if mode == 1 else Yt
            dbase = ts - v0 if mode == 1 else 0
            gate = ist[N_NEED_INIT] > 0
            for p in prange(n_parts):
                cb, ce = _part(p, n_parts, C)
                dinit[p] = _filter_rows(raw, ts, nt, cb, ce, gain, offset, sos, zi, z, need_init, nonfinite,
                                        refmask, dst, dbase, psum, pn, gate)
            for p in range(n_parts):
                ist[N_NEED_INIT] += dinit[p]
            if ist[CAL_LEFT] > 0:
                _collect_calibration(dst, dbase, nt, cal_buf, cal_stride, ist)
            if mode == 1:
                continue
            _tile_mean(psum, pn, nt, tmean)
            src = Yt
            base = 0
        else:
            tmean[:nt] = np.float32(0.0)
            src = V
            base = ts - v0
        bf0 = ist[BIN_FILL]
        k0 = ist[N_OUT]
        for p in prange(n_parts):
            cb, ce = _part(p, n_parts, C)
            ecnt[p] = _feature_rows(src, base, tmean, nt, cb, ce, thr, armed, dead, dead_n, tx_acc, sbp_acc,
                                    W, bf0, k0, out_tx, out_sbp, keep_events, seg_start + ts, trough_n,
                                    pend_left, pend_cross, pend_idx, pend_val, sev_ch, sev_cross, sev_trough,
                                    sev_val, cb * L, need)
        if keep_events:
            _gather_events(n_parts, C, L, ecnt, sev_ch, sev_cross, sev_trough, sev_val, ev_ch, ev_cross,
                           ev_trough, ev_val, ist)
        ist[BIN_FILL] = (bf0 + nt) % W
        ist[N_OUT] = k0 + (bf0 + nt) // W
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


def scratch(n_channels: int, tile: int = TILE, n_parts: int = 0) -> tuple[np.ndarray, ...]:
    """Scratch buffers of :func:`chain` (``n_parts=0``) or :func:`chain_parallel` (``n_parts``
    parts, at most one per group): the tile of filtered rows, per-sample means, per-group
    reference sums and counts, event flags and (parallel only) per-part counters and the
    parts' event segments."""
    ng = -(-n_channels // GROUP)
    common = (np.zeros((tile, n_channels), np.float32), np.zeros(tile, np.float32),
              np.zeros((ng, tile), np.float32), np.zeros((ng, tile), np.int32),
              np.zeros(-(-n_channels // 8) * 8, np.uint8))
    if not n_parts:
        return common
    seg = n_channels * tile
    npart = min(n_parts, ng)
    return common + (np.zeros(npart, np.int64), np.zeros(npart, np.int64), np.zeros(seg, np.int32),
                     np.zeros(seg, np.int64), np.zeros(seg, np.int64), np.zeros(seg, np.float32))
