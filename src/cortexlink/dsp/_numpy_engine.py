"""Plain numpy/scipy implementation of the chain's stages (the ``backend="numpy"`` reference).

Each function mirrors one stage of the numba kernel in :mod:`cortexlink.dsp._kernels`
with the same state arrays and the same semantics, written with whole-block numpy
operations and :func:`scipy.signal.sosfilt`. It is the readable specification that the
tests compare the fused numba kernel against.
"""

from __future__ import annotations

import numpy as np


def _sos6(coef: np.ndarray) -> np.ndarray:
    """Kernel coefficients ``[b0, b1, b2, a1, a2]`` back to scipy's ``[b0, b1, b2, 1, a1, a2]``."""
    one = np.ones((coef.shape[0], 1), coef.dtype)
    return np.ascontiguousarray(np.hstack([coef[:, :3], one, coef[:, 3:]]))


def filter_block(X: np.ndarray, coef: np.ndarray, zi: np.ndarray, z: np.ndarray,
                 need_init: np.ndarray, nonfinite: np.ndarray | None) -> np.ndarray:
    """Filter ``X`` (T x C) with state ``z`` (S, 2, C), updating state in place.

    A channel flagged in ``need_init`` starts at its first finite sample from
    ``zi * x``; a non-finite sample outputs NaN, is counted in ``nonfinite`` and flags
    the channel for re-initialisation.
    """
    from scipy.signal import sosfilt

    sos = _sos6(coef)
    T, C = X.shape
    Y = np.empty_like(X)
    fin = np.isfinite(X)
    easy = fin.all(axis=0) & (need_init == 0)
    idx = np.flatnonzero(easy)
    if idx.size:
        if idx.size == C:
            Y[:], zo = sosfilt(sos, X, axis=0, zi=z)
            z[:] = zo
        else:
            Y[:, idx], zo = sosfilt(sos, X[:, idx], axis=0, zi=z[:, :, idx])
            z[:, :, idx] = zo
    for c in np.flatnonzero(~easy):
        x = X[:, c]
        f = fin[:, c]
        i = 0
        while i < T:
            if need_init[c]:
                nz = np.flatnonzero(f[i:])
                if nz.size == 0:
                    Y[i:, c] = np.nan
                    if nonfinite is not None:
                        nonfinite[c] += T - i
                    break
                j = i + int(nz[0])
                Y[i:j, c] = np.nan
                if nonfinite is not None:
                    nonfinite[c] += j - i
                z[:, :, c] = zi * x[j]
                need_init[c] = 0
                i = j
            nf = np.flatnonzero(~f[i:])
            k = T if nf.size == 0 else i + int(nf[0])
            if k > i:
                Y[i:k, c], z[:, :, c] = sosfilt(sos, x[i:k], zi=z[:, :, c])
            if k < T:
                Y[k, c] = np.nan
                if nonfinite is not None:
                    nonfinite[c] += 1
                z[:, :, c] = 0
                need_init[c] = 1
                i = k + 1
            else:
                i = T
    return Y


def common_average(Y: np.ndarray, refmask: np.ndarray) -> np.ndarray:
    """Subtract, per sample, the mean of the finite samples of the reference channels.

    A sample where no reference channel is finite is left unreferenced.
    """
    use = np.isfinite(Y) & (refmask != 0)[None, :]
    n = use.sum(axis=1)
    s = np.where(use, Y, 0.0).sum(axis=1, dtype=np.float64)
    mean = np.where(n > 0, s / np.maximum(n, 1), 0.0).astype(np.float32)
    return Y - mean[:, None]


def bin_segments(T: int, bin_fill: int, W: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Split ``T`` rows into pieces at bin boundaries.

    Returns the piece start rows, the cut rows (bin ends strictly inside the block), and
    whether the last piece completes a bin.
    """
    first_len = W - bin_fill
    cuts = np.arange(first_len, T, W, dtype=np.int64)
    starts = np.concatenate([[0], cuts]).astype(np.int64)
    last_complete = T >= first_len and (T - first_len) % W == 0
    return starts, cuts, last_complete


def accept_crossings(cand_ch: np.ndarray, cand_t: np.ndarray, earliest: np.ndarray,
                     dead_n: int) -> np.ndarray:
    """Greedy dead-time filter over crossing candidates sorted by (channel, time).

    A candidate is accepted when it is at or after the channel's ``earliest`` allowed row
    and at least ``dead_n`` rows after the channel's previous *accepted* crossing.
    """
    n = cand_ch.size
    keep = np.ones(n, bool)
    if n == 0:
        return keep
    new_ch = np.ones(n, bool)
    new_ch[1:] = cand_ch[1:] != cand_ch[:-1]
    gap_ok = np.ones(n, bool)
    gap_ok[1:] = (cand_t[1:] - cand_t[:-1]) >= dead_n
    viol = (new_ch & (cand_t < earliest[cand_ch])) | (~new_ch & ~gap_ok)
    if not viol.any():
        return keep
    for c in np.unique(cand_ch[viol]):
        sel = np.flatnonzero(cand_ch == c)
        nxt = earliest[c]
        for i in sel:
            if cand_t[i] >= nxt:
                nxt = cand_t[i] + dead_n
            else:
                keep[i] = False
    return keep


def features_block(V: np.ndarray, abs0: int, st, thr: np.ndarray, dead_n: int, W: int,
                   keep_events: bool, trough_n: int, emit) -> tuple[np.ndarray, np.ndarray]:
    """Threshold crossings, spike-band power and bins for referenced rows ``V`` (T x C).

    Updates the stream state ``st`` (bin accumulators, crossing state, open trough
    windows) in place and returns the completed bins ``(tx, sbp)``. ``emit(ch, cross,
    trough, val)`` receives finished events (arrays).
    """
    T, C = V.shape
    bin_fill = int(st.ist[0])
    starts, cuts, last_complete = bin_segments(T, bin_fill, W)
    n_complete = cuts.size + (1 if last_complete else 0)

    # spike-band power: mean |v| per bin (float64 running sums)
    sums = np.add.reduceat(np.abs(V).astype(np.float64), starts, axis=0)
    sums[0] += st.sbp_acc64
    # threshold crossings: first sample below after a sample at or above; dead time
    below = V < thr[None, :]
    above = V >= thr[None, :]
    prev_above = np.empty_like(above)
    prev_above[0] = st.armed != 0
    prev_above[1:] = above[:-1]
    cand_ch, cand_t = np.nonzero((below & prev_above).T)
    earliest = np.maximum(st.dead.astype(np.int64) - 1, 0)
    keep = accept_crossings(cand_ch, cand_t, earliest, dead_n)
    acc_ch, acc_t = cand_ch[keep], cand_t[keep]
    piece = np.searchsorted(cuts, acc_t, side="right")
    counts = np.zeros((starts.size, C), np.int64)
    np.add.at(counts, (piece, acc_ch), 1)
    counts[0] += st.tx_acc
    # crossing state at the end of the block
    st.armed[:] = above[-1]
    new_dead = np.maximum(st.dead.astype(np.int64) - T, 0)
    if acc_ch.size:
        last = np.full(C, -1, np.int64)
        last[acc_ch] = acc_t  # sorted by (channel, time): the last write is the latest
        has = last >= 0
        new_dead[has] = np.maximum(dead_n - (T - 1 - last[has]), 0)
    st.dead[:] = new_dead
    # bins
    out_tx = counts[:n_complete].astype(np.float32)
    out_sbp = (sums[:n_complete] / W).astype(np.float32)
    if last_complete:
        st.tx_acc[:] = 0
        st.sbp_acc64[:] = 0.0
    else:
        st.tx_acc[:] = counts[-1]
        st.sbp_acc64[:] = sums[-1]
    st.sbp_acc[:] = st.sbp_acc64
    st.ist[0] = (bin_fill + T) % W
    if keep_events:
        _events(V, abs0, st, acc_ch, acc_t, trough_n, emit)
    return out_tx, out_sbp


def _first_min(w: np.ndarray) -> int:
    w = np.where(np.isnan(w), np.inf, w)
    return int(np.argmin(w))


def _events(V, abs0, st, acc_ch, acc_t, trough_n, emit) -> None:
    T = V.shape[0]
    chans = np.union1d(np.flatnonzero(st.pend_left > 0), acc_ch)
    out: list[tuple[int, int, int, float]] = []
    for c in chans:
        crs = acc_t[acc_ch == c]
        vc = V[:, c]
        pl = int(st.pend_left[c])
        if pl > 0:
            lim = int(crs[0]) if crs.size else T
            m = min(pl, lim)
            if m > 0:
                j = _first_min(vc[:m])
                if vc[j] < st.pend_val[c]:
                    st.pend_val[c] = vc[j]
                    st.pend_idx[c] = abs0 + j
            pl -= m
            if pl == 0 or (crs.size and m == lim):
                out.append((c, int(st.pend_cross[c]), int(st.pend_idx[c]), float(st.pend_val[c])))
                pl = 0
                st.ist[6] -= 1
            st.pend_left[c] = pl
        for i, a in enumerate(crs):
            a = int(a)
            nxt = int(crs[i + 1]) if i + 1 < crs.size else T
            m = min(trough_n - 1, nxt - a - 1, T - 1 - a)
            w = vc[a:a + m + 1]
            j = _first_min(w)
            if not (w[j] < vc[a]):
                j = 0
            if m == trough_n - 1 or a + m + 1 == nxt and nxt < T:
                out.append((c, abs0 + a, abs0 + a + j, float(w[j])))
            else:  # window runs past the block
                st.pend_left[c] = trough_n - 1 - m
                st.pend_cross[c] = abs0 + a
                st.pend_idx[c] = abs0 + a + j
                st.pend_val[c] = w[j]
                st.ist[6] += 1
    if out:
        arr = np.array(out, dtype=object)
        emit(arr[:, 0].astype(np.int32), arr[:, 1].astype(np.int64),
             arr[:, 2].astype(np.int64), arr[:, 3].astype(np.float32))


def lfp_block(X: np.ndarray, cuts: np.ndarray, n_pieces: int, last_complete: bool, decim: int,
              coef: np.ndarray, zi: np.ndarray, lst) -> np.ndarray:
    """LFP band power for scaled rows ``X``: box-car decimation, float64 SOS, mean y² per bin.

    ``cuts``/``n_pieces``/``last_complete`` are the bin split of :func:`bin_segments`;
    ``lst`` is the LFP state (``z``, ``need_init``, ``acc``, ``pacc``, ``ist``).
    """
    T, C = X.shape
    phase = int(lst.ist[0])
    X64 = X.astype(np.float64)
    first = decim - phase - 1
    ends = np.arange(first, T, decim, dtype=np.int64)  # rows where a decimated sample completes
    n_out = ends.size
    n_pieces_out = n_pieces
    sums = np.zeros((n_pieces_out, C), np.float64)
    cnt = np.zeros(n_pieces_out, np.int64)
    if n_out:
        bstarts = np.concatenate([[0], ends[:-1] + 1])
        blocks = np.add.reduceat(X64[:ends[-1] + 1], bstarts, axis=0)
        blocks[0] += lst.acc
        xd = blocks / decim
        yd = filter_block(xd, coef, zi, lst.z, lst.need_init, None)
        piece = np.searchsorted(cuts, ends, side="right")
        np.add.at(sums, piece, yd * yd)
        np.add.at(cnt, piece, 1)
        tail = X64[ends[-1] + 1:]
        lst.acc[:] = tail.sum(axis=0)
    else:
        lst.acc[:] += X64.sum(axis=0)
    lst.ist[0] = (phase + T) % decim
    sums[0] += lst.pacc
    cnt[0] += lst.ist[1]
    n_complete = cuts.size + (1 if last_complete else 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(cnt[:n_complete, None] > 0, sums[:n_complete] / np.maximum(cnt[:n_complete, None], 1),
                       np.nan).astype(np.float32)
    if last_complete:
        lst.pacc[:] = 0.0
        lst.ist[1] = 0
    else:
        lst.pacc[:] = sums[-1]
        lst.ist[1] = cnt[-1]
    return out
