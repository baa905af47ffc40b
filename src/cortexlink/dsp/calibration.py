"""Calibration of the feature chain: bad-channel detection, reference weights, noise RMS.

A calibration is estimated from a window of the *filtered* signal (kept decimated, at
most a few thousand rows per channel, so memory stays bounded at thousands of channels)
plus running statistics of the raw samples (rails). It is then frozen until the next
calibration. The same :func:`estimate_calibration` serves the numba and numpy backends.

Detection rules
---------------
- **flat**: the channel's raw samples never change during the window, or the robust
  RMS of its filtered (unreferenced) signal is below ``flat_rms_uv``.
- **saturated**: at least ``saturation_frac`` of its finite samples (and at least
  ``MIN_RAIL_SAMPLES``) sit exactly at its minimum value or exactly at its maximum
  value — the signature of an amplifier or ADC clipped at a rail. Unclipped noise hits
  its extreme values only a handful of times.
- **nonfinite**: more than half of its samples in the window were NaN/Inf.

Bad channels (these plus ``ChannelMap.bad``) are left out of the reference and their
features are masked.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

#: minimum number of samples at one extreme value before a channel can be called saturated
MIN_RAIL_SAMPLES = 8
#: robust RMS scale: median(|x|) / 0.6745 estimates the standard deviation of Gaussian noise
MAD_SCALE = 0.6745


@dataclasses.dataclass(frozen=True, eq=False)
class Calibration:
    """A frozen calibration of :class:`~cortexlink.dsp.FeatureExtractor`.

    Attributes
    ----------
    noise_rms_uv : ndarray (n_channels,), float64
        Robust noise RMS ``median(|x|) / 0.6745`` of the filtered, referenced signal.
    thresholds_uv : ndarray (n_channels,), float64
        ``threshold_rms * noise_rms_uv``; NaN for bad channels.
    bad : ndarray (n_channels,), bool
        Channels left out of the reference and masked in the output (union of the
        ChannelMap's ``bad``, ``flat``, ``saturated`` and ``nonfinite``).
    flat, saturated, nonfinite : ndarray (n_channels,), bool
        Why a channel was found bad during calibration.
    lrr_matrix : ndarray (n_good, n_good) or None
        Linear-regression reference: referenced good channels are ``lrr_matrix @ y_good``.
    n_samples : int
        Samples the calibration was estimated from.
    """

    noise_rms_uv: np.ndarray
    thresholds_uv: np.ndarray
    bad: np.ndarray
    flat: np.ndarray
    saturated: np.ndarray
    nonfinite: np.ndarray
    lrr_matrix: np.ndarray | None = None
    n_samples: int = 0

    @property
    def good_idx(self) -> np.ndarray:
        return np.flatnonzero(~self.bad)

    def bad_reasons(self) -> dict[str, np.ndarray]:
        """Indices of channels found flat, saturated or non-finite."""
        return {"flat": np.flatnonzero(self.flat), "saturated": np.flatnonzero(self.saturated),
                "nonfinite": np.flatnonzero(self.nonfinite)}


class RailStats:
    """Running per-channel min/max of raw samples and how often each extreme was hit."""

    def __init__(self, n_channels: int) -> None:
        self.mn = np.full(n_channels, np.inf)
        self.mx = np.full(n_channels, -np.inf)
        self.n_mn = np.zeros(n_channels, np.int64)
        self.n_mx = np.zeros(n_channels, np.int64)
        self.n_finite = np.zeros(n_channels, np.int64)

    def update(self, raw: np.ndarray) -> None:
        """Fold a block of raw samples (samples x channels) into the statistics."""
        if raw.shape[0] == 0:
            return
        if raw.dtype.kind == "f":
            fin = np.isfinite(raw)
            self.n_finite += fin.sum(axis=0)
            hi = np.where(fin, raw, -np.inf).max(axis=0).astype(np.float64)
            lo = np.where(fin, raw, np.inf).min(axis=0).astype(np.float64)
        else:
            self.n_finite += raw.shape[0]
            hi = raw.max(axis=0).astype(np.float64)
            lo = raw.min(axis=0).astype(np.float64)
        n_hi = (raw == hi.astype(raw.dtype)[None, :]).sum(axis=0)
        n_lo = (raw == lo.astype(raw.dtype)[None, :]).sum(axis=0)
        self.n_mx = np.where(hi > self.mx, n_hi, np.where(hi == self.mx, self.n_mx + n_hi, self.n_mx))
        self.n_mn = np.where(lo < self.mn, n_lo, np.where(lo == self.mn, self.n_mn + n_lo, self.n_mn))
        self.mx = np.maximum(self.mx, hi)
        self.mn = np.minimum(self.mn, lo)


def _robust_rms(x: np.ndarray) -> np.ndarray:
    """``nanmedian(|x|, axis=0) / 0.6745``; NaN for all-NaN columns (without a warning)."""
    from cortexlink.dsp._side_kernels import abs_median_columns

    x = np.ascontiguousarray(x, dtype=np.float32)
    nan_cols = np.isnan(x).any(axis=0)
    # A compiled quickselect per column (bit-identical to np.median(np.abs(x), axis=0),
    # whose strided partition took ~0.5 s per call at 16,384 channels x 1,000 rows); the
    # (usually few) columns that hold NaN go to np.nanmedian.
    out = np.full(x.shape[1], np.nan, np.float32)
    if x.shape[0]:
        abs_median_columns(x, nan_cols, out)
    if nan_cols.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[nan_cols] = np.nanmedian(np.abs(x[:, nan_cols]), axis=0)
    return out.astype(np.float64) / MAD_SCALE


def fit_lrr(Yg: np.ndarray, ridge: float) -> np.ndarray:
    """Fit the linear-regression reference (Young et al. 2018) on good channels.

    Each channel is regressed (least squares, ridge ``ridge * mean variance``) on all the
    other good channels. With ``P`` the inverse of the regularised covariance, the
    regression weights are ``w_ij = -P_ij / P_ii`` and the referenced signal
    ``y_i - sum_j w_ij y_j`` equals ``(P y)_i / P_ii``; the returned matrix is
    ``diag(P)^-1 P``.

    Parameters
    ----------
    Yg : ndarray (n_rows, n_good)
        Filtered calibration rows of the good channels (rows with NaN are dropped).
    ridge : float
        Ridge strength relative to the mean channel variance.
    """
    k = Yg.shape[1]
    rows = Yg[np.all(np.isfinite(Yg), axis=1)].astype(np.float64)
    if k < 2 or rows.shape[0] < 2:
        return np.eye(k)
    cov = rows.T @ rows / rows.shape[0]
    lam = ridge * max(float(np.trace(cov)) / k, 1e-12)
    P = np.linalg.inv(cov + lam * np.eye(k))
    return P / np.diag(P)[:, None]


def apply_lrr(Y: np.ndarray, good_idx: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Reference rows ``Y`` (T x C) with the LRR matrix ``M`` over ``good_idx``.

    A non-finite sample contributes zero to the other channels' regression (it never
    propagates NaN to them) and stays NaN itself. Bad channels are left unreferenced.
    The product is computed in float64 and rounded once, so the result does not depend
    on how the rows are chunked.
    """
    V = Y.copy()
    if good_idx.size == 0:
        return V
    Yg = Y[:, good_idx]
    fin = np.isfinite(Yg)
    Yz = np.where(fin, Yg, 0.0).astype(np.float64)
    Vg = (Yz @ M.T).astype(np.float32)
    Vg[~fin] = np.nan
    V[:, good_idx] = Vg
    return V


def reference_rows(Y: np.ndarray, reference: str, good: np.ndarray,
                   lrr_matrix: np.ndarray | None) -> np.ndarray:
    """Apply the reference ("car", "lrr" or "none") to filtered rows, leaving out bad channels."""
    from cortexlink.dsp._numpy_engine import common_average

    if reference == "none":
        return Y.copy()
    if reference == "lrr" and lrr_matrix is not None:
        return apply_lrr(Y, np.flatnonzero(good), lrr_matrix)
    return common_average(Y, good.astype(np.int32))


def estimate_calibration(cal_rows: np.ndarray, rails: RailStats, map_bad: np.ndarray, *,
                         reference: str, threshold_rms: float, flat_rms_uv: float,
                         saturation_frac: float, lrr_ridge: float, n_samples: int) -> Calibration:
    """Estimate a :class:`Calibration` from decimated filtered rows and raw rail statistics.

    Parameters
    ----------
    cal_rows : ndarray (n_rows, n_channels), float32
        Filtered, unreferenced calibration samples (NaN where the input was not finite).
    rails : RailStats
        Raw-sample extremes over the same window.
    map_bad : ndarray (n_channels,), bool
        Channels already marked bad in the ChannelMap.
    reference : {"car", "lrr", "none"}
    threshold_rms : float
        Threshold in units of noise RMS (negative).
    flat_rms_uv, saturation_frac, lrr_ridge : float
        See :class:`~cortexlink.dsp.FeatureExtractor`.
    n_samples : int
        Raw samples the window held.
    """
    n_ch = cal_rows.shape[1]
    if cal_rows.shape[0] == 0:
        nonfinite = np.ones(n_ch, bool)
        pre_rms = np.full(n_ch, np.nan)
    else:
        nonfinite = np.isfinite(cal_rows).mean(axis=0) < 0.5
        pre_rms = _robust_rms(cal_rows)
    with np.errstate(invalid="ignore"):
        flat = ((rails.mx == rails.mn) & (rails.n_finite > 0)) | (pre_rms < flat_rms_uv)
        need = np.maximum(saturation_frac * rails.n_finite, MIN_RAIL_SAMPLES)
        saturated = ~flat & (rails.n_finite > 0) & (np.maximum(rails.n_mn, rails.n_mx) >= need)
    bad = np.asarray(map_bad, bool) | flat | saturated | nonfinite
    good = ~bad
    lrr_matrix = None
    if reference == "lrr":
        lrr_matrix = fit_lrr(cal_rows[:, good], lrr_ridge)
    if cal_rows.shape[0]:
        V = reference_rows(cal_rows, reference, good, lrr_matrix)
        rms = _robust_rms(V)
    else:
        rms = np.full(n_ch, np.nan)
    thr = np.where(bad, np.nan, threshold_rms * rms)
    return Calibration(noise_rms_uv=rms, thresholds_uv=thr, bad=bad, flat=flat,
                       saturated=saturated, nonfinite=nonfinite, lrr_matrix=lrr_matrix,
                       n_samples=int(n_samples))
