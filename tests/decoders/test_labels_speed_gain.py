"""Lab calibration labels (direction to target, cursor velocity), their lag, and the speed gain."""

from types import SimpleNamespace

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.decoders.fitting import fit_decoders, lagged_training_set
from cortexlink.decoders.labels import best_label_lag, label_velocity
from cortexlink.decoders.speed_gain import SpeedGain, auto_speed_gain, check_speed_gain, rest_speed


def _block(n=400, lag=6, seed=0, noise=0.3):
    """A calibration block whose features encode the cursor velocity ``lag`` bins late."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.02
    cv = np.stack([np.sin(2 * np.pi * 0.7 * t), np.cos(2 * np.pi * 0.45 * t)], axis=1)
    cv[(t % 2.0) > 1.6] = 0.0                                # still spells (the cursor waits for a click)
    late = np.vstack([np.zeros((lag, 2)), cv[:n - lag]])
    W = rng.normal(size=(2, 30))
    X = late @ W + noise * rng.normal(size=(n, 30))
    xy = np.cumsum(cv, axis=0) * 0.02
    return SimpleNamespace(features=X.astype(np.float32), intended_velocity=late, cursor_velocity=cv,
                           cursor_xy=xy, target_xy=xy + cv * 0.5, click_intent=((t % 2.0) > 1.8).astype(float),
                           dt_s=0.02)


def test_the_decoder_node_offers_the_labels_the_fit_knows():
    from cortexlink.decoders.labels import LABELS
    from cortexlink.runtime.nodes.decoder import DecoderNode

    assert DecoderNode.PARAMS["labels"].choices == LABELS and DecoderNode.PARAMS["labels"].default == LABELS[0]


def test_labels_from_the_cursor_record():
    b = _block()
    np.testing.assert_array_equal(label_velocity(b, "cursor"), b.cursor_velocity)
    np.testing.assert_array_equal(label_velocity(b, "intent"), b.intended_velocity)
    tgt = label_velocity(b, "target")
    # the direction to the target at the cursor's speed; zero where the cursor is still
    np.testing.assert_allclose(np.hypot(*tgt.T), np.hypot(*b.cursor_velocity.T), atol=1e-12)
    d = b.target_xy - b.cursor_xy
    moving = np.hypot(*d.T) > 1e-6
    cos = np.sum(tgt[moving] * d[moving], 1) / (np.hypot(*tgt[moving].T) * np.hypot(*d[moving].T) + 1e-300)
    assert np.all(cos[np.hypot(*tgt[moving].T) > 0] > 0.999)
    no_kin = SimpleNamespace(features=b.features, intended_velocity=b.intended_velocity, click_intent=b.click_intent)
    with pytest.raises(ConfigError, match="cursor kinematics"):
        label_velocity(no_kin, "target")
    with pytest.raises(ConfigError, match="labels"):
        label_velocity(b, "oracle")


def test_the_label_lag_is_found_from_the_data_and_drops_that_many_bins():
    b = _block(lag=6)
    lag, r2 = best_label_lag([b.features], [b.cursor_velocity], 0.02)
    assert lag == 6 and r2[6] > r2[0] + 0.2
    X, y, c, k = lagged_training_set([b], "cursor", "auto")
    assert k == 6 and len(X) == len(b.features) - 6
    np.testing.assert_array_equal(y, b.cursor_velocity[:-6])
    X0, _, _, k0 = lagged_training_set([b], "intent", 0)
    assert k0 == 0 and len(X0) == len(b.features)
    with pytest.raises(ConfigError, match="lag_bins"):
        lagged_training_set([b], "cursor", -1)


def test_speed_gain_shrinks_slow_velocities_and_keeps_fast_ones():
    g = SpeedGain(0.2)
    np.testing.assert_allclose(g(np.array([0.2, 0.0])), [0.1, 0.0])                  # half at s0
    fast, slow = g(np.array([0.0, 2.0])), g(np.array([0.02, 0.0]))
    assert fast[1] == pytest.approx(2.0 * 4 / 4.04) and slow[0] == pytest.approx(0.02 * 0.0004 / 0.0404)
    np.testing.assert_array_equal(g(np.zeros(2)), np.zeros(2))
    assert g(np.ones((5, 2))).shape == (5, 2)
    for bad in (0.0, -1.0, float("nan"), True, "fast"):
        with pytest.raises(ConfigError, match="s0_units_s"):
            SpeedGain(bad)
    assert check_speed_gain("p", None) is None and check_speed_gain("p", "auto") == "auto"
    assert check_speed_gain("p", 1) == 1.0
    assert SpeedGain.from_dict(g.to_dict()) == g and SpeedGain.from_dict(None) is None
    with pytest.raises(ConfigError, match="p must be null, 'auto' or a speed"):
        check_speed_gain("p", "on")


def test_auto_speed_gain_is_set_from_the_held_out_rest_noise():
    from cortexlink.decoders import WienerFilter

    quiet, noisy = _block(n=1500, lag=0, noise=0.1), _block(n=1500, lag=0, noise=1.5)
    r_q = rest_speed(lambda: WienerFilter(n_lags=1), quiet.features.astype(float), quiet.cursor_velocity)
    r_n = rest_speed(lambda: WienerFilter(n_lags=1), noisy.features.astype(float), noisy.cursor_velocity)
    assert 0 < r_q < r_n                                    # more noise, more decoded speed at rest
    g = auto_speed_gain(lambda: WienerFilter(n_lags=1), noisy.features.astype(float), noisy.cursor_velocity, k=2.0)
    assert g.rest_speed_units_s == pytest.approx(r_n) and g.s0_units_s == pytest.approx(2 * r_n)
    assert rest_speed(lambda: WienerFilter(), quiet.features[:40].astype(float), quiet.cursor_velocity[:40]) is None
    res = fit_decoders("kalman", {}, [noisy], click=False, labels="target", lag_bins="auto", speed_gain="auto")
    assert res.speed_gain is not None and res.info["speed_gain"] == res.speed_gain.to_dict()
    assert res.info["labels"] == "target" and res.info["label_lag_bins"] == 0
    assert fit_decoders("kalman", {}, [noisy], click=False, speed_gain=None).speed_gain is None
    assert fit_decoders("kalman", {}, [noisy], click=False, speed_gain=0.3).speed_gain.s0_units_s == 0.3


def test_output_stage_gains_then_freezes_while_a_click_builds_up():
    from cortexlink.decoders import ClickStep
    from cortexlink.decoders.speed_gain import output_stage

    g = SpeedGain(0.2)
    v, frozen = output_stage([0.2, 0.0], g)
    np.testing.assert_allclose(v, [0.1, 0.0])
    assert not frozen
    rest = ClickStep(state=0, proba=0.1, onset=False, valid=True)
    building = ClickStep(state=0, proba=0.4, onset=False, valid=True)
    clicking = ClickStep(state=1, proba=0.2, onset=False, valid=True)
    assert not output_stage([1.0, 0.0], None, rest, 0.3)[1]
    for cs in (building, clicking):
        v, frozen = output_stage([1.0, 0.0], g, cs, 0.3)
        assert frozen and np.array_equal(v, np.zeros(2))
    assert not output_stage([1.0, 0.0], None, clicking, None)[1]          # freeze off


def test_fit_decoders_turns_the_velocity_prior_time_into_bins():
    b = _block()
    res = fit_decoders("kalman", {}, [b], click=False, labels="cursor", velocity_tau_s=0.06)
    assert res.decoder.velocity_tau_bins == pytest.approx(3.0) and res.info["velocity_tau_bins"] == pytest.approx(3.0)
    np.testing.assert_allclose(res.decoder.A_, np.exp(-1 / 3.0) * np.eye(2))
    # the decoder's own params win; other kinds and None leave the dynamics fitted
    res = fit_decoders("refit_kalman", {"velocity_tau_bins": 5.0}, [b], click=False, labels="cursor",
                       velocity_tau_s=0.06)
    assert res.decoder.velocity_tau_bins == 5.0
    assert fit_decoders("kalman", {}, [b], click=False, labels="cursor").decoder.velocity_tau_bins is None
    assert "velocity_tau_bins" not in fit_decoders("wiener", {}, [b], click=False, labels="cursor",
                                                   velocity_tau_s=0.06).decoder.get_params()
    for bad in (-0.1, True, float("inf")):
        with pytest.raises(ConfigError, match="velocity_tau_s"):
            fit_decoders("kalman", {}, [b], click=False, labels="cursor", velocity_tau_s=bad)


def test_session_checks_the_velocity_prior_and_the_bench_ablates_it():
    from cortexlink.bench.closed_loop import session
    from cortexlink.runtime.nodes.decoder import VELOCITY_TAU_S, DecoderNode
    from cortexlink.runtime.session import load_session

    assert DecoderNode.PARAMS["velocity_tau_s"].default == VELOCITY_TAU_S
    s = session("kalman", 96, 0, variant="fitted_dynamics")
    assert s["decoder"]["velocity_tau_s"] is None
    assert "velocity_tau_s" not in session("kalman", 96, 0)["decoder"]        # the node's default
    bad = session("kalman", 96, 0)
    bad["decoder"]["velocity_tau_s"] = -1
    with pytest.raises(ConfigError, match="session.decoder.velocity_tau_s"):
        load_session(bad)


def test_refit_with_calibration_is_a_checked_session_option_and_an_ablation():
    from cortexlink.bench.closed_loop import session
    from cortexlink.decoders.fitting import refit_decoder
    from cortexlink.runtime.session import load_session

    s = session("refit_kalman", 96, 0, variant="refit_closed_loop_only")
    assert s["decoder"]["refit_with_calibration"] is False
    bad = session("refit_kalman", 96, 0)
    bad["decoder"]["refit_with_calibration"] = "sometimes"
    with pytest.raises(ConfigError, match="session.decoder.refit_with_calibration"):
        load_session(bad)
    # a refit with the calibration's training set says how many calibration bins it used
    b = _block()
    res = fit_decoders("refit_kalman", {}, [b], click=False, labels="cursor")
    X, y, _, _ = lagged_training_set([b], "cursor", res.info["label_lag_bins"])
    cl = SimpleNamespace(features=b.features, decoded_velocity=b.cursor_velocity, cursor_xy=b.cursor_xy,
                         target_xy=b.target_xy, on_target=np.zeros(len(b.features), bool), dt_s=0.02)
    assert refit_decoder(res.decoder, [cl], prior=(X, y)).info["n_prior_bins"] == len(X) > 0
    assert refit_decoder(res.decoder, [cl]).info["n_prior_bins"] == 0


def _closed_loop_block(lag: int, n: int = 3000, seed: int = 0):
    """A synthetic closed-loop block whose features encode the intention toward the target from the
    cursor position ``lag`` bins earlier (the participant's delayed view), not the current one."""
    from cortexlink.decoders.kalman import intended_velocity

    rng = np.random.default_rng(seed)
    tgt = np.repeat(rng.uniform(-1, 1, (n // 100, 2)), 100, axis=0)[:n]
    cur = np.zeros((n, 2))
    v = np.zeros((n, 2))
    for t in range(1, n):                       # the cursor chases the target from its delayed view
        seen = cur[max(t - 1 - lag, 0)]
        d = tgt[t] - seen
        v[t] = 1.5 * d / max(np.linalg.norm(d), 0.05) + rng.normal(0, 0.3, 2)
        cur[t] = cur[t - 1] + 0.02 * v[t]
    on = np.linalg.norm(tgt - cur, axis=1) < 0.03
    idx = np.maximum(np.arange(n) - lag, 0)
    intent = intended_velocity(v, cur[idx], tgt, on[idx])
    W = rng.normal(0, 1, (2, 40))
    X = intent @ W + rng.normal(0, 0.5, (n, 40))
    return SimpleNamespace(features=X, decoded_velocity=v, cursor_xy=cur, target_xy=tgt, on_target=on, dt_s=0.02)


def test_refit_set_takes_the_cursor_from_lag_bins_earlier_and_drops_the_first():
    from cortexlink.decoders.fitting import refit_set

    b = _closed_loop_block(0, n=400)             # a new target every 100 bins
    X0, _, c0, _, _ = refit_set([b], exclude_after_target_s=0.0)
    assert len(X0) == 400
    for lag, skip in ((5, None), (5, 9), (20, None)):
        X, _, c, t, _ = refit_set([b], exclude_after_target_s=0.0, lag_bins=lag, skip_bins=skip)
        keep = np.array([i for i in range(400) if i % 100 >= (lag if skip is None else skip)])
        assert len(X) == len(keep)
        np.testing.assert_array_equal(X, b.features[keep])
        np.testing.assert_array_equal(c, b.cursor_xy[keep - lag])      # seen lag bins earlier
        np.testing.assert_array_equal(t, b.target_xy[keep])            # ... for the same target
        assert np.all(b.target_xy[keep - lag] == t)
    with pytest.raises(ConfigError, match="skip_bins"):
        refit_set([b], lag_bins=5, skip_bins=2)


@pytest.mark.parametrize("lag", [0, 4, 9])
def test_the_intention_lag_is_found_from_closed_loop_data(lag):
    from cortexlink.decoders.fitting import refit_intent_lag

    found, r2 = refit_intent_lag([_closed_loop_block(lag, seed=lag)])
    assert found == lag and len(r2) == 21 and r2[lag] == max(r2)


def test_refit_intent_lag_is_a_checked_option_and_an_ablation():
    from cortexlink.bench.closed_loop import session
    from cortexlink.decoders.fitting import check_intent_lag, fit_decoders, refit_decoder
    from cortexlink.runtime.nodes.decoder import DecoderNode
    from cortexlink.runtime.session import load_session

    assert DecoderNode.PARAMS["refit_intent_lag_s"].default == "auto"
    assert session("refit_kalman", 96, 0, variant="refit_current_cursor")["decoder"]["refit_intent_lag_s"] is None
    for bad_value in (-0.1, 2.0, "soon", True):
        bad = session("refit_kalman", 96, 0)
        bad["decoder"]["refit_intent_lag_s"] = bad_value
        with pytest.raises(ConfigError, match="session.decoder.refit_intent_lag_s"):
            load_session(bad)
    assert check_intent_lag("x", 0.16) == 0.16 and check_intent_lag("x", None) is None
    b = _closed_loop_block(6, n=1500)
    res = fit_decoders("refit_kalman", {}, [SimpleNamespace(
        features=b.features, cursor_velocity=b.decoded_velocity, intent_velocity=b.decoded_velocity,
        cursor_xy=b.cursor_xy, target_xy=b.target_xy, click_intent=np.zeros(1500, bool), dt_s=0.02)],
        click=False, labels="cursor")
    assert refit_decoder(res.decoder, [b], intent_lag="auto").info["intent_lag_bins"] == 6
    assert refit_decoder(res.decoder, [b], intent_lag=3).info["intent_lag_bins"] == 3
    with pytest.raises(ConfigError, match="intent_lag"):
        refit_decoder(res.decoder, [b], intent_lag=-1)
