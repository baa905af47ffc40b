"""Property-based and fuzz tests of the interlock: whatever goes in, nothing unsafe comes out.

The hypothesis tests are derandomized (the same examples every run, so a CI run cannot fail by
the luck of the draw); exploration of new plans is the job of `cortexlink bench stim`'s fuzz run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortexlink.core.errors import ValidationError
from cortexlink.core.pulses import PULSE_DTYPE
from cortexlink.stim import StimPlan, biphasic
from cortexlink.stim.command import decode_frame, encode_frame, stop_frame
from cortexlink.stim.driver import SimulatedStimulator, StimulationRefused, StimulatorDriver
from cortexlink.stim.fuzz import fuzz_interlock, fuzz_limits
from cortexlink.stim.interlock import SafetyInterlock
from cortexlink.stim.verify import find_unsafe

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=64)
PLAUSIBLE = st.one_of(st.floats(-10, 600), ANY_FLOAT)
PULSE = st.tuples(st.integers(-5, 40), st.floats(-0.05, 0.1) | ANY_FLOAT, PLAUSIBLE, PLAUSIBLE,
                  PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, st.booleans())


def _plan(rows, t0, t1):
    p = np.zeros(len(rows), PULSE_DTYPE)
    for i, r in enumerate(rows):
        p[i] = r
    return StimPlan(p, t0, t1, "hypothesis", 0)


@pytest.mark.req("SR-20", "SR-24")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(plans=st.lists(st.tuples(st.lists(PULSE, max_size=12), st.floats(-0.1, 0.2) | ANY_FLOAT,
                                st.floats(-0.1, 0.3) | ANY_FLOAT), min_size=1, max_size=6),
       policy=st.sampled_from(["refuse", "clamp"]))
def test_nothing_unsafe_is_ever_approved(plans, policy):
    limits = fuzz_limits(policy)
    lock = SafetyInterlock(limits)
    approved = []
    for k, (rows, t0, t1) in enumerate(plans):
        now = k * 0.001
        d = lock.review(_plan(rows, t0, t1), now_s=now)
        # Every pulse is accounted for: approved or refused with a reason, never silently lost.
        assert d.n_approved + len(d.refused) == len(rows)
        assert all(r for r in d.refused["reason"])
        assert find_unsafe(d.approved.pulses, limits, t_start_s=t0, t_end_s=t1) == [] or d.n_approved == 0
        approved.append(d.approved.pulses)
    stream = np.concatenate(approved)
    assert find_unsafe(stream, limits) == []


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows=st.lists(PULSE, max_size=10))
def test_command_frame_round_trip_never_adds_charge(rows):
    p = np.zeros(len(rows), PULSE_DTYPE)
    for i, r in enumerate(rows):
        p[i] = r
    try:
        frame = encode_frame(p, 0.0, 1.0, 7)
    except ValidationError:
        return          # a value the format cannot carry is refused, never wrapped
    f = decode_frame(frame)
    assert f.seq == 7 and len(f.pulses) == len(p)
    np.testing.assert_array_equal(f.pulses["electrode"], p["electrode"])
    assert np.all(f.pulses["amplitude_ua"] <= p["amplitude_ua"] + 1e-12)
    assert np.all(f.pulses["width_us"] <= p["width_us"] + 1e-12)
    assert np.all(np.abs(f.pulses["time_s"] - p["time_s"]) <= 1e-9 + 1e-15 * np.abs(p["time_s"]))


@pytest.mark.req("SR-22")
def test_corrupted_frames_are_dropped_whole():
    frame = bytearray(encode_frame(biphasic([0, 1], 0.01, 40.0, 100.0), 0.0, 0.02, 0))
    dev = SimulatedStimulator()
    for i in (0, 5, 20, 40, len(frame) - 1):
        bad = bytearray(frame)
        bad[i] ^= 0x40
        dev.receive(bytes(bad), 0.0)
    dev.receive(bytes(frame[:-3]), 0.0)
    assert dev.counts["bad_frames"] == 6 and dev.n_pending == 0
    with pytest.raises(ValidationError, match="bad magic"):
        decode_frame(b"XXXX" + bytes(frame[4:]))


@pytest.mark.req("SR-21", "SR-23")
def test_driver_sends_only_its_own_interlocks_approvals():
    limits = fuzz_limits()
    lock, other = SafetyInterlock(limits), SafetyInterlock(limits)
    dev = SimulatedStimulator()
    drv = StimulatorDriver(lock, lambda f: dev.receive(f, 0.0))
    plan = StimPlan(biphasic([0, 1], 0.01, 40.0, 100.0), 0.0, 0.02)
    with pytest.raises(StimulationRefused):
        drv.deliver(other.review(plan, now_s=0.0).approved)       # signed by another interlock
    good = lock.review(plan, now_s=0.0).approved
    forged = type(good)(**{**good.__dict__, "pulses": good.pulses.copy()})
    forged.pulses.flags.writeable = True
    forged.pulses["amplitude_ua"] = forged.pulses["amplitude2_ua"] = 500.0
    with pytest.raises(StimulationRefused):
        drv.deliver(forged)                                        # altered after approval
    with pytest.raises(StimulationRefused):
        drv.deliver(plan)                                          # never reviewed at all
    assert dev.n_pending == 0
    assert drv.deliver(good) == 2 and dev.n_pending == 2
    refusals = [r for r in lock.audit.recent if r["kind"] == "driver_refused"]
    assert len(refusals) == 3


@pytest.mark.req("SR-11", "SR-22")
def test_stop_and_watchdog_and_no_repeats():
    limits = fuzz_limits()
    lock = SafetyInterlock(limits)
    dev = SimulatedStimulator(watchdog_s=0.05)
    clock = [0.0]
    drv = StimulatorDriver(lock, lambda f: dev.receive(f, clock[0]))
    plan = StimPlan(biphasic([0, 1, 2, 4, 6, 8], 0.01 + np.arange(6) * 0.012, 40.0, 100.0), 0.0, 0.08)
    approved = lock.review(plan, now_s=0.0).approved
    drv.deliver(approved)
    assert len(dev.due(0.0, 0.02)) == 1
    drv.stop(0.02)                                   # E-STOP: the rest never happens
    assert len(dev.due(0.02, 1.0)) == 0 and dev.counts["pulses_dropped_stop"] == 5
    # A repeated frame is not delivered twice.
    frame = encode_frame(approved.pulses, 0.0, 0.08, 0)
    dev.receive(frame, 0.0)
    assert dev.counts["repeated_frames"] == 1 and dev.n_pending == 0
    # The host goes quiet: after watchdog_s, everything pending is dropped.
    dev2 = SimulatedStimulator(watchdog_s=0.05)
    dev2.receive(encode_frame(approved.pulses, 0.0, 0.08, 0), 0.0)
    assert len(dev2.due(0.06, 0.09)) == 0 and dev2.counts["pulses_dropped_watchdog"] == 6
    lock.estop("test")
    assert drv.deliver(approved) == 0                # the driver drops while E-STOPped
    assert stop_frame(3, 0.0)[6] & 1


@pytest.mark.req("SR-20", "SR-24")
def test_fuzz_campaign_small():
    r = fuzz_interlock(1500, seed=3)
    assert r["plans_tried"] == 1500 and r["pulses_checked"] > 10_000
    assert r["unsafe_pulses_emitted"] == 0
    assert r["pulses_approved"] > 0 and r["pulses_refused"] > 0 and r["pulses_clamped"] > 0
    for reason in ("nonfinite", "unknown_electrode", "disabled_electrode", "frequency", "amplitude",
                   "simultaneous_current", "plan_window", "late"):
        assert r["reasons"].get(reason, 0) > 0, reason
