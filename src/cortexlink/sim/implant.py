"""A seeded, chunk-size-invariant synthetic implant: :class:`SimulatedImplant`.

Signal model (per channel, in µV, then int16 counts via ``ChannelMap.gain_uv``):

* **Background noise** -- white thermal noise plus a 1/f-like part (three one-pole filters of the
  same white input), scaled so its variance in the 250-5000 Hz band is the channel's share of
  ``noise_uv``. White noise is Irwin-Hall(12) (near-Gaussian, |z| <= 6) from a counter-based hash,
  so it vectorises and never depends on chunking.
* **Multi-unit activity** -- a Bernoulli impulse train (``mua_rate_hz``) of small negative
  amplitudes through a damped ~1.2-2.2 kHz resonator: many small distant biphasic spikes.
* **Single units** -- 0-3 per channel (``units_per_channel_p``), each with its own biphasic
  template, trough amplitude = SNR x the channel's spike-band background RMS.
* **LFP** -- a few Hz, from a handful of spatially smooth sources mixed onto nearby channels,
  generated at ~1 kHz and linearly interpolated.
* **Line noise** (50/60 Hz), **artefacts** (brief transients on nearly all channels),
  **dead** channels (near-zero) and **saturating** channels (offset near a rail, x20 gain).
* **Stimulation artefacts** of the pulses given to :meth:`SimulatedImplant.stimulate` (phases,
  saturation at the rails, exponential recovery; :mod:`cortexlink.sim.stim_artifacts`), delivered
  pulses in :attr:`SimulatedImplant.stimulation_log`.

Firing: ``rate = baseline * drift + depth * (v . pd) + click_depth * click + speech_depth * (w . a)``,
clipped to ``[0, max_rate_hz]``, constant within an internal block; spikes follow an inhomogeneous
Poisson process with an absolute refractory period (time rescaling, exact). The speech term needs
``speech_dims > 0``: ``a`` is the articulator vector of :meth:`SimulatedImplant.set_articulators`,
``w`` a unit-norm random tuning vector, ``speech_depth`` 0 for units not tuned to speech (one
matrix-vector product per block).

Shared and private variability (off by default; :class:`~cortexlink.sim.ImplantConfig`'s
``shared_noise`` and ``overdispersion``): every unit encodes ``v + eps`` instead of ``v``, ``eps``
one 2-D Ornstein-Uhlenbeck noise for the whole implant (information-limiting: decoders saturate
below R² = 1 however many channels; :meth:`SimulatedImplant.shared_noise_at`), and each unit's
rate is multiplied by a log-normal gain of its own that drifts over ``overdispersion_tau_s``
(super-Poisson counts). Each draws from its own random stream, one step per block.

Sorting realism (off by default; :mod:`cortexlink.sim._sorting_realism`): spatial footprints
over neighbouring electrodes (``footprint_um``), rigid positional drift along the probe
(``probe_drift_um``), bursts with ISI-dependent amplitude attenuation (``burst_*``) and per-spike
amplitude variability (``amplitude_jitter``).

Recording days: ``day = d`` applies ``d`` daily steps of baseline jitter, tuning rotation and unit
turnover (``day_drift``, ``day_turnover``), each drawn from its own ``(seed, day stream, k)``;
``day_shift_um`` adds a day-to-day rigid shift of the units along the probe (a random walk).

Determinism: samples are produced in fixed internal blocks of ``block_size`` samples; block ``k``
draws only from ``np.random.default_rng([seed, 1, k])`` (and hashes keyed by it), filter states
carry across blocks, and ``read`` serves any chunk size from the current block. The output is
therefore bit-identical for any sequence of chunk sizes.

Ground truth: the **spike time of a single-unit spike is the sample of its waveform's negative
peak (trough)**. SNR is ``|trough of the template after a zero-phase 250-5000 Hz band-pass| /
RMS of the background noise (thermal + 1/f + multi-unit) in an ideal 250-5000 Hz band`` (the noise
RMS computed analytically from the noise model's spectrum): the SNR a lab would measure on the
band-passed recording. ``unit_snr_raw`` gives the unfiltered trough over the same RMS.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from typing import Any, Callable

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.core.validation import check_positive
from cortexlink.sim import _kernels as K
from cortexlink.sim._implant_blocks import _BlockGenerator
from cortexlink.sim._implant_structure import (SPIKE_BAND_HZ, _PINK_K, _PINK_P, _STREAM_GAIN, _STREAM_SHARED,
                                               _STREAM_SHARED_SPEED,
                                               _STREAM_STATE, _ImplantStructure)
from cortexlink.sim._sorting_realism import _SortingRealism
from cortexlink.sim.config import PRESETS, ImplantConfig
from cortexlink.sim.ground_truth import GroundTruth, _Growing
from cortexlink.sim.stim_artifacts import _StimArtifacts

__all__ = ["SimulatedImplant", "GroundTruth", "SPIKE_BAND_HZ"]

logger = logging.getLogger(__name__)

IntentFn = Callable[[int], Any]


class SimulatedImplant(_ImplantStructure, _SortingRealism, _BlockGenerator, _StimArtifacts):
    """Seeded synthetic high-channel-count implant producing int16 :class:`~cortexlink.Chunk` s.

    Parameters
    ----------
    config : ImplantConfig, optional
        Base configuration (default: ``PRESETS["default"]``, 1024 channels at 30 kHz).
    intent_fn : callable, optional
        ``intent_fn(sample_idx) -> (vx, vy, click)``, called once per internal block with the
        block's start sample, for deterministic open-loop schedules. Without it a built-in smooth
        random velocity (seeded) with occasional clicks is used. :meth:`set_intent` overrides both.
    **overrides
        Fields of :class:`ImplantConfig` to change, e.g. ``n_channels=96, seed=3``.

    Raises
    ------
    ConfigError
        For an invalid or unknown configuration field, or an ``intent_fn`` that is not callable.

    Notes
    -----
    Output does not depend on the chunk sizes used to read it. Ground truth (see
    :meth:`ground_truth`) places each spike at the sample of its waveform's trough.

    Examples
    --------
    >>> imp = SimulatedImplant(n_channels=32, seed=1)
    >>> chunk = imp.read(30)            # 1 ms
    >>> imp.set_intent(velocity=(1.0, 0.0), click=0.0)
    >>> gt = imp.ground_truth()
    """

    def __init__(self, config: ImplantConfig | None = None, *, intent_fn: IntentFn | None = None,
                 **overrides: Any) -> None:
        if config is None:
            config = PRESETS["default"]
        if not isinstance(config, ImplantConfig):
            raise ConfigError(f"config must be an ImplantConfig or None; got {type(config).__name__}")
        if overrides:
            config = config.replace(**overrides)
        if intent_fn is not None and not callable(intent_fn):
            raise ConfigError(f"intent_fn must be callable (sample_idx -> (vx, vy, click)) or None; "
                              f"got {type(intent_fn).__name__}")
        self._cfg = config
        self._intent_fn = intent_fn
        self._build_static()
        self._build_realism()
        self._build_stim()
        self.reset()
        logger.debug("SimulatedImplant: %d channels, %d units, block %d samples, seed %d",
                     self.n_channels, self.n_units, self._B, config.seed)

    @classmethod
    def from_preset(cls, name: str, *, intent_fn: IntentFn | None = None, **overrides: Any) -> "SimulatedImplant":
        """Build from a named entry of :data:`~cortexlink.sim.PRESETS`, with optional overrides.

        Raises
        ------
        ConfigError
            If ``name`` is not a preset.
        """
        if name not in PRESETS:
            raise ConfigError(f"preset must be one of {sorted(PRESETS)}; got {name!r}")
        return cls(PRESETS[name], intent_fn=intent_fn, **overrides)

    # ------------------------------------------------------------------ dynamic state
    def reset(self) -> None:
        """Return to sample 0 with the initial state: the same seed gives the same output again.

        Also clears any intent set with :meth:`set_intent`, the articulators of
        :meth:`set_articulators`, the ground truth, pending stimulation and the stimulation log.
        """
        cfg, C, U = self._cfg, self.n_channels, self.n_units
        rng = np.random.default_rng([cfg.seed, _STREAM_STATE])
        # pink-noise filter states drawn from their stationary distribution
        cov = np.outer(_PINK_K, _PINK_K) / (1.0 - np.outer(_PINK_P, _PINK_P))
        b = rng.standard_normal((C, 3)) @ np.linalg.cholesky(cov).T
        self._b = [np.ascontiguousarray(b[:, i], dtype=np.float32) for i in range(3)]
        self._m1 = np.zeros(C, np.float32)
        self._m2 = np.zeros(C, np.float32)
        # LFP sources: burn in for 5 s of knots so they start stationary
        self._lfp_state = np.zeros((self._n_src, 4))
        burn = rng.standard_normal((int(5 * cfg.fs_hz / self._D), self._n_src))
        K.lfp_sources(burn, self._lfp_a1, self._lfp_a2, self._lfp_lp, self._lfp_state, self._lfp_norm)
        self._knots = ((self._lfp_state[:, 3] * self._lfp_norm) @ self._lfp_W.T)[None, :].astype(np.float32)
        self._knot0 = 0  # knot index of self._knots[0]
        # units
        self._drift_x = rng.standard_normal(U) if cfg.drift > 0 else np.zeros(U)
        self._hazard = K.init_hazards(self._spike_key, U)
        self._t_free = np.zeros(U)
        self._n_spk = np.zeros(U, np.int64)
        self._alive = np.ones(U, bool)
        self._lost = np.full(U, -1, np.int64)
        # built-in intent
        self._ix = rng.standard_normal(2)
        self._iv = rng.standard_normal(2) * math.sqrt((1 + self._intent_a ** 2) / (1 + self._intent_a) ** 2)
        self._click_left = 0
        self._manual: tuple[float, float, float] | None = None
        self._speech_a: np.ndarray | None = None
        # buffers
        self._extra = np.zeros((self._B + self._n_carry, C), np.float32)
        self._blk = np.zeros((self._B, C), np.int16)
        self._blk_pos = self._B
        self._k = 0
        self._pos = 0
        self._seq = 0
        self._onsets = np.empty(self._spike_cap, np.int64)
        self._units = np.empty(self._spike_cap, np.int32)
        self._gt_spk = _Growing(np.int64)
        self._gt_unit = _Growing(np.int32)
        self._gt_isamp = _Growing(np.int64)
        self._gt_int = _Growing(np.float64, 3)
        self._gt_art = _Growing(np.int64)
        self._gt_art_amp = _Growing(np.float64)
        # shared intent noise and private gain noise start stationary, each from its own stream
        self._shared_eps = np.zeros(2)
        if cfg.shared_noise > 0:
            self._shared_eps = cfg.shared_noise * np.random.default_rng([cfg.seed, _STREAM_SHARED]).standard_normal(2)
        self._shared_z = np.zeros(2)
        if cfg.shared_noise_speed > 0:
            self._shared_z = np.random.default_rng([cfg.seed, _STREAM_SHARED_SPEED]).standard_normal(2)
        self._gain_x = np.zeros(U)
        if cfg.overdispersion > 0:
            self._gain_x = np.random.default_rng([cfg.seed, _STREAM_GAIN]).standard_normal(U)
        self._gt_shared = _Growing(np.float64, 2)
        self._reset_realism()
        self._reset_stim()

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> ImplantConfig:
        """The validated configuration."""
        return self._cfg

    @property
    def channel_map(self) -> ChannelMap:
        """Electrode map (grid, ``gain_uv`` per count). Faulty channels are *not* marked bad."""
        return self._map

    @property
    def fs_hz(self) -> float:
        return self._cfg.fs_hz

    @property
    def n_channels(self) -> int:
        return self._cfg.n_channels

    @property
    def n_units(self) -> int:
        return len(self._unit_channel)

    @property
    def block_size(self) -> int:
        """Internal generation block in samples; intent changes apply at block boundaries."""
        return self._B

    @property
    def sample_index(self) -> int:
        """Index of the next sample :meth:`read` will return (samples read so far)."""
        return self._pos

    @property
    def n_generated(self) -> int:
        """Samples generated internally so far (>= :attr:`sample_index`)."""
        return self._k * self._B

    # ------------------------------------------------------------------ intent
    def set_intent(self, velocity: Any = (0.0, 0.0), click: float = 0.0) -> None:
        """Set the intent from the next not-yet-generated internal block on.

        Overrides ``intent_fn`` and the built-in intent until :meth:`clear_intent` or :meth:`reset`.

        Parameters
        ----------
        velocity : (float, float)
            Intended 2-D velocity; |v| ~ 1 is a typical fast movement.
        click : float
            Click intent in [0, 1].

        Raises
        ------
        ValidationError
            If velocity is not two finite numbers or click is outside [0, 1].
        """
        self._manual = self._check_intent(velocity, click, "set_intent")

    def clear_intent(self) -> None:
        """Go back to ``intent_fn`` (or the built-in intent) from the next generated block."""
        self._manual = None

    @property
    def speech_dims(self) -> int:
        """Dimension of the articulator vector (``config.speech_dims``; 0 = no speech tuning)."""
        return self._cfg.speech_dims

    @property
    def speech_tuning_hz(self) -> np.ndarray | None:
        """Read-only (n_units, speech_dims): each unit's rate change in Hz per unit of articulator
        drive along each dimension (depth x unit-norm tuning vector; zero rows for units not tuned
        to speech), as of :attr:`config.day <ImplantConfig>`; ``None`` when ``speech_dims == 0``."""
        return self._speech_M

    @property
    def units_replaced(self) -> np.ndarray:
        """Read-only bool (n_units,): units replaced by day-to-day turnover on days 1..``day``."""
        return self._units_replaced

    @property
    def unit_born_day(self) -> np.ndarray:
        """Read-only int (n_units,): the day on which the unit now in each slot appeared (0 = built
        with the implant); also ``ground_truth().unit_born_day``."""
        return self._static["unit_born_day"]

    @property
    def day_shift_total_um(self) -> float:
        """The day's rigid displacement (µm, along y) of every unit (``config.day_shift_um``)."""
        return float(self._static["day_shift_total_um"])

    def set_articulators(self, articulators: Any) -> None:
        """Set the articulator vector from the next not-yet-generated internal block on.

        Each speech-tuned unit's rate changes by ``speech_tuning_hz @ articulators`` until the next
        call, :meth:`reset` or ``set_articulators(None)``.

        Parameters
        ----------
        articulators : array-like (speech_dims,) or None
            The articulator state (e.g. a row of
            :meth:`cortexlink.sim.speech.SpeakingParticipant.trajectory`); ``None`` = no speech drive.

        Raises
        ------
        ValidationError
            If the implant has no speech tuning (``speech_dims == 0``), or the vector is not
            ``speech_dims`` finite numbers.
        """
        self._speech_a = None if articulators is None else self._check_articulators(articulators, "set_articulators")

    def _check_articulators(self, articulators: Any, where: str) -> np.ndarray:
        D = self._cfg.speech_dims
        if D == 0:
            raise ValidationError(f"{where}: this implant has no speech tuning (speech_dims=0); build it with "
                                  f"speech_dims in 1..64 to drive it with articulators")
        try:
            a = np.array(articulators, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValidationError(f"{where}: articulators must be {D} numbers; got {articulators!r}") from None
        if a.shape != (D,):
            raise ValidationError(f"{where}: articulators must have shape ({D},) (speech_dims); got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValidationError(f"{where}: articulators must be finite; got {a!r}")
        return a

    @staticmethod
    def _check_intent(velocity: Any, click: Any, where: str) -> tuple[float, float, float]:
        try:
            vx, vy = (float(v) for v in velocity)
            c = float(click)
        except (TypeError, ValueError):
            raise ValidationError(f"{where}: velocity must be two numbers (vx, vy) and click a number; "
                                  f"got velocity={velocity!r}, click={click!r}") from None
        if not (math.isfinite(vx) and math.isfinite(vy)):
            raise ValidationError(f"{where}: velocity must be finite; got {velocity!r}")
        if not 0.0 <= c <= 1.0:
            raise ValidationError(f"{where}: click must be in [0, 1]; got {click!r}")
        return vx, vy, c

    # ------------------------------------------------------------------ reading
    def read(self, n_samples: int) -> Chunk:
        """Return the next ``n_samples`` samples as an int16 :class:`~cortexlink.Chunk`.

        Parameters
        ----------
        n_samples : int
            Number of samples (> 0); any size, the samples do not depend on it.

        Returns
        -------
        Chunk
            ``data`` (n_samples, n_channels) int16 counts (µV = counts * ``channel_map.gain_uv``),
            ``start_sample`` = samples read before, ``host_time_ns`` = ``time.monotonic_ns()``,
            ``seq`` incrementing from 0.

        Raises
        ------
        ConfigError
            If ``n_samples`` is not a positive integer.
        """
        n = check_positive("n_samples", n_samples, integer=True)
        out = np.empty((n, self.n_channels), np.int16)
        filled, B = 0, self._B
        while filled < n:
            if self._blk_pos >= B:
                self._generate_block()
            take = min(B - self._blk_pos, n - filled)
            out[filled:filled + take] = self._blk[self._blk_pos:self._blk_pos + take]
            self._blk_pos += take
            filled += take
        self._render_stim(out, self._pos)
        chunk = Chunk(out, self._cfg.fs_hz, start_sample=self._pos, host_time_ns=time.monotonic_ns(),
                      seq=self._seq)
        self._pos += n
        self._seq += 1
        return chunk

    def read_seconds(self, seconds: float) -> Chunk:
        """Read ``round(seconds * fs_hz)`` samples (at least one); see :meth:`read`."""
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not seconds > 0:
            raise ConfigError(f"seconds must be a number > 0; got {seconds!r}")
        return self.read(max(1, int(round(seconds * self._cfg.fs_hz))))

    # ------------------------------------------------------------------ truth
    def ground_truth(self, until_sample: int | None = None) -> GroundTruth:
        """Ground truth of everything up to ``until_sample`` (default: the samples read so far).

        Spikes are included when their trough sample is ``< until_sample``; intents for blocks
        starting before it; artefacts with onset before it. ``until_sample`` may not exceed the
        samples generated internally (:attr:`n_generated`).

        Returns
        -------
        GroundTruth
        """
        until = self._pos if until_sample is None else int(until_sample)
        if not 0 <= until <= self.n_generated:
            raise ValidationError(f"until_sample must be in [0, {self.n_generated}] (samples generated); "
                                  f"got {until_sample!r}")
        spk = self._gt_spk.view()
        n_spk = int(np.searchsorted(spk, until, side="left"))
        isamp = self._gt_isamp.view()
        n_int = int(np.searchsorted(isamp, until, side="left"))
        art = self._gt_art.view()
        n_art = int(np.searchsorted(art, until, side="left"))
        intents = self._gt_int.view(n_int)
        return GroundTruth(
            n_samples=until,
            spike_samples=spk[:n_spk].copy(), spike_units=self._gt_unit.view(n_spk).copy(),
            unit_lost_sample=np.where((self._lost >= 0) & (self._lost < until), self._lost, -1),
            intent_samples=isamp[:n_int].copy(), intent_velocity=intents[:, :2].copy(),
            intent_click=intents[:, 2].copy(), artifact_samples=art[:n_art].copy(),
            artifact_peak_uv=self._gt_art_amp.view(n_art).copy(),
            spike_amplitude_scale=(self._gt_scale.view(n_spk).copy() if self._real
                                   else np.ones(n_spk, np.float32)), **self._static,
        )

    def expected_rates_hz(self, velocity: Any = (0.0, 0.0), click: float = 0.0,
                          articulators: Any = None) -> np.ndarray:
        """Each unit's current instantaneous rate (Hz) for a given intent (with drift and losses).

        ``articulators`` (a ``speech_dims`` vector, or None) adds the speech term as
        :meth:`set_articulators` does.

        With ``shared_noise`` or ``overdispersion`` on, the rate includes their current state (the
        shared intent noise and each unit's gain of the last generated block).

        This is the rate before the refractory period; the mean rate of a unit firing at ``r`` with
        refractory period ``tau`` is ``r / (1 + r * tau)``.
        """
        vx, vy, c = self._check_intent(velocity, click, "expected_rates_hz")
        cfg = self._cfg
        base = self._baseline
        if cfg.drift > 0:
            base = base * np.exp(cfg.drift * self._drift_x - 0.5 * cfg.drift ** 2)
        ex, ey = self._shared_eps + self._cfg.shared_noise_speed * math.hypot(vx, vy) * self._shared_z
        r = base + self._depth * ((vx + ex) * self._pd[:, 0] + (vy + ey) * self._pd[:, 1]) + self._click_depth * c
        if articulators is not None:
            r = r + self._speech_M @ self._check_articulators(articulators, "expected_rates_hz")
        if cfg.overdispersion > 0:
            r = r * np.exp(cfg.overdispersion * self._gain_x - 0.5 * cfg.overdispersion ** 2)
        r = np.clip(r, 0.0, self._cfg.max_rate_hz)
        r[~self._alive] = 0.0
        return r

    def shared_noise_at(self, samples: Any) -> np.ndarray:
        """(n, 2) shared intent noise (``config.shared_noise``) in force at each given sample index.

        Every unit encoded ``intent + shared noise`` (the intent "seen by cortex"); zeros when
        ``shared_noise == 0``. Samples must lie in blocks generated so far (< :attr:`n_generated`).

        Raises
        ------
        ValidationError
            For a sample outside ``[0, n_generated)``.
        """
        idx = np.asarray(samples)
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= self.n_generated):
            raise ValidationError(f"samples must be integer sample indices in [0, {self.n_generated}) (generated "
                                  f"so far); got values in [{idx.min()!r}, {idx.max()!r}]")
        return self._gt_shared.view()[idx // self._B].copy()

    def __repr__(self) -> str:
        return (f"SimulatedImplant(n_channels={self.n_channels}, n_units={self.n_units}, "
                f"fs_hz={self.fs_hz:g}, seed={self._cfg.seed}, sample_index={self._pos})")
