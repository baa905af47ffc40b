"""Stimulation artefacts of a :class:`~cortexlink.sim.SimulatedImplant` (issue 18 §3).

:meth:`SimulatedImplant.stimulate <_StimArtifacts.stimulate>` takes pulses (rows of
:data:`cortexlink.core.pulses.PULSE_DTYPE`, times on the implant clock: sample =
``round(time_s * fs_hz)``; ``electrode`` is the channel the stimulating electrode sits on) and
every later :meth:`~cortexlink.sim.SimulatedImplant.read` adds their artefacts to the samples it
returns.

Model, per pulse and channel ``c`` (µV; parameters are fields of
:class:`~cortexlink.sim.ImplantConfig`):

* **gain** ``g_c = stim_artifact_uv_per_ua * r0 / (r0 + d_c) * j_c`` with ``d_c`` the distance
  (channel map, µm) from channel ``c`` to the stimulating electrode, ``r0 = stim_falloff_um`` and
  ``j_c`` a per-channel factor (log-normal, sigma ``stim_spread``, seeded); dead channels see
  nothing;
* **phases**: ``-g_c * amplitude_ua`` during the first phase of a cathodic-first pulse (the
  voltage at a cathode is negative; sign flipped for anodic-first), nothing during the
  interphase gap, ``+g_c * amplitude2_ua`` during the second phase;
* **saturation**: a channel whose phase voltage reaches ``stim_saturation_uv`` sits at the int16
  rail (of the phase's sign) for the whole pulse and ``stim_dead_time_ms`` after it, then
  recovers from the rail: ``rail * exp(-t / tau_c)`` is added to the signal (clipped at the
  rails), so it leaves the rail and settles back on the baseline;
* **recovery** of channels that did not saturate: ``stim_residual_fraction`` of the second-phase
  voltage is left at the pulse's end and decays as ``exp(-t / tau_c)``; ``tau_c`` is
  ``stim_recovery_tau_ms`` times a per-channel log-normal factor (sigma ``stim_spread``).

Artefacts of overlapping pulses add (float32 µV, then rounded onto the int16 counts and clipped
at the rails); a later pulse's rail hold wins over an earlier one's. Saturation is decided per
pulse: simultaneous pulses that each stay below ``stim_saturation_uv`` but sum past the rails are
clipped, not held. Each artefact is cut off ``12 * max(tau_c)`` after its pulse's end plus the
dead time (by then below a tenth of a count).

The defaults are choices of the order reported for intracortical microstimulation recorded on the
same or a nearby array (e.g. the human bidirectional BCI work of Weiss et al., J. Neural Eng.
2019), not fits to a data set: millivolt artefacts that drive the channels next to the
stimulating electrode into the rails (5 mV is the input range of Intan RHD-class amplifiers),
hundreds of µV on channels a few hundred µm away, and recovery within about 0.5-2 ms of the
pulse's end.

Determinism: an artefact is a function of the sample index and the pulses given, applied to the
int16 output as it is read, so the output does not depend on the chunk sizes used to read it.
A pulse whose artefact lies wholly in samples already read is **counted as late**
(:attr:`~_StimArtifacts.n_late_pulses`) and dropped -- not raised, since a late command is a
run-time fault of a closed loop, not a programming error; a pulse partly in the past renders the
part not yet read and is logged in :attr:`~_StimArtifacts.stimulation_log`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.pulses import PULSE_DTYPE, as_pulses
from cortexlink.sim.ground_truth import _Growing

__all__: list[str] = []

logger = logging.getLogger(__name__)

#: random stream of the per-channel artefact gains and time constants (implant streams are 0-5)
_STREAM_STIM = 6
_TAIL_TAUS = 12.0
_RAIL_HI, _RAIL_LO = 32767, -32768
_TABLE_MAX = 1 << 24      # decay table entries (samples x channels) kept; beyond, computed per chunk


class _StimArtifacts:
    """The stimulation part of :class:`~cortexlink.sim.SimulatedImplant`: ``stimulate``,
    ``stimulation_log``, ``n_late_pulses`` and the rendering called by ``read``."""

    def _build_stim(self) -> None:
        cfg = self._cfg
        C, fs = cfg.n_channels, cfg.fs_hz
        rng = np.random.default_rng([cfg.seed, _STREAM_STIM])
        jit = np.exp(cfg.stim_spread * rng.standard_normal(C))
        tau_ms = cfg.stim_recovery_tau_ms * np.exp(cfg.stim_spread * rng.standard_normal(C))
        connected = np.ones(C)
        connected[self._dead] = 0.0
        self._stim_jit = jit * connected
        self._stim_tau_samples = tau_ms * 1e-3 * fs
        self._stim_dead_n = int(round(cfg.stim_dead_time_ms * 1e-3 * fs))
        self._stim_tail_n = int(math.ceil(_TAIL_TAUS * float(self._stim_tau_samples.max())))
        self._stim_full_uv = 32767.0 * cfg.gain_uv
        self._stim_cache: dict = {}
        rows = self._stim_dead_n + self._stim_tail_n + 1
        self._stim_table = (self._stim_decay_table(rows) if rows * C <= _TABLE_MAX else None)

    def _stim_decay_table(self, rows: int) -> np.ndarray:
        self._stim_table = None
        return self._stim_decay(0, rows)

    def _reset_stim(self) -> None:
        # pending pulses: the record plus its sample boundaries (k0, k1, kg, k2, k_last)
        self._stim_pend = np.zeros(0, PULSE_DTYPE)
        self._stim_bounds = np.zeros((0, 5), np.int64)
        self._stim_log = _Growing(PULSE_DTYPE)
        self._stim_late = 0

    # ------------------------------------------------------------------ public
    @property
    def stimulation_log(self) -> np.ndarray:
        """Read-only pulse array (:data:`~cortexlink.core.pulses.PULSE_DTYPE`) of every pulse
        accepted by :meth:`stimulate` since :meth:`reset`, sorted by ``time_s`` (late pulses,
        dropped, are not in it: see :attr:`n_late_pulses`)."""
        log = self._stim_log.view()
        out = log[np.argsort(log["time_s"], kind="stable")]
        out.flags.writeable = False
        return out

    @property
    def n_late_pulses(self) -> int:
        """Pulses given to :meth:`stimulate` whose whole artefact lay in samples already read
        (dropped, not rendered, not logged) since :meth:`reset`."""
        return self._stim_late

    def stimulate(self, pulses: Any) -> int:
        """Deliver stimulation pulses: their artefacts appear in the samples read from now on.

        Parameters
        ----------
        pulses : ndarray of :data:`~cortexlink.core.pulses.PULSE_DTYPE`
            Pulses with ``time_s`` on the implant clock (sample ``round(time_s * fs_hz)``),
            ``electrode`` a channel index in ``[0, n_channels)``, amplitudes >= 0, widths > 0 and
            gaps >= 0, all finite. See :mod:`cortexlink.sim.stim_artifacts` for the model.

        Returns
        -------
        int
            Pulses accepted. A pulse whose artefact ends before :attr:`sample_index` is late:
            counted in :attr:`n_late_pulses` and dropped. A pulse partly in the past renders the
            samples not yet read.

        Raises
        ------
        ValidationError
            If ``pulses`` is not a pulse array or a value is out of range (nothing is delivered).
        """
        p = as_pulses(pulses, where="pulses")
        if p.size == 0:
            return 0
        C = self.n_channels
        bad = (p["electrode"] < 0) | (p["electrode"] >= C)
        if bad.any():
            raise ValidationError(f"pulses: electrode must be a channel index in [0, {C}); got "
                                  f"{p['electrode'][bad][:5].tolist()}")
        for name, lo, strict in (("time_s", 0.0, False), ("amplitude_ua", 0.0, False),
                                 ("amplitude2_ua", 0.0, False), ("width_us", 0.0, True),
                                 ("width2_us", 0.0, True), ("gap_us", 0.0, False)):
            v = p[name]
            bad = ~np.isfinite(v) | ((v <= lo) if strict else (v < lo))
            if bad.any():
                rule = f"> {lo:g}" if strict else f">= {lo:g}"
                raise ValidationError(f"pulses: {name} must be finite and {rule}; got {v[bad][:5].tolist()}")
        b = self._stim_sample_bounds(p)
        late = b[:, 4] < self._pos
        n_late = int(late.sum())
        if n_late:
            before = self._stim_late
            self._stim_late += n_late
            if before == 0 or int(math.log10(self._stim_late)) > int(math.log10(before)):   # 1, 10, 100, ...
                logger.warning("stimulate: %d pulse(s) late (artefact wholly before sample %d), dropped; "
                               "%d late so far", n_late, self._pos, self._stim_late)
            p, b = p[~late], b[~late]
        if p.size:
            self._stim_log.append(p)
            pend = np.concatenate([self._stim_pend, p])
            bounds = np.concatenate([self._stim_bounds, b])
            order = np.argsort(bounds[:, 0], kind="stable")
            self._stim_pend, self._stim_bounds = pend[order], bounds[order]
        return int(p.size)

    # ------------------------------------------------------------------ rendering
    def _stim_sample_bounds(self, p: np.ndarray) -> np.ndarray:
        """(n, 5) int64: first sample, end of phase 1, start of phase 2, end of the pulse (all
        exclusive ends), and the last sample its artefact touches."""
        fs = self._cfg.fs_hz
        k0 = np.round(p["time_s"] * fs).astype(np.int64)
        k1 = k0 + np.maximum(1, np.round(p["width_us"] * 1e-6 * fs).astype(np.int64))
        kg = k1 + np.round(p["gap_us"] * 1e-6 * fs).astype(np.int64)
        k2 = kg + np.maximum(1, np.round(p["width2_us"] * 1e-6 * fs).astype(np.int64))
        last = k2 + self._stim_dead_n + self._stim_tail_n
        return np.stack([k0, k1, kg, k2, last], axis=1)

    def _stim_profile(self, electrode: int, amp1: float, amp2: float, cathodic_first: bool) -> tuple:
        """Per-channel phase levels (µV, zero on saturating channels), rail signs (int8, zero on the
        others) and recovery-tail start (µV, referred to the pulse's end) of one kind of pulse."""
        key = (electrode, amp1, amp2, cathodic_first)
        prof = self._stim_cache.get(key)
        if prof is not None:
            return prof
        cfg = self._cfg
        pos = self._map.positions_um
        d = np.linalg.norm(pos - pos[electrode], axis=1)
        g = cfg.stim_artifact_uv_per_ua * cfg.stim_falloff_um / (cfg.stim_falloff_um + d) * self._stim_jit
        pol = 1.0 if cathodic_first else -1.0
        L1, L2 = -pol * g * amp1, pol * g * amp2
        sat = np.maximum(np.abs(L1), np.abs(L2)) >= cfg.stim_saturation_uv
        # saturated channels leave the rail stim_dead_time_ms after the end: their tail, referred to
        # the end, starts at rail * exp(dead / tau) (the samples before are held at the rail)
        start = np.where(sat, np.sign(L2) * self._stim_full_uv * np.exp(self._stim_dead_n / self._stim_tau_samples),
                         cfg.stim_residual_fraction * L2)
        prof = (np.where(sat, 0.0, L1).astype(np.float32), np.where(sat, 0.0, L2).astype(np.float32),
                np.where(sat, np.sign(L1), 0).astype(np.int8), np.where(sat, np.sign(L2), 0).astype(np.int8),
                bool(sat.any()), start.astype(np.float32))
        if len(self._stim_cache) >= 256:
            self._stim_cache.clear()
        self._stim_cache[key] = prof
        return prof

    def _stim_decay(self, k_lo: int, k_hi: int) -> np.ndarray:
        """exp(-k / tau_c) for k in [k_lo, k_hi) samples after a pulse's end, (k_hi - k_lo, C)."""
        if self._stim_table is not None:
            return self._stim_table[k_lo:k_hi]
        k = np.arange(k_lo, k_hi, dtype=np.float32)[:, None]
        return np.exp(-k / self._stim_tau_samples.astype(np.float32)[None, :])

    def _render_stim(self, out: np.ndarray, s0: int) -> None:
        """Add the artefacts of pending pulses to ``out`` (int16 counts of samples ``s0..``)."""
        if self._stim_pend.size == 0:
            return
        n = out.shape[0]
        s1 = s0 + n
        bounds = self._stim_bounds
        hit = np.flatnonzero((bounds[:, 0] < s1) & (bounds[:, 4] >= s0))
        if hit.size:
            V = np.zeros(out.shape, np.float32)
            rail = None
            for i in hit:
                p = self._stim_pend[i]
                k0, k1, kg, k2, last = (int(x) for x in bounds[i])
                L1, L2, r1, r2, any_sat, start = self._stim_profile(
                    int(p["electrode"]), float(p["amplitude_ua"]), float(p["amplitude2_ua"]), bool(p["cathodic_first"]))
                for a, b, level in ((k0, k1, L1), (kg, k2, L2)):
                    lo, hi = max(a, s0) - s0, min(b, s1) - s0
                    if hi > lo:
                        V[lo:hi] += level
                lo, hi = max(k2, s0) - s0, min(last + 1, s1) - s0
                if hi > lo:
                    V[lo:hi] += start * self._stim_decay(s0 + lo - k2, s0 + hi - k2)
                if any_sat:
                    # phase 1 at its rail; gap, phase 2 and the dead time at the second phase's rail
                    for a, b, r in ((k0, k1, r1), (k1, k2 + self._stim_dead_n, r2)):
                        lo, hi = max(a, s0) - s0, min(b, s1) - s0
                        if hi > lo:
                            if rail is None:
                                rail = np.zeros(out.shape, np.int8)
                            rail[lo:hi] = np.where(r != 0, r, rail[lo:hi])
            x = out + V * np.float32(1.0 / self._cfg.gain_uv)
            np.rint(x, out=x)
            np.clip(x, _RAIL_LO, _RAIL_HI, out=x)
            if rail is not None:
                x[rail > 0] = _RAIL_HI
                x[rail < 0] = _RAIL_LO
            out[:] = x.astype(np.int16)
        # forget pulses whose artefact is over
        done = bounds[:, 4] < s1
        if done.any():
            self._stim_pend, self._stim_bounds = self._stim_pend[~done], bounds[~done]
