"""The fixed structure of a :class:`~cortexlink.sim.SimulatedImplant`, built once from its
configuration and seed: faulty channels, background-noise gains scaled to the spike band,
multi-unit resonators, line noise, LFP sources and their spatial mixing, single units (templates,
SNR, tuning) and the constants of the signal model (see the :mod:`cortexlink.sim.implant`
docstring)."""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import trapezoid

from cortexlink.core.types import ChannelMap
from cortexlink.sim import _kernels as K
from cortexlink.sim.ground_truth import _ro
from cortexlink.sim.waveforms import unit_templates

#: Band in which noise RMS (and so SNR) is defined.
SPIKE_BAND_HZ = (250.0, 5000.0)

_STREAM_SETUP, _STREAM_BLOCK, _STREAM_STATE, _STREAM_SPIKES = 0, 1, 2, 3
# speech tuning and day-to-day changes draw from their own streams, so an implant without them
# (speech_dims == 0, day == 0) is exactly the implant built before they existed
_STREAM_SPEECH, _STREAM_DAY = 4, 5
# (6: stimulation artefacts, sorting realism.) Shared intent noise and per-unit gain noise have
# their own streams too: with shared_noise == overdispersion == 0 nothing is drawn from them.
_STREAM_SHARED, _STREAM_GAIN, _STREAM_SHARED_SPEED = 7, 8, 9
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


def _band_power(h2: np.ndarray, f: np.ndarray, fs_hz: float) -> np.ndarray:
    """Variance in band of unit-variance white noise filtered by a response with |H|^2 = ``h2``."""
    return 2.0 * trapezoid(h2, f, axis=-1) / fs_hz



class _ImplantStructure:
    """The part of :class:`~cortexlink.sim.SimulatedImplant` that builds its static structure
    (``_build_static``, run once by its ``__init__``); the attributes set here are read by
    ``reset`` and the block generation."""

    # ------------------------------------------------------------------ static structure
    def _build_static(self) -> None:
        cfg = self._cfg
        rng = np.random.default_rng([cfg.seed, _STREAM_SETUP])
        C, fs = cfg.n_channels, cfg.fs_hz
        self._B = B = cfg.block_size_samples
        if cfg.probe_columns is None:
            self._map = ChannelMap.grid(C, pitch_um=cfg.pitch_um, gain_uv=cfg.gain_uv)
        else:  # a shank: probe_columns electrodes across, rows along y (a Neuropixels-like layout)
            idx = np.arange(C)
            cols = min(cfg.probe_columns, C)
            self._map = ChannelMap([f"ch{i:04d}" for i in range(C)],
                                   np.stack([(idx % cols) * cfg.pitch_um, (idx // cols) * cfg.pitch_um], axis=1),
                                   gain_uv=cfg.gain_uv)
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
        speech = _speech_tuning(cfg, U)
        self._units_replaced = np.zeros(U, bool)
        self._unit_born_day = np.zeros(U, np.int64)
        if cfg.day > 0:
            u = dict(baseline=baseline, depth=depth, ang=ang, click_tuned=click_tuned, click_depth=click_depth,
                     snr=snr, templates=templates, amp=amp, **speech)
            for d in range(1, cfg.day + 1):
                _day_step(cfg, d, u, self._units_replaced, sigma[unit_channel], fs, self._unit_born_day)
            baseline, depth, ang, click_tuned, click_depth, snr, templates, amp = (
                u[k] for k in ("baseline", "depth", "ang", "click_tuned", "click_depth", "snr", "templates", "amp"))
            speech = {k: u[k] for k in speech}
        self._speech_M = _ro(speech["speech_depth"][:, None] * speech["speech_W"]) if speech else None
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
            unit_refractory_ms=_ro(refr_ms), unit_born_day=_ro(self._unit_born_day), channel_noise_uv=_ro(sigma), dead_channels=_ro(self._dead),
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
        # shared (information-limiting) intent noise and private gain noise: AR(1) at block rate
        self._shared_a = math.exp(-B / fs / cfg.shared_noise_tau_s)
        self._gain_a = math.exp(-B / fs / cfg.overdispersion_tau_s)


def _speech_tuning(cfg, n_units: int) -> dict:
    """Speech tuning of every unit: unit-norm random vectors ``speech_W`` (U, speech_dims) and a
    depth (Hz per unit of drive, 0 for units not tuned), from the speech stream; {} without speech."""
    D = cfg.speech_dims
    if D == 0:
        return {}
    rng = np.random.default_rng([cfg.seed, _STREAM_SPEECH])
    tuned = rng.random(n_units) < cfg.speech_fraction
    W = rng.standard_normal((n_units, D))
    W /= np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    depth = np.where(tuned, rng.uniform(*cfg.speech_depth_hz_range, n_units), 0.0)
    return dict(speech_W=W, speech_depth=depth)


def _rotate(W: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Rows of the unit-norm ``W`` each turned by ``angle`` radians towards a random direction."""
    g = rng.standard_normal(W.shape)
    g -= (g * W).sum(1, keepdims=True) * W
    g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return math.cos(angle) * W + math.sin(angle) * g


def _day_step(cfg, d: int, u: dict, replaced: np.ndarray, unit_sigma: np.ndarray, fs: float,
              born: np.ndarray | None = None) -> None:
    """Apply day ``d``'s changes (drawn from ``(seed, _STREAM_DAY, d)``) to the unit arrays in ``u``:
    log-baseline jitter, tuning rotation by ``day_drift`` rad, and replacement of ``day_turnover``
    of the units (new waveform, SNR, baseline and tunings). Marks replaced units in ``replaced``
    and sets their birth day to ``d`` in ``born`` (when given)."""
    rng = np.random.default_rng([cfg.seed, _STREAM_DAY, d])
    U = len(u["baseline"])
    u["baseline"] = u["baseline"] * np.exp(cfg.day_drift * rng.standard_normal(U))
    u["ang"] = u["ang"] + cfg.day_drift * rng.choice([-1.0, 1.0], U)
    if "speech_W" in u:
        u["speech_W"] = _rotate(u["speech_W"], cfg.day_drift, rng)
    new = np.flatnonzero(rng.random(U) < cfg.day_turnover)
    n = len(new)
    replaced[new] = True
    if born is not None:
        born[new] = d
    if n == 0:
        return
    templates, _ = unit_templates(rng, n, fs)
    lo_s, hi_s = cfg.snr_range
    snr = np.exp(rng.uniform(math.log(lo_s), math.log(hi_s), n))
    amp = snr * unit_sigma[new] / _bandpassed_trough_fraction(templates, fs)
    lo_b, hi_b = cfg.baseline_hz_range
    fresh = dict(
        templates=templates, snr=snr, amp=amp, ang=rng.uniform(0, 2 * np.pi, n),
        baseline=np.exp(rng.uniform(math.log(lo_b), math.log(hi_b), n)),
        depth=rng.uniform(*cfg.depth_hz_range, n))
    ct = rng.random(n) < cfg.click_fraction
    fresh["click_tuned"] = ct
    fresh["click_depth"] = np.where(ct, rng.uniform(*cfg.click_depth_hz_range, n), 0.0)
    if "speech_W" in u:
        W = rng.standard_normal((n, cfg.speech_dims))
        fresh["speech_W"] = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
        tuned = rng.random(n) < cfg.speech_fraction
        fresh["speech_depth"] = np.where(tuned, rng.uniform(*cfg.speech_depth_hz_range, n), 0.0)
    for k, v in fresh.items():
        arr = u[k].copy()
        arr[new] = v
        u[k] = arr
