"""Checking pulses against the limits: the interlock's per-pulse checks and an independent verifier.

:func:`stateless_reasons` is the vectorised per-pulse check the interlock runs on every plan (and a
driver runs again on what it is asked to deliver). :func:`find_unsafe` is a separate, plain and
exact re-implementation of every limit — per pulse, and across the whole delivered stream
(frequency, overlap, simultaneous current, pulses in any hour, net charge in any window) — written
without sharing code with the interlock, so that the fuzz campaign and the tests can count unsafe
pulses in what the interlock let through with a checker that does not share its mistakes.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from cortexlink.core.pulses import PULSE_DTYPE, pulse_end_s

__all__ = ["stateless_reasons", "find_unsafe", "REASONS"]

#: Every reason a pulse or plan can be refused for (the audit log and the UI use these names).
REASONS = (
    "estop", "plan_window", "plan_too_long", "plan_too_many_pulses", "nonfinite", "unknown_electrode",
    "disabled_electrode", "outside_window", "late", "gap", "width", "amplitude", "charge_per_phase",
    "charge_density", "shannon", "charge_balance", "frequency", "simultaneous_current", "hourly_count",
    "net_charge",
)
_FLOAT_FIELDS = ("time_s", "amplitude_ua", "width_us", "gap_us", "amplitude2_ua", "width2_us")


def stateless_reasons(p: np.ndarray, limits: Any, t_start_s: float, t_end_s: float,
                      now_s: float) -> np.ndarray:
    """Per-pulse checks that need no history; the first failing reason per pulse, ``""`` if none.

    Checked in this order: non-finite fields, unknown / disabled electrode, outside the plan
    window, before ``now_s + limits.min_lead_s``, gap, widths, amplitudes (both phases > 0),
    charge per phase, charge density, Shannon's k, charge balance.
    """
    n = len(p)
    out = np.full(n, "", "U24")
    if n == 0:
        return out

    def mark(mask: np.ndarray, reason: str) -> None:
        out[mask & (out == "")] = reason

    finite = np.ones(n, bool)
    for f in _FLOAT_FIELDS:
        finite &= np.isfinite(p[f])
    mark(~finite, "nonfinite")
    e = p["electrode"].astype(np.int64)
    in_range = (e >= 0) & (e < limits.n_ids)
    es = np.where(in_range, e, 0)
    known = in_range & limits.known[es]
    mark(~known, "unknown_electrode")
    mark(~limits.enabled[es], "disabled_electrode")
    pe = {k: v[es] for k, v in limits.per_electrode.items()}
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        end = pulse_end_s(p)
        mark((p["time_s"] < t_start_s - 1e-9) | (end > t_end_s + 1e-9), "outside_window")   # 1 ns: clock resolution
        mark(p["time_s"] < now_s + limits.min_lead_s - 1e-9, "late")   # 1 ns: below the clock's resolution
        mark((p["gap_us"] < 0) | (p["gap_us"] > pe["max_gap_us"]), "gap")
        for w in ("width_us", "width2_us"):
            mark((p[w] < pe["min_width_us"]) | (p[w] > pe["max_width_us"]) | (p[w] <= 0), "width")
        for a in ("amplitude_ua", "amplitude2_ua"):
            mark((p[a] <= 0) | (p[a] > pe["max_amplitude_ua"]), "amplitude")
        q1 = p["amplitude_ua"] * p["width_us"] * 1e-3
        q2 = p["amplitude2_ua"] * p["width2_us"] * 1e-3
        q = np.fmax(q1, q2)
        mark(q > pe["max_charge_per_phase_nc"], "charge_per_phase")
        area_cm2 = limits.area_um2[es] * 1e-8
        mark(q * 1e-3 / area_cm2 > pe["max_charge_density_uc_cm2"], "charge_density")
        k = np.log10(np.fmax(q * 1e-3, 1e-300) ** 2 / area_cm2)
        mark(k > pe["shannon_k_max"], "shannon")
        mark(np.abs(q1 - q2) > pe["max_imbalance_nc"], "charge_balance")
    return out


def _pulse_fault(row: Any, limits: Any, t_start_s: float | None, t_end_s: float | None) -> str:
    """Scalar re-check of one pulse (independent of :func:`stateless_reasons`)."""
    vals = [float(row[f]) for f in _FLOAT_FIELDS]
    if not all(math.isfinite(v) for v in vals):
        return "nonfinite"
    t, a1, w1, gap, a2, w2 = vals
    e = int(row["electrode"])
    if e < 0 or e not in limits.electrodes:
        return "unknown_electrode"
    el = limits.electrodes[e]
    if not el.enabled:
        return "disabled_electrode"
    lim = dict(limits.defaults)
    lim.update(limits.overrides.get(e, {}))
    end = t + (w1 + gap + w2) / 1e6
    if ((t_start_s is not None and t < t_start_s - 1e-9)
            or (t_end_s is not None and end > t_end_s + 1e-9)):      # 1 ns: clock resolution
        return "outside_window"
    if not 0 <= gap <= lim["max_gap_us"]:
        return "gap"
    for w in (w1, w2):
        if w <= 0 or not lim["min_width_us"] <= w <= lim["max_width_us"]:
            return "width"
    for a in (a1, a2):
        if not 0 < a <= lim["max_amplitude_ua"]:
            return "amplitude"
    q_nc = max(a1 * w1, a2 * w2) / 1000.0
    if q_nc > lim["max_charge_per_phase_nc"]:
        return "charge_per_phase"
    d_limit = lim["max_charge_density_uc_cm2"]
    if d_limit is None:
        from cortexlink.stim.model import MATERIALS
        d_limit = MATERIALS[el.material]
    density = (q_nc / 1000.0) / (el.area_um2 / 1e8)
    if density > d_limit:
        return "charge_density"
    if math.log10(density) + math.log10(q_nc / 1000.0) > lim["shannon_k_max"]:
        return "shannon"
    if abs(a1 * w1 - a2 * w2) / 1000.0 > lim["max_imbalance_nc"]:
        return "charge_balance"
    return ""


def find_unsafe(pulses: np.ndarray, limits: Any, *, t_start_s: float | None = None,
                t_end_s: float | None = None) -> list[tuple[int, str]]:
    """Every limit, exactly, over a whole delivered pulse stream: ``[(index, reason), …]``.

    Per pulse as :func:`stateless_reasons`, without the lead check and with the plan-window check
    against whichever of ``t_start_s`` / ``t_end_s`` is given (neither: no window check); across
    the stream: pulses on one electrode closer than ``1 / max_frequency_hz`` or overlapping; the
    summed current of pulses active at any instant above ``max_simultaneous_current_ua``; more than
    ``max_pulses_per_hour`` in any hour-long window; the |net charge| of any ``net_charge_window_s``
    window above ``max_net_charge_nc``. An empty list means the stream is safe.
    """
    p = np.asarray(pulses)
    if p.dtype != PULSE_DTYPE:
        raise TypeError(f"pulses must have dtype PULSE_DTYPE; got {p.dtype}")
    bad: list[tuple[int, str]] = []
    for i in range(len(p)):
        why = _pulse_fault(p[i], limits, t_start_s, t_end_s)
        if why:
            bad.append((i, why))
    if bad:
        return bad
    order = sorted(range(len(p)), key=lambda i: (float(p["time_s"][i]), i))
    last: dict[int, tuple[float, float]] = {}
    hour: dict[int, deque[float]] = {}
    net_win: dict[int, deque[tuple[float, float]]] = {}
    net_sum: dict[int, float] = {}
    win = limits.net_charge_window_s
    active: list[tuple[float, float]] = []        # (end, current) of pulses under way
    for i in order:
        row = p[i]
        e = int(row["electrode"])
        lim = dict(limits.defaults)
        lim.update(limits.overrides.get(e, {}))
        t = float(row["time_s"])
        end = t + (float(row["width_us"]) + float(row["gap_us"]) + float(row["width2_us"])) / 1e6
        if e in last:
            t_prev, end_prev = last[e]
            if t - t_prev < 1.0 / lim["max_frequency_hz"] - 2e-9 or t < end_prev - 2e-9:
                bad.append((i, "frequency"))
        last[e] = (t, end)
        active = [(en, c) for en, c in active if en > t]
        current = max(float(row["amplitude_ua"]), float(row["amplitude2_ua"]))
        active.append((end, current))
        if sum(c for _, c in active) > limits.max_simultaneous_current_ua + 1e-9:
            bad.append((i, "simultaneous_current"))
        q = hour.setdefault(e, deque())
        q.append(t)
        while q and q[0] <= t - 3600.0:
            q.popleft()
        if len(q) > lim["max_pulses_per_hour"]:
            bad.append((i, "hourly_count"))
        net = (float(row["amplitude2_ua"]) * float(row["width2_us"])
               - float(row["amplitude_ua"]) * float(row["width_us"])) / 1000.0
        if not bool(row["cathodic_first"]):
            net = -net
        dq = net_win.setdefault(e, deque())
        dq.append((t, net))
        net_sum[e] = net_sum.get(e, 0.0) + net
        while dq and dq[0][0] <= t - win:
            net_sum[e] -= dq.popleft()[1]
        if abs(net_sum[e]) > lim["max_net_charge_nc"] + 1e-9:
            bad.append((i, "net_charge"))
    return bad
