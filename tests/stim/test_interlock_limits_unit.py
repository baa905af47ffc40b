"""The safety interlock, pinned down: every limit at its boundary, every refusal reason, the clamp
policy's results, E-STOP and reset, signed plans and the audit trail.

Fast, direct and deterministic (no hypothesis, no fuzzing): these are the tests mutation testing
runs against :mod:`cortexlink.stim.interlock`. Limits use round values so that "at the limit" is
exact in floating point; "over" is the next representable value or a small step beyond.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cortexlink.core.errors import ValidationError
from cortexlink.core.pulses import PULSE_DTYPE, pulse_end_s
from cortexlink.stim import StimPlan, biphasic, pulse_train
from cortexlink.stim.audit import AuditLog, read_audit
from cortexlink.stim.interlock import TIME_TOL_S, ApprovedPlan, SafetyInterlock
from cortexlink.stim.limits import SafetyLimits
from cortexlink.stim.verify import find_unsafe

PERIOD = 1.0 / 300.0          # the default 300 Hz limit


def _lock(**kw):
    return SafetyInterlock(SafetyLimits.default(8, **kw))


def _review(lock, pulses, now=0.0, t0=0.0, t1=0.05, seq=0):
    return lock.review(StimPlan(pulses, t0, t1, "unit", seq), now_s=now)


def _above(x):
    return float(np.nextafter(x, np.inf))


def _below(x):
    return float(np.nextafter(x, -np.inf))


def _cat(*ps):
    return np.concatenate(ps)


# ---------------------------------------------------------------------------- per-pulse limits
@pytest.mark.req("SR-20")
@pytest.mark.parametrize("field, at, over, reason", [
    ("amplitude_ua", 100.0, _above(100.0), "amplitude"),
    ("amplitude2_ua", 100.0, _above(100.0), "amplitude"),
    ("width_us", 20.0, _below(20.0), "width"),          # min_width_us
    ("width2_us", 20.0, _below(20.0), "width"),
    ("gap_us", 500.0, _above(500.0), "gap"),            # max_gap_us
    ("gap_us", 0.0, -1e-9, "gap"),
])
def test_each_per_pulse_limit_holds_at_the_limit_and_refuses_just_over(field, at, over, reason):
    base = biphasic(0, 0.01, 50.0, 100.0)
    ok, bad = base.copy(), base.copy()
    ok[field], bad[field] = at, over
    if field.startswith("amplitude"):            # keep the other phase balanced
        other = "amplitude2_ua" if field == "amplitude_ua" else "amplitude_ua"
        ok[other] = bad[other] = at
    if field.startswith("width"):
        other = "width2_us" if field == "width_us" else "width_us"
        ok[other], bad[other] = at, over
    assert _review(_lock(), ok).n_approved == 1
    d = _review(_lock(), bad)
    assert d.n_approved == 0 and d.reasons == {reason: 1}


@pytest.mark.req("SR-20")
def test_max_width_and_charge_per_phase_boundaries():
    # 50 µA x 400 µs = 20 nC: at both the width and the charge limit.
    assert _review(_lock(), biphasic(0, 0.01, 50.0, 400.0)).n_approved == 1
    assert _review(_lock(), biphasic(0, 0.01, 50.0, _above(400.0))).reasons == {"width": 1}
    # 100 µA x 200 µs = 20 nC at the charge limit; a hair more amplitude is over it.
    assert _review(_lock(), biphasic(0, 0.01, 100.0, 200.0)).n_approved == 1
    assert _review(_lock(), biphasic(0, 0.01, 50.0 * (1 + 1e-9), 400.0)).reasons == {"charge_per_phase": 1}


@pytest.mark.req("SR-20")
def test_charge_density_and_shannon_boundaries():
    # Pt (100 µC/cm²) on 4000 µm²: 4 nC is the density limit.
    lim = SafetyLimits.default(2, area_um2=4000.0, material="Pt")
    assert _review(SafetyInterlock(lim), biphasic(0, 0.01, 40.0, 100.0)).n_approved == 1
    assert _review(SafetyInterlock(lim), biphasic(0, 0.01, 40.0 * (1 + 1e-6), 100.0)).reasons == {"charge_density": 1}
    # Shannon k = log10(Q² / A) with Q in µC, A in cm²: k_max = 1.0 on 1e-5 cm² gives Q = 10 nC.
    lim = SafetyLimits.default(2, area_um2=1000.0, shannon_k_max=1.0, max_charge_density_uc_cm2=1e6)
    assert _review(SafetyInterlock(lim), biphasic(0, 0.01, 50.0 * (1 - 1e-6), 200.0)).n_approved == 1
    assert _review(SafetyInterlock(lim), biphasic(0, 0.01, 50.0 * (1 + 1e-6), 200.0)).reasons == {"shannon": 1}


@pytest.mark.req("SR-20")
def test_charge_balance_boundary():
    ok = biphasic(0, 0.01, 50.0, 100.0)
    ok["amplitude2_ua"] = 49.51                       # 0.049 nC short
    bad = ok.copy()
    bad["amplitude2_ua"] = 49.49                      # 0.051 nC short
    assert _review(_lock(), ok).n_approved == 1
    assert _review(_lock(), bad).reasons == {"charge_balance": 1}


@pytest.mark.req("SR-20")
def test_unknown_disabled_late_and_outside_window_reasons():
    lim = SafetyLimits.from_dict({"electrodes": [{"ids": [0, 3], "area_um2": 2000.0}, {"id": 2, "enabled": False},
                                                 {"id": 6, "area_um2": 2000.0}]})
    lock = SafetyInterlock(lim)
    d = _review(lock, biphasic([0, 2, 5, 7, -3], 0.01, 40.0, 100.0))
    assert d.n_approved == 1
    assert d.reasons == {"disabled_electrode": 1, "unknown_electrode": 3}
    assert _review(SafetyInterlock(lim), biphasic(1, 0.01, 40.0, 100.0), now=0.02).reasons == {"late": 1}
    assert _review(SafetyInterlock(lim), biphasic(1, 0.01, 40.0, 100.0), now=0.01).n_approved == 1
    assert _review(SafetyInterlock(lim), biphasic(1, 0.0499, 40.0, 100.0)).reasons == {"outside_window": 1}


# ---------------------------------------------------------------------------- plan-wide refusals
@pytest.mark.req("SR-20")
def test_plan_length_and_pulse_count_limits_at_and_over():
    lock = _lock(max_plan_s=2.0, max_pulses_per_plan=3)
    three = biphasic([0, 1, 3], 5.1, 40.0, 100.0)
    d = lock.review(StimPlan(three, 5.0, 7.0), now_s=5.0)          # exactly 2 s, exactly 3 pulses
    assert d.plan_refused is None and d.n_approved == 3
    d = lock.review(StimPlan(three, 5.0, _above(7.0)), now_s=5.0)
    assert d.plan_refused == "plan_too_long"
    d = lock.review(StimPlan(biphasic([0, 1, 3, 4], 6.1, 40.0, 100.0), 6.0, 6.5), now_s=6.0)
    assert d.plan_refused == "plan_too_many_pulses" and d.n_approved == 0 and d.n_clamped == 0
    assert list(d.refused["reason"]) == ["plan_too_many_pulses"] * 4
    assert sorted(d.refused["electrode"]) == [0, 1, 3, 4]


@pytest.mark.req("SR-20")
@pytest.mark.parametrize("t0, t1", [(np.nan, 1.0), (0.0, np.nan), (0.0, np.inf), (-np.inf, 0.0), (0.5, _below(0.5))])
def test_a_bad_plan_window_refuses_every_pulse(t0, t1):
    d = _lock().review(StimPlan(biphasic([0, 1], 0.1, 40.0, 100.0), t0, t1), now_s=0.0)
    assert d.plan_refused == "plan_window" and d.n_approved == 0
    assert list(d.refused["reason"]) == ["plan_window", "plan_window"]


def test_an_empty_window_is_not_a_bad_window():
    d = _lock().review(StimPlan.empty(0.5, 0.5), now_s=0.0)
    assert d.plan_refused is None and d.n_approved == 0 and len(d.refused) == 0


# ---------------------------------------------------------------------------- E-STOP and reset
@pytest.mark.req("SR-11", "SR-23")
def test_estop_refuses_everything_until_an_audited_reset():
    lock = _lock()
    assert lock.stopped is None
    lock.estop("button", now_s=1.5)
    assert lock.stopped == "button"
    lock.estop("second press", now_s=1.6)         # idempotent: the first reason stands, audited once
    assert lock.stopped == "button"
    p = biphasic([0, 1, 2], 2.01, 40.0, 100.0)
    for _ in range(2):
        d = lock.review(StimPlan(p, 2.0, 2.05), now_s=2.0)
        assert d.plan_refused == "estop" and d.n_approved == 0 and d.n_clamped == 0
        assert list(d.refused["reason"]) == ["estop"] * 3
    bad_window = lock.review(StimPlan(p, 2.0, np.nan), now_s=2.0)
    assert bad_window.plan_refused == "estop"        # E-STOP comes first
    lock.reset("nurse", now_s=3.0)
    assert lock.stopped is None
    d = lock.review(StimPlan(biphasic([0, 1, 2], 3.01, 40.0, 100.0), 3.0, 3.05), now_s=3.0)
    assert d.n_approved == 3
    stops = [r for r in lock.audit.recent if r["kind"] == "estop"]
    resets = [r for r in lock.audit.recent if r["kind"] == "estop_reset"]
    assert len(stops) == 1 and stops[0]["reason"] == "button" and stops[0]["now_s"] == 1.5
    assert len(resets) == 1
    assert resets[0]["was"] == "button" and resets[0]["by"] == "nurse" and resets[0]["now_s"] == 3.0
    lock.reset("nobody")                             # not stopped: nothing to release, nothing audited
    assert len([r for r in lock.audit.recent if r["kind"] == "estop_reset"]) == 1


@pytest.mark.req("SR-11", "SR-23")
def test_estop_defaults_and_empty_reason():
    lock = _lock()
    lock.estop()
    assert lock.stopped == "operator"
    lock.reset()
    assert lock.audit.recent[-1]["by"] == "operator" and lock.audit.recent[-1]["now_s"] is None
    lock.estop("")
    assert lock.stopped == "estop"                   # a reason is always recorded
    lock.reset()
    lock.estop(7)
    assert lock.stopped == "7"


# ---------------------------------------------------------------------------- cross-pulse limits
@pytest.mark.req("SR-20")
def test_frequency_at_the_period_and_just_under_in_one_plan_and_across_plans():
    at = PERIOD - TIME_TOL_S                         # the tolerance: timing below 1 ns is not a violation
    assert _review(_lock(), biphasic(0, [0.01, 0.01 + PERIOD], 40.0, 100.0)).n_approved == 2
    d = _review(_lock(), biphasic(0, [0.0, at], 40.0, 100.0))
    assert d.n_approved == 2
    d = _review(_lock(), biphasic(0, [0.0, _below(at)], 40.0, 100.0))
    assert d.n_approved == 1 and d.reasons == {"frequency": 1}
    # the same, pulse by pulse (a third pulse too close forces the one-at-a-time check)
    d = _review(_lock(), biphasic(0, [0.0, at, at + 0.001], 40.0, 100.0))
    assert d.n_approved == 2 and d.reasons == {"frequency": 1}
    assert list(d.approved.pulses["time_s"]) == [0.0, at]
    d = _review(_lock(), biphasic(0, [0.0, _below(at), 2 * PERIOD], 40.0, 100.0))
    assert list(d.approved.pulses["time_s"]) == [0.0, 2 * PERIOD]
    # across plans, against the history
    for k, alone in ((at, True), (_below(at), False)):
        lock = _lock()
        assert _review(lock, biphasic(0, 0.0, 40.0, 100.0)).n_approved == 1
        assert _review(lock, biphasic(0, k, 40.0, 100.0), now=0.001, seq=1).n_approved == int(alone)
        lock = _lock()
        _review(lock, biphasic(0, 0.0, 40.0, 100.0))
        d = _review(lock, biphasic([0, 1, 1], [k, 0.02, 0.0201], 40.0, 100.0), now=0.001, seq=1)
        assert (0 in d.approved.pulses["electrode"]) == alone


@pytest.mark.req("SR-20")
def test_frequency_is_checked_per_electrode_with_other_electrodes_present():
    # electrode 0 first in the plan, electrode 1's two pulses 1 ms apart: one of them refused
    d = _review(_lock(), biphasic([0, 1, 1], [0.005, 0.010, 0.011], 40.0, 100.0))
    assert d.reasons == {"frequency": 1} and sorted(d.approved.pulses["electrode"]) == [0, 1]


@pytest.mark.req("SR-20")
def test_frequency_uses_the_slowest_electrode_to_decide_what_history_to_keep():
    # electrodes 0 and 5 only (ids 1-4 unknown): a 10 Hz limit on electrode 5
    lim = SafetyLimits.from_dict({"electrodes": [{"id": 0, "area_um2": 2000.0}, {"id": 5, "area_um2": 2000.0}],
                                  "electrode_limits": {5: {"max_frequency_hz": 10.0}}})
    lock = SafetyInterlock(lim)
    assert lock.review(StimPlan(biphasic(5, 1.0, 40.0, 100.0), 1.0, 1.1), now_s=1.0).n_approved == 1
    d = lock.review(StimPlan(biphasic(5, 1.09, 40.0, 100.0), 1.05, 1.15), now_s=1.05)
    assert d.reasons == {"frequency": 1}
    d = lock.review(StimPlan(biphasic(5, 1.1, 40.0, 100.0), 1.1, 1.15), now_s=1.1)
    assert d.n_approved == 1


@pytest.mark.req("SR-20")
def test_same_electrode_pulses_may_touch_but_not_overlap():
    lim = SafetyLimits.default(4, max_frequency_hz=100_000.0)      # period 10 µs: only overlap matters
    a = biphasic(1, 0.01, 40.0, 100.0)                              # 200 µs long
    end = float(pulse_end_s(a)[0])
    d = _review(SafetyInterlock(lim), _cat(biphasic(0, 0.005, 40.0, 100.0), a, biphasic(1, end, 40.0, 100.0)))
    assert d.n_approved == 3
    d = _review(SafetyInterlock(lim), _cat(biphasic(0, 0.005, 40.0, 100.0), a, biphasic(1, _below(end), 40.0, 100.0)))
    assert d.n_approved == 2 and d.reasons == {"frequency": 1}
    # pulse by pulse (forced by a refused pulse) and against the history
    for t, n in ((end, 3), (_below(end), 2)):
        d = _review(SafetyInterlock(lim), _cat(a, biphasic(1, t, 40.0, 100.0),
                                               biphasic(2, [0.02, 0.02], 40.0, 100.0)))
        assert d.n_approved == n
        lock = SafetyInterlock(lim)
        _review(lock, a)
        assert _review(lock, biphasic(1, t, 40.0, 100.0), now=0.01, seq=1).n_approved == n - 2


@pytest.mark.req("SR-20")
def test_simultaneous_current_at_and_over_the_cap():
    for cap, n in ((150.0, 2), (_below(150.0), 1)):
        lock = _lock(max_simultaneous_current_ua=cap)
        d = _review(lock, biphasic([0, 1], 0.01, 75.0, 100.0))
        assert d.n_approved == n
        if n == 1:
            assert d.reasons == {"simultaneous_current": 1}


@pytest.mark.req("SR-20")
def test_pulses_on_other_electrodes_that_touch_do_not_add_up():
    a = biphasic(0, 0.01, 100.0, 100.0)
    end = float(pulse_end_s(a)[0])
    lock = _lock(max_simultaneous_current_ua=100.0)
    assert _review(lock, _cat(a, biphasic(1, end, 100.0, 100.0))).n_approved == 2
    # one at a time (a far-off pulse pair on electrode 3 forces it), and against the history
    lock = _lock(max_simultaneous_current_ua=100.0)
    d = _review(lock, _cat(a, biphasic(1, end, 100.0, 100.0), biphasic(3, [0.03, 0.0301], 10.0, 100.0)))
    assert d.n_approved == 3 and d.reasons == {"frequency": 1}
    # a pulse that ends just as an approved one starts
    lock = _lock(max_simultaneous_current_ua=100.0)
    later = biphasic(0, 0.02, 100.0, 100.0)
    _review(lock, later)
    start = 0.02 - 200e-6
    b = biphasic(1, start, 100.0, 100.0)
    assert float(pulse_end_s(b)[0]) <= 0.02
    d = _review(lock, _cat(b, biphasic(3, [0.03, 0.0301], 10.0, 100.0)), now=0.001, seq=1)
    assert d.reasons == {"frequency": 1} and 1 in d.approved.pulses["electrode"]
    lock = _lock(max_simultaneous_current_ua=100.0)
    _review(lock, later)
    d = _review(lock, _cat(biphasic(1, start + 1e-6, 100.0, 100.0), biphasic(3, [0.03, 0.0301], 10.0, 100.0)),
                now=0.001, seq=1)
    assert d.reasons == {"frequency": 1, "simultaneous_current": 1}


def _exact_limits():
    """Limits for the history scenario below: every cross-pulse limit met exactly."""
    return SafetyLimits.from_dict({
        "electrodes": [{"ids": [0, 7], "area_um2": 4000.0}],
        "limits": {"max_amplitude_ua": 200.0, "max_imbalance_nc": 0.1, "max_pulses_per_hour": 2},
        "electrode_limits": {2: {"max_net_charge_nc": 0.05}, 3: {"max_frequency_hz": 10_000.0}},
        "max_simultaneous_current_ua": 250.0})


def _exact_scenario(c_amp=150.0, c_net_amp2=149.5, c_dt=0.0, c2_dt=0.0):
    """An approved history, then a plan that fits only when checked exactly (peak current, not the
    sum of everything overlapping): A (e0, 100 µA) and B (e1, 100 µA) back to back, C (e2) across
    both; D on e2 one period before C; F and C2 touching on e3."""
    tc = PERIOD - TIME_TOL_S                                      # C exactly one period (less 1 ns) after D
    t = tc - 0.0003
    a = biphasic(0, t, 100.0, 200.0)                              # [t, t + 0.4 ms)
    b = biphasic(1, float(pulse_end_s(a)[0]), 100.0, 200.0)       # [t + 0.4 ms, t + 0.8 ms)
    d = biphasic(2, 0.0, 100.0, 100.0)
    f = biphasic(3, 0.030, 50.0, 100.0)
    c = biphasic(2, tc + c_dt, c_amp, 100.0)                       # [tc, tc + 0.2 ms)
    c["amplitude2_ua"] = c_net_amp2                               # 0.05 nC net charge
    c2 = biphasic(3, float(pulse_end_s(f)[0]) + c2_dt, 50.0, 100.0)
    return _cat(a, b, d, f), _cat(c, c2)


@pytest.mark.req("SR-20")
def test_exact_joint_check_against_history_meets_every_limit_exactly():
    first, second = _exact_scenario()
    lock = SafetyInterlock(_exact_limits())
    assert _review(lock, first).n_approved == 4
    d = _review(lock, second, now=0.003, seq=1)
    assert d.n_approved == 2 and len(d.refused) == 0
    everything = _cat(first, second)
    assert find_unsafe(everything, lock.limits) == []


@pytest.mark.req("SR-20")
@pytest.mark.parametrize("kw, reason", [
    ({"c_amp": 151.0, "c_net_amp2": 150.5}, "simultaneous_current"),   # peak 251 µA > 250
    ({"c_dt": -1e-6}, "frequency"),                                    # 1 µs too soon after D
    # 0.06 nC > 0.05: the joint check fails, and one at a time C is refused at the (conservative)
    # current check, which comes before the net-charge one
    ({"c_net_amp2": 149.4}, "simultaneous_current"),
])
def test_exact_joint_check_refuses_just_over(kw, reason):
    first, second = _exact_scenario(**kw)
    lock = SafetyInterlock(_exact_limits())
    assert _review(lock, first).n_approved == 4
    d = _review(lock, second, now=0.003, seq=1)
    assert d.reasons == {reason: 1} and list(d.approved.pulses["electrode"]) == [3]


@pytest.mark.req("SR-20")
def test_exact_joint_check_of_the_hourly_count_and_touching_pulses():
    first, second = _exact_scenario(c2_dt=-1e-7)                    # C2 starts before F ends
    lock = SafetyInterlock(_exact_limits())
    _review(lock, first)
    # C2 refused; C then fails the one-at-a-time (conservative) current check
    assert _review(lock, second, now=0.003, seq=1).reasons == {"frequency": 1, "simultaneous_current": 1}
    first, second = _exact_scenario()
    lock = SafetyInterlock(_exact_limits())
    _review(lock, first)
    _review(lock, second, now=0.003, seq=1)
    d = _review(lock, biphasic([0, 2], 0.04, 40.0, 100.0), now=0.035, seq=2)     # e2 has had 2 this hour
    assert d.reasons == {"hourly_count": 1} and list(d.approved.pulses["electrode"]) == [0]


@pytest.mark.req("SR-20")
def test_hourly_count_at_and_over_in_one_plan_and_one_at_a_time():
    lock = _lock(max_pulses_per_hour=5)
    assert _review(lock, pulse_train(0, 0.001, 100.0, 5, 40.0, 100.0), t1=0.2).n_approved == 5
    assert _review(lock, biphasic(0, 0.3, 40.0, 100.0), now=0.25, t0=0.25, t1=0.35, seq=1).reasons == {"hourly_count": 1}
    assert _review(lock, biphasic(1, 0.3, 40.0, 100.0), now=0.25, t0=0.25, t1=0.35, seq=2).n_approved == 1
    lock = _lock(max_pulses_per_hour=5)
    d = _review(lock, pulse_train(0, 0.001, 100.0, 7, 40.0, 100.0), t1=0.2)
    assert d.n_approved == 5 and d.reasons == {"hourly_count": 2}
    assert list(d.approved.pulses["time_s"]) == list(pulse_train(0, 0.001, 100.0, 5, 40.0, 100.0)["time_s"])


@pytest.mark.req("SR-20")
def test_hourly_count_is_kept_for_an_hour_then_forgotten():
    # counted in whole-minute buckets, conservatively: a pulse at 30 s (minute 0) still counts at
    # 61 minutes 59 s and is forgotten from minute 62 on
    lock = _lock(max_pulses_per_hour=1)
    assert lock.review(StimPlan(biphasic(0, 30.01, 40.0, 100.0), 30.0, 30.05), now_s=30.0).n_approved == 1
    for now, n in ((3630.0, 0), (3719.99, 0), (3720.0, 1), (3720.5, 0)):
        d = lock.review(StimPlan(biphasic(0, now + 0.01, 40.0, 100.0), now, now + 0.05), now_s=now)
        assert d.n_approved == n, now
        if n == 0:
            assert d.reasons == {"hourly_count": 1}
    # forgetting electrode 0's pulse frees nothing on electrode 1
    d = lock.review(StimPlan(biphasic(1, [3721.01, 3721.02], 40.0, 100.0), 3721.0, 3721.05), now_s=3721.0)
    assert d.n_approved == 1 and d.reasons == {"hourly_count": 1}


@pytest.mark.req("SR-20")
def test_net_charge_at_and_over_in_one_plan_one_at_a_time_and_across_plans():
    def unbalanced(e, t):
        p = biphasic(e, t, 50.0, 100.0)
        p["amplitude2_ua"] = 50.25                       # 0.025 nC net charge each (below 0.05 imbalance)
        return p
    lim = SafetyLimits.default(4, max_net_charge_nc=0.1)
    d = _review(SafetyInterlock(lim), unbalanced(0, [0.01, 0.02, 0.03, 0.04]))
    assert d.n_approved == 4                              # 0.1 nC: at the limit
    d = _review(SafetyInterlock(lim), unbalanced(0, [0.005, 0.01, 0.02, 0.03, 0.04]))
    assert d.n_approved == 4 and d.reasons == {"net_charge": 1}
    lock = SafetyInterlock(lim)
    assert _review(lock, unbalanced(0, [0.01, 0.02])).n_approved == 2
    assert _review(lock, unbalanced(0, [0.03, 0.04]), now=0.025, seq=1).n_approved == 2
    d = _review(lock, _cat(unbalanced(0, 0.045), unbalanced(1, 0.045)), now=0.041, seq=2)
    assert d.reasons == {"net_charge": 1} and list(d.approved.pulses["electrode"]) == [1]


@pytest.mark.req("SR-20")
def test_net_charge_is_kept_over_its_window_then_forgotten():
    # net_charge_window_s = 1 s in eighths: a pulse at 0.51 s (eighth 4) counts until 1.75 s
    def unbalanced(t):
        p = biphasic(0, t, 50.0, 100.0)
        p["amplitude2_ua"] = 50.25
        return p
    lock = SafetyInterlock(SafetyLimits.default(2, max_net_charge_nc=0.025))
    assert lock.review(StimPlan(unbalanced(0.51), 0.5, 0.55), now_s=0.5).n_approved == 1
    for now, n in ((1.4, 0), (_below(1.75), 0), (1.75, 1)):
        d = lock.review(StimPlan(unbalanced(now + 0.01), now, now + 0.05), now_s=now)
        assert d.n_approved == n, now
    # balanced pulses are never held back by it
    assert lock.review(StimPlan(biphasic(0, 1.8, 50.0, 100.0), 1.79, 1.85), now_s=1.79).n_approved == 1


@pytest.mark.req("SR-20")
def test_history_is_forgotten_once_it_cannot_conflict():
    # A long session stays bounded: nothing older than the slowest period plus the longest pulse
    # (and 1 ms) is kept; what can still conflict is kept.
    lim = SafetyLimits.default(4, max_frequency_hz=1000.0, max_width_us=2000.0, max_gap_us=5000.0)
    horizon = 1e-3 + (2 * 2000.0 + 5000.0) * 1e-6 + 1e-3
    lock = SafetyInterlock(lim)
    _review(lock, biphasic(0, 0.01, 1.0, 2000.0, gap_us=5000.0))   # 9 ms long
    lock.review(StimPlan.empty(0.01 + horizon - 1e-6, 0.05), now_s=0.01 + horizon - 1e-6)
    assert len(lock._h_start) == 1
    lock.review(StimPlan.empty(0.01 + horizon + 1e-6, 0.05), now_s=0.01 + horizon + 1e-6)
    assert len(lock._h_start) == 0


@pytest.mark.req("SR-20")
def test_a_long_pulse_in_the_history_still_limits_current():
    # 9 ms pulse on e0; a pulse on e1 8.5 ms after its start overlaps it
    lim = SafetyLimits.default(4, max_frequency_hz=1000.0, max_width_us=2000.0, max_gap_us=5000.0,
                               max_simultaneous_current_ua=15.0)
    lock = SafetyInterlock(lim)
    assert _review(lock, biphasic(0, 0.01, 10.0, 2000.0, gap_us=5000.0)).n_approved == 1
    d = _review(lock, biphasic(1, 0.0185, 10.0, 100.0), now=0.0185, seq=1)
    assert d.reasons == {"simultaneous_current": 1}
    d = _review(lock, biphasic(1, 0.0191, 10.0, 100.0), now=0.0191, seq=2)
    assert d.n_approved == 1


# ---------------------------------------------------------------------------- clamp policy
def _clamp_lock():
    return SafetyInterlock(SafetyLimits.default(8, policy="clamp"))


@pytest.mark.req("SR-20")
@pytest.mark.parametrize("pulse, fault, width, gap, amp", [
    (biphasic(0, 0.01, 150.0, 100.0), "amplitude", 100.0, 0.0, 100.0),
    (biphasic(0, 0.01, 50.0, 900.0), "width", 400.0, 0.0, 50.0),
    (biphasic(0, 0.01, 50.0, 5.0), "width", 20.0, 0.0, 50.0),
    (biphasic(0, 0.01, 50.0, 100.0, gap_us=-3.0), "gap", 100.0, 0.0, 50.0),
    (biphasic(0, 0.01, 50.0, 100.0, gap_us=900.0), "gap", 100.0, 500.0, 50.0),
    (biphasic(0, 0.01, 90.0, 300.0), "charge_per_phase", 300.0, 0.0, 20_000.0 / 300.0),
])
def test_clamp_gives_the_nearest_safe_symmetric_pulse(pulse, fault, width, gap, amp):
    assert _review(SafetyInterlock(SafetyLimits.default(8)), pulse).reasons == {fault: 1}
    lock = _clamp_lock()
    d = _review(lock, pulse)
    assert d.n_approved == 1 and d.n_clamped == 1 and len(d.refused) == 0
    a = d.approved.pulses[0]
    assert a["width_us"] == a["width2_us"] == width
    assert a["gap_us"] == gap
    assert a["amplitude_ua"] == a["amplitude2_ua"]
    assert amp * (1 - 1e-8) <= a["amplitude_ua"] <= amp
    assert a["electrode"] == pulse["electrode"][0] and a["time_s"] == pulse["time_s"][0]
    assert find_unsafe(d.approved.pulses, lock.limits) == []
    assert lock.totals["clamped"] == 1
    assert lock.audit.recent[-1]["clamped"] == 1


@pytest.mark.req("SR-20")
def test_clamp_repairs_imbalance_density_and_shannon():
    lock = _clamp_lock()
    p = biphasic(0, 0.01, 50.0, 100.0)
    p["amplitude2_ua"] = 45.0
    a = _review(lock, p).approved.pulses[0]
    assert a["amplitude_ua"] == a["amplitude2_ua"] and 50.0 * (1 - 1e-8) <= a["amplitude_ua"] <= 50.0
    lim = SafetyLimits.default(2, area_um2=4000.0, material="Pt", policy="clamp")      # 4 nC density limit
    d = _review(SafetyInterlock(lim), biphasic(0, 0.01, 80.0, 100.0))
    assert d.n_clamped == 1 and 40.0 * (1 - 1e-8) <= d.approved.pulses[0]["amplitude_ua"] <= 40.0
    lim = SafetyLimits.default(2, area_um2=1000.0, shannon_k_max=1.0, max_charge_density_uc_cm2=1e6,
                               policy="clamp")                                        # 10 nC Shannon limit
    d = _review(SafetyInterlock(lim), biphasic(0, 0.01, 80.0, 200.0))
    assert d.n_clamped == 1 and 50.0 * (1 - 1e-8) <= d.approved.pulses[0]["amplitude_ua"] <= 50.0


@pytest.mark.req("SR-20")
def test_clamp_of_a_zero_width_gives_the_narrowest_positive_width():
    lim = SafetyLimits.default(2, min_width_us=0.0, policy="clamp")
    d = _review(SafetyInterlock(lim), biphasic(0, 0.01, 50.0, 0.0))
    assert d.n_clamped == 1
    w = d.approved.pulses[0]["width_us"]
    assert 0.0 < w <= 1e-3


@pytest.mark.req("SR-20")
def test_clamp_never_repairs_other_faults_and_a_failed_clamp_stays_refused():
    lock = _clamp_lock()
    p = _cat(biphasic(0, 0.010, -5.0, 100.0),            # amplitude fault the clamp cannot fix
             biphasic(1, 0.011, 150.0, 100.0),           # clamped
             biphasic(1, 0.0115, 150.0, 100.0),          # clamped, then too soon after the one before
             biphasic(2, 0.012, 40.0, 100.0),            # fine as it is
             biphasic(9, 0.013, 150.0, 100.0),           # unknown electrode
             biphasic(3, 0.060, 150.0, 100.0))           # outside the window
    d = _review(lock, p)
    assert d.reasons == {"amplitude": 1, "frequency": 1, "unknown_electrode": 1, "outside_window": 1}
    assert d.n_approved == 2 and d.n_clamped == 1
    assert sorted(d.approved.pulses["electrode"]) == [1, 2]
    # refused pulses are reported as they were asked for, not as clamped
    refused = {str(r["reason"]): r for r in d.refused}
    assert refused["frequency"]["amplitude_ua"] == 150.0
    assert refused["amplitude"]["amplitude_ua"] == -5.0
    assert lock.totals == {"plans": 1, "pulses": 6, "approved": 2, "refused": 4, "clamped": 1}


def test_clamp_policy_leaves_safe_pulses_as_they_are():
    p = biphasic([0, 1], 0.01, [40.0, 60.0], [100.0, 300.0], gap_us=[0.0, 50.0])
    d = _review(_clamp_lock(), p)
    assert d.n_clamped == 0 and d.n_approved == 2
    assert d.approved.pulses.tobytes() == p.tobytes()


def test_refuse_policy_clamps_nothing():
    d = _review(_lock(), biphasic([0, 1], 0.01, [150.0, 40.0], 100.0))
    assert d.n_clamped == 0 and d.reasons == {"amplitude": 1} and d.n_approved == 1


# ---------------------------------------------------------------------------- signed plans
@pytest.mark.req("SR-21")
def test_only_an_unaltered_plan_signed_by_this_interlock_is_vouched_for():
    lim = SafetyLimits.default(8)
    lock, other = SafetyInterlock(lim), SafetyInterlock(lim)
    plan = StimPlan(biphasic([0, 1], 0.01, 40.0, 100.0), 0.0, 0.05, "unit", 4)
    good = lock.review(plan, now_s=0.0).approved
    assert lock.vouches_for(good)
    assert not other.vouches_for(good)                       # same limits, another interlock's key
    assert not lock.vouches_for(other.review(plan, now_s=0.0).approved)
    for change in ({"t_start_s": -1.0}, {"t_end_s": 1.0}, {"source": "evil"}, {"plan_seq": 5},
                   {"decision_seq": 9}, {"limits_sha256": "0" * 64}, {"signature": b""},
                   {"signature": good.signature[:-1] + bytes([good.signature[-1] ^ 1])}):
        assert not lock.vouches_for(dataclasses.replace(good, **change)), change
    louder = good.pulses.copy()
    louder["amplitude_ua"] = louder["amplitude2_ua"] = 99.0
    assert not lock.vouches_for(dataclasses.replace(good, pulses=louder))
    fewer = good.pulses[:1].copy()
    assert not lock.vouches_for(dataclasses.replace(good, pulses=fewer))
    # the same bytes under another dtype are not pulses
    alias = np.dtype({"names": ["raw"], "formats": [f"V{PULSE_DTYPE.itemsize}"]})
    assert not lock.vouches_for(dataclasses.replace(good, pulses=good.pulses.view(alias)))
    for thing in (plan, None, good.pulses, dataclasses.asdict(good)):
        assert not lock.vouches_for(thing)


@pytest.mark.req("SR-21", "SR-23")
def test_the_approved_plan_names_its_plan_and_decision_and_is_read_only():
    lock = _lock()
    decisions = [lock.review(StimPlan(biphasic([0, 1, 99], 0.01 + k * 0.1, 40.0, 100.0), k * 0.1, k * 0.1 + 0.05,
                                      "touch", 10 + k), now_s=k * 0.1) for k in range(3)]
    assert [d.seq for d in decisions] == [1, 2, 3]
    d = decisions[2]
    ap = d.approved
    assert (ap.t_start_s, ap.t_end_s, ap.source, ap.plan_seq, ap.decision_seq) == (0.2, 0.25, "touch", 12, 3)
    assert ap.limits_sha256 == lock.limits.sha256 and len(ap) == 2 == d.n_approved
    assert isinstance(ap, ApprovedPlan) and ap.pulses.dtype == PULSE_DTYPE
    with pytest.raises(ValueError):
        ap.pulses["amplitude_ua"] = 500.0
    refused = lock.review(StimPlan(biphasic(0, 0.31, 40.0, 100.0), 0.3, np.nan), now_s=0.3)
    assert len(refused.approved) == 0 and lock.vouches_for(refused.approved)


# ---------------------------------------------------------------------------- audit and totals
@pytest.mark.req("SR-23")
def test_every_decision_is_audited_with_its_counts_and_reasons(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as audit:
        lock = SafetyInterlock(SafetyLimits.default(8, policy="clamp"), audit=audit)
        assert lock.audit is audit
        lock.review(StimPlan(biphasic([0, 1, 99], [0.01, 0.02, 0.03], [150.0, 40.0, 40.0], 100.0), 0.0, 0.05,
                             "touch", 3), now_s=0.004)
        lock.estop("test", now_s=0.06)
        lock.review(StimPlan(biphasic(0, 0.11, 40.0, 100.0), 0.1, 0.15, "touch", 4), now_s=0.1)
        lock.reset("tester", now_s=0.2)
    records = read_audit(path)
    assert [r["kind"] for r in records] == ["interlock_start", "decision", "estop", "decision", "estop_reset"]
    start = records[0]
    assert start["limits"]["sha256"] == lock.limits.sha256 and start["limits"]["policy"] == "clamp"
    first = records[1]
    assert first["decision"] == 1 and first["source"] == "touch" and first["plan_seq"] == 3
    assert first["now_s"] == 0.004 and (first["t_start_s"], first["t_end_s"]) == (0.0, 0.05)
    assert (first["pulses"], first["approved"], first["clamped"], first["refused"]) == (3, 2, 1, 1)
    assert first["reasons"] == {"unknown_electrode": 1} and first["plan_refused"] is None
    assert first["refused_pulses"][0]["electrode"] == 99 and first["refused_pulses"][0]["reason"] == "unknown_electrode"
    second = records[3]
    assert second["plan_refused"] == "estop" and second["reasons"] == {"estop": 1} and second["now_s"] == 0.1
    assert second["clamped"] == 0 and second["refused_pulses"][0]["amplitude_ua"] == 40.0
    assert lock.totals == {"plans": 2, "pulses": 4, "approved": 2, "refused": 2, "clamped": 1}


def test_refusal_counts_are_plain_json():
    d = _review(_lock(), biphasic([0, 99, 98, 0], [0.01, 0.01, 0.01, 0.011], 40.0, 100.0))
    assert d.reasons == {"unknown_electrode": 2, "frequency": 1}
    assert json.loads(json.dumps(d.reasons)) == d.reasons


# ---------------------------------------------------------------------------- bad arguments
def test_bad_arguments_are_named():
    lock = _lock()
    with pytest.raises(ValidationError, match="plan must be a StimPlan; got ndarray"):
        lock.review(biphasic(0, 0.01, 40.0, 100.0), now_s=0.0)
    for bad in ("soon", None, [1.0]):
        with pytest.raises(ValidationError, match="now_s must be a number; got"):
            lock.review(StimPlan.empty(0.0, 0.05), now_s=bad)
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValidationError, match="now_s must be finite"):
            lock.review(StimPlan.empty(0.0, 0.05), now_s=bad)
    with pytest.raises(ValidationError, match="limits must be a SafetyLimits; got dict"):
        SafetyInterlock({"electrodes": []})
    assert lock.totals["plans"] == 0 and lock.audit.n == 1     # nothing was judged
