"""Tests of the cursor effector (cortexlink.tasks.cursor)."""

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.tasks import CursorEffector


def test_integrates_velocity_with_gain_over_dt():
    eff = CursorEffector(dt_s=0.02)
    for _ in range(10):
        xy, clicked = eff.step((1.0, -0.5), False)
    assert np.allclose(xy, [0.2, -0.1])
    assert not clicked
    assert np.allclose(eff.velocity, [1.0, -0.5])
    fast = CursorEffector(gain=2.0, dt_s=0.01)
    fast.step((1.0, 1.0))
    assert np.allclose(fast.xy, [0.02, 0.02])
    assert np.allclose(fast.velocity, [2.0, 2.0])


def test_position_is_clamped_to_the_screen_bounds():
    eff = CursorEffector()
    xy, _ = eff.step((100.0, -100.0))
    assert np.array_equal(xy, [1.0, -1.0])
    xy, _ = eff.step((-0.5, 0.5))          # moves back in from the edge at once
    assert np.allclose(xy, [0.99, -0.99])
    small = CursorEffector(bounds=0.5)
    for _ in range(100):
        xy, _ = small.step((3.0, 1.0))
    assert np.array_equal(xy, [0.5, 0.5])
    small.reset((7.0, -7.0))
    assert np.array_equal(small.xy, [0.5, -0.5])


def test_nonfinite_velocity_holds_the_cursor_and_is_counted():
    eff = CursorEffector(smoothing=0.5)
    eff.step((1.0, 0.0))
    before, v_mem = eff.xy, eff._v_ema.copy()
    for bad in [(np.nan, 0.0), (0.0, np.inf), (np.nan, np.nan)]:
        xy, _ = eff.step(bad)
        assert np.array_equal(xy, before)
        assert np.array_equal(eff.velocity, [0.0, 0.0])
    assert eff.n_nonfinite_held == 3
    assert np.array_equal(eff._v_ema, v_mem)       # the smoothing memory is untouched
    xy, _ = eff.step((1.0, 0.0))                   # and movement resumes from it
    assert np.allclose(eff.velocity, [0.75, 0.0])  # 0.5 * 0.5 + 0.5 * 1
    assert xy[0] == pytest.approx(before[0] + 0.75 * 0.02)


def test_ema_smoothing_step_response():
    s = 0.8
    eff = CursorEffector(smoothing=s, dt_s=0.02)
    x_expected, vx = 0.0, []
    for k in range(1, 21):
        eff.step((1.0, 0.0))
        v = 1.0 - s ** k                           # EMA of a unit step
        x_expected += v * 0.02
        vx.append(eff.velocity[0])
        assert eff.velocity[0] == pytest.approx(v)
    assert eff.xy[0] == pytest.approx(x_expected)
    assert np.all(np.diff(vx) > 0)
    # no smoothing: the velocity follows the input at once
    raw = CursorEffector(smoothing=0.0)
    raw.step((0.3, 0.0))
    assert raw.velocity[0] == pytest.approx(0.3)


def test_click_passes_through_with_a_refractory_period():
    eff = CursorEffector(dt_s=0.02, refractory_s=0.3)
    fired = [eff.step((0.0, 0.0), k in (0, 1, 5, 15, 16, 40))[1] for k in range(50)]
    assert [k for k, c in enumerate(fired) if c] == [0, 15, 40]
    assert eff.n_clicks == 3 and eff.n_clicks_suppressed == 3
    every = CursorEffector(refractory_s=0.0)
    assert all(every.step((0.0, 0.0), True)[1] for _ in range(5))


def test_reset_restores_state_and_counters():
    eff = CursorEffector()
    eff.step((1.0, 1.0), True)
    eff.step((np.nan, 0.0), True)
    eff.reset((0.25, -0.25))
    assert np.array_equal(eff.xy, [0.25, -0.25])
    assert np.array_equal(eff.velocity, [0.0, 0.0])
    assert eff.n_steps == eff.n_clicks == eff.n_clicks_suppressed == eff.n_nonfinite_held == 0
    assert eff.step((0.0, 0.0), True)[1]           # no refractory carried over
    xy = eff.xy
    xy[0] = 99.0                                   # .xy is a copy
    assert eff.xy[0] == 0.25


@pytest.mark.parametrize("kwargs, name", [
    (dict(gain=0.0), "gain"), (dict(gain=-1.0), "gain"), (dict(smoothing=1.0), "smoothing"),
    (dict(smoothing=-0.1), "smoothing"), (dict(bounds=float("nan")), "bounds"), (dict(dt_s=0), "dt_s"),
    (dict(refractory_s=-0.1), "refractory_s"), (dict(gain="1"), "gain"),
])
def test_bad_config_raises_config_error_naming_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        CursorEffector(**kwargs)


def test_bad_reset_position_raises():
    eff = CursorEffector()
    with pytest.raises(ConfigError, match="xy must be two finite numbers"):
        eff.reset((np.nan, 0.0))
    with pytest.raises(ConfigError, match="xy"):
        eff.reset((1.0, 2.0, 3.0))


def test_dwell_fallback_clicks_once_per_stop_and_rearms_after_moving_off():
    from types import SimpleNamespace

    from cortexlink.tasks.cursor import cursor_command

    eff = CursorEffector(dt_s=0.02, refractory_s=0.0, dwell_s=0.1)        # 5 bins
    r = 0.05
    out = [eff.step((0.0, 0.0), dwell_radius=r)[1] for _ in range(12)]
    assert out.index(True) == 4 and sum(out) == 1 and eff.n_dwell_clicks == 1   # once, not every 5 bins
    eff.step((10.0, 0.0), dwell_radius=r)                                 # moves 0.2 > r: re-armed
    out = [eff.step((0.0, 0.0), dwell_radius=r)[1] for _ in range(6)]
    assert out.index(True) == 4 and eff.n_dwell_clicks == 2
    # slow drift inside the radius still counts as a stop; no radius (no target) never clicks
    eff.step((10.0, 0.0), dwell_radius=r)
    assert sum(eff.step((0.2, 0.0), dwell_radius=r)[1] for _ in range(6)) == 1
    assert not any(eff.step((0.0, 0.0), dwell_radius=None)[1] for _ in range(20))
    # a decoded click disarms it: no dwell click on the same stop
    eff.step((10.0, 0.0), dwell_radius=r)
    assert eff.step((0.0, 0.0), click=True, dwell_radius=r)[1]
    assert not any(eff.step((0.0, 0.0), dwell_radius=r)[1] for _ in range(20))
    # a halt disarms it too, and without dwell_s nothing is added
    tgt = SimpleNamespace(xy=(0.5, 0.5), radius=r)
    eff.step((10.0, 0.0), dwell_radius=r)
    cursor_command(eff, "closed", target=tgt, decoded_velocity=(0.0, 0.0), halt=True)
    assert not any(cursor_command(eff, "closed", target=tgt, decoded_velocity=(0.0, 0.0))[1] for _ in range(20))
    plain = CursorEffector(dt_s=0.02)
    assert not any(plain.step((0.0, 0.0), dwell_radius=r)[1] for _ in range(100))
    # open loop (the autopilot) never dwell-clicks
    eff2 = CursorEffector(dt_s=0.02, dwell_s=0.1)
    assert not any(cursor_command(eff2, "open", target=SimpleNamespace(xy=(0.0, 0.0), radius=r))[1] for _ in range(20))
    with pytest.raises(ConfigError, match="dwell_s"):
        CursorEffector(dwell_s=-1.0)


def test_dwell_needs_a_bin_and_counts_only_accepted_dwell_clicks():
    with pytest.raises(ConfigError, match="dwell_s must be at least one bin"):
        CursorEffector(dt_s=0.02, dwell_s=0.005)
    eff = CursorEffector(dt_s=0.02, refractory_s=0.3, dwell_s=0.04)              # 2 bins; refractory 15
    assert eff.step((0.0, 0.0), click=True, dwell_radius=0.05)[1]                 # a decoded click
    eff.step((10.0, 0.0), dwell_radius=0.05)                                      # moves on: re-armed
    out = [eff.step((0.0, 0.0), dwell_radius=0.05)[1] for _ in range(20)]
    # due after 2 bins but inside the refractory period: it stays armed and lands once it is over
    assert sum(out) == 1 and out.index(True) == 13 and eff.n_dwell_clicks == 1
    assert eff.n_clicks == 2
