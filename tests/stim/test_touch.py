"""Biomimetic touch encoder: transients, silence without contact, timing across bins, config errors."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.stim.model import StimPlan, pulse_end_s
from cortexlink.stim.touch import SimulatedHand, TouchConfig, TouchEncoder, cursor_contact_forces

DT = 0.001


def _press(force_n, *, t_on=0.1, hold_s=0.5, ramp_s=0.01, release_s=0.01, total_s=1.0, n=1, dt=DT):
    """One sensor's force: zero, a ramp to ``force_n``, a hold, a ramp back to zero."""
    t = np.arange(0.0, total_s, dt)
    up = np.clip((t - t_on) / ramp_s, 0, 1)
    down = np.clip((t - t_on - ramp_s - hold_s) / release_s, 0, 1)
    f = force_n * up * (1 - down)
    return np.repeat(f[:, None], n, axis=1)


def _window(p, lo, hi, electrode=0):
    q = p[(p["electrode"] == electrode) & (p["time_s"] >= lo) & (p["time_s"] < hi)]
    return q["amplitude_ua"], q["time_s"]


def _one_sensor(**kw):
    return TouchConfig(sensor_electrodes=[[0]], **kw)


def test_onset_transient_stronger_than_hold():
    enc = TouchEncoder(_one_sensor())
    p = enc.encode(_press(4.0), DT).pulses
    a_on, t_on = _window(p, 0.1, 0.14)
    a_hold, t_hold = _window(p, 0.4, 0.6)
    assert t_on.size >= 3 and t_hold.size >= 10
    assert a_on.max() > a_hold.mean() + 10.0                 # µA
    rate_on = 1.0 / np.diff(t_on).min()
    rate_hold = 1.0 / np.diff(t_hold).mean()
    assert rate_on > rate_hold + 30.0                        # Hz
    # steady hold: drive = tonic_gain · F / force_max = 0.5 · 0.4 = 0.2 → 32 µA at 80 Hz
    # (the onset transient has decayed by e^-9 or more: < 0.01 %)
    np.testing.assert_allclose(a_hold, 20 + 60 * 0.2, rtol=1e-4)
    np.testing.assert_allclose(np.diff(t_hold), 1 / 80.0, rtol=1e-4)
    # first pulse of a contact at its first sample
    assert p["time_s"][0] == pytest.approx(0.1 + DT)


def test_offset_transient_and_release_burst():
    cfg = _one_sensor()
    p = TouchEncoder(cfg).encode(_press(4.0, release_s=0.01), DT).pulses
    release_start = 0.1 + 0.01 + 0.5
    a_hold, _ = _window(p, 0.45, release_start)
    a_off, t_off = _window(p, release_start, release_start + 0.1)
    assert a_off.size >= 2 and a_off.max() > a_hold.mean() + 5.0
    # pulses continue briefly after the force is gone (the release burst), then stop
    contact_end = release_start + 0.01
    assert np.any(t_off >= contact_end)
    assert p["time_s"].max() < contact_end + 0.1
    # without the offset term there is nothing after contact ends and no extra amplitude
    p0 = TouchEncoder(_one_sensor(offset_gain=0.0)).encode(_press(4.0, release_s=0.01), DT).pulses
    a0, t0 = _window(p0, release_start, release_start + 0.1)
    assert np.all(t0 < contact_end) and (a0.size == 0 or a0.max() <= a_hold.mean() + 1e-9)


def test_no_force_no_pulses():
    enc = TouchEncoder()
    plan = enc.step(np.zeros((200, 5)), 0.0, DT)
    assert isinstance(plan, StimPlan) and len(plan) == 0 and plan.source == "touch"
    assert plan.t_end_s == pytest.approx(0.2)
    # light touches below the contact threshold are not contact either
    assert len(enc.step(np.full((200, 5), 0.04), 0.2, DT)) == 0
    # after a press and release, silence again once the release burst is over
    p = TouchEncoder(_one_sensor()).encode(_press(3.0, total_s=2.0), DT).pulses
    assert p.size > 0 and p["time_s"].max() < 0.8


@pytest.mark.parametrize("block", [1, 20, 333])
def test_stream_equals_offline_and_rate_continuous(block):
    hand = SimulatedHand(hold_s=0.4)
    dt = 0.001
    f = hand.forces(np.arange(0.0, hand.duration_s + 0.2, dt))
    whole = TouchEncoder().encode(f, dt, t0=5.0).pulses
    enc = TouchEncoder()
    plans = [enc.step(f[i:i + block], 5.0 + i * dt, dt) for i in range(0, f.shape[0], block)]
    got = np.concatenate([p.pulses for p in plans])
    assert got.size == whole.size > 100
    for name in ("electrode", "amplitude_ua", "width_us"):
        np.testing.assert_allclose(got[name], whole[name], rtol=1e-9)
    np.testing.assert_allclose(got["time_s"], whole["time_s"], atol=1e-9)
    assert [p.seq for p in plans] == list(range(len(plans)))
    pulse_s = (2 * 200.0 + 50.0) * 1e-6
    for i, p in enumerate(plans):
        block_end = p.t_start_s + min(block, f.shape[0] - i * block) * dt
        assert np.all((p.pulses["time_s"] >= p.t_start_s) & (p.pulses["time_s"] < block_end))
        assert np.all(pulse_end_s(p.pulses) <= p.t_end_s) and block_end - 1e-12 <= p.t_end_s < block_end + pulse_s


def test_constant_train_keeps_its_rate_across_20ms_bins():
    """A 100 Hz train (drive 1/3 → 50 + 150/3 Hz) stays 100 Hz across 20 ms bins, one force value per bin."""
    cfg = _one_sensor(tonic_gain=1.0, onset_gain=0.0, offset_gain=0.0, force_max_n=9.0)
    enc = TouchEncoder(cfg)
    plans = [enc.step([3.0], k * 0.02, 0.02) for k in range(25)]
    t = np.concatenate([p.pulses["time_s"] for p in plans])
    assert t.size == 50
    np.testing.assert_allclose(np.diff(t), 0.01, atol=1e-9)
    # a rate that does not divide the bin: 70 Hz, phase carried over
    enc = TouchEncoder(_one_sensor(tonic_gain=1.0, onset_gain=0.0, offset_gain=0.0, force_max_n=15.0))
    t = np.concatenate([enc.step([2.0], k * 0.02, 0.02).pulses["time_s"] for k in range(50)])
    np.testing.assert_allclose(np.diff(t), 1 / 70.0, atol=1e-9)


def test_electrodes_of_a_sensor_and_pulse_shape():
    cfg = TouchConfig(sensor_electrodes=[[4, 9], [2]], threshold_ua=[20, 30], max_ua=[60, 90],
                      width_us=150.0, gap_us=30.0, cathodic_first=False)
    f = np.zeros((300, 2))
    f[50:, 0] = 5.0
    p = TouchEncoder(cfg).encode(f, DT).pulses
    assert set(np.unique(p["electrode"])) == {4, 9}          # sensor 1 never touched
    np.testing.assert_array_equal(p["time_s"][p["electrode"] == 4], p["time_s"][p["electrode"] == 9])
    assert np.all(p["width_us"] == 150.0) and np.all(p["gap_us"] == 30.0) and not p["cathodic_first"].any()
    assert p["amplitude_ua"].min() >= 20 and p["amplitude_ua"].max() <= 60
    assert np.array_equal(p["amplitude_ua"], p["amplitude2_ua"])


def test_modulate_amplitude_only_and_frequency_only():
    f = _press(6.0)
    amp_only = TouchEncoder(_one_sensor(modulate="amplitude")).encode(f, DT).pulses
    _, t = _window(amp_only, 0.1, 0.7)
    np.testing.assert_allclose(np.diff(t), 1 / 50.0, atol=1e-9)        # frequency stays at freq_min
    freq_only = TouchEncoder(_one_sensor(modulate="frequency")).encode(f, DT).pulses
    assert np.all(freq_only["amplitude_ua"] == 20.0)


def test_simulated_hand_and_cursor_forces():
    hand = SimulatedHand(peak_force_n=(1.0, 2.0), contact_s=0.1, ramp_s=0.1, hold_s=0.2, release_s=0.1,
                         finger_lag_s=0.05)
    f = hand.forces([0.0, 0.15, 0.2, 0.3, 0.5, 0.7])
    np.testing.assert_allclose(f[:, 0], [0, 0.5, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(f[:, 1], [0, 0.0, 2 * 0.5, 2.0, 2 * 0.5, 0.0])
    assert hand.duration_s == pytest.approx(0.1 + 0.05 + 0.1 + 0.2 + 0.1)
    forces = cursor_contact_forces([0.0, 0.0], [[0.0, 0.0], [0.5, 0.0], [3.0, 3.0]], radius=1.0, force_max_n=4.0)
    np.testing.assert_allclose(forces, [4.0, 2.0, 0.0])
    with pytest.raises(ValidationError, match="cursor_xy must be"):
        cursor_contact_forces([0.0], [[0.0, 0.0]], 1.0)
    with pytest.raises(ConfigError, match="peak_force_n"):
        SimulatedHand(peak_force_n=(1.0, -2.0))


@pytest.mark.parametrize("kwargs, match", [
    ({"sensor_electrodes": []}, "sensor_electrodes must be a non-empty list"),
    ({"sensor_electrodes": [[0, 1], [1, 2]]}, "distinct"),
    ({"sensor_electrodes": [[-1]]}, "non-negative"),
    ({"sensor_names": ["a"]}, "sensor_names must be 5 distinct non-empty strings"),
    ({"force_max_n": 0}, "force_max_n must be a finite number > 0; got 0"),
    ({"contact_threshold_n": 20.0}, "contact_threshold_n must be a finite number > 0 and <= 10"),
    ({"threshold_ua": 90.0}, "max_ua must exceed threshold_ua"),
    ({"max_ua": [80.0, 80.0]}, "max_ua must be a finite number > 0 or 5 such numbers"),
    ({"freq_max_hz": 400.0}, "freq_max_hz must be a finite number > 50 and <= 300; got 400.0"),
    ({"freq_min_hz": 250.0, "freq_max_hz": 200.0}, "freq_max_hz"),
    ({"width_us": 3000.0}, "must be shorter than the period"),
    ({"onset_gain": -1.0}, "onset_gain must be a finite number >= 0"),
    ({"transient_tau_s": 0.0}, "transient_tau_s"),
    ({"modulate": "phase"}, r"modulate must be one of \['both', 'amplitude', 'frequency'\]"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TouchConfig(**kwargs)


def test_bad_input():
    enc = TouchEncoder()
    with pytest.raises(ValidationError, match=r"forces must have shape \(5,\) or \(n_samples, 5\)"):
        enc.step(np.zeros(4), 0.0, DT)
    with pytest.raises(ValidationError, match="forces must be numbers"):
        enc.step("heavy", 0.0, DT)
    with pytest.raises(ValidationError, match="forces must be finite"):
        enc.step([0, 0, np.nan, 0, 0], 0.0, DT)
    with pytest.raises(ValidationError, match="dt_s must be a finite number > 0"):
        enc.step(np.zeros(5), 0.0, 0.0)
    with pytest.raises(ValidationError, match="t_start_s"):
        enc.step(np.zeros(5), None, DT)
    with pytest.raises(ConfigError, match="TouchEncoder config must be a TouchConfig"):
        TouchEncoder(object())


def test_grasp_plans_pass_the_default_interlock():
    """A simulated grasp in 20 ms bins: every pulse fits the default ICMS limits and its window."""
    from cortexlink.stim.interlock import SafetyInterlock
    from cortexlink.stim.limits import SafetyLimits

    lock = SafetyInterlock(SafetyLimits.default(64))
    hand = SimulatedHand()
    dt = 0.02
    t = np.arange(0.0, hand.duration_s + 0.2, dt)
    enc = TouchEncoder()
    total = approved = 0
    for f, t_i in zip(hand.forces(t), t):
        plan = enc.step(f, t_i, dt)
        d = lock.review(plan, t_i)
        total += len(plan)
        approved += d.n_approved
        assert d.reasons == {}
    assert approved == total > 300
