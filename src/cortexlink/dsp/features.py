"""Streaming feature extraction: band-pass, reference, threshold crossings, spike-band power.

:class:`FeatureExtractor` turns :class:`~cortexlink.core.types.Chunk` streams into
:class:`~cortexlink.core.types.BinnedFeatures`. See its docstring for the chain, the
semantics of calibration, crossings, spike-band power, gaps and non-finite samples. Its
parameters are a :class:`~cortexlink.dsp.config.FeatureConfig`.

The extractor's parts live in :mod:`cortexlink.dsp.config` (parameters),
:mod:`cortexlink.dsp.crossings` (:class:`CrossingEvents`), :mod:`cortexlink.dsp.detect` (:func:`detect_crossings`), and the
private modules ``_state`` (stream state), ``_chain`` (per-chunk processing, both backends),
``_assembly`` (output layout) and ``_ratelog``; the public names stay importable from here.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping

import numpy as np

from cortexlink.core.errors import ConfigError, GapError, NotFittedError, ValidationError
from cortexlink.core.types import BinnedFeatures, ChannelMap, Chunk, check_chunk
from cortexlink.core.validation import check_positive
from cortexlink.dsp._assembly import _AssemblyMixin
from cortexlink.dsp._chain import _ChainMixin
from cortexlink.dsp._ratelog import _RateLimitedLog
from cortexlink.dsp._state import _CAL_LEFT, _CAL_PHASE, _CAL_ROW, _N_PEND, _StreamState
from cortexlink.dsp.calibration import Calibration, RailStats, estimate_calibration
from cortexlink.dsp.config import FEATURE_KINDS, GAP_POLICIES, REFERENCES, FeatureConfig
from cortexlink.dsp.crossings import CrossingEvents
from cortexlink.dsp.filters import check_band, design_bandpass, pad_sections, sos_coefficients, sos_state_init

__all__ = ["FeatureExtractor", "FeatureConfig", "CrossingEvents", "FEATURE_KINDS",
           "REFERENCES", "GAP_POLICIES"]

logger = logging.getLogger(__name__)

_CAL_RATE_HZ = 2000.0     # calibration rows are kept at about this rate ...
_CAL_MAX_ROWS = 8000      # ... and never more than this many per channel
_NO_MASK = -(2 ** 62)
# threshold of channels that may not cross (uncalibrated, bad): no finite float32 sample lies
# below it, like -inf, but the compiled kernel's event pass runs ~20x slower with -inf in it
_NEVER_UV = np.float32(-3.0e38)
_ALL_MASKED = 2 ** 62


class FeatureExtractor(_ChainMixin, _AssemblyMixin):
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
    config : FeatureConfig or dict, optional
        All the other parameters (below) as one validated, frozen object; a dict goes
        through :meth:`FeatureConfig.from_dict`. Default ``FeatureConfig()``.
    **overrides
        Fields of :class:`~cortexlink.dsp.config.FeatureConfig` as keywords; they replace
        those of ``config``: ``FeatureExtractor(cmap, fs, bin_ms=10.0)`` is
        ``FeatureExtractor(cmap, fs, FeatureConfig(bin_ms=10.0))``. The fields are:
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
    n_threads : int
        Threads of the numba backend (1: the calling thread; 0: one per core); the channels
        are split among them and the output is identical to one thread's.

    Attributes
    ----------
    config : FeatureConfig
        The parameters (each field is also an attribute of the same name).
    n_threads_ : int
        Parts the channels are split into: ``n_threads`` capped by the channel groups (one
        per 256 channels); 1 for the numpy backend. They run on as many threads, at most
        numba's pool (``NUMBA_NUM_THREADS``, by default the number of cores).
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
    def __init__(self, channel_map: ChannelMap, fs_hz: float = 30000.0,
                 config: FeatureConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        if not isinstance(channel_map, ChannelMap):
            raise ConfigError(f"channel_map must be a cortexlink.ChannelMap; got {type(channel_map).__name__}")
        if config is None:
            config = FeatureConfig()
        elif isinstance(config, Mapping):
            config = FeatureConfig.from_dict(config, "config")
        elif not isinstance(config, FeatureConfig):
            raise ConfigError(f"config must be a cortexlink.dsp.FeatureConfig, a dict or None; got "
                              f"{type(config).__name__}")
        if overrides:
            config = config.replace(**overrides)
        self.config: FeatureConfig = config
        self.channel_map = channel_map
        self.fs_hz = check_positive("fs_hz", fs_hz)
        # The parameters, also as attributes (read on the per-chunk path); config is the source.
        self.band_hz = check_band("band_hz", config.band_hz, self.fs_hz)
        self.filter_order = config.filter_order
        self.reference = config.reference
        self.threshold_rms = config.threshold_rms
        self.bin_ms = config.bin_ms
        self.features = config.features
        self.lfp_band_hz = config.lfp_band_hz
        self.calibration_s = config.calibration_s
        self.on_gap = config.on_gap
        self.backend = config.backend
        self.dead_time_ms = config.dead_time_ms
        self.keep_events = config.keep_events
        self.trough_window_ms = config.trough_window_ms
        self.flat_rms_uv = config.flat_rms_uv
        self.saturation_frac = config.saturation_frac
        self.lrr_ridge = config.lrr_ridge
        self.n_threads = config.n_threads
        # the checks that need fs_hz
        w = self.bin_ms * self.fs_hz / 1000.0
        if abs(w - round(w)) > 1e-6 * max(w, 1.0) or round(w) < 1:
            raise ConfigError(f"bin_ms must be a whole number (>= 1) of samples at fs_hz={self.fs_hz:g} "
                              f"(i.e. a multiple of {1000.0 / self.fs_hz:g} ms); got {self.bin_ms!r} "
                              f"({w:g} samples); the nearest valid value is "
                              f"{max(round(w), 1) * 1000.0 / self.fs_hz!r}")
        self.bin_width_samples = int(round(w))
        if self.lfp_band_hz is not None:
            lo, hi = check_band("lfp_band_hz", self.lfp_band_hz, self.fs_hz)
            self.lfp_decim = max(1, int(self.fs_hz // (10.0 * hi)))
            check_band("lfp_band_hz", (lo, hi), self.fs_hz / self.lfp_decim)
        else:
            self.lfp_decim = 1

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
        self._no_rows = np.empty((0, n), np.float32)     # their (unwritten) output rows
        self._kind_codes: np.ndarray | None = None       # feature kinds as codes for the assemble kernel
        self.n_threads_ = 1
        if self.backend == "numba":
            self._setup_numba()  # fails early if numba is missing
        self._log = _RateLimitedLog(logger)
        self._calib: Calibration | None = None
        self.reset()

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (to build an identical extractor): ``channel_map``, ``fs_hz`` and
        the fields of :attr:`config` (:meth:`FeatureConfig.to_dict`), as keyword arguments."""
        return dict(channel_map=self.channel_map, fs_hz=self.fs_hz, **self.config.to_dict())

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._feature_names

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
            self._thr_k = np.full(n, _NEVER_UV, np.float32)
        else:
            bad = self._calib.bad
            self._thr_k = np.where(bad, _NEVER_UV, self._calib.thresholds_uv).astype(np.float32)
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
        tmp = FeatureExtractor(self.channel_map, self.fs_hz, self.config.replace(keep_events=False))
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
        data = check_chunk(chunk, self.n_channels, self.fs_hz)
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
