"""Configuration of the simulated implant: :class:`ImplantConfig` and named :data:`PRESETS`."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np

from cortexlink.core.config import ConfigMixin
from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_choice, check_positive, check_range

__all__ = ["ImplantConfig", "PRESETS"]


def _check_int_range(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r} ({type(value).__name__})")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}")
    return int(value)


def _check_pair(name: str, value: Any, lo: float, hi: float, *, strict_lo: bool = False) -> tuple[float, float]:
    """A (low, high) pair with ``lo <= low <= high <= hi`` (``low > lo`` when ``strict_lo``)."""
    bound = f"({lo}, {hi}]" if strict_lo else f"[{lo}, {hi}]"
    try:
        a, b = (float(v) for v in value)
        ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or not (np.isfinite(a) and np.isfinite(b)):
        raise ConfigError(f"{name} must be a (low, high) pair of finite numbers in {bound}; got {value!r}")
    if a > b or a < lo or b > hi or (strict_lo and a <= lo):
        raise ConfigError(f"{name} must be a (low, high) pair with low <= high, both in {bound}; got {value!r}")
    return (a, b)


@dataclasses.dataclass(frozen=True)
class ImplantConfig(ConfigMixin):
    """Validated parameters of a :class:`~cortexlink.sim.SimulatedImplant`.

    Every field is checked when the config is built; an invalid value raises
    :class:`~cortexlink.ConfigError` naming the field, the allowed range and the value received.
    Use :meth:`replace` to derive a modified copy.

    Parameters
    ----------
    n_channels : int
        Number of electrodes (1 to 65536).
    fs_hz : float
        Sampling rate in Hz (10 kHz to 200 kHz).
    seed : int
        Seed of every random draw (>= 0). Same seed, same samples.
    block_size : int or None
        Internal generation block in samples (8 to 65536); ``None`` means 10 ms. Intent changes
        take effect at block boundaries.
    gain_uv : float
        Microvolts per int16 count (0.195 like an Intan headstage: the rails at +-32767 counts are
        +-6.39 mV).
    pitch_um : float
        Electrode pitch of the square grid channel map.
    probe_columns : int or None
        None (the default): electrodes on a square-ish grid. An integer (1 to 64): a shank of that
        many columns, rows along y, both ``pitch_um`` apart (a Neuropixels-like layout for sorting).
    units_per_channel_p : tuple of float
        Probability of 0, 1, 2, ... single units on a channel (sums to 1; at most 8 entries).
    snr_range : (float, float)
        Per-unit SNR is drawn log-uniformly in this range. SNR is measured as on a recording: the
        |trough| of the template after a zero-phase 250-5000 Hz band-pass over the RMS of the
        channel's background noise in that band (the raw trough is ~10% larger).
    noise_uv : float
        Median over channels of the background noise RMS in the 250-5000 Hz band (µV).
    noise_spread : float
        Log-normal sigma of the per-channel noise level around ``noise_uv``.
    pink_fraction : float
        Approximate fraction of the thermal noise's spike-band variance that is 1/f-like.
    mua_rate_hz : float
        Rate of small distant spikes (multi-unit "hash") per channel.
    mua_fraction : float
        Fraction of the spike-band background variance contributed by multi-unit activity.
    line_noise_hz : {None, 50.0, 60.0}
        Mains frequency, or None for no line noise.
    line_noise_uv : float
        Median amplitude of the line-noise sinusoid (µV).
    lfp_uv : float
        Median RMS of the slow local field potential per channel (µV).
    artifact_rate_hz : float
        Rate of brief large transients common to many channels.
    artifact_uv : float
        Median peak amplitude of an artefact (µV); large ones saturate.
    n_dead : int
        Number of dead (flat, near-zero) channels.
    n_saturating : int
        Number of channels that sit at the int16 rails much of the time.
    baseline_hz_range : (float, float)
        Baseline firing rates, log-uniform.
    depth_hz_range : (float, float)
        Cosine-tuning modulation depth (Hz per unit speed along the preferred direction), uniform.
    click_fraction : float
        Fraction of units whose rate also rises with click intent.
    click_depth_hz_range : (float, float)
        Rate added at click intent 1 for click-tuned units, uniform.
    refractory_ms_range : (float, float)
        Per-unit absolute refractory period, uniform.
    max_rate_hz : float
        Upper clip of any unit's instantaneous rate.
    drift : float
        Standard deviation of the slow log-baseline-rate drift (0 = no drift).
    drift_tau_s : float
        Time constant of that drift.
    unit_loss_per_min : float
        Per-unit hazard of permanently disappearing, per minute (0 = stable).
    intent_speed : float
        RMS speed of the built-in random velocity intent (|v| ~ 1 is a fast movement).
    intent_tau_s : float
        Smoothing time constant of the built-in velocity intent.
    click_rate_hz : float
        Rate of clicks in the built-in intent.
    click_duration_s : float
        Duration of each built-in click.
    speech_dims : int
        Dimension of the articulator vector that drives speech-tuned units (1 to 64), or 0 for no
        speech tuning (the default). See :meth:`SimulatedImplant.set_articulators`.
    speech_fraction : float
        Fraction of units tuned to the articulator vector (0 to 1; used when ``speech_dims > 0``).
    speech_depth_hz_range : (float, float)
        Speech modulation depth of a tuned unit, uniform: Hz per unit of articulator drive along
        the unit's (unit-norm, random) tuning vector.
    day : int
        Recording day (0 to 10000). Day 0 is the implant as built; day ``d`` applies ``d`` daily
        changes drawn from ``(seed, day stream, 1..d)``, so day 3 is day 2 plus one more step.
    day_drift : float
        Per-day change of every unit (0 to 2): standard deviation of the log-baseline jitter, and
        the angle (radians) by which each unit's speech tuning vector and velocity preferred
        direction rotate (random direction).
    day_turnover : float
        Fraction of units replaced per day (0 to 1): a replaced unit gets a new waveform, SNR,
        baseline and tuning (velocity, click and speech) on the same channel. The day each unit
        now in a slot appeared is :attr:`GroundTruth.unit_born_day <cortexlink.sim.GroundTruth>`
        (0 = built with the implant): unit ``i`` of day ``a`` is the same neuron as unit ``i`` of
        day ``b > a`` exactly when ``born_day(day=b)[i] <= a``.
    day_shift_um : float
        Day-to-day rigid shift of the probe along its long (y) axis (µm, 0 to 200): every unit is
        displaced by a random walk over days whose step on each day is ``day_shift_um`` x a
        standard normal (its own random stream; 0 on day 0), added to the within-session drift.
        The day's total is ``GroundTruth.day_shift_total_um``. Needs ``footprint_um > 0``; 0 (the
        default) leaves every output as it was.
    shared_noise : float
        Information-limiting shared variability (0 to 10; 0, the default, leaves every output as it
        was): standard deviation, per component, in the units of the intended velocity (the units
        of :meth:`SimulatedImplant.set_intent`), of a 2-D noise ``eps`` added to the velocity intent
        that *every* unit encodes: velocity-tuned rates follow ``depth * ((v + eps) . pd)``. As
        ``eps`` lies in the encoded subspace no decoder can remove it, so velocity R² saturates near
        ``var(v) / (var(v) + shared_noise**2)`` however many channels are added ("differential
        correlations": Moreno-Bote et al. 2014 Nat Neurosci 17:1410; Kanitscheider et al. 2015
        PNAS 112:E6973). An Ornstein-Uhlenbeck process with time constant ``shared_noise_tau_s``,
        one step per internal block from its own random stream. The noise each block saw is
        :meth:`SimulatedImplant.shared_noise_at`.
    shared_noise_tau_s : float
        Correlation time of ``shared_noise`` and ``shared_noise_speed`` (0.001 to 100 s; default
        0.1 s).
    shared_noise_speed : float
        Signal-dependent part of the shared noise (0 to 10; 0, the default, leaves every output as
        it was): a second 2-D noise, ``shared_noise_speed * |v|`` times a unit Ornstein-Uhlenbeck
        process of its own stream (same time constant), added to ``eps``. Variability that grows
        with the movement, as motor noise does (Harris & Wolpert 1998 Nature 394:780): it caps R²
        over movements like ``shared_noise`` while leaving a resting intent nearly still.
    overdispersion : float
        Private, per-unit multiplicative gain noise (0 to 2; 0, the default, leaves every output as
        it was): each unit's rate is multiplied by ``exp(overdispersion * x - overdispersion**2 / 2)``
        (mean 1), ``x`` a unit-variance Ornstein-Uhlenbeck process of its own with time constant
        ``overdispersion_tau_s``, one step per block from its own random stream. Spike counts become
        super-Poisson, as in cortex (Fano factor ~1.5 in 100 ms windows before a stimulus:
        Churchland et al. 2010 Nat Neurosci 13:369; gain fluctuations: Goris et al. 2014 Nat
        Neurosci 17:858): for a count window longer than the time constant the Fano factor is
        about ``1 + mean_count * (exp(overdispersion**2) - 1)``.
    overdispersion_tau_s : float
        Correlation time of each unit's gain (0.001 to 1000 s; default 0.5 s).
    stim_artifact_uv_per_ua : float
        Stimulation artefact (see :meth:`SimulatedImplant.stimulate` and
        :mod:`cortexlink.sim.stim_artifacts`): voltage seen during a pulse phase on the stimulating
        electrode's own channel, in µV per µA of phase amplitude (0 to 1e4; 0 = no artefact).
    stim_falloff_um : float
        Spatial falloff of the artefact: a channel at distance ``d`` from the stimulating electrode
        sees ``stim_falloff_um / (stim_falloff_um + d)`` of it (a point source's ~1/r far away).
    stim_saturation_uv : float
        A channel whose phase voltage exceeds this (µV) saturates: it sits at the int16 rail for
        the pulse and ``stim_dead_time_ms`` after it, then recovers from the rail. The default,
        5 mV, is the input range of Intan RHD-class amplifiers.
    stim_dead_time_ms : float
        Time a saturated channel stays at the rail after the pulse's end (0 to 10 ms).
    stim_recovery_tau_ms : float
        Median time constant of the exponential recovery to baseline after a pulse (0.05 to 20 ms).
    stim_residual_fraction : float
        Voltage left at the pulse's end on a channel that did not saturate, as a fraction of its
        second-phase voltage (0 to 1); it then decays with the recovery time constant.
    stim_spread : float
        Log-normal sigma of the per-channel artefact gain and recovery time constant (0 to 1),
        drawn from the seed.
    footprint_um : float
        Spatial decay length (µm, 0 to 1000) of a single unit's waveform over the electrodes
        (:mod:`cortexlink.sim._sorting_realism`): each unit sits at a position near its channel and
        an electrode ``d`` µm further from it than that channel sees ``exp(-d / footprint_um)`` of
        the waveform (down to 5 %). 0 (the default) puts each unit on its own channel only.
    probe_drift_um : float
        Peak amplitude (µm, 0 to 1000) of a slow rigid drift of every unit along the probe's y axis,
        ``probe_drift_um * sin(2 pi t / probe_drift_period_s + phase)``: footprints shift between
        electrodes. Needs ``footprint_um > 0``. 0 = no positional drift.
    probe_drift_period_s : float
        Period of that drift (1 s to 1e6 s; default 1200 s, tens of minutes).
    amplitude_jitter : float
        Log-normal sigma of each spike's amplitude around its unit's template (0 to 1).
    burst_fraction : float
        Fraction of units that fire in bursts (0 to 1): after each spike such a unit fires again
        after an inter-spike interval in ``burst_isi_ms_range`` with probability
        ``1 - 1 / burst_mean_spikes``.
    burst_isi_ms_range : (float, float)
        Inter-spike intervals inside a burst, uniform (ms; at least the unit's refractory period).
    burst_mean_spikes : float
        Mean number of spikes in a burst (1 to 20).
    burst_attenuation : float
        Amplitude lost per preceding spike at zero interval (0 to 0.9): the waveform of a spike is
        scaled by ``1 - D``, with ``D`` built up by ``burst_attenuation`` at each spike and decaying
        with ``burst_recovery_ms``, so spikes late in a burst are smaller (any unit, any short ISI).
    burst_recovery_ms : float
        Recovery time constant of that attenuation (0.1 to 1000 ms).
    """

    n_channels: int = 1024
    fs_hz: float = 30000.0
    seed: int = 0
    block_size: int | None = None
    gain_uv: float = 0.195
    pitch_um: float = 50.0
    probe_columns: int | None = None
    units_per_channel_p: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)
    snr_range: tuple[float, float] = (2.0, 20.0)
    noise_uv: float = 7.0
    noise_spread: float = 0.15
    pink_fraction: float = 0.3
    mua_rate_hz: float = 3000.0
    mua_fraction: float = 0.3
    line_noise_hz: float | None = 60.0
    line_noise_uv: float = 8.0
    lfp_uv: float = 60.0
    artifact_rate_hz: float = 0.1
    artifact_uv: float = 1500.0
    n_dead: int = 3
    n_saturating: int = 2
    baseline_hz_range: tuple[float, float] = (2.0, 30.0)
    depth_hz_range: tuple[float, float] = (3.0, 25.0)
    click_fraction: float = 0.15
    click_depth_hz_range: tuple[float, float] = (10.0, 40.0)
    refractory_ms_range: tuple[float, float] = (1.5, 2.0)
    max_rate_hz: float = 250.0
    drift: float = 0.2
    drift_tau_s: float = 120.0
    unit_loss_per_min: float = 0.0
    intent_speed: float = 0.8
    intent_tau_s: float = 0.3
    click_rate_hz: float = 0.2
    click_duration_s: float = 0.3
    speech_dims: int = 0
    speech_fraction: float = 0.7
    speech_depth_hz_range: tuple[float, float] = (4.0, 20.0)
    day: int = 0
    day_drift: float = 0.25
    day_turnover: float = 0.08
    stim_artifact_uv_per_ua: float = 100.0
    stim_falloff_um: float = 100.0
    stim_saturation_uv: float = 5000.0
    stim_dead_time_ms: float = 0.1
    stim_recovery_tau_ms: float = 0.5
    stim_residual_fraction: float = 0.05
    stim_spread: float = 0.1
    footprint_um: float = 0.0
    probe_drift_um: float = 0.0
    probe_drift_period_s: float = 1200.0
    amplitude_jitter: float = 0.0
    burst_fraction: float = 0.0
    burst_isi_ms_range: tuple[float, float] = (3.0, 8.0)
    burst_mean_spikes: float = 3.0
    burst_attenuation: float = 0.0
    burst_recovery_ms: float = 20.0
    day_shift_um: float = 0.0
    shared_noise: float = 0.0
    shared_noise_tau_s: float = 0.1
    shared_noise_speed: float = 0.0
    overdispersion: float = 0.0
    overdispersion_tau_s: float = 0.5

    def __post_init__(self) -> None:
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        s("n_channels", _check_int_range("n_channels", self.n_channels, 1, 65536))
        s("fs_hz", check_range("fs_hz", self.fs_hz, 10000.0, 200000.0))
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0; got {self.seed!r}")
        s("seed", int(self.seed))
        if self.block_size is not None:
            s("block_size", _check_int_range("block_size", self.block_size, 8, 65536))
        s("gain_uv", check_range("gain_uv", self.gain_uv, 1e-3, 100.0))
        s("pitch_um", check_positive("pitch_um", self.pitch_um))
        if self.probe_columns is not None:
            s("probe_columns", _check_int_range("probe_columns", self.probe_columns, 1, 64))
        p = self.units_per_channel_p
        try:
            p = tuple(float(v) for v in p)
        except (TypeError, ValueError):
            raise ConfigError(f"units_per_channel_p must be a sequence of probabilities for 0, 1, 2, ... "
                              f"units; got {self.units_per_channel_p!r}") from None
        if not 1 <= len(p) <= 8 or not all(np.isfinite(v) and v >= 0 for v in p) or abs(sum(p) - 1.0) > 1e-6:
            raise ConfigError(f"units_per_channel_p must hold 1 to 8 non-negative probabilities summing to 1; "
                              f"got {self.units_per_channel_p!r}")
        s("units_per_channel_p", p)
        s("snr_range", _check_pair("snr_range", self.snr_range, 0.0, 1000.0, strict_lo=True))
        s("noise_uv", check_range("noise_uv", self.noise_uv, 0.01, 1000.0))
        s("noise_spread", check_range("noise_spread", self.noise_spread, 0.0, 2.0))
        s("pink_fraction", check_range("pink_fraction", self.pink_fraction, 0.0, 0.95))
        s("mua_rate_hz", check_range("mua_rate_hz", self.mua_rate_hz, 0.0, 3000.0))
        s("mua_fraction", check_range("mua_fraction", self.mua_fraction, 0.0, 0.95))
        if self.mua_fraction > 0 and self.mua_rate_hz < 1.0:
            raise ConfigError(f"mua_rate_hz must be in [1, 3000] when mua_fraction > 0; got {self.mua_rate_hz!r}")
        lh = self.line_noise_hz
        if lh is not None and not isinstance(lh, bool) and isinstance(lh, numbers.Real):
            lh = float(lh)
        s("line_noise_hz", check_choice("line_noise_hz", lh, (None, 50.0, 60.0)))
        s("line_noise_uv", check_range("line_noise_uv", self.line_noise_uv, 0.0, 1000.0))
        s("lfp_uv", check_range("lfp_uv", self.lfp_uv, 0.0, 5000.0))
        s("artifact_rate_hz", check_range("artifact_rate_hz", self.artifact_rate_hz, 0.0, 50.0))
        s("artifact_uv", check_range("artifact_uv", self.artifact_uv, 0.0, 1e5))
        s("n_dead", _check_int_range("n_dead", self.n_dead, 0, self.n_channels))
        s("n_saturating", _check_int_range("n_saturating", self.n_saturating, 0, self.n_channels))
        if self.n_dead + self.n_saturating > self.n_channels:
            raise ConfigError(f"n_dead + n_saturating must be <= n_channels ({self.n_channels}); "
                              f"got {self.n_dead} + {self.n_saturating}")
        s("baseline_hz_range", _check_pair("baseline_hz_range", self.baseline_hz_range, 0.0, 500.0, strict_lo=True))
        s("depth_hz_range", _check_pair("depth_hz_range", self.depth_hz_range, 0.0, 500.0))
        s("click_fraction", check_range("click_fraction", self.click_fraction, 0.0, 1.0))
        s("click_depth_hz_range", _check_pair("click_depth_hz_range", self.click_depth_hz_range, 0.0, 500.0))
        s("refractory_ms_range", _check_pair("refractory_ms_range", self.refractory_ms_range, 0.5, 10.0))
        s("max_rate_hz", check_range("max_rate_hz", self.max_rate_hz, 1.0, 1000.0))
        s("drift", check_range("drift", self.drift, 0.0, 2.0))
        s("drift_tau_s", check_range("drift_tau_s", self.drift_tau_s, 0.1, 1e6))
        s("unit_loss_per_min", check_range("unit_loss_per_min", self.unit_loss_per_min, 0.0, 60.0))
        s("intent_speed", check_range("intent_speed", self.intent_speed, 0.0, 10.0))
        s("intent_tau_s", check_range("intent_tau_s", self.intent_tau_s, 0.001, 100.0))
        s("click_rate_hz", check_range("click_rate_hz", self.click_rate_hz, 0.0, 10.0))
        s("click_duration_s", check_range("click_duration_s", self.click_duration_s, 0.0, 10.0))
        s("speech_dims", _check_int_range("speech_dims", self.speech_dims, 0, 64))
        s("speech_fraction", check_range("speech_fraction", self.speech_fraction, 0.0, 1.0))
        s("speech_depth_hz_range", _check_pair("speech_depth_hz_range", self.speech_depth_hz_range, 0.0, 500.0))
        s("day", _check_int_range("day", self.day, 0, 10000))
        s("day_drift", check_range("day_drift", self.day_drift, 0.0, 2.0))
        s("day_turnover", check_range("day_turnover", self.day_turnover, 0.0, 1.0))
        s("stim_artifact_uv_per_ua", check_range("stim_artifact_uv_per_ua", self.stim_artifact_uv_per_ua, 0.0, 1e4))
        s("stim_falloff_um", check_range("stim_falloff_um", self.stim_falloff_um, 1.0, 1e5))
        s("stim_saturation_uv", check_range("stim_saturation_uv", self.stim_saturation_uv, 1.0, 1e6))
        s("stim_dead_time_ms", check_range("stim_dead_time_ms", self.stim_dead_time_ms, 0.0, 10.0))
        s("stim_recovery_tau_ms", check_range("stim_recovery_tau_ms", self.stim_recovery_tau_ms, 0.05, 20.0))
        s("stim_residual_fraction", check_range("stim_residual_fraction", self.stim_residual_fraction, 0.0, 1.0))
        s("stim_spread", check_range("stim_spread", self.stim_spread, 0.0, 1.0))
        s("footprint_um", check_range("footprint_um", self.footprint_um, 0.0, 1000.0))
        s("probe_drift_um", check_range("probe_drift_um", self.probe_drift_um, 0.0, 1000.0))
        if self.probe_drift_um > 0 and self.footprint_um == 0:
            raise ConfigError(f"probe_drift_um needs footprint_um > 0 (units on one channel cannot move along "
                              f"the probe); got probe_drift_um={self.probe_drift_um!r}, footprint_um=0")
        s("probe_drift_period_s", check_range("probe_drift_period_s", self.probe_drift_period_s, 1.0, 1e6))
        s("amplitude_jitter", check_range("amplitude_jitter", self.amplitude_jitter, 0.0, 1.0))
        s("burst_fraction", check_range("burst_fraction", self.burst_fraction, 0.0, 1.0))
        s("burst_isi_ms_range", _check_pair("burst_isi_ms_range", self.burst_isi_ms_range, 0.5, 100.0))
        s("burst_mean_spikes", check_range("burst_mean_spikes", self.burst_mean_spikes, 1.0, 20.0))
        s("burst_attenuation", check_range("burst_attenuation", self.burst_attenuation, 0.0, 0.9))
        s("burst_recovery_ms", check_range("burst_recovery_ms", self.burst_recovery_ms, 0.1, 1000.0))
        s("day_shift_um", check_range("day_shift_um", self.day_shift_um, 0.0, 200.0))
        if self.day_shift_um > 0 and self.footprint_um == 0:
            raise ConfigError(f"day_shift_um needs footprint_um > 0 (units on one channel cannot move along the "
                              f"probe); got day_shift_um={self.day_shift_um!r}, footprint_um=0")
        s("shared_noise", check_range("shared_noise", self.shared_noise, 0.0, 10.0))
        s("shared_noise_tau_s", check_range("shared_noise_tau_s", self.shared_noise_tau_s, 0.001, 100.0))
        s("shared_noise_speed", check_range("shared_noise_speed", self.shared_noise_speed, 0.0, 10.0))
        s("overdispersion", check_range("overdispersion", self.overdispersion, 0.0, 2.0))
        s("overdispersion_tau_s", check_range("overdispersion_tau_s", self.overdispersion_tau_s, 0.001, 1000.0))

    @property
    def block_size_samples(self) -> int:
        """The internal block size in samples (``block_size`` or 10 ms)."""
        return self.block_size if self.block_size is not None else max(8, int(round(0.01 * self.fs_hz)))


#: Named configurations. ``"default"``: 1024-channel dense array (50 µm pitch).
#: ``"monkey_m1_utah96"``: ``utah96`` calibrated so decoding is as hard as on real monkey M1.
#: ``"utah96"``: a 96-channel Utah-like array (400 µm pitch) in monkey M1, mostly one good unit per
#: channel. ``"cortex"``: one family for any ``n_channels`` with shared (information-limiting) and
#: private (gain) variability, so decoding saturates with channels as in real cortex.
#: ``"dense4096"``: 4096 channels. ``"tiny"``: 16 channels, for tests and quick demos.
PRESETS: dict[str, ImplantConfig] = {
    "default": ImplantConfig(),
    "utah96": ImplantConfig(
        n_channels=96, pitch_um=400.0, units_per_channel_p=(0.1, 0.7, 0.17, 0.03), snr_range=(2.5, 25.0),
        noise_uv=6.0, mua_fraction=0.25, lfp_uv=80.0, n_dead=2, n_saturating=1,
        baseline_hz_range=(3.0, 30.0), depth_hz_range=(5.0, 30.0),
    ),
    # Calibrated against real monkey M1 (the monkey_m1_center_out recordings): with these settings
    # the default KalmanFilter on 20 ms threshold-crossing + spike-band-power features reaches an
    # open-loop velocity R² of ~0.6 (0.58-0.72 over seeds), where the same decoder reaches 0.52
    # (Chewie) and 0.74 (Mihi) on the real data. utah96 with weaker tuning (1-6 Hz depth).
    # Reproduce: cortexlink bench decode (targets.sim96_kalman_r2_vs_monkey).
    "monkey_m1_utah96": ImplantConfig(
        n_channels=96, pitch_um=400.0, units_per_channel_p=(0.1, 0.7, 0.17, 0.03), snr_range=(2.5, 25.0),
        noise_uv=6.0, mua_fraction=0.25, lfp_uv=80.0, n_dead=2, n_saturating=1,
        baseline_hz_range=(3.0, 30.0), depth_hz_range=(1.0, 6.0),
    ),
    # One family across channel counts: use it with any n_channels (96, 256, 1024, 4096); the per-unit
    # statistics are the same at every count, only the number of electrodes changes. The electrode
    # model (30 kHz, 50 µm pitch, noise, MUA, LFP, line noise, artefacts, faulty channels) is
    # `default`'s. Calibrated, with the default KalmanFilter on the dsp's default features (tx + sbp,
    # 20 ms bins) and a centre-out intent (sim.reach_intent.CentreOutIntent), 120 s per row. With the
    # constant shared noise alone (0.135; seeds 0-7): R² 0.56 ± 0.07 at 96 ch (real M1 Utah arrays
    # ~0.5-0.65; this repository's Kalman on the monkey_m1_center_out recordings 0.52 Chewie, 0.74
    # Mihi), 0.69 ± 0.04 at 256 ch, 0.79 ± 0.02 at 1024 ch. With the noise made mostly
    # signal-dependent (below; seeds 0-1): 0.565/0.671 at 96 ch, 0.667/0.752 at 256, 0.797/0.830 at
    # 1024 (those seeds gave 0.586/0.688 and 0.779/0.828 with the constant noise), under a ceiling
    # of 0.85-0.88.
    # Reproduce: cortexlink bench decode --sim-preset cortex --sim-seeds 0 1.
    # - units_per_channel_p, snr_range, baseline_hz_range, click units: `default`'s (1.3 units per
    #   electrode, SNR 2-20, baselines 2-30 Hz, 15 % click-tuned units), unchanged.
    # - depth_hz_range 2-21 Hz per unit speed: calibrated (with the two noises) to the R² above;
    #   M1 cosine tuning spans a few to a few tens of Hz (Georgopoulos et al. 1982 J Neurosci 2:1527).
    # - shared_noise 0.03 + shared_noise_speed 0.28 x the intended speed (intent units; the
    #   centre-out intent's per-axis SD is ~0.36): information-limiting noise (Moreno-Bote et al.
    #   2014 Nat Neurosci 17:1410) sized so R² saturates near 0.8 however many channels. Mostly
    #   signal-dependent, like motor variability (Harris & Wolpert 1998): a constant 0.135 gives the
    #   same offline R² but makes a resting intent drift at ~0.14 units/s (~0.8 Webgrid 30x30
    #   half-cells over the participant's visual delay), which would cap closed-loop Webgrid near
    #   3 bps at any channel count (Kalman, 1024 ch, seed 0: 2.78 bps), far below the 8-9.5 bps
    #   people reach with 1,024 electrodes. shared_noise_tau_s 0.1 s: chosen, not measured (slower
    #   than a 20 ms bin, faster than a 0.3-0.8 s reach).
    # - overdispersion 0.5, overdispersion_tau_s 0.5 s: Fano factor up to 1 + 0.28 x the mean count
    #   for windows much shorter than 0.5 s; measured 1.36 (median, units over 10 Hz, 100 ms
    #   windows, intent held at 0; 0.94 without it), near the ~1.5 of pre-stimulus M1/PMd counts
    #   (Churchland et al. 2010 Nat Neurosci 13:369); slow gain fluctuations as in Goris et al.
    #   2014 Nat Neurosci 17:858.
    "cortex": ImplantConfig(
        units_per_channel_p=(0.25, 0.35, 0.25, 0.15), depth_hz_range=(2.0, 21.0),
        shared_noise=0.03, shared_noise_speed=0.28, shared_noise_tau_s=0.1, overdispersion=0.5,
        overdispersion_tau_s=0.5,
    ),
    "dense4096": ImplantConfig(n_channels=4096, n_dead=12, n_saturating=6),
    "tiny": ImplantConfig(n_channels=16, n_dead=1, n_saturating=1),
    # For spike sorting (cortexlink bench sort): a 4-column shank at 25 µm where each unit is seen on its
    # neighbours (30 µm decay), bursts, per-spike amplitude variability and, in "probe384_drift",
    # a 20 µm rigid drift along the probe over 20 minutes.
    "probe384": ImplantConfig(
        n_channels=384, pitch_um=25.0, probe_columns=4, n_dead=2, n_saturating=0,
        units_per_channel_p=(0.7, 0.3), footprint_um=30.0, amplitude_jitter=0.1, burst_fraction=0.2,
        burst_attenuation=0.2, artifact_rate_hz=0.0,
    ),
    "probe384_drift": ImplantConfig(
        n_channels=384, pitch_um=25.0, probe_columns=4, n_dead=2, n_saturating=0,
        units_per_channel_p=(0.7, 0.3), footprint_um=30.0, amplitude_jitter=0.1, burst_fraction=0.2,
        burst_attenuation=0.2, artifact_rate_hz=0.0, probe_drift_um=20.0, probe_drift_period_s=1200.0,
    ),
}
