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

Firing: ``rate = baseline * drift + depth * (v . pd) + click_depth * click``, clipped to
``[0, max_rate_hz]``, constant within an internal block; spikes follow an inhomogeneous Poisson
process with an absolute refractory period (time rescaling, exact).

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

import dataclasses
import logging
import math
import numbers
import time
from typing import Any, Callable

import numpy as np
from scipy.integrate import trapezoid

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.core.validation import check_positive
from cortexlink.sim import _kernels as K
from cortexlink.sim.config import PRESETS, ImplantConfig
from cortexlink.sim.waveforms import artifact_shape, unit_templates

__all__ = ["SimulatedImplant", "GroundTruth", "SPIKE_BAND_HZ"]

logger = logging.getLogger(__name__)

#: Band in which noise RMS (and so SNR) is defined.
SPIKE_BAND_HZ = (250.0, 5000.0)

_STREAM_SETUP, _STREAM_BLOCK, _STREAM_STATE, _STREAM_SPIKES = 0, 1, 2, 3
# 1/f-like noise: Paul Kellet's economy pink filter (three one-pole sections of one white input).
_PINK_P = np.array([0.99765, 0.96300, 0.57000])
_PINK_K = np.array([0.0990460, 0.2965164, 1.0526913])
_PINK_K3 = 0.1848
_SAT_GAIN = 20.0
_SAT_LEVEL = 0.99  # fraction of full scale at which a saturating channel sits
_DEAD_NOISE_UV = 0.3
_ARTIFACT_MS = 6.0
_LFP_KNOT_HZ = 1000.0
_LFP_LOWPASS_HZ = 40.0
_N_MUA_VARIANTS = 32


def _bandpassed_trough_fraction(templates: np.ndarray, fs: float) -> np.ndarray:
    """|trough| of each template after a zero-phase 250-5000 Hz band-pass / its raw |trough|."""
    from scipy.signal import butter, sosfiltfilt

    if templates.shape[0] == 0:
        return np.ones(0)
    hi = min(SPIKE_BAND_HZ[1], 0.45 * fs)
    sos = butter(2, (SPIKE_BAND_HZ[0], hi), btype="bandpass", fs=fs, output="sos")
    pad = np.zeros((templates.shape[0], int(0.01 * fs)))
    x = np.concatenate([pad, templates, pad], axis=1)
    raw = -templates.min(axis=1)
    return np.maximum(-sosfiltfilt(sos, x, axis=1).min(axis=1), 1e-6) / raw

IntentFn = Callable[[int], Any]


def _band_power(h2: np.ndarray, f: np.ndarray, fs_hz: float) -> np.ndarray:
    """Variance in band of unit-variance white noise filtered by a response with |H|^2 = ``h2``."""
    return 2.0 * trapezoid(h2, f, axis=-1) / fs_hz


class _Growing:
    """Append-only numpy buffer with amortised doubling (ground-truth storage)."""

    def __init__(self, dtype: Any, width: int | None = None, capacity: int = 1024) -> None:
        self._shape_tail = () if width is None else (width,)
        self._a = np.empty((capacity,) + self._shape_tail, dtype)
        self.n = 0

    def append(self, x: np.ndarray) -> None:
        m = len(x)
        if self.n + m > len(self._a):
            new = np.empty((max(2 * len(self._a), self.n + m),) + self._shape_tail, self._a.dtype)
            new[:self.n] = self._a[:self.n]
            self._a = new
        self._a[self.n:self.n + m] = x
        self.n += m

    def view(self, n: int | None = None) -> np.ndarray:
        return self._a[:self.n if n is None else n]


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the simulated implant really did, up to ``n_samples``.

    Attributes
    ----------
    n_samples : int
        Ground truth covers samples ``[0, n_samples)``.
    fs_hz : float
        Sampling rate.
    spike_samples : ndarray (n_spikes,), int64
        Sample of each single-unit spike's **negative peak (trough)**, sorted.
    spike_units : ndarray (n_spikes,), int32
        Unit index of each spike.
    unit_channel : ndarray (n_units,), int32
        Channel each unit is recorded on.
    unit_snr : ndarray (n_units,)
        SNR as measured on a band-passed recording: |trough| of the unit's template after a
        zero-phase order-2 Butterworth 250-5000 Hz band-pass, over the spike-band (250-5000 Hz)
        RMS of the channel's background noise. Drawn from ``ImplantConfig.snr_range``.
    unit_snr_raw : ndarray (n_units,)
        |raw (unfiltered) trough amplitude| / the same noise RMS (about 10% above ``unit_snr``).
    unit_amplitude_uv : ndarray (n_units,)
        |trough amplitude| in µV.
    unit_templates_uv : ndarray (n_units, n_template), float32
        Each unit's waveform in µV; the trough is at ``template_trough_idx``.
    template_trough_idx : int
        Index of the trough within a template (samples before the trough).
    unit_preferred_direction : ndarray (n_units, 2)
        Unit vectors of the preferred velocity direction.
    unit_baseline_hz, unit_depth_hz : ndarray (n_units,)
        Baseline rate (before drift) and cosine-tuning depth.
    unit_click_tuned : ndarray (n_units,), bool
        Units whose rate rises with click intent.
    unit_click_depth_hz : ndarray (n_units,)
        Rate added at click intent 1 (0 for units not click-tuned).
    unit_refractory_ms : ndarray (n_units,)
        Absolute refractory period.
    unit_lost_sample : ndarray (n_units,), int64
        Block start at which a unit was lost (chronic non-stationarity), -1 if still present.
    channel_noise_uv : ndarray (n_channels,)
        Spike-band RMS of each channel's background noise (the SNR denominator).
    dead_channels, saturating_channels : ndarray of int
        Indices of the simulated faulty channels (not marked bad in the channel map).
    intent_samples : ndarray (n_blocks,), int64
        Start sample of each internal block; the intent below held from there on.
    intent_velocity : ndarray (n_blocks, 2)
        Velocity intent (vx, vy) used for each block.
    intent_click : ndarray (n_blocks,)
        Click intent used for each block.
    artifact_samples : ndarray (n_artifacts,), int64
        Onset sample of each artefact.
    artifact_peak_uv : ndarray (n_artifacts,)
        Signed peak amplitude of each artefact before per-channel spatial weighting.
    block_size : int
        Internal block size in samples.
    """

    n_samples: int
    fs_hz: float
    spike_samples: np.ndarray
    spike_units: np.ndarray
    unit_channel: np.ndarray
    unit_snr: np.ndarray
    unit_snr_raw: np.ndarray
    unit_amplitude_uv: np.ndarray
    unit_templates_uv: np.ndarray
    template_trough_idx: int
    unit_preferred_direction: np.ndarray
    unit_baseline_hz: np.ndarray
    unit_depth_hz: np.ndarray
    unit_click_tuned: np.ndarray
    unit_click_depth_hz: np.ndarray
    unit_refractory_ms: np.ndarray
    unit_lost_sample: np.ndarray
    channel_noise_uv: np.ndarray
    dead_channels: np.ndarray
    saturating_channels: np.ndarray
    intent_samples: np.ndarray
    intent_velocity: np.ndarray
    intent_click: np.ndarray
    artifact_samples: np.ndarray
    artifact_peak_uv: np.ndarray
    block_size: int

    @property
    def n_units(self) -> int:
        return len(self.unit_channel)

    @property
    def spike_channels(self) -> np.ndarray:
        """Channel of each spike."""
        return self.unit_channel[self.spike_units]

    def unit_spike_samples(self, unit: int) -> np.ndarray:
        """Trough samples of one unit's spikes."""
        return self.spike_samples[self.spike_units == unit]

    def intent_at(self, samples: Any) -> tuple[np.ndarray, np.ndarray]:
        """Velocity (n, 2) and click (n,) intent in force at each given sample index."""
        idx = np.searchsorted(self.intent_samples, np.asarray(samples), side="right") - 1
        idx = np.clip(idx, 0, max(len(self.intent_samples) - 1, 0))
        return self.intent_velocity[idx], self.intent_click[idx]


class SimulatedImplant:
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

    # ------------------------------------------------------------------ static structure
    def _build_static(self) -> None:
        cfg = self._cfg
        rng = np.random.default_rng([cfg.seed, _STREAM_SETUP])
        C, fs = cfg.n_channels, cfg.fs_hz
        self._B = B = cfg.block_size_samples
        self._map = ChannelMap.grid(C, pitch_um=cfg.pitch_um, gain_uv=cfg.gain_uv)
        pos = self._map.positions_um
        span = np.ptp(pos, axis=0) if C > 1 else np.zeros(2)
        self._extent_um = max(float(np.max(span)), cfg.pitch_um)

        perm = rng.permutation(C)
        self._dead = np.sort(perm[:cfg.n_dead])
        self._sat = np.sort(perm[cfg.n_dead:cfg.n_dead + cfg.n_saturating])

        # -- background noise, scaled analytically to the spike band ----------------------
        sigma = cfg.noise_uv * np.exp(cfg.noise_spread * rng.standard_normal(C))
        var_mua = cfg.mua_fraction * sigma ** 2
        var_th = sigma ** 2 - var_mua
        f = np.linspace(SPIKE_BAND_HZ[0], SPIKE_BAND_HZ[1], 4097)
        z = np.exp(-2j * np.pi * f / fs)
        pink = (_PINK_K[:, None] / (1.0 - _PINK_P[:, None] * z[None, :])).sum(0) + _PINK_K3
        e_white = _band_power(np.ones_like(f), f, fs)
        e_pink = _band_power(np.abs(pink) ** 2, f, fs)
        rho = cfg.pink_fraction
        gw, gp = math.sqrt((1 - rho) / e_white), math.sqrt(rho / e_pink)
        e_th = _band_power(np.abs(gw + gp * pink) ** 2, f, fs)
        scale = np.sqrt(var_th / e_th)
        self._g_white = ((gw + gp * _PINK_K3) * scale).astype(np.float32)
        self._g_pink = (gp * scale).astype(np.float32)

        # multi-unit activity: impulse probability thr/2^16, amplitude -A*(0.15+0.85u^2), resonator
        thr = int(round(cfg.mua_rate_hz / fs * 2 ** K.MUA_BITS)) if cfg.mua_fraction > 0 else 0
        self._mua_thresh = thr
        variant_hz = np.linspace(1200.0, 2200.0, _N_MUA_VARIANTS)
        n_half = fs / (2.0 * variant_hz)
        r = 0.4 ** (1.0 / n_half)
        om = 2 * np.pi * variant_hz / fs
        c1, c2 = 2 * r * np.cos(om), r ** 2
        variant = rng.integers(0, _N_MUA_VARIANTS, C)
        self._mua_c1 = c1[variant].astype(np.float32)
        self._mua_c2 = c2[variant].astype(np.float32)
        if thr > 0:
            p = thr / 2 ** K.MUA_BITS
            u = (np.arange(thr) + 0.5) / thr
            g = 0.15 + 0.85 * u * u
            var_x = p * np.mean(g ** 2) - (p * np.mean(g)) ** 2
            # use the float32 coefficients actually used by the kernel
            c1v, c2v = self._mua_c1.astype(np.float64), self._mua_c2.astype(np.float64)
            uniq, inv = np.unique(np.stack([c1v, c2v], 1), axis=0, return_inverse=True)
            hres = 1.0 / (1.0 - uniq[:, :1] * z[None, :] + uniq[:, 1:] * z[None, :] ** 2)
            e_res = _band_power(np.abs(hres) ** 2, f, fs)[inv.ravel()]
            self._mua_amp = np.sqrt(var_mua / (var_x * e_res)).astype(np.float32)
        else:
            self._mua_amp = np.zeros(C, np.float32)
        self._channel_noise_uv = sigma

        # -- line noise --------------------------------------------------------------------
        self._line_amp = (cfg.line_noise_uv * np.exp(0.3 * rng.standard_normal(C))).astype(np.float32)
        self._line_phase = float(rng.uniform(0, 2 * np.pi))
        if cfg.line_noise_hz is None or cfg.line_noise_uv == 0:
            self._line_amp[:] = 0
        self._line_zero = np.zeros(B, np.float32)

        # -- LFP sources and spatial mixing --------------------------------------------------
        self._D = D = max(1, int(round(fs / _LFP_KNOT_HZ)))
        fk = fs / D
        n_src = int(np.clip(round(C / 64), 4, 32))
        f_r = rng.uniform(1.0, 15.0, n_src + 1)
        bw = rng.uniform(1.0, 4.0, n_src + 1)
        rr = np.exp(-np.pi * bw / fk)
        self._lfp_a1 = 2 * rr * np.cos(2 * np.pi * f_r / fk)
        self._lfp_a2 = -rr ** 2
        self._lfp_lp = math.exp(-2 * np.pi * _LFP_LOWPASS_HZ / fk)
        imp = np.zeros((int(20 * fk), n_src + 1))
        imp[0] = 1.0
        h = K.lfp_sources(imp, self._lfp_a1, self._lfp_a2, self._lfp_lp, np.zeros((n_src + 1, 4)),
                          np.ones(n_src + 1))
        self._lfp_norm = 1.0 / np.sqrt(np.sum(h ** 2, axis=0))
        lo, hi = pos.min(0) - 0.1 * self._extent_um, pos.max(0) + 0.1 * self._extent_um
        src_pos = rng.uniform(lo, hi, (n_src, 2))
        ell = max(0.35 * self._extent_um, 2 * cfg.pitch_um)
        d2 = ((pos[:, None, :] - src_pos[None, :, :]) ** 2).sum(-1)
        W = np.concatenate([np.exp(-d2 / (2 * ell ** 2)), np.full((C, 1), 0.6)], axis=1)
        lfp_rms = cfg.lfp_uv * np.exp(0.25 * rng.standard_normal(C))
        self._lfp_W = W * (lfp_rms / np.linalg.norm(W, axis=1))[:, None]
        self._n_src = n_src + 1

        # -- single units -------------------------------------------------------------------
        pk = np.asarray(cfg.units_per_channel_p)
        counts = rng.choice(len(pk), size=C, p=pk / pk.sum())
        counts[self._dead] = 0
        counts[self._sat] = 0
        unit_channel = np.repeat(np.arange(C), counts).astype(np.int32)
        U = len(unit_channel)
        templates, self._pre = unit_templates(rng, U, fs)
        lo_s, hi_s = cfg.snr_range
        snr = np.exp(rng.uniform(math.log(lo_s), math.log(hi_s), U))
        # SNR is defined on the band-passed signal, as a lab measures it from a recording: the
        # template's trough after a zero-phase 250-5000 Hz band-pass over the band's noise RMS.
        # The raw trough is scaled up by what that filter takes off each template (~10%).
        amp = snr * sigma[unit_channel] / _bandpassed_trough_fraction(templates, fs)
        ang = rng.uniform(0, 2 * np.pi, U)
        lo_b, hi_b = cfg.baseline_hz_range
        baseline = np.exp(rng.uniform(math.log(lo_b), math.log(hi_b), U))
        depth = rng.uniform(*cfg.depth_hz_range, U)
        click_tuned = rng.random(U) < cfg.click_fraction
        click_depth = np.where(click_tuned, rng.uniform(*cfg.click_depth_hz_range, U), 0.0)
        refr_ms = rng.uniform(*cfg.refractory_ms_range, U)
        self._unit_channel = unit_channel
        self._templates = np.ascontiguousarray((templates * amp[:, None]).astype(np.float32))
        self._pd = np.stack([np.cos(ang), np.sin(ang)], axis=1)
        self._baseline, self._depth, self._click_depth = baseline, depth, click_depth
        self._refr = refr_ms * 1e-3 * fs
        self._spike_key = np.random.SeedSequence([cfg.seed, _STREAM_SPIKES]).generate_state(1, np.uint64)[0]
        self._spike_cap = U * (int(B // max(self._refr.min(), 1.0)) + 2) if U else 1
        self._static = dict(
            unit_channel=_ro(unit_channel), unit_snr=_ro(snr), unit_snr_raw=_ro(amp / sigma[unit_channel]),
            unit_amplitude_uv=_ro(amp),
            unit_templates_uv=_ro(self._templates), template_trough_idx=self._pre,
            unit_preferred_direction=_ro(self._pd), unit_baseline_hz=_ro(baseline), unit_depth_hz=_ro(depth),
            unit_click_tuned=_ro(click_tuned), unit_click_depth_hz=_ro(click_depth),
            unit_refractory_ms=_ro(refr_ms), channel_noise_uv=_ro(sigma), dead_channels=_ro(self._dead),
            saturating_channels=_ro(self._sat), block_size=B, fs_hz=fs,
        )

        # -- faulty channels -----------------------------------------------------------------
        full_scale_uv = 32767.0 * cfg.gain_uv
        self._chan_gain = np.ones(C, np.float32)
        self._chan_gain[self._dead] = 0.0
        self._chan_gain[self._sat] = _SAT_GAIN
        self._chan_offset = np.zeros(C, np.float32)
        self._chan_offset[self._sat] = _SAT_LEVEL * full_scale_uv * rng.choice([-1.0, 1.0], len(self._sat))
        self._dead_noise = np.zeros(C, np.float32)
        self._dead_noise[self._dead] = _DEAD_NOISE_UV
        self._inv_gain = np.float32(1.0 / cfg.gain_uv)

        self._n_art = int(round(_ARTIFACT_MS * 1e-3 * fs))
        self._n_carry = max(self._templates.shape[1], self._n_art)
        # built-in intent: two cascaded AR(1) (time constant intent_tau_s) at block rate
        a = math.exp(-B / fs / cfg.intent_tau_s)
        self._intent_a = a
        self._intent_scale = cfg.intent_speed / math.sqrt(2.0) / math.sqrt((1 + a * a) / (1 + a) ** 2)
        self._click_blocks = int(round(cfg.click_duration_s * fs / B))
        self._drift_a = math.exp(-B / fs / cfg.drift_tau_s)
        self._loss_p = -math.expm1(-cfg.unit_loss_per_min * B / fs / 60.0)

    # ------------------------------------------------------------------ dynamic state
    def reset(self) -> None:
        """Return to sample 0 with the initial state: the same seed gives the same output again.

        Also clears any intent set with :meth:`set_intent`, and the ground truth.
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

    def _next_intent(self, rng: np.random.Generator, s0: int) -> tuple[float, float, float]:
        cfg, a = self._cfg, self._intent_a
        # the built-in intent always advances (same draws), so switching sources stays deterministic
        n = rng.standard_normal(2)
        uc = rng.random()
        self._ix = a * self._ix + math.sqrt(1 - a * a) * n
        self._iv = a * self._iv + (1 - a) * self._ix
        if self._click_left > 0:
            self._click_left -= 1
            click = 1.0
        elif self._click_blocks > 0 and uc < cfg.click_rate_hz * self._B / cfg.fs_hz:
            self._click_left = self._click_blocks - 1
            click = 1.0
        else:
            click = 0.0
        if self._manual is not None:
            return self._manual
        if self._intent_fn is not None:
            out = self._intent_fn(s0)
            try:
                vx, vy, c = out
            except (TypeError, ValueError):
                raise ValidationError(f"intent_fn must return (vx, vy, click); got {out!r}") from None
            return self._check_intent((vx, vy), c, "intent_fn")
        v = self._iv * self._intent_scale * (1.0 - 0.8 * click)  # slow down while clicking
        return float(v[0]), float(v[1]), click

    # ------------------------------------------------------------------ generation
    def _generate_block(self) -> None:
        cfg, B, C, D = self._cfg, self._B, self.n_channels, self._D
        k = self._k
        s0 = k * B
        fs = cfg.fs_hz
        rng = np.random.default_rng([cfg.seed, _STREAM_BLOCK, k])
        key = rng.integers(0, 2 ** 64 - 1, dtype=np.uint64, endpoint=True)
        vx, vy, click = self._next_intent(rng, s0)

        # firing rates for this block
        U = self.n_units
        base = self._baseline
        if cfg.drift > 0:
            self._drift_x = self._drift_a * self._drift_x + math.sqrt(1 - self._drift_a ** 2) * rng.standard_normal(U)
            base = base * np.exp(cfg.drift * self._drift_x - 0.5 * cfg.drift ** 2)
        if self._loss_p > 0:
            lost = self._alive & (rng.random(U) < self._loss_p)
            self._alive &= ~lost
            self._lost[lost] = s0
        rates = base + self._depth * (vx * self._pd[:, 0] + vy * self._pd[:, 1]) + self._click_depth * click
        np.clip(rates, 0.0, cfg.max_rate_hz, out=rates)
        rates[~self._alive] = 0.0

        # LFP knots covering [s0, s0 + B]
        j0, j_need = s0 // D, (s0 + B - 1) // D + 1
        j_have = self._knot0 + len(self._knots) - 1
        if j_need > j_have:
            e = rng.standard_normal((j_need - j_have, self._n_src))
            src = K.lfp_sources(e, self._lfp_a1, self._lfp_a2, self._lfp_lp, self._lfp_state, self._lfp_norm)
            self._knots = np.concatenate([self._knots, (src @ self._lfp_W.T).astype(np.float32)])
        knots = self._knots[j0 - self._knot0:]
        t_abs = s0 + np.arange(B)
        knot_idx = (t_abs // D - j0).astype(np.int64)
        knot_frac = ((t_abs % D) / D).astype(np.float32)

        # artefacts (into the overlap-add buffer)
        extra = self._extra
        if cfg.artifact_rate_hz > 0:
            n_art = int(rng.poisson(cfg.artifact_rate_hz * B / fs))
            pos = self._map.positions_um
            onsets_art, peaks_art = [], []
            for _ in range(n_art):
                onset = int(rng.integers(0, B))
                shape = artifact_shape(rng, fs, _ARTIFACT_MS)
                peak = cfg.artifact_uv * math.exp(0.4 * rng.standard_normal())
                origin = rng.uniform(pos.min(0), pos.max(0) + 1e-9)
                d = np.linalg.norm(pos - origin, axis=1)
                w = (0.4 + 0.6 * np.exp(-d / self._extent_um)) * (1 + 0.1 * rng.standard_normal(C))
                extra[onset:onset + len(shape)] += (shape[:, None] * (peak * w)[None, :]).astype(np.float32)
                onsets_art.append(s0 + onset)
                peaks_art.append(peak * shape[np.argmax(np.abs(shape))])
            if n_art:
                order = np.argsort(onsets_art, kind="stable")
                self._gt_art.append(np.asarray(onsets_art, np.int64)[order])
                self._gt_art_amp.append(np.asarray(peaks_art)[order])

        # single-unit spikes
        n = K.spike_block(rates / fs, self._refr, self._hazard, self._t_free, self._n_spk, self._spike_key,
                          s0, B, self._onsets, self._units)
        if n:
            K.add_spikes(extra, self._onsets, self._units, n, s0, self._unit_channel, self._templates)
            order = np.argsort(self._onsets[:n], kind="stable")
            self._gt_spk.append(self._onsets[:n][order] + self._pre)
            self._gt_unit.append(self._units[:n][order])

        if cfg.line_noise_hz is not None and cfg.line_noise_uv > 0:
            ph = np.mod(cfg.line_noise_hz * t_abs / fs, 1.0)
            line = np.sin(2 * np.pi * ph + self._line_phase).astype(np.float32)
        else:
            line = self._line_zero

        K.render_block(self._blk, extra, key, self._g_white, self._g_pink, _PINK_P, _PINK_K,
                       self._b[0], self._b[1], self._b[2], self._mua_thresh, self._mua_amp,
                       self._mua_c1, self._mua_c2, self._m1, self._m2, knots, knot_idx, knot_frac,
                       line, self._line_amp, self._chan_gain, self._chan_offset, self._dead_noise,
                       self._inv_gain)

        # shift the overlap-add carry and drop used knots
        nc = self._n_carry
        extra[:nc] = extra[B:B + nc].copy()
        extra[nc:] = 0.0
        j_next = (s0 + B) // D
        self._knots = self._knots[j_next - self._knot0:]
        self._knot0 = j_next
        self._gt_isamp.append(np.array([s0]))
        self._gt_int.append(np.array([[vx, vy, click]]))
        self._k += 1
        self._blk_pos = 0

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
            artifact_peak_uv=self._gt_art_amp.view(n_art).copy(), **self._static,
        )

    def expected_rates_hz(self, velocity: Any = (0.0, 0.0), click: float = 0.0) -> np.ndarray:
        """Each unit's current instantaneous rate (Hz) for a given intent (with drift and losses).

        This is the rate before the refractory period; the mean rate of a unit firing at ``r`` with
        refractory period ``tau`` is ``r / (1 + r * tau)``.
        """
        vx, vy, c = self._check_intent(velocity, click, "expected_rates_hz")
        base = self._baseline
        if self._cfg.drift > 0:
            base = base * np.exp(self._cfg.drift * self._drift_x - 0.5 * self._cfg.drift ** 2)
        r = base + self._depth * (vx * self._pd[:, 0] + vy * self._pd[:, 1]) + self._click_depth * c
        r = np.clip(r, 0.0, self._cfg.max_rate_hz)
        r[~self._alive] = 0.0
        return r

    def __repr__(self) -> str:
        return (f"SimulatedImplant(n_channels={self.n_channels}, n_units={self.n_units}, "
                f"fs_hz={self.fs_hz:g}, seed={self._cfg.seed}, sample_index={self._pos})")
