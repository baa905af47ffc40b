"""Fuzzing the interlock: random and malicious plans through interlock → driver → device, counted.

:func:`fuzz_interlock` builds ``n_plans`` plans from a seeded generator mixing ordinary plans with
every kind of bad input (NaN and infinite fields, negative and huge values, unbalanced phases,
unknown and disabled electrodes, pulses outside the window or in the past, bursts too fast for
an electrode, many electrodes at once, pulses overlapping earlier plans, broken windows, slowly
accumulating net charge), passes each through a :class:`SafetyInterlock` (half the run under the
``refuse`` policy, half under ``clamp``), sends what is approved through a
:class:`StimulatorDriver` to a :class:`SimulatedStimulator`, and finally checks every pulse the
device delivered with the independent exact checker :func:`~cortexlink.stim.verify.find_unsafe`.
The figure that matters is ``unsafe_pulses_emitted`` (it must be 0).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from cortexlink.core.pulses import PULSE_DTYPE
from cortexlink.stim.driver import SimulatedStimulator, StimulatorDriver
from cortexlink.stim.interlock import SafetyInterlock
from cortexlink.stim.limits import SafetyLimits
from cortexlink.stim.model import StimPlan
from cortexlink.stim.verify import find_unsafe

__all__ = ["fuzz_interlock", "fuzz_limits", "random_plan", "ATTACKS"]

ATTACKS = ("ordinary", "nan", "inf", "negative", "huge", "unbalanced", "unknown_electrode",
           "disabled_electrode", "outside_window", "late", "burst", "crowd", "overlap_previous",
           "bad_window", "net_drift", "long_pulses")
_PLAN_S = 0.02


def fuzz_limits(policy: str = "refuse") -> SafetyLimits:
    """The limits the fuzz run uses: 32 electrodes (two disabled, one small and one in Pt), a tight
    net-charge cap, and a tight hourly cap on four electrodes (20-23) so that it is reached within
    the run while the others keep being approved (so the cross-pulse checks stay exercised)."""
    return SafetyLimits.from_dict({
        "version": 1, "participant": "fuzz", "policy": policy,
        "electrodes": [{"ids": [0, 31], "area_um2": 2000.0, "material": "SIROF"},
                       {"id": 7, "enabled": False}, {"id": 19, "enabled": False},
                       {"id": 3, "area_um2": 400.0}, {"id": 11, "material": "Pt"}],
        "limits": {"max_net_charge_nc": 1.0},
        "electrode_limits": {5: {"max_amplitude_ua": 40.0, "max_frequency_hz": 100.0},
                             **{e: {"max_pulses_per_hour": 300} for e in (20, 21, 22, 23)}},
        "net_charge_window_s": 0.5, "max_simultaneous_current_ua": 600.0,
    })


def random_plan(rng: np.random.Generator, now_s: float, seq: int, attack: str,
                previous: np.ndarray | None = None) -> StimPlan:
    """One plan for the window ``[now_s, now_s + 20 ms)``, shaped by ``attack`` (see :data:`ATTACKS`)."""
    n = int(rng.integers(1, 24))
    t0, t1 = now_s, now_s + _PLAN_S
    p = np.zeros(n, PULSE_DTYPE)
    p["electrode"] = rng.integers(0, 32, n)
    p["time_s"] = rng.uniform(t0, t1 - 0.002, n)
    p["amplitude_ua"] = rng.uniform(5, 120, n)
    p["width_us"] = rng.uniform(10, 450, n)
    p["gap_us"] = rng.uniform(0, 100, n)
    p["amplitude2_ua"] = p["amplitude_ua"]
    p["width2_us"] = p["width_us"]
    p["cathodic_first"] = rng.random(n) < 0.8
    fields = ("time_s", "amplitude_ua", "width_us", "gap_us", "amplitude2_ua", "width2_us")
    pick = rng.random(n) < 0.5
    if attack == "nan":
        p[str(rng.choice(fields))][pick] = np.nan
    elif attack == "inf":
        p[str(rng.choice(fields))][pick] = rng.choice([np.inf, -np.inf])
    elif attack == "negative":
        f = str(rng.choice(fields))
        p[f][pick] = -np.abs(p[f][pick]) - 1e-6
    elif attack == "huge":
        p[str(rng.choice(fields))][pick] = 10.0 ** rng.uniform(3, 300)
    elif attack == "unbalanced":
        p["amplitude2_ua"] *= rng.uniform(0.2, 3.0, n)
    elif attack == "unknown_electrode":
        p["electrode"][pick] = rng.choice([-1, -(2 ** 31), 32, 1000, 65535, 2 ** 31 - 1], pick.sum())
    elif attack == "disabled_electrode":
        p["electrode"][pick] = rng.choice([7, 19], pick.sum())
    elif attack == "outside_window":
        p["time_s"][pick] += rng.choice([-1.0, 1.0], pick.sum()) * rng.uniform(_PLAN_S, 5.0, pick.sum())
    elif attack == "late":
        p["time_s"][pick] = now_s - rng.uniform(1e-6, 1.0, pick.sum())
        return StimPlan(p, now_s - 1.0, t1, "fuzz", seq)
    elif attack == "burst":
        p["electrode"] = int(rng.integers(0, 32))
        p["time_s"] = t0 + np.sort(rng.uniform(0, 0.004, n))
        p["width_us"] = p["width2_us"] = rng.uniform(20, 60, n)
        p["amplitude_ua"] = p["amplitude2_ua"] = rng.uniform(5, 60, n)
    elif attack == "crowd":
        p["electrode"] = rng.permutation(32)[:n]
        p["time_s"] = t0 + 0.005
        p["amplitude_ua"] = p["amplitude2_ua"] = rng.uniform(40, 100, n)
        p["width_us"] = p["width2_us"] = rng.uniform(50, 150, n)
    elif attack == "overlap_previous" and previous is not None and len(previous):
        src = previous[rng.integers(0, len(previous), n)]
        p["electrode"] = src["electrode"]
        p["time_s"] = np.maximum(src["time_s"] + rng.uniform(-0.001, 0.001, n), now_s)
        return StimPlan(p, min(now_s, float(np.min(p["time_s"]))), t1, "fuzz", seq)
    elif attack == "bad_window":
        w = rng.choice([0, 1, 2, 3])
        a, b = [(np.nan, t1), (t0, np.inf), (t1, t0), (t0, t0 + 100.0)][w]
        return StimPlan(p, a, b, "fuzz", seq)
    elif attack == "net_drift":
        p["electrode"] = int(rng.integers(0, 2))      # the same few electrodes, so it accumulates
        p["time_s"] = t0 + np.arange(n) * 0.0034
        p = p[p["time_s"] < t1 - 0.002]
        p["amplitude_ua"] = p["amplitude2_ua"] = 40.0
        p["width_us"] = 100.0
        p["width2_us"] = 100.0 + rng.uniform(0.5, 1.2) * 1.0   # 0.02-0.05 nC unbalanced per pulse
    elif attack == "long_pulses":
        p["width_us"] = p["width2_us"] = rng.uniform(400, 5000, n)
        p["gap_us"] = rng.uniform(0, 3000, n)
    return StimPlan(p, t0, t1, "fuzz", seq)


def _device_link(device: SimulatedStimulator, clock: dict[str, float]) -> Callable[[bytes], None]:
    """The driver's transport: each frame reaches ``device`` at the fuzz clock's current time."""
    return lambda frame: device.receive(frame, clock["now"])


def fuzz_interlock(n_plans: int = 100_000, *, seed: int = 0,
                   progress: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
    """Run the fuzz campaign; returns counts, refusals by reason and the cost per plan.

    ``progress(done, total)`` is called every 1,000 plans when given.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"plans_tried": 0, "pulses_checked": 0, "pulses_approved": 0,
                           "pulses_clamped": 0, "pulses_refused": 0, "reasons": {},
                           "unsafe_pulses_emitted": 0, "by_policy": {}}
    review_s = 0.0
    half = (int(n_plans) + 1) // 2
    for policy, count in (("refuse", half), ("clamp", int(n_plans) - half)):
        limits = fuzz_limits(policy)
        lock = SafetyInterlock(limits)
        device = SimulatedStimulator(watchdog_s=1.0)
        clock = {"now": 0.0}
        driver = StimulatorDriver(lock, _device_link(device, clock))
        previous = None
        for k in range(count):
            now = k * _PLAN_S
            clock["now"] = now
            attack = ATTACKS[int(rng.integers(0, len(ATTACKS)))] if rng.random() < 0.7 else "ordinary"
            plan = random_plan(rng, now, k, attack, previous)
            t = time.perf_counter()
            d = lock.review(plan, now)
            review_s += time.perf_counter() - t
            if len(d.approved):
                driver.deliver(d.approved)
                previous = d.approved.pulses
            device.due(now, now + _PLAN_S)
            out["plans_tried"] += 1
            out["pulses_checked"] += len(plan)
            if progress is not None and out["plans_tried"] % 1000 == 0:
                progress(out["plans_tried"], int(n_plans))
        device.due(count * _PLAN_S, np.inf)
        delivered = device.delivered_pulses()
        unsafe = find_unsafe(delivered, limits)
        out["unsafe_pulses_emitted"] += len(unsafe)
        out["pulses_approved"] += lock.totals["approved"]
        out["pulses_clamped"] += lock.totals["clamped"]
        out["pulses_refused"] += lock.totals["refused"]
        for r, c in lock.audit.reasons.items():
            out["reasons"][r] = out["reasons"].get(r, 0) + c
        out["by_policy"][policy] = {"plans": count, **lock.totals, "delivered": len(delivered),
                                    "unsafe": len(unsafe), "device": dict(device.counts)}
    out["review_us_per_plan"] = review_s / max(out["plans_tried"], 1) * 1e6
    out["review_us_per_pulse"] = review_s / max(out["pulses_checked"], 1) * 1e6
    out["reasons"] = dict(sorted(out["reasons"].items()))
    return out
