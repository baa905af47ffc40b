"""The neural closed loop: modes, feedback from decoder quality, bad arguments, benchmark JSON."""

import json

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.sim import SimulatedImplant, SimulatedParticipant
from cortexlink.decoders.fitting import training_set
from cortexlink.tasks.loop import ClosedLoop
from cortexlink.tasks.webgrid import WebgridTask


def _implant(seed=0):
    return SimulatedImplant(n_channels=48, n_dead=1, n_saturating=0, seed=seed)


def test_perfect_mode_cursor_follows_intent_without_an_implant():
    loop = ClosedLoop(None, participant=SimulatedParticipant(seed=0))
    tr = loop.run_block(WebgridTask(n=10, seed=0), mode="perfect", seconds=10.0)
    assert tr.n_bins == 500 and tr.features is None
    np.testing.assert_array_equal(tr.cursor_velocity, tr.intended_velocity)
    assert tr.metrics["n_correct"] > 5 and tr.metrics["bps"] > 0


def test_open_loop_moves_the_cursor_itself_and_yields_training_data():
    loop = ClosedLoop(_implant(), participant=SimulatedParticipant(seed=0))
    tr = loop.run_block(WebgridTask(n=8, seed=1), mode="open", seconds=15.0)
    assert loop.n_features > 0 and tr.features.shape == (750, loop.n_features)
    assert np.isfinite(tr.features).all()
    # the autopilot, not the participant, moved the cursor
    assert not np.allclose(tr.cursor_velocity, tr.intended_velocity)
    X, y, c = training_set([tr])
    assert X.shape[0] == y.shape[0] == c.shape[0] == 750 and set(np.unique(c)) <= {0, 1}
    assert tr.tx_raster is not None and tr.tx_raster.shape[0] == 750


def test_decoder_quality_feeds_back_into_the_task():
    from cortexlink.decoders import ClickDecoder, KalmanFilter

    loop = ClosedLoop(_implant(2), participant=SimulatedParticipant(seed=2))
    cal = loop.run_block(WebgridTask(n=6, seed=3), mode="open", seconds=40.0)
    X, y, c = training_set([cal])
    kf = KalmanFilter().fit(X, y)
    click = ClickDecoder().fit(X, c)
    good = loop.run_block(WebgridTask(n=6, seed=4), mode="closed", seconds=20.0, decoder=kf, click_decoder=click)
    # a decoder whose outputs point the wrong way: the same filter with its observation model negated
    bad = KalmanFilter().fit(X, -y)
    worse = loop.run_block(WebgridTask(n=6, seed=4), mode="closed", seconds=20.0, decoder=bad, click_decoder=click)
    r_good = np.corrcoef(good.decoded_velocity[:, 0], good.intended_velocity[:, 0])[0, 1]
    assert r_good > 0.3
    assert good.metrics["n_correct"] > worse.metrics["n_correct"]
    assert np.isfinite(good.decode_latency_us).all() and np.isfinite(good.loop_latency_us).all()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="mode must be one of"):
        ClosedLoop(None).run_block(WebgridTask(), mode="dream", seconds=1.0)
    with pytest.raises(ConfigError, match="mode='closed' needs an implant"):
        ClosedLoop(None).run_block(WebgridTask(), mode="closed", seconds=1.0)
    with pytest.raises(ConfigError, match="needs a fitted velocity decoder"):
        ClosedLoop(_implant()).run_block(WebgridTask(), mode="closed", seconds=1.0)
    with pytest.raises(ConfigError, match="dt_s must be a whole number of samples"):
        ClosedLoop(_implant(), dt_s=0.01234567)
    with pytest.raises(ConfigError, match="feature_kinds"):
        ClosedLoop(_implant(), feature_kinds=("lfp",))


def test_bench_closed_loop_json(tmp_path):
    from cortexlink.bench.closed_loop import run

    r = run(channels=[32], decoders=["perfect", "kalman", "refit_kalman"], seeds=[0, 1], calibration_s=20.0,
            refit_s=10.0, eval_s=10.0, grid=8, progress=False)
    json.dumps(r)
    rows = r["results"]
    assert {(x["decoder"], x["seed"]) for x in rows} == {(d, s) for d in ("perfect", "kalman", "refit_kalman")
                                                        for s in (0, 1)}
    for x in rows:
        assert {"decoder", "channels", "seed", "bps", "ntpm", "accuracy"} <= set(x) and x["channels"] == 32
    s = r["summary"]["perfect/32"]
    assert s["n_seeds"] == 2 and s["bps_min"] <= s["bps_mean"] <= s["bps_max"]
    with pytest.raises(ConfigError, match="decoders must be drawn from"):
        run(channels=[32], decoders=["lstm"], progress=False)


def test_refit_set_drops_reaction_time_after_each_new_target():
    from cortexlink.decoders import ClickDecoder, KalmanFilter
    from cortexlink.decoders.fitting import refit_set

    loop = ClosedLoop(_implant(5), participant=SimulatedParticipant(seed=5))
    cal = loop.run_block(WebgridTask(n=6, seed=5), mode="open", seconds=20.0)
    X, y, c = training_set([cal])
    tr = loop.run_block(WebgridTask(n=6, seed=6), mode="closed", seconds=10.0, decoder=KalmanFilter().fit(X, y),
                        click_decoder=ClickDecoder().fit(X, c))
    Xr, dv, cur, tgt, ont = refit_set([tr], exclude_after_target_s=0.3)
    n_targets = 1 + int(np.any(tr.target_xy[1:] != tr.target_xy[:-1], axis=1).sum())
    # 0.3 s = 15 bins after each target onset (onsets closer than that overlap)
    assert n_targets >= 2 and tr.n_bins - 15 * n_targets <= Xr.shape[0] <= tr.n_bins - 15
    assert len(dv) == len(cur) == len(tgt) == len(ont) == Xr.shape[0]
    all_ = refit_set([tr], exclude_after_target_s=0.0)[0]
    assert all_.shape[0] == tr.n_bins


def test_halt_holds_the_cursor_at_once_even_with_smoothing():
    from cortexlink.tasks.cursor import CursorEffector
    from cortexlink.tasks.loop import ClosedLoop
    from cortexlink.tasks.webgrid import WebgridTask

    loop = ClosedLoop(None, effector=CursorEffector(smoothing=0.8))
    run = loop.begin_block(WebgridTask(n=6, seed=0), mode="perfect", seconds=5.0)
    for _ in range(40):
        loop.step_bin(run)
    moving = loop.step_bin(run)["cursor_xy"]
    held = [loop.step_bin(run, halt=True) for _ in range(5)]
    assert all(np.array_equal(h["cursor_xy"], moving) for h in held)
    assert not any(h["clicked"] for h in held)
    after = loop.step_bin(run, override_velocity=(0.5, 0.0))
    assert after["cursor_xy"][0] > moving[0] or moving[0] >= 0.99
    loop.end_block(run)
