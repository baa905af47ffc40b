"""Streaming feature extraction: band-pass, reference, threshold crossings, spike-band power.

:class:`FeatureExtractor` turns :class:`~cortexlink.core.types.Chunk` streams into
:class:`~cortexlink.core.types.BinnedFeatures`. See its docstring for the chain, the
semantics of calibration, crossings, spike-band power, gaps and non-finite samples.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Iterable

import numpy as np

from cortexlink.core.errors import ConfigError, GapError, NotFittedError, ValidationError
from cortexlink.core.types import BinnedFeatures, ChannelMap, Chunk
from cortexlink.core.validation import check_choice, check_positive, check_range
from cortexlink.dsp.calibration import Calibration, RailStats, estimate_calibration, reference_rows
from cortexlink.dsp.filters import (BACKENDS, check_band, design_bandpass, pad_sections, sos_coefficients,
                                    sos_state_init)

logger = logging.getLogger(__name__)

FEATURE_KINDS = ("tx", "sbp", "lfp")
REFERENCES = ("car", "lrr", "none")
GAP_POLICIES = ("bridge", "reset", "raise")

_CAL_RATE_HZ = 2000.0     # calibration rows are kept at about this rate ...
_CAL_MAX_ROWS = 8000      # ... and never more than this many per channel
_NO_MASK = -(2 ** 62)
_ALL_MASKED = 2 ** 62

# integer state indices (shared with the numba kernels)
_BIN_FILL, _N_OUT, _CAL_LEFT, _CAL_PHASE, _CAL_ROW, _N_EV, _N_PEND, _N_NEED_INIT = range(8)


class _RateLimitedLog:
    """Log a message at most once per ``interval_s`` per key (for per-chunk events)."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) >= self.interval_s:
            n = self._suppressed.pop(key, 0)
            suffix = f" ({n} similar messages suppressed)" if n else ""
            logger.warning(msg + suffix, *args)
            self._last[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1


@dataclasses.dataclass(frozen=True, eq=False)
class CrossingEvents:
    """Threshold-crossing events, sorted by crossing sample then channel.

    Attributes
    ----------
    channel_idx : ndarray (n_events,), int32
        Channel (column of the ChannelMap) of each event.
    sample_idx : ndarray (n_events,), int64
        Source-clock sample of the crossing: the first sample below threshold after a
        sample at or above it.
    trough_sample_idx : ndarray (n_events,), int64
        Sample of the minimum of the filtered, referenced signal within the trough
        window starting at the crossing (``trough_window_ms``; cut short by the next
        crossing on the channel).
    trough_uv : ndarray (n_events,), float32
        Filtered, referenced value at the trough (µV).

    Notes
    -----
    Where the detection sits: a spike is detected on its falling edge, so the crossing
    sample comes a little *before* the spike's trough in the raw signal (0-2 samples for
    spikes near threshold, up to ~4 samples = 0.13 ms for large ones, at 30 kHz with the
    default order-2 band-pass); the causal filter delays the filtered trough by about one
    sample, so ``trough_sample_idx`` lands 0-2 samples after the raw trough. Both are well
    inside a 0.4 ms matching tolerance; use ``trough_sample_idx`` to compare with
    trough-aligned ground truth.
    """

    channel_idx: np.ndarray
    sample_idx: np.ndarray
    trough_sample_idx: np.ndarray
    trough_uv: np.ndarray

    def __len__(self) -> int:
        return int(self.channel_idx.size)

    @classmethod
    def empty(cls) -> "CrossingEvents":
        return cls(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros(0, np.float32))

    @classmethod
    def _from_parts(cls, parts: list[tuple[np.ndarray, ...]]) -> "CrossingEvents":
        if not parts:
            return cls.empty()
        ch, cr, tr, val = (np.concatenate([p[i] for p in parts]) for i in range(4))
        order = np.lexsort((ch, cr))
        return cls(ch[order].astype(np.int32), cr[order].astype(np.int64),
                   tr[order].astype(np.int64), val[order].astype(np.float32))

    def per_channel(self, n_channels: int, *, at: str = "crossing") -> list[np.ndarray]:
        """Event samples of each channel (``at="crossing"`` or ``"trough"``), sorted."""
        check_choice("at", at, ("crossing", "trough"))
        s = self.sample_idx if at == "crossing" else self.trough_sample_idx
        order = np.lexsort((s, self.channel_idx))
        ch, s = self.channel_idx[order], s[order]
        bounds = np.searchsorted(ch, np.arange(n_channels + 1))
        return [s[bounds[i]:bounds[i + 1]] for i in range(n_channels)]


class _StreamState:
    """All mutable per-stream state, as numpy arrays shared by both backends."""

    def __init__(self, n_ch: int, n_sec: int, n_sec_lfp: int) -> None:
        self.ist = np.zeros(16, np.int64)
        self.z = np.zeros((n_sec, 2, n_ch), np.float32)
        self.need_init = np.ones(n_ch, np.int32)
        self.ist[_N_NEED_INIT] = n_ch
        self.nonfinite = np.zeros(n_ch, np.int64)
        self.armed = np.zeros(n_ch, np.int32)
        self.dead = np.zeros(n_ch, np.int32)
        self.tx_acc = np.zeros(n_ch, np.int32)
        self.sbp_acc = np.zeros(n_ch, np.float32)
        self.sbp_acc64 = np.zeros(n_ch, np.float64)
        self.pend_left = np.zeros(n_ch, np.int32)
        self.pend_cross = np.zeros(n_ch, np.int64)
        self.pend_idx = np.zeros(n_ch, np.int64)
        self.pend_val = np.zeros(n_ch, np.float32)
        self.yb = np.zeros(n_ch, np.float32)
        # LFP path
        self.lfp = _LfpState(n_ch, n_sec_lfp)

    def restart_filters(self) -> None:
        """Forget filter memory and crossing state (gap policy "reset")."""
        self.z[:] = 0
        self.need_init[:] = 1
        self.ist[_N_NEED_INIT] = self.need_init.size
        self.armed[:] = 0
        self.dead[:] = 0
        self.lfp.restart()

    def clear_bin(self) -> None:
        self.tx_acc[:] = 0
        self.sbp_acc[:] = 0
        self.sbp_acc64[:] = 0
        self.lfp.pacc[:] = 0
        self.lfp.ist[1] = 0


class _LfpState:
    def __init__(self, n_ch: int, n_sec: int) -> None:
        self.ist = np.zeros(8, np.int64)
        self.z = np.zeros((n_sec, 2, n_ch), np.float64)
        self.need_init = np.ones(n_ch, np.int32)
        self.ist[4] = n_ch
        self.acc = np.zeros(n_ch, np.float64)
        self.pacc = np.zeros(n_ch, np.float64)
        self.xb = np.zeros(n_ch, np.float64)

    def restart(self) -> None:
        self.z[:] = 0
        self.need_init[:] = 1
        self.ist[4] = self.need_init.size
        self.acc[:] = 0
        self.ist[0] = 0


class FeatureExtractor:
    """Streaming, chunk-size-invariant neural feature extraction for thousands of channels.

    The chain, per sample and channel:

    1. **scale** int16 counts to µV with the ChannelMap's ``gain_uv``/``offset_uv``
       (float32 input is taken to be µV already);
    2. **band-pass**: causal Butterworth (``band_hz``, ``filter_order``) as second-order
       sections in float32, state carried across chunks; each channel's filter starts
       (and restarts after a non-finite sample) in the steady state of its first finite
       sample, so electrode DC offsets cause no start-up transient;
    3. **reference** that leaves out bad channels (``channel_map.bad``, channels found
       flat/saturated/non-finite at calibration) and channels whose sample is NaN at
       that instant: ``"car"`` subtracts the mean of the good channels, ``"lrr"``
       (Young et al. 2018) subtracts from each good channel the least-squares
       combination of the other good channels fitted on the calibration window,
       ``"none"`` leaves the signal as is;
    4. **threshold crossings** at ``threshold_rms`` x the channel's noise RMS: a crossing
       is the first sample below threshold after a sample at or above it, and no other
       crossing is counted on that channel for ``dead_time_ms`` after it;
    5. **spike-band power** ``sbp``: the mean *absolute value* (µV) of the filtered,
       referenced signal over the bin;
    6. optional **LFP power** ``lfp`` (``lfp_band_hz``): the unreferenced µV signal is
       box-car decimated (to at least 10x the band's upper edge), band-passed
       (Butterworth order 2, float64) and its mean square (µV²) taken over the bin;
    7. **bins** of ``bin_ms`` aligned to the first sample after :meth:`reset`, emitted as
       soon as they are complete.

    Feature columns are ``"<channel_id>/tx"`` for every channel, then ``"/sbp"``, then
    ``"/lfp"`` (for the kinds requested).

    Calibration
    -----------
    Thresholds need the noise RMS of the filtered, referenced signal, and the reference
    needs to know the bad channels. Unless :meth:`calibrate` (or
    :meth:`set_calibration`) was called, the first ``calibration_s`` of the stream
    (rounded up to whole bins) is the calibration window: the filtered signal is kept
    (decimated to about 2 kHz, at most 8000 rows per channel) together with raw min/max
    statistics; at the window's last sample bad channels are detected (flat,
    saturated, non-finite), LRR weights fitted, and the noise RMS estimated as
    ``median(|x|) / 0.6745`` of the referenced window. Every bin that starts inside the
    window is emitted **masked** (``valid=False``, NaN) whatever the chunking; bins
    after it are valid. The calibration is then frozen; :meth:`recalibrate` re-estimates
    it from the next ``calibration_s`` of the stream (the old one stays in force until the
    new one is ready, and nothing is masked), :meth:`calibrate` estimates it offline from
    given data. :meth:`reset` keeps the calibration unless ``calibration=True``.

    Faults
    ------
    * NaN/Inf samples: the channel's features are masked for the bins containing them,
      its samples are counted in ``n_nonfinite_samples_``, its filter restarts at the
      next finite sample, and it is left out of the reference at those samples, so it
      never reaches other channels.
    * Dropped samples (``chunk.start_sample`` jumps ahead): recorded in the output's
      ``gaps`` as ``(first_missing_sample, n_missing)``, counted in ``n_gaps_`` and
      ``n_missing_samples_``, and handled by ``on_gap``: ``"bridge"`` keeps the filter
      state and the bin grid; bins that contain missing samples or the first sample
      after the gap are masked, bins entirely inside the gap are not emitted.
      ``"reset"`` emits the partly filled bin masked, restarts the filters and aligns a
      new bin grid on the first sample after the gap. ``"raise"`` raises
      :class:`~cortexlink.core.errors.GapError` and leaves the state untouched.
    * Overlapping or backwards ``start_sample`` raises
      :class:`~cortexlink.core.errors.ValidationError`.

    Parameters
    ----------
    channel_map : ChannelMap
        Electrode layout, gains and known bad channels.
    fs_hz : float
        Sampling rate of the chunks.
    band_hz : (float, float)
        Spike band, default ``(250, 5000)`` Hz.
    filter_order : int
        Butterworth order N of the band-pass (N second-order sections, 2N poles).
    reference : {"car", "lrr", "none"}
    threshold_rms : float
        Crossing threshold in units of noise RMS; must be negative.
    bin_ms : float
        Bin width; must be a whole number of samples.
    features : sequence of {"tx", "sbp", "lfp"}
        Feature kinds to output (``"lfp"`` is added when ``lfp_band_hz`` is given).
    lfp_band_hz : (float, float) or None
        LFP band, e.g. ``(1, 300)``.
    calibration_s : float
        Length of the calibration window (auto-calibration and :meth:`recalibrate`).
    on_gap : {"bridge", "reset", "raise"}
    backend : {"numba", "numpy"}
        ``"numba"``: the fused, single-pass kernel. ``"numpy"``: the plain numpy/scipy
        implementation of the same semantics (the reference used in tests).
    dead_time_ms : float
        Minimum interval between two crossings counted on a channel.
    keep_events : bool
        Keep every crossing (channel, crossing sample, trough sample, trough µV) in
        :attr:`events_`.
    trough_window_ms : float
        Length of the window, starting at the crossing sample, searched for the trough.
    flat_rms_uv : float
        Channels whose filtered robust RMS is below this are flat.
    saturation_frac : float
        Fraction of samples at one extreme value that makes a channel saturated.
    lrr_ridge : float
        Ridge regularisation of the LRR fit, relative to the mean channel variance.

    Attributes
    ----------
    noise_rms_uv_, thresholds_uv_ : ndarray (n_channels,)
        From the current calibration.
    bad_channels_ : ndarray (n_channels,), bool
        Bad channels (ChannelMap's plus detected ones).
    channel_map_ : ChannelMap
        The ChannelMap with ``bad_channels_`` as its bad mask.
    calibration_ : Calibration
    n_nonfinite_samples_ : ndarray (n_channels,), int64
    n_gaps_, n_missing_samples_, n_samples_ : int
    events_ : CrossingEvents
        With ``keep_events=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from cortexlink import ChannelMap
    >>> from cortexlink.dsp import FeatureExtractor
    >>> fx = FeatureExtractor(ChannelMap.grid(16), calibration_s=0.1, backend="numpy")
    >>> raw = np.random.default_rng(0).normal(0, 30, (6000, 16)).astype(np.int16)
    >>> out = fx.apply(raw)
    >>> out.n_bins, out.feature_names[:2]
    (10, ('ch0000/tx', 'ch0001/tx'))
    """

    def __init__(self, channel_map: ChannelMap, fs_hz: float = 30000.0, *,
                 band_hz: tuple[float, float] = (250.0, 5000.0), filter_order: int = 2,
                 reference: str = "car", threshold_rms: float = -4.5, bin_ms: float = 20.0,
                 features: Iterable[str] = ("tx", "sbp"),
                 lfp_band_hz: tuple[float, float] | None = None, calibration_s: float = 1.0,
                 on_gap: str = "bridge", backend: str = "numba", dead_time_ms: float = 1.5,
                 keep_events: bool = False, trough_window_ms: float = 0.5,
                 flat_rms_uv: float = 0.5, saturation_frac: float = 0.002,
                 lrr_ridge: float = 1e-3) -> None:
        if not isinstance(channel_map, ChannelMap):
            raise ConfigError(f"channel_map must be a cortexlink.ChannelMap; got {type(channel_map).__name__}")
        self.channel_map = channel_map
        self.fs_hz = check_positive("fs_hz", fs_hz)
        self.band_hz = check_band("band_hz", band_hz, self.fs_hz)
        if isinstance(filter_order, bool) or not isinstance(filter_order, (int, np.integer)) \
                or not 1 <= filter_order <= 12:
            raise ConfigError(f"filter_order must be an integer in [1, 12]; got {filter_order!r}")
        self.filter_order = int(filter_order)
        self.reference = check_choice("reference", reference, REFERENCES)
        thr = check_range("threshold_rms", threshold_rms)
        if thr >= 0:
            raise ConfigError(f"threshold_rms must be a negative number (negative-going crossings, "
                              f"e.g. -4.5); got {threshold_rms!r}")
        self.threshold_rms = thr
        self.bin_ms = check_positive("bin_ms", bin_ms)
        w = self.bin_ms * self.fs_hz / 1000.0
        if abs(w - round(w)) > 1e-6 * max(w, 1.0) or round(w) < 1:
            raise ConfigError(f"bin_ms must be a whole number (>= 1) of samples at fs_hz={self.fs_hz:g} "
                              f"(i.e. a multiple of {1000.0 / self.fs_hz:g} ms); got {bin_ms!r} "
                              f"({w:g} samples); the nearest valid value is "
                              f"{max(round(w), 1) * 1000.0 / self.fs_hz!r}")
        self.bin_width_samples = int(round(w))
        if isinstance(features, str):
            raise ConfigError(f"features must be a sequence of feature kinds from {FEATURE_KINDS}; "
                              f"got the string {features!r}")
        try:
            feats = tuple(features)
        except TypeError:
            raise ConfigError(f"features must be a sequence of feature kinds from {FEATURE_KINDS}; "
                              f"got {features!r}") from None
        if not feats or any(f not in FEATURE_KINDS for f in feats) or len(set(feats)) != len(feats):
            raise ConfigError(f"features must be a non-empty sequence of distinct kinds from "
                              f"{FEATURE_KINDS}; got {features!r}")
        if lfp_band_hz is None and "lfp" in feats:
            raise ConfigError("features contains 'lfp' but lfp_band_hz is None; give lfp_band_hz, "
                              "e.g. (1.0, 300.0)")
        if lfp_band_hz is not None:
            lo, hi = check_band("lfp_band_hz", lfp_band_hz, self.fs_hz)
            self.lfp_decim = max(1, int(self.fs_hz // (10.0 * hi)))
            self.lfp_band_hz: tuple[float, float] | None = check_band(
                "lfp_band_hz", (lo, hi), self.fs_hz / self.lfp_decim)
            feats = feats + (("lfp",) if "lfp" not in feats else ())
        else:
            self.lfp_band_hz = None
            self.lfp_decim = 1
        self.features = tuple(k for k in FEATURE_KINDS if k in feats)
        self.calibration_s = check_positive("calibration_s", calibration_s)
        self.on_gap = check_choice("on_gap", on_gap, GAP_POLICIES)
        self.backend = check_choice("backend", backend, BACKENDS)
        self.dead_time_ms = check_positive("dead_time_ms", dead_time_ms, allow_zero=True)
        if not isinstance(keep_events, (bool, np.bool_)):
            raise ConfigError(f"keep_events must be a bool; got {keep_events!r}")
        self.keep_events = bool(keep_events)
        self.trough_window_ms = check_positive("trough_window_ms", trough_window_ms, allow_zero=True)
        self.flat_rms_uv = check_positive("flat_rms_uv", flat_rms_uv, allow_zero=True)
        self.saturation_frac = check_range("saturation_frac", saturation_frac, 0.0, 1.0)
        if self.saturation_frac == 0:
            raise ConfigError(f"saturation_frac must be in (0, 1]; got {saturation_frac!r}")
        self.lrr_ridge = check_positive("lrr_ridge", lrr_ridge, allow_zero=True)

        # derived constants
        n = channel_map.n_channels
        self.n_channels = n
        self._sos = design_bandpass(self.fs_hz, self.band_hz, self.filter_order)
        self._coef = sos_coefficients(self._sos, np.float32)
        self._coef, self._zi = pad_sections(
            self._coef, np.ascontiguousarray(sos_state_init(self._sos), dtype=np.float32))
        if self.lfp_band_hz is not None:
            lsos = design_bandpass(self.fs_hz / self.lfp_decim, self.lfp_band_hz, 2)
            self._lcoef = sos_coefficients(lsos, np.float64)
            self._lzi = np.ascontiguousarray(sos_state_init(lsos), dtype=np.float64)
        else:
            self._lcoef = np.zeros((0, 5))
            self._lzi = np.zeros((0, 2))
        self._dead_n = max(1, int(round(self.dead_time_ms * self.fs_hz / 1000.0)))
        self._trough_n = max(1, int(round(self.trough_window_ms * self.fs_hz / 1000.0)))
        W = self.bin_width_samples
        self._cal_n = int(math.ceil(self.calibration_s * self.fs_hz / W - 1e-9)) * W
        self._gain = {np.dtype(np.int16): channel_map.gain_uv.astype(np.float32),
                      np.dtype(np.float32): np.ones(n, np.float32)}
        self._offset = {np.dtype(np.int16): channel_map.offset_uv.astype(np.float32),
                        np.dtype(np.float32): np.zeros(n, np.float32)}
        kinds = self.features
        self._feature_names = tuple(f"{cid}/{k}" for k in kinds for cid in channel_map.channel_ids)
        self._empty_out: BinnedFeatures | None = None   # shared result of chunks that complete no bin
        self._kind_codes: np.ndarray | None = None       # feature kinds as codes for the assemble kernel
        if self.backend == "numba":
            from cortexlink.dsp import _kernels  # fail early if numba is missing

            self._scratch = _kernels.scratch(n)
        self._log = _RateLimitedLog()
        self._calib: Calibration | None = None
        self.reset()

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (to build an identical extractor)."""
        return dict(channel_map=self.channel_map, fs_hz=self.fs_hz, band_hz=self.band_hz,
                    filter_order=self.filter_order, reference=self.reference,
                    threshold_rms=self.threshold_rms, bin_ms=self.bin_ms,
                    features=self.features,
                    lfp_band_hz=self.lfp_band_hz, calibration_s=self.calibration_s,
                    on_gap=self.on_gap, backend=self.backend, dead_time_ms=self.dead_time_ms,
                    keep_events=self.keep_events, trough_window_ms=self.trough_window_ms,
                    flat_rms_uv=self.flat_rms_uv, saturation_frac=self.saturation_frac,
                    lrr_ridge=self.lrr_ridge)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._feature_names

    @property
    def sos(self) -> np.ndarray:
        """The band-pass filter's second-order sections (scipy layout, float64)."""
        return self._sos.copy()

    @property
    def filter_delay_samples(self) -> float:
        """Group delay of the band-pass at the geometric centre of the band, in samples.

        A spike's trough in the filtered signal lags its trough in the raw signal by
        about this much.
        """
        from scipy.signal import freqz_sos

        f0 = math.sqrt(self.band_hz[0] * self.band_hz[1])
        df = f0 * 1e-3
        _, h = freqz_sos(self._sos, worN=[f0 - df, f0 + df], fs=self.fs_hz)
        dphi = np.unwrap(np.angle(h))
        return float(-(dphi[1] - dphi[0]) / (2 * np.pi * 2 * df) * self.fs_hz)

    # ------------------------------------------------------------------ state
    def reset(self, *, calibration: bool = False) -> None:
        """Forget the stream state (filter memory, bin alignment, counters, events).

        Parameters
        ----------
        calibration : bool
            Also forget the calibration, so that the next stream calibrates itself on its
            first ``calibration_s``.
        """
        if calibration:
            self._calib = None
        n = self.n_channels
        self._st = _StreamState(n, self._coef.shape[0], self._lcoef.shape[0])
        self._next: int | None = None
        self._grid0 = 0
        self._mask_ranges: list[tuple[int, int]] = []
        self._cal_rows: np.ndarray | None = None
        self._rails: RailStats | None = None
        self._cal_initial = False
        self._cal_mask_until = _NO_MASK
        self._events: list[tuple[np.ndarray, ...]] = []
        self._ev_cap = 0
        self._ev = None
        self._n_nonfinite_logged = 0
        self.n_gaps_ = 0
        self.n_missing_samples_ = 0
        self.n_samples_ = 0
        self._apply_calibration_arrays()
        if self._calib is None:
            self._arm_calibration(self._cal_n, initial=True)

    def _arm_calibration(self, n_samples: int, *, initial: bool) -> None:
        stride = max(int(round(self.fs_hz / _CAL_RATE_HZ)), int(math.ceil(n_samples / _CAL_MAX_ROWS)), 1)
        rows = -(-n_samples // stride)
        self._cal_rows = np.full((rows, self.n_channels), np.nan, np.float32)
        self._cal_stride = stride
        self._cal_total = n_samples
        self._rails = RailStats(self.n_channels)
        ist = self._st.ist
        ist[_CAL_LEFT] = n_samples
        ist[_CAL_PHASE] = 0
        ist[_CAL_ROW] = 0
        self._cal_initial = initial
        if initial:
            self._cal_mask_until = _ALL_MASKED

    def _apply_calibration_arrays(self) -> None:
        """Derive the kernels' per-channel arrays from the current calibration."""
        n = self.n_channels
        if self._calib is None:
            bad = self.channel_map.bad.copy()
            self._thr_k = np.full(n, -np.inf, np.float32)
        else:
            bad = self._calib.bad
            self._thr_k = np.where(bad, -np.inf, self._calib.thresholds_uv).astype(np.float32)
        self._bad = bad
        self._good_cols = None          # valid-mask template of the fast path, rebuilt on demand
        self._good = np.ascontiguousarray(~bad)
        self._refmask = (~bad).astype(np.int32) if self.reference != "none" else np.zeros(n, np.int32)
        self._lrr = self._calib.lrr_matrix if (self._calib is not None and self.reference == "lrr") else None

    # ------------------------------------------------------------------ calibration API
    @property
    def calibration_(self) -> Calibration:
        if self._calib is None:
            raise NotFittedError("FeatureExtractor is not calibrated yet: stream at least calibration_s "
                                 f"({self.calibration_s:g} s) through step(), or call calibrate(data)")
        return self._calib

    @property
    def is_calibrated(self) -> bool:
        return self._calib is not None

    @property
    def noise_rms_uv_(self) -> np.ndarray:
        return self.calibration_.noise_rms_uv

    @property
    def thresholds_uv_(self) -> np.ndarray:
        return self.calibration_.thresholds_uv

    @property
    def bad_channels_(self) -> np.ndarray:
        return self.calibration_.bad

    @property
    def channel_map_(self) -> ChannelMap:
        return self.channel_map.with_bad(self.calibration_.bad)

    def set_calibration(self, calibration: Calibration) -> "FeatureExtractor":
        """Use a given :class:`Calibration` (e.g. from another extractor) from now on."""
        if not isinstance(calibration, Calibration):
            raise ValidationError(f"calibration must be a cortexlink.dsp.Calibration; got "
                                  f"{type(calibration).__name__}")
        if calibration.bad.shape != (self.n_channels,):
            raise ValidationError(f"calibration must be for {self.n_channels} channels; got "
                                  f"{calibration.bad.shape[0]}")
        if self.reference == "lrr" and calibration.lrr_matrix is None:
            raise ValidationError("calibration must hold an lrr_matrix when reference='lrr'; got None")
        self._calib = calibration
        self._apply_calibration_arrays()
        if self._st.ist[_CAL_LEFT] > 0:  # stop any calibration in progress
            self._st.ist[_CAL_LEFT] = 0
            self._cal_rows = None
            if self._cal_initial and self._cal_mask_until == _ALL_MASKED:
                self._cal_mask_until = _NO_MASK
        return self

    def calibrate(self, data: Any, *, chunk_size: int | None = None) -> "FeatureExtractor":
        """Estimate the calibration offline from ``data`` and freeze it.

        The data go through a fresh copy of this chain (its own filter state); the
        calibration window is all of it. The stream state of ``self`` is untouched.

        Parameters
        ----------
        data : ndarray (n_samples, n_channels) int16/float32, Chunk, or iterable of Chunk
        chunk_size : int, optional
            Feed an array in chunks of this many samples (same result).

        Returns
        -------
        self
        """
        chunks = list(self._as_chunks(data, chunk_size))
        n = sum(c.n_samples for c in chunks)
        if n < 2:
            raise ValidationError(f"data must hold at least 2 samples to calibrate; got {n}")
        params = self.get_params()
        params["keep_events"] = False
        tmp = FeatureExtractor(**params)
        tmp._calib = None
        tmp.reset()
        tmp._arm_calibration(n, initial=True)
        for c in chunks:
            tmp.step(c)
        self.set_calibration(tmp.calibration_)
        return self

    def recalibrate(self) -> None:
        """Re-estimate the calibration from the next ``calibration_s`` of the stream.

        The current calibration stays in force (nothing is masked) until the window is
        complete; the new one applies from the sample after it.
        """
        self._arm_calibration(self._cal_n, initial=self._calib is None)

    def _finish_calibration(self, end_sample: int) -> None:
        ist = self._st.ist
        rows = self._cal_rows[: int(ist[_CAL_ROW])]
        cal = estimate_calibration(
            rows, self._rails, self.channel_map.bad, reference=self.reference,
            threshold_rms=self.threshold_rms, flat_rms_uv=self.flat_rms_uv,
            saturation_frac=self.saturation_frac, lrr_ridge=self.lrr_ridge,
            n_samples=self._cal_total)
        self._calib = cal
        self._apply_calibration_arrays()
        self._cal_rows = None
        self._rails = None
        if self._cal_initial:
            self._cal_mask_until = end_sample
        reasons = cal.bad_reasons()
        logger.info("calibrated on %d samples: %d bad channels (%d flat, %d saturated, %d non-finite), "
                    "median noise RMS %.2f uV", cal.n_samples, int(cal.bad.sum()), reasons["flat"].size,
                    reasons["saturated"].size, reasons["nonfinite"].size,
                    float(np.nanmedian(cal.noise_rms_uv)) if np.isfinite(cal.noise_rms_uv).any() else float("nan"))

    # ------------------------------------------------------------------ counters / events
    @property
    def n_nonfinite_samples_(self) -> np.ndarray:
        return self._st.nonfinite.copy()

    @property
    def counters_(self) -> dict[str, int]:
        """Fault and throughput counters since :meth:`reset`."""
        return {"n_samples": int(self.n_samples_), "n_gaps": int(self.n_gaps_),
                "n_missing_samples": int(self.n_missing_samples_),
                "n_nonfinite_samples": int(self._st.nonfinite.sum())}

    @property
    def events_(self) -> CrossingEvents:
        """Crossing events since :meth:`reset` (``keep_events=True``), including the ones
        whose trough window is still open (with their trough so far)."""
        if not self.keep_events:
            raise NotFittedError("events_ needs keep_events=True in the constructor")
        st = self._st
        parts = list(self._events)
        open_ = np.flatnonzero(st.pend_left > 0)
        if open_.size:
            parts.append((open_.astype(np.int32), st.pend_cross[open_].copy(),
                          st.pend_idx[open_].copy(), st.pend_val[open_].copy()))
        return CrossingEvents._from_parts(parts)

    def pop_events(self) -> CrossingEvents:
        """Return and forget the finished crossing events (open trough windows stay)."""
        if not self.keep_events:
            raise NotFittedError("pop_events needs keep_events=True in the constructor")
        ev = CrossingEvents._from_parts(self._events)
        self._events = []
        return ev

    def _emit(self, ch: np.ndarray, cross: np.ndarray, trough: np.ndarray, val: np.ndarray) -> None:
        self._events.append((ch, cross, trough, val))

    def _flush_pending_events(self) -> None:
        st = self._st
        open_ = np.flatnonzero(st.pend_left > 0)
        if open_.size:
            self._emit(open_.astype(np.int32), st.pend_cross[open_].copy(), st.pend_idx[open_].copy(),
                       st.pend_val[open_].copy())
        st.pend_left[:] = 0
        st.ist[_N_PEND] = 0

    # ------------------------------------------------------------------ streaming
    def step(self, chunk: Chunk) -> BinnedFeatures:
        """Process one chunk; return the bins it completed (possibly none).

        Parameters
        ----------
        chunk : Chunk
            ``data`` int16 counts or float32 µV, shape (n_samples, n_channels), at
            ``fs_hz``, with ``start_sample`` at or after the end of the previous chunk.

        Returns
        -------
        BinnedFeatures
            Bins completed by this chunk, with ``valid`` masks and any gaps seen.

        Raises
        ------
        ValidationError
            Wrong type, dtype, channel count or sampling rate; overlapping chunk.
        GapError
            A gap with ``on_gap="raise"``.
        """
        if not isinstance(chunk, Chunk):
            raise ValidationError(f"chunk must be a cortexlink.Chunk; got {type(chunk).__name__}")
        data = chunk.data
        if data.dtype != np.int16 and data.dtype != np.float32:
            raise ValidationError(f"chunk.data must have dtype int16 (counts) or float32 (µV); got {data.dtype}")
        if data.shape[1] != self.n_channels:
            raise ValidationError(f"chunk.data must have {self.n_channels} channels (columns, from the "
                                  f"ChannelMap); got {data.shape[1]}")
        if chunk.fs_hz != self.fs_hz:
            raise ValidationError(f"chunk.fs_hz must equal fs_hz={self.fs_hz:g}; got {chunk.fs_hz:g}")
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        if data.flags.writeable:
            data = data.view()
            data.flags.writeable = False
        start = chunk.start_sample
        blocks: list[tuple] = []
        gaps: list[tuple[int, int]] = []
        if self._next is None:
            self._next = start
            self._grid0 = start
        elif start != self._next:
            if start < self._next:
                raise ValidationError(
                    f"chunk.start_sample must be >= {self._next} (one past the last sample received; "
                    f"chunks may not overlap or go backwards); got {start}")
            n_missing = start - self._next
            if self.on_gap == "raise":
                raise GapError(f"chunk.start_sample jumped from the expected {self._next} to {start}: "
                               f"{n_missing} samples missing (on_gap='raise'; use 'bridge' or 'reset' "
                               f"to carry on)")
            gaps.append((self._next, n_missing))
            self.n_gaps_ += 1
            self.n_missing_samples_ += n_missing
            self._log.warning("gap", "gap of %d samples at sample %d (on_gap=%r)", n_missing,
                              self._next, self.on_gap)
            self._handle_gap(start, blocks)
        n = data.shape[0]
        if n:
            self._process(data, start, blocks)
            if data.dtype == np.float32:
                n_bad = int(self._st.nonfinite.sum())
                if n_bad > self._n_nonfinite_logged:
                    self._log.warning("nonfinite", "non-finite input: %d samples so far on %d channels "
                                      "(masked, left out of the reference)", n_bad,
                                      int(np.count_nonzero(self._st.nonfinite)))
                    self._n_nonfinite_logged = n_bad
        self._next = start + n
        self.n_samples_ += n
        return self._assemble(blocks, gaps)

    def _flush_partial_bin(self, blocks: list) -> None:
        """Emit the partly filled current bin as a masked bin and clear the accumulators."""
        st = self._st
        bf = int(st.ist[_BIN_FILL])
        if bf == 0:
            return
        nan = np.full((1, self.n_channels), np.nan, np.float32)
        blocks.append((np.array([self._next - bf], np.int64), nan, nan, nan, True))
        st.clear_bin()
        st.ist[_BIN_FILL] = 0
        st.lfp.ist[2] = 0

    def _handle_gap(self, start: int, blocks: list) -> None:
        st = self._st
        W = self.bin_width_samples
        e = self._next
        if self.on_gap == "bridge":
            cur = e - int(st.ist[_BIN_FILL])
            new = self._grid0 + ((start - self._grid0) // W) * W
            if new != cur:
                self._flush_partial_bin(blocks)
            st.ist[_BIN_FILL] = start - new
            st.lfp.ist[2] = start - new
            self._mask_ranges.append((e, start + 1))
        else:  # reset
            self._flush_partial_bin(blocks)
            st.restart_filters()
            if self.keep_events:
                self._flush_pending_events()
            self._grid0 = start

    def _process(self, data: np.ndarray, start: int, blocks: list) -> None:
        st = self._st
        ist = st.ist
        W = self.bin_width_samples
        n = data.shape[0]
        C = self.n_channels
        n_bins = (int(ist[_BIN_FILL]) + n) // W
        b0 = start - int(ist[_BIN_FILL])
        out_tx = np.empty((n_bins, C), np.float32)
        out_sbp = np.empty((n_bins, C), np.float32)
        out_lfp = np.empty((n_bins if self.lfp_band_hz is not None else 0, C), np.float32)
        ist[_N_OUT] = 0
        st.lfp.ist[3] = 0
        gain = self._gain[data.dtype]
        offset = self._offset[data.dtype]
        pos = 0
        numpy_done = 0
        while pos < n:
            stop = n
            collecting = ist[_CAL_LEFT] > 0
            if collecting:
                stop = min(n, pos + int(ist[_CAL_LEFT]))
                self._rails.update(data[pos:stop])
            if self.backend == "numba":
                self._run_numba(data, pos, stop, start, gain, offset, out_tx, out_sbp)
                if self.lfp_band_hz is not None:
                    self._run_lfp_numba(data, pos, stop, gain, offset, out_lfp)
            else:
                tx, sbp, lfp = self._run_numpy(data, pos, stop, start, gain, offset)
                done, m = numpy_done, tx.shape[0]
                out_tx[done:done + m] = tx
                out_sbp[done:done + m] = sbp
                if lfp is not None:
                    out_lfp[done:done + m] = lfp
                numpy_done += m
            if collecting and ist[_CAL_LEFT] == 0:
                self._finish_calibration(start + stop)
            pos = stop
        if n_bins:
            starts = b0 + np.arange(n_bins, dtype=np.int64) * W
            blocks.append((starts, out_tx, out_sbp, out_lfp if out_lfp.shape[0] else None, False))

    # ---- numba backend
    def _event_buffers(self) -> None:
        C = self.n_channels
        from cortexlink.dsp._kernels import TILE

        need = max((TILE + 2) * C, 4096)
        if self._ev is None or self._ev_cap < need:
            self._ev_cap = need
            self._ev = (np.zeros(need, np.int32), np.zeros(need, np.int64), np.zeros(need, np.int64),
                        np.zeros(need, np.float32))

    def _drain_events(self) -> None:
        k = int(self._st.ist[_N_EV])
        if k:
            ch, cr, tr, val = self._ev
            self._emit(ch[:k].copy(), cr[:k].copy(), tr[:k].copy(), val[:k].copy())
            self._st.ist[_N_EV] = 0

    def _kernel_call(self, data, pos, stop, start, mode, gain, offset, V, v0, out_tx, out_sbp):
        from cortexlink.dsp import _kernels as K

        st = self._st
        cal = self._cal_rows if self._cal_rows is not None else _EMPTY2
        if self.keep_events:
            ev = self._ev
        else:
            ev = _EMPTY_EV
        return K.chain(data, pos, stop, start, mode, gain, offset, self._coef, self._zi, st.z,
                       st.need_init, st.nonfinite, self._refmask, V, v0, self._thr_k, st.armed,
                       st.dead, self._dead_n, st.tx_acc, st.sbp_acc, self.bin_width_samples,
                       out_tx, out_sbp, cal, self._cal_stride if self._cal_rows is not None else 1,
                       self.keep_events, self._trough_n, st.pend_left, st.pend_cross, st.pend_idx,
                       st.pend_val, ev[0], ev[1], ev[2], ev[3], st.ist, *self._scratch)

    def _run_numba(self, data, pos, stop, start, gain, offset, out_tx, out_sbp) -> None:
        if self.keep_events:
            self._event_buffers()
        if self._lrr is None:
            t = pos
            while t < stop:
                t = self._kernel_call(data, t, stop, start, 0, gain, offset, _EMPTY2, 0, out_tx, out_sbp)
                if self.keep_events:
                    self._drain_events()
            return
        # LRR: filter the rows, reference them with one matrix product, then the features
        Y = np.empty((stop - pos, self.n_channels), np.float32)
        self._kernel_call(data, pos, stop, start, 1, gain, offset, Y, pos, out_tx, out_sbp)
        V = reference_rows(Y, "lrr", ~self._bad, self._lrr)
        t = pos
        while t < stop:
            t = self._kernel_call(data, t, stop, start, 2, gain, offset, V, pos, out_tx, out_sbp)
            if self.keep_events:
                self._drain_events()

    def _run_lfp_numba(self, data, pos, stop, gain, offset, out_lfp) -> None:
        from cortexlink.dsp import _kernels as K

        L = self._st.lfp
        K.lfp(data, pos, stop, gain, offset, self.lfp_decim, self._lcoef, self._lzi, L.z, L.need_init,
              L.acc, L.pacc, self.bin_width_samples, out_lfp, L.ist, L.xb)

    # ---- numpy backend
    def _run_numpy(self, data, pos, stop, start, gain, offset):
        from cortexlink.dsp import _numpy_engine as E

        st = self._st
        ist = st.ist
        raw = data[pos:stop]
        if raw.dtype == np.int16:
            X = raw.astype(np.float32) * gain + offset
        else:
            X = raw.astype(np.float32, copy=True)
        Y = E.filter_block(X, self._coef, self._zi, st.z, st.need_init, st.nonfinite)
        ist[_N_NEED_INIT] = int(st.need_init.sum())
        m = Y.shape[0]
        if ist[_CAL_LEFT] > 0:
            ph = int(ist[_CAL_PHASE])
            stride = self._cal_stride
            take = np.arange((-ph) % stride, m, stride)
            r = int(ist[_CAL_ROW])
            self._cal_rows[r:r + take.size] = Y[take]
            ist[_CAL_ROW] = r + take.size
            ist[_CAL_PHASE] = (ph + m) % stride
            ist[_CAL_LEFT] -= m
        if self._lrr is not None:
            V = reference_rows(Y, "lrr", ~self._bad, self._lrr)
        elif self.reference == "none":
            V = Y
        else:
            V = E.common_average(Y, self._refmask)
        bin_fill = int(ist[_BIN_FILL])
        _, cuts, last_complete = E.bin_segments(m, bin_fill, self.bin_width_samples)
        tx, sbp = E.features_block(V, start + pos, st, self._thr_k, self._dead_n, self.bin_width_samples,
                                   self.keep_events, self._trough_n, self._emit)
        lfp = None
        if self.lfp_band_hz is not None:
            lfp = E.lfp_block(X, cuts, cuts.size + 1, last_complete, self.lfp_decim, self._lcoef,
                              self._lzi, st.lfp)
            st.lfp.ist[2] = ist[_BIN_FILL]
        return tx, sbp, lfp

    # ------------------------------------------------------------------ output
    def _assemble(self, blocks: list, gaps: list) -> BinnedFeatures:
        W = self.bin_width_samples
        kinds = self.features
        if not blocks and not gaps:
            # Most small chunks complete no bin: hand out one shared, read-only empty result.
            if self._empty_out is None:
                z = np.zeros((0, len(self._feature_names)), np.float32)
                self._empty_out = BinnedFeatures(z, np.zeros(0, np.int64), W, self.fs_hz,
                                                 self._feature_names, np.zeros(z.shape, bool), ())
            return self._empty_out
        if len(blocks) == 1 and not gaps and not self._mask_ranges and "lfp" not in kinds:
            return self._assemble_one(blocks[0])
        return self._assemble_general(blocks, gaps)

    def _assemble_general(self, blocks: list, gaps: list) -> BinnedFeatures:
        C = self.n_channels
        W = self.bin_width_samples
        kinds = self.features
        if blocks:
            starts = np.concatenate([b[0] for b in blocks])
            tx = np.concatenate([b[1] for b in blocks])
            sbp = np.concatenate([b[2] for b in blocks])
            lfp = (np.concatenate([b[3] if b[3] is not None else np.full((b[0].size, C), np.nan, np.float32)
                                   for b in blocks]) if "lfp" in kinds else None)
            forced = np.concatenate([np.full(b[0].size, b[4]) for b in blocks])
        else:
            starts = np.zeros(0, np.int64)
            tx = sbp = np.zeros((0, C), np.float32)
            lfp = np.zeros((0, C), np.float32) if "lfp" in kinds else None
            forced = np.zeros(0, bool)
        base = ~forced & (starts >= self._cal_mask_until)
        for lo, hi in self._mask_ranges:
            base &= ~((starts < hi) & (starts + W > lo))
        if starts.size and self._mask_ranges:
            nxt = int(starts[-1]) + W
            self._mask_ranges = [(lo, hi) for lo, hi in self._mask_ranges if hi > nxt]
        good = ~self._bad
        ok = base[:, None] & good[None, :] & np.isfinite(sbp)
        cols, valid = [], []
        for k in kinds:
            if k == "tx":
                cols.append(tx)
                valid.append(ok)
            elif k == "sbp":
                cols.append(sbp)
                valid.append(ok)
            else:
                v = base[:, None] & good[None, :] & np.isfinite(lfp)
                cols.append(lfp)
                valid.append(v)
        data = np.concatenate(cols, axis=1) if cols else np.zeros((starts.size, 0), np.float32)
        vmask = np.concatenate(valid, axis=1)
        data = np.where(vmask, data, np.float32(np.nan)).astype(np.float32, copy=False)
        return BinnedFeatures(data, starts, W, self.fs_hz, self._feature_names, vmask, tuple(gaps))

    def _assemble_one(self, block: tuple) -> BinnedFeatures:
        """The real-time case of :meth:`_assemble` (one block of bins, no gap, no mask range, no
        LFP) with the fewest array operations: the same result, about a third of the time."""
        starts, tx, sbp, _, forced = block
        nb = starts.size
        C = self.n_channels
        kinds = self.features
        if self.backend == "numba":
            from cortexlink.dsp import _kernels as K

            codes = self._kind_codes
            if codes is None:
                codes = self._kind_codes = np.array([0 if k == "tx" else 1 for k in kinds], np.int8)
            data = np.empty((nb, C * len(kinds)), np.float32)
            vmask = np.empty(data.shape, bool)
            K.assemble(starts, tx, sbp, codes, self._good, bool(forced), int(self._cal_mask_until), data, vmask)
            return BinnedFeatures._trusted(data, starts, self.bin_width_samples, self.fs_hz,
                                           self._feature_names, vmask)
        gc = self._good_cols
        if gc is None:
            good = ~self._bad
            gc = self._good_cols = np.concatenate([good] * len(kinds))
        data = np.empty((nb, C * len(kinds)), np.float32)
        for j, k in enumerate(kinds):
            data[:, j * C:(j + 1) * C] = tx if k == "tx" else sbp
        fin = np.isfinite(sbp)
        vmask = np.empty(data.shape, bool)
        for j in range(len(kinds)):
            vmask[:, j * C:(j + 1) * C] = fin
        vmask &= gc
        if forced:
            vmask[:] = False
        elif starts[0] < self._cal_mask_until:
            vmask[starts < self._cal_mask_until] = False
        np.copyto(data, np.float32(np.nan), where=~vmask)
        return BinnedFeatures._trusted(data, starts, self.bin_width_samples, self.fs_hz, self._feature_names,
                                       vmask)

    # ------------------------------------------------------------------ offline
    def _as_chunks(self, data: Any, chunk_size: int | None) -> Iterable[Chunk]:
        if isinstance(data, Chunk):
            yield data
            return
        if isinstance(data, np.ndarray):
            if data.ndim != 2:
                raise ValidationError(f"data must be a 2-D array (samples x channels); got ndim "
                                      f"{data.ndim} (shape {data.shape})")
            if chunk_size is None:
                yield Chunk(data, self.fs_hz, 0)
                return
            cs = check_positive("chunk_size", chunk_size, integer=True)
            for i in range(0, data.shape[0], cs):
                yield Chunk(data[i:i + cs], self.fs_hz, i)
            return
        try:
            it = iter(data)
        except TypeError:
            raise ValidationError(f"data must be a numpy array, a Chunk or an iterable of Chunks; got "
                                  f"{type(data).__name__}") from None
        for c in it:
            yield c

    def apply(self, data: Any, *, chunk_size: int | None = None) -> BinnedFeatures:
        """Reset the stream state and run ``data`` through :meth:`step` (offline == online).

        Parameters
        ----------
        data : ndarray (n_samples, n_channels) int16/float32, Chunk, or iterable of Chunk
            An array is treated as a stream starting at sample 0.
        chunk_size : int, optional
            Feed an array in chunks of this many samples (the result does not depend on it).

        Returns
        -------
        BinnedFeatures
            All complete bins, with the gaps seen.
        """
        self.reset()
        parts = [self.step(c) for c in self._as_chunks(data, chunk_size)]
        if not parts:
            return self._assemble([], [])
        return BinnedFeatures.concat(parts)


_EMPTY2 = np.zeros((0, 0), np.float32)
_EMPTY_EV = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def detect_crossings(data: Any, channel_map: ChannelMap | None = None, fs_hz: float = 30000.0,
                     **kwargs: Any) -> CrossingEvents:
    """Threshold-crossing events of ``data`` with the same kernel as :class:`FeatureExtractor`.

    Parameters
    ----------
    data : ndarray (n_samples, n_channels) int16/float32, Chunk or iterable of Chunk
    channel_map : ChannelMap, optional
        Defaults to a grid with unit gain (int16 counts taken as µV).
    fs_hz : float
    **kwargs
        Further :class:`FeatureExtractor` parameters (``threshold_rms``, ``reference``,
        ``calibration_s``, ``backend``...).

    Returns
    -------
    CrossingEvents
        Crossings after the calibration window (``calibration_s``; none inside it, since
        thresholds are not known yet).
    """
    if channel_map is None:
        if isinstance(data, np.ndarray) and data.ndim == 2:
            n = data.shape[1]
        elif isinstance(data, Chunk):
            n = data.n_channels
        else:
            raise ValidationError("channel_map is required when data is not an array or a Chunk")
        channel_map = ChannelMap.grid(n, gain_uv=1.0)
    kwargs["keep_events"] = True
    fx = FeatureExtractor(channel_map, fs_hz, **kwargs)
    fx.apply(data)
    return fx.events_
