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


def _slow_labels(n=1500, seed=0):
    """Smooth labels (an autopilot's kinematics) and features that encode them with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.02
    y = np.stack([np.sin(2 * np.pi * 0.3 * t), np.cos(2 * np.pi * 0.2 * t)], axis=1)
    X = y @ rng.normal(size=(2, 40)) + rng.normal(size=(n, 40))
    return X, y


def test_velocity_prior_sets_the_dynamics_and_not_the_observation_model():
    X, y = _slow_labels()
    kf = KalmanFilter(velocity_tau_bins=3.0).fit(X, y)
    a = np.exp(-1.0 / 3.0)
    np.testing.assert_allclose(kf.A_, a * np.eye(2))
    np.testing.assert_allclose(kf.W_, (1 - a * a) * np.cov(y, rowvar=False, bias=True), rtol=1e-6)
    np.testing.assert_allclose(kf.b_, (1 - a) * y.mean(axis=0))
    assert kf.noise_scale_scores_ is None and kf.process_noise_scale_ == 1.0   # "auto" is 1 with a prior
    fitted = KalmanFilter(process_noise_scale=1.0).fit(X, y)
    np.testing.assert_allclose(kf.C_, fitted.C_)                                 # same observation model
    # fitted to smooth labels the filter leans on its dynamics; the short prior trusts the features
    assert np.abs(np.linalg.eigvals(fitted.M_)).max() > np.abs(np.linalg.eigvals(kf.M_)).max() + 0.2
    # a step in the features: the short prior reaches half the new value sooner
    step = np.vstack([np.repeat(X.mean(0, keepdims=True), 20, 0),
                      np.repeat((np.array([[1.0, 0.0]]) @ np.linalg.lstsq(y, X - X.mean(0), rcond=None)[0])
                                + X.mean(0), 40, 0)])
    def t_half(dec):
        out = dec.predict(step)[20:, 0]
        return int(np.argmax(out >= 0.5 * out[-1]))
    assert t_half(kf) < t_half(fitted)
    r = ReFITKalmanFilter(velocity_tau_bins=2.0).fit(X, y)
    np.testing.assert_allclose(r.A_, np.exp(-0.5) * np.eye(2))


@pytest.mark.parametrize("bad", [0, -1.0, "slow", float("nan")])
def test_velocity_prior_bad_values_are_refused(bad):
    from cortexlink import ConfigError

    X, y = _slow_labels(200)
    with pytest.raises(ConfigError, match="velocity_tau_bins"):
        KalmanFilter(velocity_tau_bins=bad).fit(X, y)


def test_velocity_prior_survives_save_and_load(tmp_path):
    from cortexlink.decoders import load

    X, y = _slow_labels(300)
    kf = KalmanFilter(velocity_tau_bins=4.0).fit(X, y)
    back = load(kf.save(tmp_path / "kf.npz"))
    assert back.velocity_tau_bins == 4.0
    np.testing.assert_allclose(back.predict(X), kf.predict(X))


def test_refit_with_the_calibration_bins_fits_both_together(linear_data):
    Xtr, ytr, _, _ = linear_data
    rng = np.random.default_rng(5)
    cl = slice(0, 300)
    decoded = ytr[cl] + 0.1 * rng.standard_normal((300, 2))
    cursor = rng.uniform(-1, 1, (300, 2))
    target = cursor + decoded
    on = np.zeros(300, bool)
    alone = ReFITKalmanFilter(process_noise_scale=1.0).fit(Xtr[300:], ytr[300:])
    both = ReFITKalmanFilter(process_noise_scale=1.0).fit(Xtr[300:], ytr[300:])
    alone.refit(Xtr[cl], decoded, cursor, target, on)
    both.refit(Xtr[cl], decoded, cursor, target, on, X_prior=Xtr[300:], y_prior=ytr[300:])
    # the observation model is the one fitted on the stacked bins: the calibration's plus the closed loop's
    ref = KalmanFilter(process_noise_scale=1.0).fit(Xtr[300:], ytr[300:])
    ref._fit_observation(np.vstack([Xtr[300:], Xtr[cl]]), np.vstack([ytr[300:], intended_velocity(decoded, cursor, target, on)]))
    np.testing.assert_allclose(both.C_, ref.C_, rtol=1e-9, atol=1e-12)
    assert not np.allclose(alone.C_, both.C_)
    with pytest.raises(ValidationError, match="X_prior and y_prior go together"):
        both.refit(Xtr[cl], decoded, cursor, target, on, X_prior=Xtr[300:])
    with pytest.raises(ValidationError, match=r"X_prior / y_prior must be \(n, 20\) / \(n, 2\)"):
        both.refit(Xtr[cl], decoded, cursor, target, on, X_prior=Xtr[300:, :5], y_prior=ytr[300:])
    with pytest.raises(ValidationError, match="X_prior / y_prior must be"):                  # transposed labels
        both.refit(Xtr[cl], decoded, cursor, target, on, X_prior=Xtr[:3], y_prior=ytr[:3].T)
    bad = Xtr[300:].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValidationError, match="X_prior"):
        both.refit(Xtr[cl], decoded, cursor, target, on, X_prior=bad, y_prior=ytr[300:])
