"""Generation of one internal block of a :class:`~cortexlink.sim.SimulatedImplant`: the block's
intent, firing rates, LFP, artefacts, single-unit spikes and line noise, rendered by the numba
kernels into int16 counts (see the :mod:`cortexlink.sim.implant` docstring)."""

from __future__ import annotations

import math

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.sim import _kernels as K
from cortexlink.sim._implant_structure import (_ARTIFACT_MS, _PINK_K, _PINK_P, _STREAM_BLOCK, _STREAM_GAIN,
                                               _STREAM_SHARED, _STREAM_SHARED_SPEED)
from cortexlink.sim.waveforms import artifact_shape


class _BlockGenerator:
    """The part of :class:`~cortexlink.sim.SimulatedImplant` that produces its samples one
    internal block at a time (``_generate_block``, called by ``read``), from the structure built
    by ``_build_static`` and the state set by ``reset``."""

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

    def _step_shared_noise(self, k: int, speed: float) -> tuple[float, float]:
        """Advance the shared intent noise to block ``k`` whose intended speed is ``speed`` (their own
        streams; nothing drawn when off): the constant part plus ``shared_noise_speed * speed``
        times a unit OU process."""
        sd = self._cfg.shared_noise
        if sd > 0:
            a = self._shared_a
            n = np.random.default_rng([self._cfg.seed, _STREAM_SHARED, k]).standard_normal(2)
            self._shared_eps = a * self._shared_eps + math.sqrt(1 - a * a) * sd * n
        eps = self._shared_eps
        f = self._cfg.shared_noise_speed
        if f > 0:
            a = self._shared_a
            n = np.random.default_rng([self._cfg.seed, _STREAM_SHARED_SPEED, k]).standard_normal(2)
            self._shared_z = a * self._shared_z + math.sqrt(1 - a * a) * n
            eps = eps + f * speed * self._shared_z
        self._gt_shared.append(eps[None, :])
        return float(eps[0]), float(eps[1])

    def _step_gain(self, k: int) -> np.ndarray:
        """Advance every unit's log-gain to block ``k`` and return the gains (mean 1)."""
        a, s = self._gain_a, self._cfg.overdispersion
        n = np.random.default_rng([self._cfg.seed, _STREAM_GAIN, k]).standard_normal(self.n_units)
        self._gain_x = a * self._gain_x + math.sqrt(1 - a * a) * n
        return np.exp(s * self._gain_x - 0.5 * s * s)

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
        ex, ey = self._step_shared_noise(k, math.hypot(vx, vy))
        rates = (base + self._depth * ((vx + ex) * self._pd[:, 0] + (vy + ey) * self._pd[:, 1])
                 + self._click_depth * click)
        if self._speech_a is not None:
            rates += self._speech_M @ self._speech_a
        if cfg.overdispersion > 0:
            rates *= self._step_gain(k)
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
        if self._real:
            scales = self._realism_spikes(extra, rates, s0)
            n = len(scales)
        else:
            n = K.spike_block(rates / fs, self._refr, self._hazard, self._t_free, self._n_spk, self._spike_key,
                              s0, B, self._onsets, self._units)
            if n:
                K.add_spikes(extra, self._onsets, self._units, n, s0, self._unit_channel, self._templates)
        if n:
            order = np.argsort(self._onsets[:n], kind="stable")
            self._gt_spk.append(self._onsets[:n][order] + self._pre)
            self._gt_unit.append(self._units[:n][order])
            if self._real:
                self._gt_scale.append(scales[order])

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
