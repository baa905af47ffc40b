"""Numba kernels of the simulated implant (the hot loops).

Random numbers for the dense per-sample noise come from a counter-based generator: SplitMix64's
finaliser applied to ``key + counter * golden``, where ``key`` is drawn per block from
``np.random.default_rng([seed, stream, k])`` and ``counter`` is the sample's position in the block.
It is bit-exact on every platform, needs no sequential state, and vectorises over channels.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_K2 = np.uint64(0xD1B54A32D192ED03)

#: Irwin-Hall(12) from 12 random bytes: mean and 1/sd that give unit variance.
IH_MEAN = 12 * 127.5
IH_INV_SD = 1.0 / math.sqrt(12 * (256.0 ** 2 - 1) / 12.0)
#: 16 random bits per sample decide a multi-unit event (value < threshold).
MUA_BITS = 16


@numba.njit(cache=True, inline="always")
def _mix64(x):
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, boundscheck=False)
def render_block(out, extra, key, g_white, g_pink, pink_p, pink_k, b0, b1, b2,
                 mua_thresh, mua_amp, mua_c1, mua_c2, m1, m2,
                 knots, knot_idx, knot_frac, line, line_amp, chan_gain, chan_offset, dead_noise, inv_gain):
    """Fill ``out`` (block, channels) int16 with one block of samples.

    Per sample and channel: unit-variance Irwin-Hall(12) white noise ``w`` (two SplitMix64 draws),
    1/f-like noise from three one-pole filters of ``w`` (states ``b0, b1, b2``), multi-unit activity
    (a Bernoulli impulse train through a damped resonator, states ``m1, m2``), the LFP linearly
    interpolated between ``knots``, line noise, ``extra`` (single-unit spikes and artefacts,
    overlap-added beforehand), then the per-channel gain/offset (dead and saturating channels) and
    rounding to int16 with clipping at the rails. Filter states are updated in place.
    """
    n_t, n_c = out.shape
    m8 = np.uint64(255)
    p0 = np.float32(pink_p[0])
    p1 = np.float32(pink_p[1])
    p2 = np.float32(pink_p[2])
    k0 = np.float32(pink_k[0])
    k1 = np.float32(pink_k[1])
    k2 = np.float32(pink_k[2])
    ih_mean = np.float32(IH_MEAN)
    ih_isd = np.float32(IH_INV_SD)
    thr = np.int64(mua_thresh)
    inv_thr = np.float32(1.0 / max(mua_thresh, 1))
    lo = np.float32(-32768.0)
    hi = np.float32(32767.0)
    half = np.float32(0.5)
    key2 = key ^ _K2
    for t in range(n_t):
        j = knot_idx[t]
        fr = knot_frac[t]
        ln = line[t]
        base = np.uint64(t * n_c)
        for c in range(n_c):
            ctr = (base + np.uint64(c)) * _GOLD
            x = _mix64(key + ctr)
            y = _mix64(key2 + ctr)
            s = ((y & m8) + ((y >> np.uint64(8)) & m8) + ((y >> np.uint64(16)) & m8)
                 + ((y >> np.uint64(24)) & m8) + ((y >> np.uint64(32)) & m8) + ((y >> np.uint64(40)) & m8)
                 + ((y >> np.uint64(48)) & m8) + (y >> np.uint64(56))
                 + (x & m8) + ((x >> np.uint64(8)) & m8) + ((x >> np.uint64(16)) & m8)
                 + ((x >> np.uint64(24)) & m8))
            w = (np.float32(s) - ih_mean) * ih_isd
            v0 = p0 * b0[c] + k0 * w
            v1 = p1 * b1[c] + k1 * w
            v2 = p2 * b2[c] + k2 * w
            b0[c] = v0
            b1[c] = v1
            b2[c] = v2
            # multi-unit: event when the top 16 bits < thr; given an event, they are uniform in [0, thr)
            u16 = np.int64(x >> np.uint64(48))
            uu = (np.float32(u16) + half) * inv_thr
            a = -mua_amp[c] * (np.float32(0.15) + np.float32(0.85) * uu * uu)
            a = a if u16 < thr else np.float32(0.0)
            mm = mua_c1[c] * m1[c] - mua_c2[c] * m2[c] + a
            m2[c] = m1[c]
            m1[c] = mm
            l0 = knots[j, c]
            lf = l0 + fr * (knots[j + 1, c] - l0)
            v = g_white[c] * w + g_pink[c] * (v0 + v1 + v2) + mm + lf + ln * line_amp[c] + extra[t, c]
            v = (v * chan_gain[c] + chan_offset[c] + dead_noise[c] * w) * inv_gain
            v = min(max(v, lo), hi)
            out[t, c] = np.int16(math.floor(v + half))


@numba.njit(cache=True, inline="always")
def _exp_draw(key, u, count):
    x = _mix64(key + ((np.uint64(u) << np.uint64(32)) | np.uint64(count)) * _GOLD)
    uni = np.float64(x >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return -math.log(1.0 - uni)


@numba.njit(cache=True)
def init_hazards(key, n_units):
    """Initial unit-exponential hazard budget of every unit (draw number 0)."""
    h = np.empty(n_units, np.float64)
    for u in range(n_units):
        h[u] = _exp_draw(key, u, 0)
    return h


@numba.njit(cache=True, boundscheck=False)
def spike_block(rate_ps, refr, hazard, t_free, n_spk, key, s0, n_t, onsets, units):
    """Spike onsets of every unit in samples ``[s0, s0 + n_t)`` by time rescaling.

    Each unit carries a unit-exponential hazard budget ``hazard`` that its rate (per sample,
    constant within the block) consumes; a spike fires when it is spent, after which the unit is
    silent for ``refr`` samples (absolute refractory period, continuous time ``t_free``) and draws
    a new budget. This is an exact inhomogeneous Poisson process with dead time, and it reacts to
    rate changes at the next block. Draw ``i`` of unit ``u`` is a hash of ``(key, u, i)``, so the
    result does not depend on how time is cut into blocks. Returns the number of spikes written.
    """
    end = np.float64(s0 + n_t)
    n = 0
    for u in range(rate_ps.shape[0]):
        r = rate_ps[u]
        if r <= 0.0:
            continue
        t = max(t_free[u], np.float64(s0))
        h = hazard[u]
        while t < end:
            ts = t + h / r
            if ts < end:
                onsets[n] = np.int64(math.floor(ts))
                units[n] = u
                n += 1
                n_spk[u] += 1
                h = _exp_draw(key, u, n_spk[u])
                t = ts + refr[u]
            else:
                h -= (end - t) * r
                t = end
        hazard[u] = h
        t_free[u] = t
    return n


@numba.njit(cache=True, boundscheck=False)
def add_spikes(extra, onsets, units, n, s0, unit_channel, templates):
    """Overlap-add each spike's template (µV) into ``extra`` at its onset row and unit's channel."""
    n_w = templates.shape[1]
    for i in range(n):
        u = units[i]
        o = onsets[i] - s0
        ch = unit_channel[u]
        for k in range(n_w):
            extra[o + k, ch] += templates[u, k]


@numba.njit(cache=True)
def lfp_sources(e, a1, a2, lp, state, norm):
    """Run the LFP source filters over innovations ``e`` (knots, sources); state updated in place.

    Each source is an AR(2) resonator ``y = a1*y1 + a2*y2 + e`` followed by two one-pole low-passes
    with pole ``lp`` (to keep LFP power out of the spike band), scaled by ``norm``.
    ``state[s] = (y1, y2, z1, z2)``.
    """
    n_k, n_s = e.shape
    out = np.empty((n_k, n_s), np.float64)
    for i in range(n_k):
        for s in range(n_s):
            y = a1[s] * state[s, 0] + a2[s] * state[s, 1] + e[i, s]
            state[s, 1] = state[s, 0]
            state[s, 0] = y
            z1 = lp * state[s, 2] + (1.0 - lp) * y
            z2 = lp * state[s, 3] + (1.0 - lp) * z1
            state[s, 2] = z1
            state[s, 3] = z2
            out[i, s] = z2 * norm[s]
    return out
