"""What spike sorting needs from the simulated implant: spatial footprints, positional drift,
bursting and per-spike amplitude variability (the :class:`~cortexlink.sim.ImplantConfig` fields
``footprint_um``, ``probe_drift_um``, ``probe_drift_period_s``, ``amplitude_jitter``,
``burst_*``).

* **Footprint** -- each unit sits at a position near its channel (within +-0.4 pitch of it, drawn
  from its own stream). An electrode ``d`` µm further from the unit than the unit's channel sees
  ``exp(-d / footprint_um)`` of the waveform; gains under 5 % are dropped. The unit's own channel
  sees gain 1 at rest, so the SNR of :class:`~cortexlink.sim.GroundTruth` keeps its meaning there.
* **Drift** -- every unit moves rigidly along the probe's y axis by
  ``probe_drift_um * sin(2 pi t / probe_drift_period_s + phase)`` (block-wise constant); the
  footprint follows (gains recomputed each block over the electrodes within reach).
* **Day shift** -- on recording day ``d`` every unit is also displaced along y by a random walk
  over days with step ``day_shift_um`` (:func:`day_shift_total_um`; the probe settling between
  sessions), added to the within-session drift.
* **Bursts** -- a bursting unit fires again after an interval drawn from ``burst_isi_ms_range``
  with probability ``1 - 1 / burst_mean_spikes`` after each of its spikes (a geometric burst
  length), on top of its Poisson rate.
* **Amplitudes** -- a spike's waveform is scaled by ``(1 - D) * exp(amplitude_jitter * z)``, ``z``
  standard normal; ``D`` (the depletion) decays with ``burst_recovery_ms`` and grows by
  ``burst_attenuation`` at each spike, so spikes that follow closely (bursts) are smaller.

Every draw is a hash of ``(key, unit, spike number)``, so the output stays chunk-size invariant.
With all these fields at their defaults (0) the implant uses its original kernels and its samples
are bit-identical to those before this module existed.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from cortexlink.sim import _kernels as K
from cortexlink.sim._implant_structure import _STREAM_DAY
from cortexlink.sim.ground_truth import _Growing, _ro

#: Stream of the sorting-realism structure (positions, bursting units, drift phase).
_STREAM_SORTING = 6
#: Footprint gains under this fraction of the unit's own channel are dropped.
FOOTPRINT_CUTOFF = 0.05
_MAX_FOOTPRINT_CHANNELS = 64
_MIN_SCALE = 0.2


@numba.njit(cache=True, inline="always")
def _uniform(key, u, count):
    x = K._mix64(key + ((np.uint64(u) << np.uint64(32)) | np.uint64(count)) * K._GOLD)
    return (np.float64(x >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, boundscheck=False)
def spike_block_real(rate_ps, refr, hazard, t_free, n_spk, key, s0, n_t, onsets, units, scales,
                     burst_p, isi_lo, isi_hi, t_force, last_t, depletion, atten, recov, jitter, key2):
    """Like :func:`cortexlink.sim._kernels.spike_block`, plus bursts and per-spike amplitude scales.

    A unit with ``t_force[u] >= 0`` has a burst spike pending at that (continuous) sample time; it
    fires before any Poisson spike. After each spike, a unit with ``burst_p[u] > 0`` schedules the
    next burst spike with that probability. ``scales`` receives each spike's amplitude factor.
    """
    end = np.float64(s0 + n_t)
    n = 0
    for u in range(rate_ps.shape[0]):
        r = rate_ps[u]
        if r <= 0.0 and t_force[u] < 0.0:
            continue
        t = max(t_free[u], np.float64(s0))
        h = hazard[u]
        while t < end:
            forced = t_force[u] >= 0.0
            if forced:
                ts = max(t_force[u], t)
            elif r > 0.0:
                ts = t + h / r
            else:
                t = end
                break
            if ts >= end:
                if not forced:
                    h -= (end - t) * r
                t = end
                break
            n_spk[u] += 1
            c = n_spk[u]
            onsets[n] = np.int64(math.floor(ts))
            units[n] = u
            # amplitude: depletion from earlier spikes, then per-spike jitter
            d = depletion[u] * math.exp(-(ts - last_t[u]) / recov) if last_t[u] >= 0.0 else 0.0
            s = 1.0 - d
            if jitter > 0.0:
                u1 = _uniform(key2, u, 2 * c)
                u2 = _uniform(key2, u, 2 * c + 1)
                s *= math.exp(jitter * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2))
            scales[n] = max(s, _MIN_SCALE)
            depletion[u] = d + atten
            last_t[u] = ts
            n += 1
            if not forced:
                h = K._exp_draw(key, u, c)
            t = ts + refr[u]
            t_force[u] = -1.0
            if burst_p[u] > 0.0 and _uniform(key, u, c + 0x40000000) < burst_p[u]:
                isi = isi_lo + (isi_hi - isi_lo) * _uniform(key2, u, c + 0x40000000)
                t_force[u] = ts + max(isi, refr[u])
        hazard[u] = h
        t_free[u] = t
    return n


@numba.njit(cache=True, boundscheck=False)
def add_spikes_footprint(extra, onsets, units, scales, n, s0, fp_ch, fp_gain, templates):
    """Overlap-add each spike's template x its scale x the unit's gain on each footprint channel."""
    n_w = templates.shape[1]
    n_m = fp_ch.shape[1]
    for i in range(n):
        u = units[i]
        o = onsets[i] - s0
        for m in range(n_m):
            g = fp_gain[u, m]
            if g <= 0.0:
                continue
            ch = fp_ch[u, m]
            gs = np.float32(g * scales[i])
            for k in range(n_w):
                extra[o + k, ch] += templates[u, k] * gs


def footprint_gains(pos: np.ndarray, unit_pos: np.ndarray, unit_channel: np.ndarray, fp_ch: np.ndarray,
                    footprint_um: float, offset_y_um: float = 0.0) -> np.ndarray:
    """Gains (n_units, n_candidates) of each unit on its candidate channels ``fp_ch`` (-1 = none)
    with every unit moved by ``offset_y_um`` along y; 1 on a unit's own channel at rest."""
    p = unit_pos + np.array([0.0, offset_y_um])
    d_main = np.linalg.norm(unit_pos - pos[unit_channel], axis=1)
    d = np.linalg.norm(pos[np.maximum(fp_ch, 0)] - p[:, None, :], axis=2)
    g = np.exp(-(d - d_main[:, None]) / footprint_um)
    g[(g < FOOTPRINT_CUTOFF) | (fp_ch < 0)] = 0.0
    return g.astype(np.float32)


def day_shift_total_um(cfg) -> float:
    """The rigid displacement (µm, along y) of every unit relative to the probe on day
    ``cfg.day``: a random walk whose day-``d`` step is ``day_shift_um`` x a standard normal drawn
    from its own stream ``(seed, day stream, d, 1)`` (0 on day 0 and when ``day_shift_um == 0``)."""
    if cfg.day_shift_um == 0 or cfg.day == 0:
        return 0.0
    steps = [np.random.default_rng([cfg.seed, _STREAM_DAY, d, 1]).standard_normal() for d in range(1, cfg.day + 1)]
    return float(cfg.day_shift_um * np.sum(steps))


class _SortingRealism:
    """Mixin of :class:`~cortexlink.sim.SimulatedImplant`: the structure, state and per-block
    spikes of the sorting-realism model (module docstring)."""

    def _build_realism(self) -> None:
        cfg = self._cfg
        self._real = bool(cfg.footprint_um > 0 or cfg.amplitude_jitter > 0 or cfg.burst_fraction > 0
                          or cfg.burst_attenuation > 0)
        U, pos = self.n_units, self._map.positions_um
        rng = np.random.default_rng([cfg.seed, _STREAM_SORTING])
        offset = rng.uniform(-0.4, 0.4, (U, 2)) * cfg.pitch_um if cfg.footprint_um > 0 else np.zeros((U, 2))
        self._unit_pos = pos[self._unit_channel] + offset
        bursting = rng.random(U) < cfg.burst_fraction
        self._drift_phase = float(rng.uniform(0, 2 * np.pi))
        keys = np.random.SeedSequence([cfg.seed, _STREAM_SORTING, 1]).generate_state(2, np.uint64)
        self._burst_key, self._jitter_key = keys[0], keys[1]
        self._burst_p = np.where(bursting, 1.0 - 1.0 / cfg.burst_mean_spikes, 0.0)
        fs = cfg.fs_hz
        self._isi_lo, self._isi_hi = (v * 1e-3 * fs for v in cfg.burst_isi_ms_range)
        self._day_shift_um = day_shift_total_um(cfg)
        if cfg.footprint_um > 0 and U:
            reach = (cfg.footprint_um * math.log(1.0 / FOOTPRINT_CUTOFF) + cfg.pitch_um + cfg.probe_drift_um
                     + abs(self._day_shift_um))
            d = np.linalg.norm(pos[None, :, :] - self._unit_pos[:, None, :], axis=2)
            m = min(_MAX_FOOTPRINT_CHANNELS, pos.shape[0])
            near = np.argsort(d, axis=1, kind="stable")[:, :m]
            fp = np.where(np.take_along_axis(d, near, 1) <= reach, near, -1).astype(np.int32)
            fp[:, 0] = self._unit_channel  # nearest at rest: the unit's own channel
        else:
            fp = self._unit_channel[:, None].astype(np.int32)
        self._fp_ch = np.ascontiguousarray(fp)
        self._fp_gain = self._gains_at(0)
        # more spikes per block than the Poisson bound: bursts add at most one per burst ISI
        if self._real and U:
            per_unit = int(self._B // max(min(self._refr.min(), self._isi_lo), 1.0)) + 2
            self._spike_cap = max(self._spike_cap, U * per_unit)
        self._static.update(
            unit_position_um=_ro(self._unit_pos), unit_bursting=_ro(bursting),
            footprint_channels=_ro(self._fp_ch), footprint_gains=_ro(self._fp_gain),
            probe_drift_um=cfg.probe_drift_um, probe_drift_period_s=cfg.probe_drift_period_s,
            probe_drift_phase=self._drift_phase, day_shift_total_um=self._day_shift_um)

    def _drift_offset_um(self, sample: int) -> float:
        """Displacement (µm, along y) of every unit at ``sample``: the day's shift plus the
        within-session drift."""
        cfg = self._cfg
        if cfg.probe_drift_um == 0:
            return self._day_shift_um
        return self._day_shift_um + cfg.probe_drift_um * math.sin(
            2 * math.pi * sample / cfg.fs_hz / cfg.probe_drift_period_s + self._drift_phase)

    def _gains_at(self, sample: int) -> np.ndarray:
        cfg = self._cfg
        if cfg.footprint_um == 0 or self.n_units == 0:
            return np.ones(self._fp_ch.shape, np.float32)
        return footprint_gains(self._map.positions_um, self._unit_pos, self._unit_channel, self._fp_ch,
                               cfg.footprint_um, self._drift_offset_um(sample))

    def _reset_realism(self) -> None:
        U = self.n_units
        self._t_force = np.full(U, -1.0)
        self._last_t = np.full(U, -1.0)
        self._depletion = np.zeros(U)
        self._gt_scale = _Growing(np.float32)

    def _realism_spikes(self, extra: np.ndarray, rates: np.ndarray, s0: int) -> np.ndarray | None:
        """Generate and overlap-add this block's single-unit spikes; returns their scales
        (emission order) or None when the realism model is off."""
        cfg, fs, B = self._cfg, self._cfg.fs_hz, self._B
        scales = np.empty(self._spike_cap, np.float32)
        n = spike_block_real(rates / fs, self._refr, self._hazard, self._t_free, self._n_spk, self._spike_key,
                             s0, B, self._onsets, self._units, scales, self._burst_p, self._isi_lo, self._isi_hi,
                             self._t_force, self._last_t, self._depletion, cfg.burst_attenuation,
                             cfg.burst_recovery_ms * 1e-3 * fs, cfg.amplitude_jitter, self._jitter_key)
        if cfg.probe_drift_um > 0:
            self._fp_gain = self._gains_at(s0 + B // 2)
        if n:
            add_spikes_footprint(extra, self._onsets, self._units, scales, n, s0, self._fp_ch, self._fp_gain,
                                 self._templates)
        return scales[:n]
