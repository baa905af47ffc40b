"""The comparison behind :func:`cortexlink.sorting.tracking.track_units`: how far the probe moved
between two sessions, and how likely each pair of units is the same neuron.

* **Resampling** -- a template seen on the channels of session A is moved by a rigid shift ``s``
  along the probe's long (y) axis by linear interpolation along each column of electrodes (the
  electrodes sharing an x); a channel whose shifted place falls outside its column (by more than
  a quarter of the electrode spacing, 5 µm at most) has no value there and is left out of every
  comparison (:func:`shift_index`).
* **Rigid shift** -- for every candidate shift in ±``max_shift_um`` (1 µm steps) each unit's
  peak-to-peak footprint over the channels (µV) in A is resampled and compared with every unit's
  footprint in B by ``2 <a, b> / (|a|^2 + |b|^2)`` (1 when equal, 0 when they do not overlap:
  sensitive to position and amplitude); the shift that maximises the sum over B's units of their
  best similarity wins, refined to a fraction of a µm by a parabola through the peak
  (:func:`estimate_shift`).
* **Pair features** at that shift (:func:`pair_features`), for pairs whose footprints overlap:
  the correlation of the two templates over the channels where either has more than 10 % of its
  peak (waveform shape and spread), the log ratio of their norms there (amplitude), the distance
  of the units' positions after the shift, and the log ratio of their firing rates.
* **Confidence** -- a logistic of those four features (:data:`LOGIT`), calibrated on simulated
  sessions with known identity (``cortexlink bench units-track``'s ground-truth units; see
  :data:`LOGIT`): the probability that the pair is one neuron.
"""

from __future__ import annotations

import numpy as np

__all__ = ["shift_index", "shift_values", "estimate_shift", "pair_features", "confidence", "LOGIT", "FEATURES"]

#: The pair features, in the order :data:`LOGIT` weighs them.
FEATURES = ("shape_corr", "amp_log_ratio", "position_um", "rate_log_ratio")

#: Logistic weights: intercept, then per feature of :data:`FEATURES` applied to
#: ``atanh(min(corr, 0.999))``, ``|amp_log_ratio|``, ``position_um`` and ``|rate_log_ratio|``.
#: Fitted (scikit-learn ``LogisticRegression(C=10)``) on the candidate pairs of days 1 and 2 apart
#: of simulated sessions whose identities are known (``bench.units_track.simulate_sessions``,
#: ground-truth units, turnover 0.15, 10 µm day-shift steps, the simulator's 0.25 day-to-day
#: rate jitter): seeds 1-3 at 64 channels x 30 s x 5 days and 4-5 at 32 channels x 10 s x 4 days,
#: 3511 pairs of which 357 one neuron. Seed 0, the benchmark's, was left out of the fit.
LOGIT = (3.0, 1.5, -11.7, -0.18, -4.3)

_COLUMN_TOL_UM = 1.0
_EDGE_UM = 5.0
_FOOTPRINT_FRACTION = 0.1


def shift_index(positions_um: np.ndarray, shift_um: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """How values on the channels move by ``shift_um`` along y: ``(i0, i1, f, valid)`` such that
    ``v[..., i0] * (1 - f) + v[..., i1] * f`` is, on channel ``c``, the value the channels see at
    ``positions_um[c] - (0, shift_um)`` (linear along c's column); ``valid`` (C,) is False where
    that place lies outside the column (the weights there are 0)."""
    pos = np.asarray(positions_um, float)
    C = len(pos)
    i0, i1 = np.arange(C), np.arange(C)
    f, valid = np.zeros(C), np.zeros(C, bool)
    xs = np.round(pos[:, 0] / _COLUMN_TOL_UM) * _COLUMN_TOL_UM
    for x in np.unique(xs):
        idx = np.flatnonzero(xs == x)
        idx = idx[np.argsort(pos[idx, 1], kind="stable")]
        ys = pos[idx, 1]
        target = ys - shift_um
        if len(idx) == 1:
            valid[idx] = abs(shift_um) < 1e-6
            continue
        # a place just past the column's end (up to a quarter of its spacing, 5 µm at most) takes
        # the end electrode's value: a shift of a fraction of a µm must not lose a row of channels
        tol = min(_EDGE_UM, 0.25 * float(np.median(np.diff(ys)))) if len(ys) > 1 else 0.0
        ok = (target >= ys[0] - tol - 1e-9) & (target <= ys[-1] + tol + 1e-9)
        target = np.clip(target, ys[0], ys[-1])
        j = np.clip(np.searchsorted(ys, target, side="right") - 1, 0, len(ys) - 2)
        span = ys[j + 1] - ys[j]
        frac = np.clip(np.where(span > 0, (target - ys[j]) / np.where(span > 0, span, 1.0), 0.0), 0.0, 1.0)
        i0[idx], i1[idx], f[idx], valid[idx] = idx[j], idx[j + 1], frac, ok
    return i0, i1, f, valid


def shift_values(values: np.ndarray, index: tuple) -> np.ndarray:
    """``values`` (..., C) moved along the probe with :func:`shift_index`'s ``index`` (0 where not
    valid)."""
    i0, i1, f, valid = index
    return (values[..., i0] * (1.0 - f) + values[..., i1] * f) * valid


def _dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Ua, Ub) ``2 <a, b> / (|a|^2 + |b|^2)`` of the rows of ``a`` and ``b``."""
    num = 2.0 * a @ b.T
    den = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :]
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def footprints(templates_uv: np.ndarray) -> np.ndarray:
    """(U, C) peak-to-peak amplitude of each template on each channel."""
    t = np.asarray(templates_uv, float)
    return (t.max(axis=1) - t.min(axis=1)) if t.size else np.zeros((t.shape[0], t.shape[-1]))


def estimate_shift(fp_a: np.ndarray, fp_b: np.ndarray, positions_um: np.ndarray, max_shift_um: float,
                   step_um: float = 1.0) -> tuple[float, float, np.ndarray, np.ndarray]:
    """The rigid shift (µm along y; units of B sit ``shift`` further along y than in A) that
    best aligns the footprints ``fp_a`` (Ua, C) with ``fp_b`` (Ub, C).

    Returns ``(shift_um, score, shifts, scores)``: the refined best shift, its score (mean over
    B's units of their best footprint similarity), and the whole curve.
    """
    shifts = np.arange(-max_shift_um, max_shift_um + step_um / 2, step_um)
    scores = np.zeros(len(shifts))
    if len(fp_a) == 0 or len(fp_b) == 0:
        return 0.0, 0.0, shifts, scores
    for i, s in enumerate(shifts):
        index = shift_index(positions_um, s)
        scores[i] = _dice(shift_values(fp_a, index), fp_b * index[3]).max(axis=0).mean()
    # prefer the smallest |shift| among equal scores (a flat curve means no evidence of a move)
    best = int(np.argmax(scores - 1e-9 * np.abs(shifts)))
    s = float(shifts[best])
    if 0 < best < len(shifts) - 1:
        y0, y1, y2 = scores[best - 1:best + 2]
        den = y0 - 2 * y1 + y2
        if den < 0:
            s += float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5)) * step_um
    return s, float(scores[best]), shifts, scores


def pair_features(a: dict, b: dict, positions_um: np.ndarray, shift_um: float,
                  min_overlap: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of the candidate pairs between units of ``a`` and ``b`` (dicts with
    ``templates_uv`` (U, T, C), ``unit_positions_um`` (U, 2), ``firing_rate_hz`` (U,)), A's
    templates moved by ``shift_um``.

    Returns ``(ia, ib, X)``: the indices of the pairs whose footprints overlap (similarity >
    ``min_overlap``) and their features (n, 4) in :data:`FEATURES` order.
    """
    ta, tb = np.asarray(a["templates_uv"], float), np.asarray(b["templates_uv"], float)
    if len(ta) == 0 or len(tb) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, len(FEATURES)))
    index = shift_index(positions_um, shift_um)
    ta = shift_values(ta, index)
    tb = tb * index[3]
    fa, fb = footprints(ta), footprints(tb)
    ia, ib = np.nonzero(_dice(fa, fb) > min_overlap)
    X = np.zeros((len(ia), len(FEATURES)))
    dy = np.array([0.0, shift_um])
    pa, pb = np.asarray(a["unit_positions_um"], float), np.asarray(b["unit_positions_um"], float)
    ra, rb = np.asarray(a["firing_rate_hz"], float), np.asarray(b["firing_rate_hz"], float)
    for k, (u, v) in enumerate(zip(ia, ib)):
        ch = (fa[u] > _FOOTPRINT_FRACTION * fa[u].max()) | (fb[v] > _FOOTPRINT_FRACTION * fb[v].max())
        x, y = ta[u][:, ch].ravel(), tb[v][:, ch].ravel()
        x0, y0 = x - x.mean(), y - y.mean()
        den = np.sqrt((x0 * x0).sum() * (y0 * y0).sum())
        X[k, 0] = (x0 * y0).sum() / den if den > 0 else 0.0
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        X[k, 1] = np.log(max(nx, 1e-9) / max(ny, 1e-9))
        X[k, 2] = float(np.linalg.norm(pb[v] - pa[u] - dy))
        X[k, 3] = np.log(max(ra[u], 1e-3) / max(rb[v], 1e-3))
    return ia, ib, X


def design(X: np.ndarray) -> np.ndarray:
    """The transformed features :data:`LOGIT` weighs (n, 4)."""
    X = np.asarray(X, float).reshape(-1, len(FEATURES))
    return np.stack([np.arctanh(np.clip(X[:, 0], -0.999, 0.999)), np.abs(X[:, 1]), X[:, 2], np.abs(X[:, 3])],
                    axis=1)


def confidence(X: np.ndarray, logit: tuple[float, ...] = LOGIT) -> np.ndarray:
    """Probability (0..1) that each pair of features ``X`` (n, 4) is one neuron."""
    w = np.asarray(logit, float)
    z = w[0] + design(X) @ w[1:]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
