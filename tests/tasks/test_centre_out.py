"""Tests of the centre-out task (cortexlink.tasks.centre_out)."""

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.tasks import CentreOutTask, CursorEffector, Target
from cortexlink.tasks.centre_out import CENTRE_IDX

DT = 0.02


@pytest.fixture
def teleport():
    """Drive a task for up to ``n_bins`` bins with the cursor always on its current target."""
    def _run(task, n_bins):
        events, t = [], 0.0
        for _ in range(n_bins):
            t += DT
            tgt = task.current_target()
            if tgt is None:
                break
            events += task.update(t, np.asarray(tgt.xy), False)
        return events
    return _run


def test_layout_and_target():
    task = CentreOutTask()
    pos = task.target_positions
    assert pos.shape == (8, 2)
    assert np.allclose(np.hypot(pos[:, 0], pos[:, 1]), 0.7)
    assert np.allclose(pos[0], [0.7, 0.0]) and np.allclose(pos[2], [0.0, 0.7])
    tgt = task.current_target()
    assert tgt == Target(xy=(0.0, 0.0), radius=0.1, click=False, dwell_s=0.3)
    assert task.current_target_idx == CENTRE_IDX


def test_alternates_centre_and_shuffled_blocks_of_outer_targets(teleport):
    task = CentreOutTask(n_trials=24, seed=4)
    events = teleport(task, 5000)
    on = [e.data["target_idx"] for e in events if e.kind == "target_on"]
    assert on[0::2] == [CENTRE_IDX] * 24                   # centre before every outer target
    outer = on[1::2]
    assert len(outer) == 24
    for b in range(3):
        assert sorted(outer[8 * b: 8 * b + 8]) == list(range(8))   # every target once per block
    assert outer[:8] != outer[8:16]                         # shuffled afresh
    assert task.done and events[-1].kind == "done" and task.current_target() is None
    m = task.metrics(100.0)
    assert m["n_trials"] == 24 and m["success_rate"] == 1.0 and m["n_centre_trials"] == 24
    assert all(v["n_trials"] == 3 for v in m["per_target"].values())


def test_without_return_no_centre_and_no_repeat_across_blocks(teleport):
    for seed in range(10):
        task = CentreOutTask(n_targets=4, n_trials=40, seed=seed, return_to_centre=False)
        events = teleport(task, 10000)
        on = [e.data["target_idx"] for e in events if e.kind == "target_on"]
        assert CENTRE_IDX not in on and len(on) == 40
        assert all(a != b for a, b in zip(on[:-1], on[1:]))


def test_dwell_selects_after_dwell_s_and_leaving_resets_it():
    task = CentreOutTask(dwell_s=0.3, seed=1)
    out = np.array([0.5, 0.5])
    assert [e.kind for e in task.update(0.0, out, False)] == ["target_on"]
    t = 0.0
    kinds = []
    for _ in range(10):                                      # 0.2 s inside, then leave
        t += DT
        kinds += [e.kind for e in task.update(t, np.zeros(2), False)]
    t += DT
    task.update(t, out, False)
    entered = t + DT
    while True:
        t += DT
        ev = task.update(t, np.array([0.05, 0.0]), False)
        if ev:
            break
    assert kinds == []
    assert t - entered == pytest.approx(0.3)
    assert [e.kind for e in ev] == ["select", "target_on"]
    sel = ev[0].data
    assert sel["via"] == "dwell" and sel["target_idx"] == CENTRE_IDX
    assert sel["time_to_target_s"] == pytest.approx(entered)   # onset at t = 0, last entry
    assert sel["trial_time_s"] == pytest.approx(t)


def test_a_click_inside_selects_at_once_and_outside_does_nothing():
    task = CentreOutTask(dwell_s=1.0, timeout_s=5.0)
    task.update(0.0, np.array([0.5, 0.5]), False)
    assert task.update(0.02, np.array([0.5, 0.5]), True) == []          # outside: nothing
    ev = task.update(0.04, np.array([0.02, 0.0]), True)
    assert [e.kind for e in ev] == ["select", "target_on"] and ev[0].data["via"] == "click"


def test_timeout_fails_the_trial_and_returns_to_centre():
    task = CentreOutTask(timeout_s=2.0, dwell_s=0.1, seed=2, n_trials=1)
    t, idx = 0.0, None
    task.update(t, np.zeros(2), False)
    while task.current_target_idx == CENTRE_IDX:                       # select the centre
        t += DT
        task.update(t, np.zeros(2), False)
    idx, t_on = task.current_target_idx, t
    kinds = []
    while not task.done:                                               # then never move
        t += DT
        kinds += [e.kind for e in task.update(t, np.zeros(2), False)]
    assert kinds == ["timeout", "done"]
    assert t - t_on == pytest.approx(2.0)
    m = task.metrics(t)
    assert m["n_trials"] == 1 and m["n_success"] == 0 and m["success_rate"] == 0.0
    assert m["mean_time_to_target_s"] is None and m["per_target"][str(idx)]["n_trials"] == 1
    assert task.trials[-1]["success"] is False


def test_time_to_target_and_path_efficiency():
    # a small target, so that the selection happens on the goal itself
    task = CentreOutTask(dwell_s=0.1, target_radius=0.005, return_to_centre=False, seed=0, n_trials=1)
    idx = task.current_target_idx
    goal = task.target_positions[idx]
    perp = np.array([-goal[1], goal[0]])
    t = 0.0
    task.update(t, np.zeros(2), False)
    # a detour: out to the side, then to the target, in 50 + 50 bins
    mid = goal / 2 + perp / 2
    path = [mid * k / 50 for k in range(1, 51)] + [mid + (goal - mid) * k / 50 for k in range(1, 51)]
    for p in path + [goal] * 10:
        t += DT
        task.update(t, p, False)
        if task.done:
            break
    rec = task.trials[0]
    assert rec["success"] and rec["via"] == "dwell"
    expected = 0.7 / (2 * np.hypot(0.35, 0.35))             # straight 0.7, travelled 2 x 0.495
    assert rec["path_efficiency"] == pytest.approx(expected, rel=1e-6)
    k_enter = next(k for k, p in enumerate(path) if np.hypot(*(p - goal)) <= 0.005)
    assert k_enter == len(path) - 1
    assert rec["time_to_target_s"] == pytest.approx((k_enter + 1) * DT)
    m = task.metrics(t)
    assert m["path_efficiency"] == pytest.approx(expected) and m["median_time_to_target_s"] == rec["time_to_target_s"]


def test_open_loop_calibration_use_cursor_moved_toward_the_target():
    """The lead's calibration: the cursor is moved automatically toward current_target()."""
    task = CentreOutTask(n_trials=16, seed=3)
    eff = CursorEffector()
    t = 0.0
    while not task.done and t < 60.0:
        err = np.asarray(task.current_target().xy) - eff.xy
        v = 5.0 * err
        speed = np.hypot(*v)
        if speed > 1.5:
            v *= 1.5 / speed
        xy, clicked = eff.step(v, False)
        t += DT
        task.update(t, xy, clicked)
    m = task.metrics(t)
    assert task.done and m["success_rate"] == 1.0
    assert 0.95 < m["path_efficiency"] <= 1.0


def test_determinism_by_seed(teleport):
    def order(seed):
        task = CentreOutTask(n_trials=16, seed=seed)
        return [e.data["target_idx"] for e in teleport(task, 3000) if e.kind == "target_on"]

    assert order(1) == order(1) and order(1) != order(2)
    task = CentreOutTask(n_trials=4, seed=1)
    first = [e.data["target_idx"] for e in teleport(task, 3000) if e.kind == "target_on"]
    task.reset()
    assert not task.done and task.trials == []
    assert [e.data["target_idx"] for e in teleport(task, 3000) if e.kind == "target_on"] == first


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_targets=0), "n_targets"), (dict(n_targets=2.0), "n_targets"), (dict(radius=1.5), "radius"),
    (dict(radius=0.0), "radius"), (dict(target_radius=-0.1), "target_radius"), (dict(dwell_s=-1.0), "dwell_s"),
    (dict(timeout_s=0.0), "timeout_s"), (dict(dwell_s=5.0, timeout_s=5.0), "dwell_s"), (dict(n_trials=0), "n_trials"),
    (dict(seed=-3), "seed"), (dict(return_to_centre="yes"), "return_to_centre"), (dict(click=1), "click"),
])
def test_bad_config(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        CentreOutTask(**kwargs)


def test_click_mode_selects_by_click_only_and_the_participant_clicks():
    from cortexlink.bench.ceiling import perfect_decoder_session
    from cortexlink.runtime.session import run_session

    task = CentreOutTask(click=True, dwell_s=0.3)
    tgt = task.current_target()
    assert tgt.click is True and tgt.dwell_s == 0.0
    kinds = [e.kind for k in range(100) for e in task.update(k * DT, np.zeros(2), False)]
    assert kinds == ["target_on"]                              # 2 s inside the centre: no dwell selection
    ev = task.update(2.0, np.zeros(2), True)
    assert [e.kind for e in ev] == ["select", "target_on"] and ev[0].data["via"] == "click"
    res = run_session(perfect_decoder_session("centre_out", {"click": True, "n_trials": 8, "seed": 2}, 30.0, seed=0),
                      progress=False)
    task = res["tasks"]["centre_out"]
    m = task.metrics(30.0)
    assert task.done and m["success_rate"] == 1.0
    assert all(tr["via"] == "click" for tr in task.trials)
