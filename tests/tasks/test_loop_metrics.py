"""Control metrics of a closed-loop block (cortexlink.tasks.loop_metrics) on hand-made traces."""

from types import SimpleNamespace

import numpy as np
import pytest

from cortexlink.tasks.loop_metrics import control_metrics

DT = 0.02


def _trace(n=300):
    t = np.arange(1, n + 1) * DT
    return SimpleNamespace(dt_s=DT, t_s=t, intended_velocity=np.zeros((n, 2)), cursor_velocity=np.zeros((n, 2)),
                           cursor_xy=np.zeros((n, 2)), target_xy=np.zeros((n, 2)), target_radius=np.full(n, 0.05),
                           clicks=np.zeros(n, bool), on_target=np.ones(n, bool), click_intent=np.zeros(n))


def test_rest_drift_is_measured_over_the_visual_delay_in_half_widths():
    tr = _trace()
    tr.cursor_velocity[:, 0] = 0.1                         # drifting at 0.1 units/s while the participant rests
    tr.cursor_xy[:, 0] = np.cumsum(tr.cursor_velocity[:, 0]) * DT
    m = control_metrics(tr, visual_delay_s=0.18)
    assert m["decoded_speed_at_rest"] == pytest.approx(0.1)
    # 0.18 s + one bin = 10 bins of 0.002 units = 0.02 units = 0.4 half-widths of a 0.05 radius
    assert m["drift_over_delay_halfwidths"] == pytest.approx(0.4)
    tr.intended_velocity[:, 0] = 1.0                       # never at rest: nothing to measure
    m = control_metrics(tr)
    assert m["decoded_speed_at_rest"] is None and m["drift_over_delay_halfwidths"] is None


def test_wrong_clicks_and_click_detection():
    tr = _trace(3000)                                      # one minute
    onsets = [100, 600, 1100, 1600]
    for o in onsets:
        tr.click_intent[o:o + 5] = 1.0
    for k in (102, 603, 1100):                             # three intents detected, 40 / 60 / 0 ms late
        tr.clicks[k] = True
    tr.clicks[2500] = True                                 # a click without intent, off the target, moving
    tr.on_target[2500] = False
    tr.cursor_xy[2500] = (0.2, 0.0)
    tr.cursor_velocity[2500] = (1.5, 0.0)
    m = control_metrics(tr)
    assert m["click_intents"] == 4 and m["click_detected_fraction"] == 0.75
    assert m["false_clicks_per_min"] == pytest.approx(1.0) and m["click_latency_ms_median"] == pytest.approx(40.0)
    assert m["n_wrong_clicks"] == 1 and m["wrong_click_speed"] == pytest.approx(1.5)
    assert m["wrong_click_distance_halfwidths"] == pytest.approx(4.0)


def test_an_empty_block_and_missing_intent_give_none():
    m = control_metrics(_trace(0))
    assert m["n_wrong_clicks"] == 0 and m["click_detected_fraction"] is None
    tr = _trace(50)
    tr.intended_velocity[:] = np.nan
    tr.click_intent[:] = np.nan
    m = control_metrics(tr)
    assert m["decoded_speed_at_rest"] is None and m["click_intents"] == 0 and m["false_clicks_per_min"] is None
