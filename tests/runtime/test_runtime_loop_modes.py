"""The neural closed loop on the runtime graph: modes, feedback from decoder quality, bad arguments,
ReFIT data, halting, benchmark JSON (what tests/tasks/test_loop.py checked of the in-thread loop)."""

import json

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.decoders.fitting import refit_set, training_set
from cortexlink.runtime.session import run_session


def _session(blocks, decoder="kalman", seed=2, n_channels=48):
    return {"name": "modes", "seed": seed, "implant": {"preset": "default", "n_channels": n_channels},
            "decoder": {"kind": decoder, "params": {}}, "blocks": blocks}


def test_perfect_mode_cursor_follows_intent_without_an_implant():
    r = run_session(_session([{"kind": "evaluation", "task": "webgrid", "seconds": 10.0, "task_params": {"n": 10}}],
                             decoder="perfect", seed=0), progress=False)
    (tr,) = r["traces"]
    assert tr.mode == "perfect" and tr.n_bins == 500 and tr.features is None
    np.testing.assert_array_equal(tr.cursor_velocity, tr.intended_velocity)
    assert tr.metrics["n_correct"] > 5 and tr.metrics["bps"] > 0


def test_open_loop_trains_and_decoder_quality_feeds_back_into_the_task():
    r = run_session(_session([
        {"kind": "calibration", "task": "webgrid", "seconds": 40.0, "task_params": {"n": 6}}, {"kind": "fit"},
        {"kind": "evaluation", "task": "webgrid", "seconds": 20.0, "task_params": {"n": 6}}]), progress=False)
    cal, good = r["traces"]
    # open loop: the autopilot, not the participant, moved the cursor; its bins are training data
    assert cal.mode == "open" and cal.features.shape == (2000, cal.features.shape[1]) and np.isfinite(cal.features).all()
    assert not np.allclose(cal.cursor_velocity, cal.intended_velocity)
    X, y, c = training_set([cal])
    assert X.shape[0] == y.shape[0] == c.shape[0] == 2000 and set(np.unique(c)) <= {0, 1}
    assert cal.tx_raster is not None and cal.tx_raster.shape[0] == 2000
    # closed loop: the decoded velocity follows the intent, and the task goes well
    assert good.mode == "closed"
    ok = np.all(np.isfinite(good.decoded_velocity), axis=1)
    r_good = np.corrcoef(good.decoded_velocity[ok, 0], good.intended_velocity[ok, 0])[0, 1]
    assert r_good > 0.3
    assert good.metrics["n_correct"] > 0
    assert np.isfinite(good.decode_latency_us[ok]).all() and np.isfinite(good.loop_latency_us).any()
    # ReFIT data leave out the reaction time after each new target
    Xr, dv, cur, tgt, ont = refit_set([good], exclude_after_target_s=0.3)
    n_targets = 1 + int(np.any(good.target_xy[1:] != good.target_xy[:-1], axis=1).sum())
    n_ok = int(ok.sum())
    assert n_targets >= 2 and n_ok - 15 * n_targets <= Xr.shape[0] <= n_ok - 15
    assert len(dv) == len(cur) == len(tgt) == len(ont) == Xr.shape[0]
    assert refit_set([good], exclude_after_target_s=0.0)[0].shape[0] == n_ok


def test_a_wrong_way_decoder_does_worse_than_the_fitted_one(tmp_path):
    """Decoder quality feeds back: the same filter fitted on negated velocities, loaded by the
    decoder node, gets fewer Webgrid selections right than the fitted one (an interactive cursor,
    started by an operator command, runs its block)."""
    import threading
    import time

    from cortexlink.decoders import KalmanFilter
    from cortexlink.runtime.runner import GraphRunner
    from cortexlink.runtime.session import session_to_graph

    cal = _session([{"kind": "calibration", "task": "webgrid", "seconds": 40.0, "task_params": {"n": 6}},
                    {"kind": "fit"}, {"kind": "evaluation", "task": "webgrid", "seconds": 20.0, "task_params": {"n": 6}}])
    r = run_session(cal, progress=False)
    X, y, _ = training_set([r["traces"][0]])
    bad = KalmanFilter().fit(X, -y, feature_names=r["decoder"].feature_names_)
    path = bad.save(tmp_path / "bad.npz")
    g = session_to_graph(cal)
    g["nodes"]["decoder"]["params"].update(path=str(path), click=False)
    g["nodes"]["cursor"]["params"]["blocks"] = []
    g["nodes"]["cursor"]["inputs"]["operator"] = "operator.commands"
    runner = GraphRunner(g)
    th = threading.Thread(target=runner.run, daemon=True)
    th.start()
    try:
        assert runner.started.wait(60)
        cursor = runner.by_name["cursor"].node
        t_end = time.monotonic() + 60
        while cursor.warm and time.monotonic() < t_end:
            time.sleep(0.01)
        rep = runner.wait_reply(runner.send_command({"cmd": "start", "task": "webgrid", "seconds": 20.0,
                                                     "task_params": {"n": 6}}), 30)
        assert rep["ok"] and rep["result"]["mode"] == "closed", rep
        while cursor.last_block is None and time.monotonic() < t_end + 120:
            time.sleep(0.01)
        worse = cursor.last_block
    finally:
        runner.request_stop("test done")
        th.join(60)
    assert worse is not None and worse["n_bins"] == 1000
    assert worse["metrics"]["n_correct"] < r["traces"][1].metrics["n_correct"], worse["metrics"]


def test_bad_arguments():
    from cortexlink.runtime.graph import load_graph
    from cortexlink.runtime.session import load_session, session_to_graph

    blocks = [{"kind": "evaluation", "task": "webgrid", "seconds": 1.0}]
    ok = [{"kind": "calibration", "task": "webgrid", "seconds": 1.0}, {"kind": "fit"}, *blocks]
    with pytest.raises(ConfigError, match="must be a whole number .* of samples"):
        load_graph(session_to_graph({**_session(ok), "loop": {"dt_s": 0.01234567}}))
    with pytest.raises(ConfigError, match="feature_kinds"):
        load_session({**_session(ok), "loop": {"dt_s": 0.02, "feature_kinds": ["lfp"]}})
    with pytest.raises(ConfigError, match="no 'fit' block comes before it"):
        load_session(_session(blocks))
    with pytest.raises(ConfigError, match="decoder.kind must be one of"):
        load_session(_session(ok, decoder="dream"))
    s = _session(ok)
    for key, value, msg in (("labels", "truth", "session.decoder.labels must be one of"),
                            ("label_lag_s", 2.0, r"session.decoder.label_lag_s must be in \[0.0, 1.0\]"),
                            ("speed_gain", -1, "speed_gain must be null, 'auto' or a speed")):
        with pytest.raises(ConfigError, match=msg):
            load_session({**s, "decoder": {**s["decoder"], key: value}})
    with pytest.raises(ConfigError, match="session.loop.autopilot_speed must be > 0"):
        load_session({**s, "loop": {"autopilot_speed": 0}})
    with pytest.raises(ConfigError, match=r"session.click_decoder.freeze_proba must be in \[0.0, 1.0\]"):
        load_session({**s, "click_decoder": {"freeze_proba": 1.5}})
    g = session_to_graph({**s, "decoder": {**s["decoder"], "labels": "cursor", "speed_gain": 0.4},
                          "loop": {"autopilot_speed": 1.5}})
    assert g["nodes"]["decoder"]["params"]["labels"] == "cursor" and g["nodes"]["decoder"]["params"]["speed_gain"] == 0.4
    assert g["nodes"]["cursor"]["params"]["autopilot_speed"] == 1.5


def test_halt_holds_the_cursor_at_once_even_with_smoothing():
    from cortexlink.tasks.cursor import CursorEffector, cursor_command

    eff = CursorEffector(dt_s=0.02, smoothing=0.8)
    for _ in range(40):
        xy, _, _ = cursor_command(eff, "perfect", intended_velocity=(0.5, 0.2))
    moving = np.array(xy)
    held = [cursor_command(eff, "perfect", intended_velocity=(0.5, 0.2), click_intent=1.0, halt=True) for _ in range(5)]
    assert all(np.array_equal(h[0], moving) for h in held) and not any(h[1] for h in held)
    after = cursor_command(eff, "perfect", intended_velocity=(0.0, 0.0), override_velocity=(0.5, 0.0))
    assert after[0][0] > moving[0] or moving[0] >= 0.99


def test_bench_closed_loop_json():
    from cortexlink.bench.closed_loop import run

    r = run(channels=[32], decoders=["perfect", "kalman", "refit_kalman"], seeds=[0, 1], calibration_s=20.0,
            refit_s=10.0, eval_s=10.0, grid=8, progress=False)
    json.dumps(r)
    rows = r["results"]
    assert {(x["decoder"], x["seed"]) for x in rows} == {(d, s) for d in ("perfect", "kalman", "refit_kalman")
                                                        for s in (0, 1)}
    for x in rows:
        assert {"decoder", "channels", "grid", "labels", "variant", "seed", "bps", "ntpm", "accuracy",
                "control"} <= set(x) and x["channels"] == 32 and x["grid"] == 8 and x["variant"] == "default"
        assert x["labels"] == ("none" if x["decoder"] == "perfect" else "target")
        assert {"decoded_speed_at_rest", "drift_over_delay_halfwidths", "click_detected_fraction"} <= set(x["control"])
    s = r["summary"]["perfect/32/8/default"]
    assert s["n_seeds"] == 2 and s["bps_min"] <= s["bps_mean"] <= s["bps_max"]
    with pytest.raises(ConfigError, match="decoders must be drawn from"):
        run(channels=[32], decoders=["lstm"], progress=False)
    with pytest.raises(ConfigError, match="variants must be drawn from"):
        run(channels=[32], decoders=["kalman"], variants=["faster"], progress=False)


def test_bench_closed_loop_variants_change_one_thing_each():
    from cortexlink.bench.closed_loop import SENSITIVITY, VARIANTS, session
    from cortexlink.sim.participant import ParticipantConfig

    base = session("kalman", 96, 0)
    assert base["decoder"] == {"kind": "kalman"} and base["participant"] == {} and base["loop"] == {}
    assert session("kalman", 96, 0, variant="oracle_labels")["decoder"]["labels"] == "intent"
    assert session("kalman", 96, 0, variant="no_speed_gain")["decoder"]["speed_gain"] is None
    d = ParticipantConfig().visual_delay_s
    assert session("kalman", 96, 0, variant="delay+20")["participant"] == {"visual_delay_s": pytest.approx(1.2 * d)}
    assert session("perfect", 96, 0, variant="no_speed_gain")["decoder"] == {"kind": "perfect"}   # nothing to fit
    assert set(SENSITIVITY) <= set(VARIANTS)
    assert session("kalman", 256, 0)["implant"] == {"preset": "cortex", "n_channels": 256}
    assert session("kalman", 96, 0, preset=None)["implant"] == {"preset": "monkey_m1_utah96"}
