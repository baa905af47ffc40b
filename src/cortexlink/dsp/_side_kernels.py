"""Numba kernels beside the feature chain: LFP band power, rail statistics, output layout.

Imported lazily, like :mod:`cortexlink.dsp._kernels` (the chain itself), whose
``fastmath`` flags they share.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cortexlink.dsp._kernels import _FM

# indices into the LFP state vector
L_PHASE = 0
L_N_IN_BIN = 1
L_BIN_FILL = 2
L_N_OUT = 3
L_N_NEED_INIT = 4


@njit(cache=True)
def rails(raw, mn, mx, n_mn, n_mx, n_finite):  # pragma: no cover - compiled
    """:meth:`cortexlink.dsp.calibration.RailStats.update` in one pass: per channel, the
    extremes of the finite raw samples and how many samples hit each (same result)."""
    for t in range(raw.shape[0]):
        r = raw[t]
        for c in range(r.shape[0]):
            x = np.float64(r[c])
            if abs(x) < np.inf:
                n_finite[c] += 1
                if x > mx[c]:
                    mx[c] = x
                    n_mx[c] = 1
                elif x == mx[c]:
                    n_mx[c] += 1
                if x < mn[c]:
                    mn[c] = x
                    n_mn[c] = 1
                elif x == mn[c]:
                    n_mn[c] += 1


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
