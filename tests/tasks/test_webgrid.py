"""Tests of the Webgrid task, its bitrate and the perfect-decoder calibration."""

import math

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.bench.ceiling import perfect_decoder_webgrid
from cortexlink.tasks import Target, TaskEvent, WebgridTask, bitrate_over_time, webgrid_bitrate

LOG2_899 = math.log2(899)


@pytest.fixture
def click_at():
    """Run one bin of a task with a click at ``xy``; returns the event kinds."""
    def _click(task, t_s, xy, click=True):
        return [e.kind for e in task.update(t_s, np.asarray(xy, dtype=float), click)]
    return _click


# ------------------------------------------------------------------ bitrate formula
def test_bitrate_matches_hand_computed_values():
    assert webgrid_bitrate(900, 100, 4, 60.0) == pytest.approx(LOG2_899 * 96 / 60)   # 15.699 bps
    assert webgrid_bitrate(900, 72, 0, 60.0) == pytest.approx(11.774, abs=1e-3)     # 72 NTPM on 30x30
    assert webgrid_bitrate(1225, 10, 0, 5.0) == pytest.approx(math.log2(1224) * 2)
    assert webgrid_bitrate(900, 3, 5, 10.0) == 0.0          # more wrong than right: clipped at 0
    assert webgrid_bitrate(2, 10, 0, 1.0) == 0.0            # one alternative carries no information


@pytest.mark.parametrize("args, name", [
    ((1, 1, 0, 1.0), "n_targets_total"), ((900, -1, 0, 1.0), "n_correct"), ((900, 1, 1.5, 1.0), "n_incorrect"),
    ((900, 1, 0, 0.0), "elapsed_s"), ((900, 1, 0, float("nan")), "elapsed_s"), ((True, 1, 0, 1.0), "n_targets_total"),
])
def test_bitrate_bad_input(args, name):
    with pytest.raises(ConfigError, match=name):
        webgrid_bitrate(*args)


def test_bitrate_over_time_sliding_window():
    events = [TaskEvent(0.0, "target_on", {})]
    events += [TaskEvent(float(k), "correct", {}) for k in range(1, 61)]      # one correct per second
    events += [TaskEvent(45.5, "incorrect", {}), TaskEvent(46.5, "incorrect", {})]
    t, bps = bitrate_over_time(events, 900, window_s=30.0, step_s=1.0)
    assert t[0] == 1.0 and t[-1] == 60.0 and len(t) == 60
    assert bps[9] == pytest.approx(LOG2_899 * 10 / 10)        # t = 10: window (0, 10] is 10 s long
    assert bps[29] == pytest.approx(LOG2_899 * 30 / 30)       # t = 30: full window
    assert bps[59] == pytest.approx(LOG2_899 * (30 - 2) / 30)  # t = 60: (30, 60] holds both errors
    assert bps[39] == pytest.approx(LOG2_899)                  # t = 40: (10, 40] no errors
    t2, _ = bitrate_over_time(events, 900, window_s=10.0, step_s=5.0, t_start_s=0.0, t_end_s=20.0)
    assert np.array_equal(t2, [5.0, 10.0, 15.0, 20.0])
    assert bitrate_over_time([], 900)[0].size == 0
    with pytest.raises(ConfigError, match="window_s"):
        bitrate_over_time(events, 900, window_s=0)


# ------------------------------------------------------------------ geometry and target
def test_cells_cover_the_workspace():
    task = WebgridTask(n=30)
    w = 2.0 / 30
    assert task.cell_width == pytest.approx(w) and task.n_targets_total == 900
    for cell in range(900):
        assert task.cell_at(task.cell_center(cell)) == cell
    assert task.cell_at((-1.0, -1.0)) == 0 and task.cell_at((1.0, 1.0)) == 899
    assert task.cell_at((-1.0 + 1.5 * w, -1.0 + 0.1 * w)) == 1          # column 1 of row 0
    assert task.cell_at((-1.0 + 0.1 * w, -1.0 + 1.5 * w)) == 30         # row 1 (y up)
    assert task.cell_at((1.01, 0.0)) is None and task.cell_at((np.nan, 0.0)) is None
    tgt = task.current_target()
    assert isinstance(tgt, Target)
    assert tgt.click is True and tgt.radius == pytest.approx(w / 2)
    assert tgt.xy == pytest.approx(task.cell_center(task.lit_cell))
    other = WebgridTask(n=4, workspace=(0.0, 2.0))
    assert other.cell_center(0) == pytest.approx((0.25, 0.25))


# ------------------------------------------------------------------ selections
def test_correct_and_incorrect_selections_are_counted(click_at):
    task = WebgridTask(n=30, seed=3)
    lit = task.lit_cell
    assert click_at(task, 0.02, (0.0, 0.0), click=False) == ["target_on"]
    assert click_at(task, 0.04, task.cell_center(lit), click=False) == []    # no click, no selection
    wrong = (lit + 1) % 900
    assert click_at(task, 0.5, task.cell_center(wrong)) == ["incorrect"]
    assert task.lit_cell == lit                                                # the lit cell stays
    ev = task.update(1.0, np.asarray(task.cell_center(lit)), True)
    assert [e.kind for e in ev] == ["correct", "target_on"]
    assert ev[0].data["cell"] == lit and ev[0].data["time_since_target_on_s"] == pytest.approx(0.98)
    assert ev[1].data["cell"] == task.lit_cell != lit
    # an off-centre click inside the lit cell is still correct
    x, y = task.cell_center(task.lit_cell)
    assert click_at(task, 1.5, (x + 0.03, y - 0.03)) == ["correct", "target_on"]
    assert (task.n_correct, task.n_incorrect) == (2, 1)
    m = task.metrics(60.0)
    assert m["bps"] == pytest.approx(LOG2_899 * 1 / 60)
    assert m["ntpm"] == pytest.approx(1.0)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["time_per_correct_s"] == pytest.approx(30.0)
    assert m["n_selections"] == 3 and m["bits_per_selection"] == pytest.approx(LOG2_899)
    empty = WebgridTask().metrics(10.0)
    assert empty["bps"] == 0.0 and empty["accuracy"] is None and empty["time_per_correct_s"] is None


def test_never_the_same_cell_twice_and_uniform(click_at):
    task = WebgridTask(n=3, seed=11)
    for k in range(9000):
        click_at(task, 0.1 * (k + 1), task.cell_center(task.lit_cell))
    lit = np.array(task.lit_history)
    assert len(lit) == 9001 and task.n_correct == 9000
    assert np.all(lit[1:] != lit[:-1])
    counts = np.bincount(lit, minlength=9)
    assert np.all(np.abs(counts - 1000) < 150)            # uniform: ~1000 each (sd ~30)


def test_same_seed_same_sequence_and_reset_replays(click_at):
    def sequence(task):
        for k in range(50):
            click_at(task, 0.1 * (k + 1), task.cell_center(task.lit_cell))
        return list(task.lit_history)

    a, b = WebgridTask(seed=5), WebgridTask(seed=5)
    first = sequence(a)
    assert first == sequence(b)
    assert first != sequence(WebgridTask(seed=6))
    a.reset()
    assert a.n_correct == 0 and a.events == []
    assert sequence(a) == first


def test_lockout_ignores_clicks_and_duration_ends_the_block(click_at):
    task = WebgridTask(n=10, lockout_s=0.5, duration_s=10.0)
    click_at(task, 1.0, (0.999, 0.999) if task.lit_cell != 99 else (-0.999, -0.999))   # a wrong cell
    assert task.n_incorrect == 1
    assert click_at(task, 1.2, task.cell_center(task.lit_cell)) == ["click_ignored"]
    assert task.n_correct == 0 and task.n_clicks_ignored == 1
    assert click_at(task, 1.5, task.cell_center(task.lit_cell)) == ["correct", "target_on"]
    assert click_at(task, 10.99, (0.0, 0.0), click=False) == []
    assert click_at(task, 11.0, (0.0, 0.0), click=False) == ["done"]   # started at t = 1.0
    assert task.done and task.current_target() is None
    assert task.update(11.02, np.zeros(2), True) == []
    assert task.events[-1].data == {"n_correct": 1, "n_incorrect": 1}


@pytest.mark.parametrize("kwargs, name", [
    (dict(n=1), "n"), (dict(n=2.5), "n"), (dict(workspace=(1.0, -1.0)), "workspace"),
    (dict(workspace="ab"), "workspace"), (dict(seed=-1), "seed"), (dict(duration_s=0.0), "duration_s"),
    (dict(lockout_s=-0.1), "lockout_s"),
])
def test_bad_config(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        WebgridTask(**kwargs)


# ------------------------------------------------------------------ perfect-decoder calibration
def test_perfect_decoder_lands_near_a_mouse_user_and_a_worse_participant_scores_less():
    from cortexlink.sim.participant import ParticipantConfig

    good = perfect_decoder_webgrid(duration_s=60.0, seed=0)
    assert 8.0 <= good["bps"] <= 16.0
    assert good["accuracy"] > 0.9
    assert 3.0 <= good["fitts_throughput_bits_s"] <= 6.0     # a mouse: ~3.7-4.9 bits/s
    worse = ParticipantConfig(visual_delay_s=0.3, reaction_time_s=0.35, motor_noise=0.3)
    bad = perfect_decoder_webgrid(duration_s=60.0, seed=0, participant_config=worse)
    assert bad["bps"] < 0.8 * good["bps"]
    again = perfect_decoder_webgrid(duration_s=60.0, seed=0)
    assert again == good                                    # deterministic by seed
