"""Tests of the simulated participant (cortexlink.sim.participant)."""

import dataclasses
import math

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.sim.participant import ParticipantConfig, ParticipantIntent, SimulatedParticipant
from cortexlink.tasks import CentreOutTask, CursorEffector, Target, WebgridTask
from cortexlink.bench.ceiling import perfect_decoder_session
from cortexlink.runtime.session import run_session

DT = 0.02
#: no randomness at all: no motor noise, fixed reaction time
QUIET = dict(motor_noise=0.0, motor_noise_floor_units_s=0.0, reaction_time_sd_s=0.0)


@pytest.fixture
def closed_loop():
    """Run a participant against a fixed target through a cursor (optionally remapped by ``m``)."""
    def _run(participant, target, n_bins, m=None, start=(0.0, 0.0)):
        eff = CursorEffector(dt_s=participant.dt_s, refractory_s=0.0)
        eff.reset(start)
        xy, intents = [], []
        for k in range(n_bins):
            it = participant.step(k * participant.dt_s, eff.xy, target)
            v = it.velocity if m is None else m @ it.velocity
            eff.step(v, False)
            xy.append(eff.xy)
            intents.append(it)
        return np.array(xy), intents
    return _run


# ------------------------------------------------------------------ config
def test_default_config_is_valid_and_documented():
    cfg = ParticipantConfig()
    assert 0.15 <= cfg.visual_delay_s <= 0.2 and 0.2 <= cfg.reaction_time_s <= 0.25
    doc = ParticipantConfig.__doc__
    for f in dataclasses.fields(cfg):
        assert f"    {f.name} : " in doc, f"{f.name} is not documented"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.visual_delay_s = 0.1
    assert cfg.replace(hold_s=0.2).hold_s == 0.2 and cfg.to_dict()["hold_s"] == cfg.hold_s


@pytest.mark.parametrize("field, value", [
    ("visual_delay_s", -0.01), ("visual_delay_s", 1.5), ("reaction_time_s", 3.0), ("reaction_time_sd_s", -1.0),
    ("feedback_gain_per_s", 0.0), ("max_speed_units_s", float("nan")), ("motor_tau_s", 2.0), ("motor_noise", True),
    ("motor_noise_tau_s", -0.1), ("motor_noise_floor_units_s", "0.1"), ("forward_model_weight", 1.5),
    ("confidence", 0.0), ("hold_s", -0.1), ("click_duration_s", 0.0), ("reclick_delay_s", 9.0),
    ("adaptation_tau_s", -1.0), ("click_lookahead_s", 1.5), ("observation", "imagine"), ("lapse_rate_hz", -0.1),
    ("lapse_s", 0.0),
])
def test_bad_config_value_raises_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ParticipantConfig(**{field: value})
    with pytest.raises(ConfigError, match=field):
        SimulatedParticipant(**{field: value})


def test_bad_constructor_arguments():
    with pytest.raises(ConfigError, match="no field.*bogus"):
        SimulatedParticipant(bogus=1.0)
    with pytest.raises(ConfigError, match="seed"):
        SimulatedParticipant(seed=-1)
    with pytest.raises(ConfigError, match="dt_s"):
        SimulatedParticipant(dt_s=0.0)
    with pytest.raises(ConfigError, match="config must be a ParticipantConfig"):
        SimulatedParticipant({"visual_delay_s": 0.1})
    p = SimulatedParticipant(ParticipantConfig(hold_s=0.2), visual_delay_s=0.1)
    assert p.config.hold_s == 0.2 and p.config.visual_delay_s == 0.1


# ------------------------------------------------------------------ timing
def test_response_to_a_new_target_starts_after_the_reaction_time():
    for rt in (0.2, 0.3):
        p = SimulatedParticipant(reaction_time_s=rt, **QUIET)
        speeds = [np.hypot(*p.step(k * DT, (0.0, 0.0), Target((0.5, 0.0), 0.05)).velocity) for k in range(40)]
        first = next(k for k, s in enumerate(speeds) if s > 0)
        assert first == round(rt / DT)
    # a target jump mid-way: the participant keeps aiming at the old one for the reaction time
    p = SimulatedParticipant(**QUIET)
    eff = CursorEffector()
    old, new = Target((0.4, 0.0), 0.05), Target((0.0, 0.4), 0.05)
    vy = []
    for k in range(80):
        tgt = old if k < 50 else new
        it = p.step(k * DT, eff.xy, tgt)
        eff.step(it.velocity)
        vy.append(it.velocity[1])
    assert np.allclose(vy[:60], 0.0) and vy[60] > 0.0        # 50 + 0.2 s / 20 ms


def test_visual_delay_delays_the_response_to_a_cursor_jump():
    def response_bin(delay_s):
        p = SimulatedParticipant(visual_delay_s=delay_s, **QUIET)
        tgt = Target((0.0, 0.0), 0.05, click=False)
        shown = [(0.0, 0.0)] * 40 + [(0.5, 0.0)] * 40       # the display jumps at bin 40
        v = [p.step(k * DT, xy, tgt).velocity[0] for k, xy in enumerate(shown)]
        assert np.allclose(v[:40], 0.0)                      # on target and holding still
        return next(k for k, vx in enumerate(v) if vx < 0) - 40

    assert response_bin(0.0) == 0
    assert response_bin(0.1) == 5
    assert response_bin(0.17) == 8                          # 8.5 bins: half the jump is seen at 8
    assert response_bin(0.3) == 15


def test_forward_model_keeps_its_own_movement_from_looking_delayed():
    p = SimulatedParticipant(**QUIET)
    eff = CursorEffector()
    tgt = Target((0.8, 0.0), 0.03, click=False)
    for k in range(18):
        shown = eff.xy
        eff.step(p.step(k * DT, shown, tgt).velocity)
    # mid-movement: the delayed view lags far behind, the estimate is close to the truth
    lag = abs(p.seen_xy[0] - shown[0])
    assert lag > 0.2
    assert abs(p.estimated_xy[0] - shown[0]) < 0.1 * lag     # 1 - forward_model_weight = 0.05 of it


# ------------------------------------------------------------------ control
def test_delayed_feedback_overshoots_and_corrects_but_stays_stable(closed_loop):
    tgt = Target((0.6, 0.0), 0.03, click=False)
    xy, _ = closed_loop(SimulatedParticipant(forward_model_weight=0.5, **QUIET), tgt, 200)
    assert xy[:, 0].max() > 0.6 + 0.03                       # overshoots the target...
    assert np.all(np.abs(xy[-50:, 0] - 0.6) < 0.03)          # ...and settles inside it
    xy, _ = closed_loop(SimulatedParticipant(**QUIET), tgt, 200)
    assert xy[:, 0].max() < 0.6 + 0.03                       # with its forward model: hardly any overshoot
    assert np.all(np.abs(xy[-50:, 0] - 0.6) < 0.03)


def test_reaches_targets_with_a_perfect_decoder():
    res = run_session(perfect_decoder_session("centre_out", {"n_trials": 16, "seed": 1}, 60.0, seed=2), progress=False)
    task = res["tasks"]["centre_out"]
    m = task.metrics(60.0)
    assert task.done and m["success_rate"] == 1.0
    assert 0.3 < m["mean_time_to_target_s"] < 1.0             # 0.7 units after a ~0.2 s reaction
    assert m["path_efficiency"] > 0.9


def test_speed_is_capped_and_noise_is_signal_dependent(closed_loop):
    quiet = SimulatedParticipant(**QUIET)
    tgt = Target((0.9, 0.9), 0.03, click=False)
    _, intents = closed_loop(quiet, tgt, 100, start=(-0.9, -0.9))
    speeds = np.array([np.hypot(*i.velocity) for i in intents])
    assert speeds.max() <= quiet.max_speed_units_s + 1e-9 and speeds.max() > 0.95 * quiet.max_speed_units_s
    resting = SimulatedParticipant(motor_noise=0.2, motor_noise_floor_units_s=0.0, seed=3)
    assert all(np.hypot(*resting.step(k * DT, (0.0, 0.0), None).velocity) == 0.0 for k in range(50))

    def sideways_sd(noise):
        # the command points along (1, 1): the sideways velocity of the fast bins is pure noise
        p = SimulatedParticipant(motor_noise=noise, motor_noise_floor_units_s=0.0, seed=3)
        v = np.array([i.velocity for i in closed_loop(p, tgt, 100, start=(-0.9, -0.9))[1]])
        fast = v @ np.array([1.0, 1.0]) / math.sqrt(2) > 3.0
        assert fast.sum() > 10
        return float(np.std(v[fast] @ np.array([1.0, -1.0]) / math.sqrt(2)))

    lo, hi = sideways_sd(0.05), sideways_sd(0.2)
    assert 0.5 * 0.05 * 3.5 < lo < 2 * 0.05 * 3.5           # SD ~ motor_noise x speed
    assert 3.0 < hi / lo < 5.0                               # proportional to motor_noise


def test_adapts_to_a_decoder_with_the_wrong_gain_and_rotation(closed_loop):
    ang = np.deg2rad(40.0)
    m = 2.0 * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    learner = SimulatedParticipant(seed=1)
    rigid = SimulatedParticipant(seed=1, adaptation_tau_s=0.0)
    results = {}
    for name, p in [("learner", learner), ("rigid", rigid)]:
        task, eff = CentreOutTask(seed=0), CursorEffector(refractory_s=0.0)
        for k in range(int(40.0 / DT)):
            it = p.step(k * DT, eff.xy, task.current_target())
            xy, _ = eff.step(m @ it.velocity)
            task.update((k + 1) * DT, xy, False)
        results[name] = task.metrics(40.0)
    assert np.allclose(learner.command_map, m, atol=0.4)
    assert np.array_equal(rigid.command_map, np.eye(2))
    assert results["learner"]["success_rate"] == 1.0
    assert results["learner"]["n_trials"] > 1.5 * results["rigid"]["n_trials"]


# ------------------------------------------------------------------ clicks
def test_holds_then_clicks_once_and_releases(closed_loop):
    p = SimulatedParticipant(reclick_delay_s=5.0, **QUIET)
    tgt = Target((0.3, 0.2), 0.04, click=True)
    xy, intents = closed_loop(p, tgt, 150)
    click = np.array([i.click for i in intents])
    onsets = np.flatnonzero(np.diff(np.r_[0.0, click]) > 0)
    assert len(onsets) == 1
    k = onsets[0]
    assert np.all(click[k:k + 5] == 1.0) and np.all(click[k + 5:] == 0.0)   # 0.1 s press
    belief = np.array([i.on_target_belief for i in intents])
    first_in = np.flatnonzero(belief)[0]
    # visual confirmation: it clicks once the cursor it sees (visual_delay_s ago) is inside too
    d = round(p.config.visual_delay_s / DT)
    assert k >= first_in
    assert np.hypot(*(xy[k - d - 1] - tgt.xy)) <= p.config.confidence * tgt.radius + 1e-9
    assert np.hypot(*(xy[k] - tgt.xy)) < tgt.radius                        # and really inside
    speed = np.array([np.hypot(*i.velocity) for i in intents[k:]])
    assert speed[0] < 0.1 and np.all(np.diff(speed) <= 1e-12) and speed[10] < 0.01   # holding still


def test_clicks_again_when_a_click_had_no_effect_or_after_reentering():
    p = SimulatedParticipant(reclick_delay_s=0.3, **QUIET)
    tgt = Target((0.0, 0.0), 0.05, click=True)
    click = np.array([p.step(k * DT, (0.0, 0.0), tgt).click for k in range(100)])
    onsets = np.flatnonzero(np.diff(np.r_[0.0, click]) > 0)
    assert len(onsets) >= 3
    assert np.all(np.diff(onsets) == 5 + 15)       # press 0.1 s, then again 0.3 s after the release
    # leaving and re-entering also re-arms it (the display is driven by hand here)
    p = SimulatedParticipant(reclick_delay_s=5.0, visual_delay_s=0.0, **QUIET)
    shown = [(0.0, 0.0)] * 30 + [(0.5, 0.0)] * 5 + [(0.0, 0.0)] * 30
    click = np.array([p.step(k * DT, xy, tgt).click for k, xy in enumerate(shown)])
    assert len(np.flatnonzero(np.diff(np.r_[0.0, click]) > 0)) == 2


def test_no_click_for_dwell_targets_and_rest_without_a_target():
    p = SimulatedParticipant(**QUIET)
    out = [p.step(k * DT, (0.0, 0.0), Target((0.0, 0.0), 0.1, click=False)) for k in range(100)]
    assert all(o.click == 0.0 for o in out) and out[-1].on_target_belief
    p = SimulatedParticipant(**QUIET)
    out = [p.step(k * DT, (0.3, 0.3), None) for k in range(50)]
    assert all(np.array_equal(o.velocity, [0.0, 0.0]) and o.click == 0.0 and not o.on_target_belief for o in out)


# ------------------------------------------------------------------ determinism and mapping
def test_same_seed_same_behaviour_and_reset_replays():
    def run(p):
        task = WebgridTask(seed=0)
        eff = CursorEffector()
        out = []
        for k in range(300):
            it = p.step(k * DT, eff.xy, task.current_target())
            xy, clicked = eff.step(it.velocity, it.click > 0.5)
            task.update((k + 1) * DT, xy, clicked)
            out.append(np.r_[it.velocity, it.click])
        return np.array(out)

    a = run(SimulatedParticipant(seed=4))
    assert np.array_equal(a, run(SimulatedParticipant(seed=4)))
    assert not np.array_equal(a, run(SimulatedParticipant(seed=5)))
    p = SimulatedParticipant(seed=4)
    run(p)
    p.reset()
    assert np.array_equal(run(p), a)


def test_neural_intent_normalises_and_clips():
    p = SimulatedParticipant(max_speed_units_s=2.0, neural_speed_units_s=0.5)
    # velocity / neural_speed_units_s: 1 unit/s is two tuning depths here
    assert p.neural_intent(ParticipantIntent(np.array([0.25, -0.125]), 1.0, True)) == (0.5, -0.25, 1.0)
    vx, vy, c = p.neural_intent(ParticipantIntent(np.array([6.0, 8.0]), 1.7, False))
    assert (vx, vy) == pytest.approx((2.4, 3.2)) and c == 1.0   # clipped at max speed: norm 2.0 / 0.5 = 4
    assert p.neural_intent(ParticipantIntent(np.array([np.nan, 1.0]), -0.2, False)) == (0.0, 0.0, 0.0)


def test_nonfinite_displayed_cursor_is_not_seen():
    p = SimulatedParticipant(visual_delay_s=0.0, **QUIET)
    tgt = Target((0.0, 0.0), 0.05, click=False)
    for k in range(20):
        p.step(k * DT, (0.0, 0.0), tgt)
    it = p.step(20 * DT, (np.nan, np.nan), tgt)
    assert np.all(np.isfinite(it.velocity)) and np.allclose(p.seen_xy, [0.0, 0.0])


def test_adaptation_can_be_switched_off_for_open_loop_calibration():
    """With an autopilot moving the cursor, an adapting participant would learn its speed as a gain."""
    def open_loop(adapt):
        p = SimulatedParticipant(seed=0)
        p.adapt = adapt
        task, eff = WebgridTask(seed=0), CursorEffector()
        speeds = []
        for k in range(1000):
            tgt = task.current_target()
            it = p.step(k * DT, eff.xy, tgt)
            err = np.asarray(tgt.xy) - eff.xy
            d = np.hypot(*err)
            auto = np.zeros(2) if d < 0.01 else err / d * min(1.0, d / 0.15)     # a slow autopilot
            xy, clicked = eff.step(auto, it.click > 0.5)
            task.update((k + 1) * DT, xy, clicked)
            speeds.append(np.hypot(*it.velocity))
        p.reset()
        assert p.adapt is adapt                                # reset leaves the switch alone
        return max(speeds)

    assert open_loop(True) > 2 * SimulatedParticipant().max_speed_units_s
    assert open_loop(False) < 1.2 * SimulatedParticipant().max_speed_units_s


def test_without_visual_confirmation_it_clicks_after_hold_on_its_estimate(closed_loop):
    p = SimulatedParticipant(reclick_delay_s=5.0, visual_confirmation=False, hold_s=0.1, **QUIET)
    tgt = Target((0.3, 0.2), 0.04, click=True)
    xy, intents = closed_loop(p, tgt, 150)
    click = np.array([i.click for i in intents])
    (k,) = np.flatnonzero(np.diff(np.r_[0.0, click]) > 0)
    first_in = np.flatnonzero([i.on_target_belief for i in intents])[0]
    assert k == first_in + round(0.1 / DT) - 1                              # after hold_s believed inside


# ------------------------------------------------------------------ observation (open loop)
def _autopilot_run(p, n_bins, target, speed=2.0, start=(-0.5, 0.0)):
    """An autopilot moves the cursor to ``target`` while ``p`` observes it: its velocities, the
    participant's intents and the cursor positions shown."""
    from cortexlink.tasks.cursor import autopilot_velocity

    eff = CursorEffector(dt_s=p.dt_s, refractory_s=0.0)
    eff.reset(start)
    vel, intents, xy = [], [], []
    for k in range(n_bins):
        xy.append(eff.xy)
        it = p.step(k * p.dt_s, eff.xy, target)
        v = autopilot_velocity(target, eff.xy, speed)
        eff.step(v, False)
        vel.append(v)
        intents.append(it)
    return np.array(vel), intents, np.array(xy)


def test_an_observing_participant_intends_the_motion_it_sees_late_and_clicks_on_what_it_sees():
    target = Target((0.5, 0.0), 0.05)
    p = SimulatedParticipant(seed=0, lapse_rate_hz=0.0, **QUIET)
    p.observing, p.adapt = True, False
    vel, intents, xy = _autopilot_run(p, 120, target)
    iv = np.array([i.velocity for i in intents])
    # its intent is the cursor's velocity, late by about its visual delay (+ perception and motor lags)
    lags = range(0, 25)
    err = [np.mean(np.abs(iv[k:, 0] - vel[:len(vel) - k, 0])) for k in lags]
    best = int(np.argmin(err))
    assert 0.17 / DT <= best <= 0.35 / DT and err[best] < 0.3 * err[0]
    assert iv[:, 0].max() <= 1.05 * vel[:, 0].max()       # no faster than the cursor it watches
    clicks = [k for k, i in enumerate(intents) if i.click >= 0.5]
    lag = int(round(0.17 / DT))
    inside = np.hypot(*(xy - np.array(target.xy)).T) <= 0.7 * target.radius
    first_in = int(np.flatnonzero(inside)[0])
    assert clicks and clicks[0] >= first_in + lag - 1     # it clicks once it has *seen* the cursor inside
    assert inside[clicks[0] - lag]
    # the former policy, planning its own reach, runs ahead of the cursor and stops before it
    q = SimulatedParticipant(seed=0, lapse_rate_hz=0.0, observation="self", **QUIET)
    q.observing, q.adapt = True, False
    _, own, _ = _autopilot_run(q, 120, target)
    assert np.array([i.velocity for i in own])[:, 0].max() > 1.2 * vel[:, 0].max()


def test_attention_lapses_only_while_observing():
    target = Target((0.5, 0.0), 0.05)
    p = SimulatedParticipant(seed=3, lapse_rate_hz=2.0, lapse_s=0.3, **QUIET)
    p.observing, p.adapt = True, False
    vel, intents, _ = _autopilot_run(p, 100, target, start=(-0.9, 0.0), speed=0.5)
    moving = np.hypot(*vel.T) > 0.2
    iv = np.hypot(*np.array([i.velocity for i in intents]).T)
    lapsed = moving & (iv < 1e-9)
    assert lapsed[20:].sum() >= 5                            # spells of no intent while the cursor moves
    q = SimulatedParticipant(seed=3, lapse_rate_hz=2.0, lapse_s=0.3, **QUIET)      # not observing: no lapses
    speeds = [np.hypot(*q.step(k * DT, (0.0, 0.0), Target((0.5, 0.0), 0.05)).velocity) for k in range(40)]
    assert min(speeds[15:30]) > 0.5


def test_click_lookahead_waits_for_a_drifting_cursor_to_settle():
    target = Target((0.0, 0.0), 0.05)
    clicks = {}
    for la in (0.0, 0.3):
        p = SimulatedParticipant(seed=0, click_lookahead_s=la, reaction_time_s=0.0, lapse_rate_hz=0.0, **QUIET)
        p.observing = True
        first = None
        for k in range(100):     # a cursor drifts through the target at 0.3 units/s (one radius in 0.17 s)
            xy = (-0.3 + 0.3 * DT * k, 0.0)
            if p.step(k * DT, xy, target).click >= 0.5 and first is None:
                first = k
        clicks[la] = first
    assert clicks[0.0] is not None                          # position alone: it clicks on the way through
    assert clicks[0.3] is None                              # looking ahead: the cursor would leave; no click
