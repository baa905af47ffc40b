"""Kalman filter internals and ReFIT intention re-estimation."""

import numpy as np
import pytest

from cortexlink import ValidationError
from cortexlink.decoders import KalmanFilter, ReFITKalmanFilter, intended_velocity


def test_steady_state_matches_time_varying_after_transient(linear_data):
    Xtr, ytr, Xte, _ = linear_data
    ss = KalmanFilter(steady_state=True).fit(Xtr, ytr).predict(Xte)
    tv = KalmanFilter(steady_state=False).fit(Xtr, ytr).predict(Xte)
    np.testing.assert_allclose(ss[50:], tv[50:], atol=1e-6)


def test_state_is_outputs_plus_offset(linear_data):
    Xtr, ytr, _, _ = linear_data
    kf = KalmanFilter().fit(Xtr, ytr)
    assert kf.A_.shape == (2, 2) and kf.b_.shape == (2,)
    assert kf.C_.shape == (20, 2) and kf.d_.shape == (20,)
    np.testing.assert_allclose(kf.d_, 3.0, atol=0.2)          # the features' offset lives in d
    assert kf.K_.shape == (2, 20)
    Q = kf.Q_
    np.testing.assert_allclose(Q, Q.T)
    assert np.linalg.eigvalsh(Q).min() > 0


def test_intended_velocity_rotates_toward_target_keeping_speed():
    v = np.array([[3.0, 4.0], [1.0, 0.0], [2.0, 2.0], [0.0, 0.0], [1.0, 1.0]])
    cursor = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0], [0.0, 0.0], [2.0, 2.0]])
    target = np.array([[10.0, 0.0], [1.0, 5.0], [5.0, 5.0], [3.0, 3.0], [2.0, 2.0]])
    on = np.array([False, False, True, False, False])
    out = intended_velocity(v, cursor, target, on)
    np.testing.assert_allclose(out[0], [5.0, 0.0])            # speed 5, pointing +x at the target
    np.testing.assert_allclose(out[1], [0.0, 1.0])            # speed 1, pointing +y
    np.testing.assert_allclose(out[2], [0.0, 0.0])            # on target: zero
    np.testing.assert_allclose(out[3], [0.0, 0.0])            # no speed stays no speed
    np.testing.assert_allclose(out[4], [0.0, 0.0])            # at the target position: no direction
    np.testing.assert_allclose(np.linalg.norm(out[:2], axis=1), np.linalg.norm(v[:2], axis=1))
    # works in 3-D too
    out3 = intended_velocity([[0.0, 0.0, 2.0]], [[0.0, 0.0, 0.0]], [[0.0, 4.0, 0.0]], [False])
    np.testing.assert_allclose(out3, [[0.0, 2.0, 0.0]])


def test_intended_velocity_bad_input():
    with pytest.raises(ValidationError, match=r"cursor_pos must have the shape of decoded_velocity \(2, 2\)"):
        intended_velocity(np.zeros((2, 2)), np.zeros((3, 2)), np.zeros((2, 2)), [False, False])
    with pytest.raises(ValidationError, match=r"on_target must have shape \(2,\)"):
        intended_velocity(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), [False])
    with pytest.raises(ValidationError, match="target_pos must hold only finite values"):
        intended_velocity(np.zeros((2, 2)), np.zeros((2, 2)), np.array([[0, np.nan], [0, 0]]), [False, False])


def _rot(v, deg):
    a = np.deg2rad(deg)
    return v @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])


def _angle_error_deg(v_true, v_hat):
    cos = np.sum(v_true * v_hat, 1) / (np.linalg.norm(v_true, axis=1) * np.linalg.norm(v_hat, axis=1) + 1e-12)
    return np.rad2deg(np.arccos(np.clip(cos, -1, 1)))


def test_refit_recovers_intention_from_a_miscalibrated_decoder():
    rng = np.random.default_rng(3)
    n, f = 3000, 30
    # reaches: each trial a random direction held for 30 bins, speed varies smoothly
    dirs = np.repeat(rng.uniform(0, 2 * np.pi, n // 30), 30)
    speed = 1.0 + 0.5 * np.sin(np.arange(n) / 7.0)
    v = np.column_stack([np.cos(dirs), np.sin(dirs)]) * speed[:, None]
    C = rng.standard_normal((2, f))
    X = 5.0 + v @ C + 0.5 * rng.standard_normal((n, f))
    # the calibration labels were wrong by 45 degrees (e.g. an observation task mis-specified)
    dec = ReFITKalmanFilter().fit(X[:1500], _rot(v[:1500], 45.0))
    before = np.median(_angle_error_deg(v[2000:], dec.predict(X[2000:])))
    # closed-loop block: the cursor is somewhere, the target lies along the true intention
    cursor = rng.uniform(-50, 50, (500, 2))
    target = cursor + 20.0 * v[1500:2000] / np.linalg.norm(v[1500:2000], axis=1, keepdims=True)
    on = np.zeros(500, bool)
    on[::10] = True                                           # some bins on target (intent zero)
    decoded = dec.predict(X[1500:2000])
    dec.refit(X[1500:2000], decoded, cursor, target, on)
    after = np.median(_angle_error_deg(v[2000:], dec.predict(X[2000:])))
    assert dec.n_refits_ == 1
    assert before > 30.0
    assert after < 15.0


def test_refit_validates_shapes(linear_data):
    Xtr, ytr, _, _ = linear_data
    dec = ReFITKalmanFilter().fit(Xtr, ytr)
    with pytest.raises(ValidationError, match=r"decoded_velocity must have shape \(100, 2\)"):
        dec.refit(Xtr[:100], np.zeros((100, 3)), np.zeros((100, 3)), np.zeros((100, 3)), np.zeros(100, bool))
    with pytest.raises(ValidationError, match=r"expecting 20 features"):
        dec.refit(Xtr[:100, :5], np.zeros((100, 2)), np.zeros((100, 2)), np.zeros((100, 2)), np.zeros(100, bool))
