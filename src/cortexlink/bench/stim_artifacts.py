"""Recording through stimulation: false threshold crossings and lost spikes with and without
stimulation-artefact removal (the measurement behind ``cortexlink bench stim``; issue 18 §3).

:func:`measure_artifacts` records the simulated implant twice with the same seed -- once plain,
once with a stimulation train on a few electrodes (the simulator renders the artefacts on the
same underlying signal, so both recordings share their ground-truth spikes) -- cleans the
stimulated one with :class:`~cortexlink.dsp.artifacts.StimArtifactRemover` in each mode, and runs
the real :class:`~cortexlink.dsp.FeatureExtractor` (calibrated on a stim-free stretch first) on it.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_positive, check_range

__all__ = ["measure_artifacts", "MODES"]

MODES = ("none", "blank", "template", "blank+template")


def _match(ev_ch: np.ndarray, ev_s: np.ndarray, gt_ch: np.ndarray, gt_s: np.ndarray,
           tol: int) -> tuple[np.ndarray, np.ndarray]:
    """Which events have a ground-truth spike on their channel within ``tol`` samples, and which
    spikes have an event within ``tol`` (nearest neighbour on a channel-major key)."""
    big = np.int64(1) << 40
    ek = ev_ch.astype(np.int64) * big + ev_s.astype(np.int64)
    gk = gt_ch.astype(np.int64) * big + gt_s.astype(np.int64)
    order = np.argsort(gk, kind="stable")
    gk_sorted = gk[order]
    ek_sorted = np.sort(ek)

    def near(keys: np.ndarray, ref: np.ndarray) -> np.ndarray:
        if ref.size == 0:
            return np.zeros(keys.size, bool)
        i = np.searchsorted(ref, keys)
        lo = np.abs(keys - ref[np.clip(i - 1, 0, ref.size - 1)])
        hi = np.abs(keys - ref[np.clip(i, 0, ref.size - 1)])
        return np.minimum(lo, hi) <= tol

    return near(ek, gk_sorted), near(gk, ek_sorted)


def _in_intervals(s: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """Whether each sample lies in one of the sorted, disjoint ``[start, stop)`` intervals."""
    if iv.size == 0:
        return np.zeros(s.size, bool)
    i = np.searchsorted(iv[:, 0], s, side="right") - 1
    ok = i >= 0
    out = np.zeros(s.size, bool)
    out[ok] = s[ok] < iv[i[ok], 1]
    return out


def _stim_electrodes(n_channels: int, n: int) -> np.ndarray:
    """``n`` electrodes spread over the array (evenly spaced channel indices, away from the edges)."""
    return np.unique(np.linspace(0, n_channels - 1, n + 2)[1:-1].round().astype(int))


def measure_artifacts(n_channels: int = 64, duration_s: float = 10.0, rate_hz: float = 100.0,
                      amplitude_ua: float = 60.0, modes: Sequence[str] = MODES, seed: int = 0, *,
                      n_electrodes: int = 3, stagger: bool = False, width_us: float = 200.0, gap_us: float = 50.0,
                      blank_pre_ms: float = 0.1, blank_post_ms: float = 1.5, template_ms: float = 5.0,
                      n_template_pulses: int = 20, calibration_s: float = 2.0, chunk_ms: float = 10.0,
                      tolerance_ms: float = 0.5) -> dict:
    """Measure false crossings and lost spikes during stimulation, per artefact-removal mode.

    The implant (default preset, ``n_channels``, ``seed``) is read for ``calibration_s`` without
    stimulation, then for ``duration_s`` with symmetric biphasic pulses (``amplitude_ua``,
    ``width_us`` per phase, ``gap_us``, cathodic first) at ``rate_hz`` on each of
    ``n_electrodes`` electrodes spread over the array, all at once (the usual multi-electrode ICMS
    pattern) or, with ``stagger``, interleaved (electrode ``i`` offset by
    ``i / (n_electrodes * rate_hz)``). The FeatureExtractor (defaults: 250-5000 Hz, CAR, -4.5 RMS)
    is calibrated on the stim-free stretch of the plain recording and then run on the whole stream.

    Returns
    -------
    dict
        ``baseline``: the detector alone on the recording without stimulation over the same
        stretch (``false_crossings_per_s``, ``spikes_detected_fraction``); ``modes``: per mode
        ``false_crossings_per_s`` (crossings whose trough is not within ``tolerance_ms`` of a
        ground-truth spike trough on that channel, per good channel and second of stimulation),
        ``true_spikes_lost_fraction`` (ground-truth spikes whose trough lies in a blanked window),
        ``spikes_detected_fraction`` (spikes with such a crossing), ``blanked_fraction`` (share of
        the stimulation stretch's samples blanked), ``false_ratio_to_baseline`` and
        ``remove_s`` (seconds the remover took); plus the settings, the pulse count and the
        number of good channels.
    """
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.dsp.artifacts import REMOVAL_MODES, StimArtifactRemover
    from cortexlink.sim import SimulatedImplant
    from cortexlink.stim.model import pulse_train

    n_channels = check_positive("n_channels", n_channels, integer=True)
    if n_channels < 8:
        raise ConfigError(f"n_channels must be >= 8 (a CAR reference over a few channels); got {n_channels}")
    duration_s = check_range("duration_s", duration_s, 0.1, 3600.0)
    rate_hz = check_range("rate_hz", rate_hz, 1.0, 1000.0)
    amplitude_ua = check_range("amplitude_ua", amplitude_ua, 0.0, 1000.0)
    calibration_s = check_range("calibration_s", calibration_s, 0.2, 60.0)
    modes = tuple(modes)
    for m in modes:
        if m not in ("none",) + REMOVAL_MODES:
            raise ConfigError(f"modes must be drawn from {('none',) + REMOVAL_MODES}; got {m!r}")

    imp = SimulatedImplant(n_channels=n_channels, seed=seed)
    fs = imp.fs_hz
    n_cal = int(round(calibration_s * fs))
    n_stim = int(round(duration_s * fs))
    n_tot = n_cal + n_stim
    chunk = max(1, int(round(chunk_ms * 1e-3 * fs)))

    def record(stim: np.ndarray | None) -> np.ndarray:
        imp.reset()
        if stim is not None:
            imp.stimulate(stim)
        return np.concatenate([imp.read(min(chunk, n_tot - i)).data for i in range(0, n_tot, chunk)])

    electrodes = _stim_electrodes(n_channels, n_electrodes)
    n_pulses = int(np.floor(duration_s * rate_hz - 1e-9))
    offset = [(i if stagger else 0) / (len(electrodes) * rate_hz) for i in range(len(electrodes))]
    trains = [pulse_train(int(e), calibration_s + 0.5 / rate_hz + offset[i], rate_hz, n_pulses,
                          amplitude_ua, width_us, gap_us) for i, e in enumerate(electrodes)]
    pulses = np.concatenate(trains)
    pulses = pulses[np.argsort(pulses["time_s"], kind="stable")]

    plain = record(None)
    gt = imp.ground_truth(n_tot)
    stimmed = record(pulses)
    cmap = imp.channel_map
    fx = FeatureExtractor(cmap, fs, keep_events=True)
    fx.calibrate(plain[:n_cal])
    good = ~fx.bad_channels_
    n_good = int(good.sum())
    tol = int(round(tolerance_ms * 1e-3 * fs))

    gt_s, gt_ch = gt.spike_samples, gt.spike_channels
    in_stim = (gt_s >= n_cal) & good[gt_ch]
    gt_s, gt_ch = gt_s[in_stim], gt_ch[in_stim]

    def score(data: np.ndarray) -> dict:
        fx.reset()
        fx.apply(data, chunk_size=chunk)
        ev = fx.events_
        sel = (ev.trough_sample_idx >= n_cal) & good[ev.channel_idx]
        ev_ok, gt_hit = _match(ev.channel_idx[sel], ev.trough_sample_idx[sel], gt_ch, gt_s, tol)
        return {"false_crossings_per_s": float((~ev_ok).sum() / (n_good * duration_s)),
                "spikes_detected_fraction": float(gt_hit.mean()) if gt_hit.size else float("nan"),
                "n_crossings": int(sel.sum())}

    base = score(plain)
    out: dict = {}
    for m in modes:
        t0 = time.perf_counter()
        if m == "none":
            data, iv = stimmed, np.zeros((0, 2), np.int64)
        else:
            rm = StimArtifactRemover(n_channels, fs, m, blank_pre_ms=blank_pre_ms, blank_post_ms=blank_post_ms,
                                     template_ms=template_ms, n_template_pulses=n_template_pulses,
                                     keep_intervals=True)
            data = rm.apply(stimmed, pulses, chunk_size=chunk)
            iv = rm.blanked_intervals_
        dt = time.perf_counter() - t0
        r = score(data)
        lost = _in_intervals(gt_s, iv)
        r["true_spikes_lost_fraction"] = float(lost.mean()) if lost.size else float("nan")
        blanked = int(np.clip(np.minimum(iv[:, 1], n_tot) - np.maximum(iv[:, 0], n_cal), 0, None).sum()) if iv.size else 0
        r["blanked_fraction"] = blanked / n_stim
        r["false_ratio_to_baseline"] = (r["false_crossings_per_s"] / base["false_crossings_per_s"]
                                        if base["false_crossings_per_s"] > 0 else float("inf"))
        r["remove_s"] = dt
        out[m] = r
    return {
        "n_channels": n_channels, "n_good_channels": n_good, "duration_s": duration_s, "rate_hz": rate_hz,
        "amplitude_ua": amplitude_ua, "width_us": width_us, "gap_us": gap_us, "seed": seed,
        "electrodes": electrodes.tolist(), "n_pulses": int(pulses.size), "stagger": bool(stagger), "calibration_s": calibration_s,
        "blank_pre_ms": blank_pre_ms, "blank_post_ms": blank_post_ms, "template_ms": template_ms,
        "n_template_pulses": n_template_pulses, "tolerance_ms": tolerance_ms, "n_gt_spikes": int(gt_s.size),
        "baseline": base, "modes": out,
    }
