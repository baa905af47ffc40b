"""How well a closed-loop block was controlled, beyond the task's score: rest noise, drift,
wrong clicks and click detection, from a block's :class:`~cortexlink.tasks.trace.BlockTrace`.

The participant's intent is the simulator's ground truth, so these figures exist for simulated
blocks (a block without intent gives None where a figure needs it). They say *why* a decoder
scores what it scores on Webgrid: a cursor that drifts by more than a cell's half-width during
the participant's visual delay cannot be clicked reliably, whatever its decoder's R².
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["control_metrics", "REST_SPEED_UNITS_S", "CLICK_MATCH_S"]

#: The participant intends rest where its intended speed is below this (screen units/s).
REST_SPEED_UNITS_S = 0.05
#: A click within this long after a click intent's onset detects it (seconds).
CLICK_MATCH_S = 0.3


def _median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def control_metrics(trace: Any, visual_delay_s: float = 0.17) -> dict:
    """Control metrics of one block.

    Parameters
    ----------
    trace : BlockTrace (or anything with its per-bin arrays and ``dt_s``)
    visual_delay_s : float
        The participant's visual delay: drift is measured over it plus one bin (the loop's own
        latency in a bin-synchronous simulation).

    Returns
    -------
    dict
        ``decoded_speed_at_rest`` (median speed of the velocity the cursor was given while the
        participant intended rest, units/s), ``drift_over_delay_halfwidths`` (median cursor
        displacement over the delay from such bins, in target radii = cell half-widths),
        ``n_wrong_clicks``, ``wrong_click_speed`` (median cursor speed at wrong clicks, units/s),
        ``wrong_click_distance_halfwidths`` (median distance of wrong clicks from the target's
        centre, in radii), and click detection against the participant's click intent:
        ``click_intents``, ``click_detected_fraction``, ``false_clicks_per_min`` and
        ``click_latency_ms_median``. None where there is nothing to measure.
    """
    dt = float(trace.dt_s)
    n = int(np.asarray(trace.t_s).size)
    out: dict[str, Any] = {"decoded_speed_at_rest": None, "drift_over_delay_halfwidths": None, "n_wrong_clicks": 0,
                           "wrong_click_speed": None, "wrong_click_distance_halfwidths": None, "click_intents": 0,
                           "click_detected_fraction": None, "false_clicks_per_min": None,
                           "click_latency_ms_median": None}
    if n == 0:
        return out
    iv = np.asarray(trace.intended_velocity, float).reshape(n, 2)
    cv = np.asarray(trace.cursor_velocity, float).reshape(n, 2)
    xy = np.asarray(trace.cursor_xy, float).reshape(n, 2)
    txy = np.asarray(trace.target_xy, float).reshape(n, 2)
    rad = np.asarray(trace.target_radius, float).reshape(n)
    clicks = np.asarray(trace.clicks, bool).reshape(n)
    on = np.asarray(trace.on_target, bool).reshape(n)
    rest = np.hypot(iv[:, 0], iv[:, 1]) < REST_SPEED_UNITS_S          # NaN intent -> False
    if rest.any():
        out["decoded_speed_at_rest"] = _median(np.hypot(cv[rest, 0], cv[rest, 1]))
        lag = max(1, int(round(visual_delay_s / dt)) + 1)
        t = np.flatnonzero(rest[:n - lag]) if n > lag else np.zeros(0, np.int64)
        if t.size:
            d = np.hypot(*(xy[t + lag] - xy[t]).T) / rad[t]
            out["drift_over_delay_halfwidths"] = _median(d)
    wrong = clicks & ~on & np.all(np.isfinite(txy), axis=1)
    out["n_wrong_clicks"] = int(wrong.sum())
    if wrong.any():
        out["wrong_click_speed"] = _median(np.hypot(cv[wrong, 0], cv[wrong, 1]))
        out["wrong_click_distance_halfwidths"] = _median(np.hypot(*(xy[wrong] - txy[wrong]).T) / rad[wrong])
    ci = np.asarray(trace.click_intent, float).reshape(n)
    if np.isfinite(ci).any():
        c = np.nan_to_num(ci) >= 0.5
        onsets = np.flatnonzero(c & ~np.r_[False, c[:-1]])
        click_bins = np.flatnonzero(clicks)
        w = int(round(CLICK_MATCH_S / dt))
        used = np.zeros(click_bins.size, bool)
        lat = []
        for o in onsets:
            j = np.flatnonzero((click_bins >= o) & (click_bins <= o + w) & ~used)
            if j.size:
                used[j[0]] = True
                lat.append((click_bins[j[0]] - o) * dt * 1000.0)
        out["click_intents"] = int(onsets.size)
        if onsets.size:
            out["click_detected_fraction"] = len(lat) / onsets.size
        minutes = n * dt / 60.0
        out["false_clicks_per_min"] = float((~used).sum()) / minutes if minutes > 0 else None
        out["click_latency_ms_median"] = float(np.median(lat)) if lat else None
    for k, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
    return out
