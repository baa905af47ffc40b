"""Plain scipy reference implementations: the baselines cortexlink's kernel is measured against.

:func:`scipy_chain` is what one would write with scipy and numpy in a few lines: the whole
array filtered with :func:`scipy.signal.sosfilt`, a numpy common average, thresholds from
the first ``calibration_s``, crossings and spike-band power per bin. No fusion, no
streaming state. It computes the same kind of features as
:class:`~cortexlink.dsp.FeatureExtractor` (same filter design and start-up, same
crossing rule and dead time, mean |x| spike-band power); small differences remain (its
noise RMS uses every calibration sample rather than a decimated set, and it does no
bad-channel detection).

:class:`ReferenceFeatureExtractor` is :class:`~cortexlink.dsp.FeatureExtractor` with
``backend="numpy"``: the streaming chain written with numpy/scipy block operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cortexlink.core.types import BinnedFeatures
from cortexlink.core.validation import check_array, check_positive
from cortexlink.dsp.features import FeatureExtractor
from cortexlink.dsp.filters import design_bandpass, sos_state_init


class ReferenceFeatureExtractor(FeatureExtractor):
    """:class:`FeatureExtractor` with the plain numpy/scipy backend (``backend="numpy"``).

    Same parameters and semantics as :class:`FeatureExtractor`; ``backend`` is fixed.
    """

    def __init__(self, channel_map: Any, fs_hz: float = 30000.0, config: Any = None, **overrides: Any) -> None:
        overrides["backend"] = "numpy"
        super().__init__(channel_map, fs_hz, config, **overrides)


def scipy_chain(data: np.ndarray, fs_hz: float = 30000.0, *, gain_uv: Any = 1.0,
                offset_uv: Any = 0.0, band_hz: tuple[float, float] = (250.0, 5000.0),
                filter_order: int = 2, threshold_rms: float = -4.5, bin_ms: float = 20.0,
                calibration_s: float = 1.0, dead_time_ms: float = 1.5,
                bad: np.ndarray | None = None, return_events: bool = False):
    """Whole-array scipy/numpy feature chain (the unfused baseline).

    Parameters
    ----------
    data : ndarray (n_samples, n_channels), int16 counts or float32 µV
    fs_hz : float
    gain_uv, offset_uv : float or array (n_channels,)
        Scaling of int16 counts to µV (ignored for float32 data).
    band_hz, filter_order, threshold_rms, bin_ms, dead_time_ms
        As in :class:`~cortexlink.dsp.FeatureExtractor`.
    calibration_s : float
        Noise RMS (``median(|x|) / 0.6745``) is estimated on the first ``calibration_s``
        of the referenced signal; those bins are masked.
    bad : ndarray (n_channels,) of bool, optional
        Channels left out of the common average (and masked).
    return_events : bool
        Also return the accepted crossings (for detection scoring).

    Returns
    -------
    BinnedFeatures
        ``"chNNNN/tx"`` then ``"chNNNN/sbp"`` for every channel, complete bins only.
        With ``return_events=True``: ``(features, event_samples, event_channels)``, the
        crossing sample and channel of every accepted crossing (calibration window included).
    """
    from scipy.signal import sosfilt

    from cortexlink.dsp._numpy_engine import accept_crossings

    check_array("data", data, ndim=2, dtype=(np.int16, np.float32))
    fs = check_positive("fs_hz", fs_hz)
    T, C = data.shape
    W = int(round(bin_ms * fs / 1000.0))
    if data.dtype == np.int16:
        x = data.astype(np.float32) * np.asarray(gain_uv, np.float32) + np.asarray(offset_uv, np.float32)
    else:
        x = data.astype(np.float32)
    sos = design_bandpass(fs, band_hz, filter_order)
    zi = sos_state_init(sos)[:, :, None] * x[0][None, None, :]
    y, _ = sosfilt(sos.astype(np.float32), x, axis=0, zi=zi.astype(np.float32))
    good = np.ones(C, bool) if bad is None else ~np.asarray(bad, bool)
    v = y - y[:, good].mean(axis=1, keepdims=True)
    n_cal = int(np.ceil(calibration_s * fs / W - 1e-9)) * W
    rms = np.median(np.abs(v[:n_cal]), axis=0) / 0.6745
    thr = (threshold_rms * rms).astype(np.float32)
    below = v < thr
    cand = np.zeros_like(below)
    cand[1:] = below[1:] & ~below[:-1]
    ch, t = np.nonzero(cand.T)
    dead_n = max(1, int(round(dead_time_ms * fs / 1000.0)))
    keep = accept_crossings(ch, t, np.zeros(C, np.int64), dead_n)
    n_bins = T // W
    cross = np.zeros((n_bins, C), np.float32)
    ok = t[keep] < n_bins * W
    np.add.at(cross, (t[keep][ok] // W, ch[keep][ok]), 1)
    sbp = np.abs(v[: n_bins * W]).reshape(n_bins, W, C).mean(axis=1)
    starts = np.arange(n_bins, dtype=np.int64) * W
    valid = np.tile((starts >= n_cal)[:, None] & good[None, :], (1, 2))
    feats = np.concatenate([cross, sbp.astype(np.float32)], axis=1)
    feats = np.where(valid, feats, np.float32(np.nan))
    names = tuple(f"ch{i:04d}/tx" for i in range(C)) + tuple(f"ch{i:04d}/sbp" for i in range(C))
    out = BinnedFeatures(feats, starts, W, fs, names, valid)
    if return_events:
        return out, t[keep].astype(np.int64), ch[keep].astype(np.int64)
    return out
