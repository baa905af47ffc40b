"""Every bad input: exception type and message; degenerate data give finite weights."""

import numpy as np
import pytest
import sklearn.exceptions
from sklearn.base import clone

from cortexlink import ConfigError, NotFittedError, ValidationError
from cortexlink.decoders import (ClickDecoder, FeaturePreprocessor, GRUDecoder, KalmanFilter,
                                 ReFITKalmanFilter, WienerFilter)

REGRESSORS = [WienerFilter(n_lags=3), KalmanFilter(), KalmanFilter(steady_state=False),
              ReFITKalmanFilter(), GRUDecoder(hidden_size=8, max_epochs=2)]
ALL = REGRESSORS + [ClickDecoder(), FeaturePreprocessor()]


def _fit(est, X, y):
    if isinstance(est, ClickDecoder):
        y = (np.asarray(y)[:, 0] > 0).astype(int)
    if isinstance(est, FeaturePreprocessor):
        return est.fit(X)
    return est.fit(X, y)


def _out(est, X):
    return est.transform(X) if isinstance(est, FeaturePreprocessor) else est.predict(X)


@pytest.mark.parametrize("est", ALL, ids=repr)
def test_nan_in_fit_is_named(est, linear_data):
    est = clone(est)
    X, y = linear_data[0].copy(), linear_data[1]
    X[7, 2] = np.nan
    with pytest.raises(ValidationError, match=r"X must hold only finite values; got 1 NaN/Inf \(first in row 7\)"):
        _fit(est, X, y)


@pytest.mark.parametrize("est", REGRESSORS, ids=repr)
def test_nan_in_target_is_named(est, linear_data):
    est = clone(est)
    X, y = linear_data[0], linear_data[1].copy()
    y[3, 1] = np.inf
    with pytest.raises(ValidationError, match=r"y must hold only finite values"):
        est.fit(X, y)


@pytest.mark.parametrize("est", REGRESSORS + [ClickDecoder()], ids=repr)
def test_too_little_data(est):
    est = clone(est)
    X = np.ones((1, 4))
    with pytest.raises(ValidationError, match=r"needs at least \d+ bins; got n_samples=1"):
        est.fit(X, np.zeros((1, 2)) if not isinstance(est, ClickDecoder) else [1])


@pytest.mark.parametrize("est", ALL, ids=repr)
def test_constant_and_collinear_features_give_finite_weights(est, linear_data):
    est = clone(est)
    X, y, Xte, _ = linear_data
    X = np.column_stack([X, np.full(len(X), 4.0), X[:, 0], 2 * X[:, 1] - X[:, 2], np.zeros(len(X))])
    Xte = np.column_stack([Xte, np.full(len(Xte), 4.0), Xte[:, 0], 2 * Xte[:, 1] - Xte[:, 2],
                           np.zeros(len(Xte))])
    _fit(est, X, y)
    for name, value in vars(est).items():
        if name.endswith("_") and isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name
    out = _out(est, Xte)
    assert np.all(np.isfinite(out))
    if isinstance(est, (WienerFilter, KalmanFilter)):
        r2 = 1 - np.sum((linear_data[3] - out) ** 2) / np.sum((linear_data[3] - linear_data[3].mean(0)) ** 2)
        assert r2 > 0.8


def test_all_features_constant_gives_finite_output():
    X = np.ones((50, 5))
    y = np.random.default_rng(0).standard_normal((50, 2))
    out = WienerFilter().fit(X, y).predict(X)
    np.testing.assert_allclose(out, np.broadcast_to(y.mean(0), out.shape), atol=1e-9)
    for est in (KalmanFilter(), KalmanFilter(steady_state=False), GRUDecoder(hidden_size=4, max_epochs=1)):
        assert np.all(np.isfinite(est.fit(X, y).predict(X)))


@pytest.mark.parametrize("est", ALL, ids=repr)
def test_unfitted_raises_not_fitted(est):
    est = clone(est)
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        _out(est, np.ones((3, 4)))
    with pytest.raises(sklearn.exceptions.NotFittedError):
        est.reset_state()


@pytest.mark.parametrize("est", ALL, ids=repr)
def test_wrong_feature_count_in_step_and_predict(est, linear_data):
    est = clone(est)
    _fit(est, linear_data[0], linear_data[1])
    with pytest.raises(ValidationError, match=r"X has 3 features, but \w+ is expecting 20 features as input "
                                              r"\(expected 20 features per bin, received 3\)"):
        _out(est, np.ones((5, 3)))
    with pytest.raises(ValidationError, match=r"expected 20 features per bin, received 3"):
        est.step(np.ones(3))
    with pytest.raises(ValidationError, match=r"x must be one bin of shape \(20,\); got \(2, 20\)"):
        est.step(np.ones((2, 20)))


@pytest.mark.parametrize("est, match", [
    (WienerFilter(n_lags=0), "n_lags must be an integer >= 1; got 0"),
    (WienerFilter(alpha=-1.0), "alpha must be >= 0.0; got -1.0"),
    (WienerFilter(alpha="auto"), "alpha must be a number >= 0 or 'cv'; got 'auto'"),
    (WienerFilter(cv=1), "cv must be an integer >= 2; got 1"),
    (WienerFilter(alphas=[]), "alphas must hold at least one value"),
    (KalmanFilter(obs_shrinkage=1.5), r"obs_shrinkage must be <= 1.0; got 1.5"),
    (KalmanFilter(obs_shrinkage="lw"), "obs_shrinkage must be a number in \\[0, 1\\] or 'auto'"),
    (KalmanFilter(process_noise_scale=0), "process_noise_scale must be > 0.0; got 0"),
    (GRUDecoder(hidden_size=0), "hidden_size must be an integer >= 1; got 0"),
    (GRUDecoder(dropout=1.0), "dropout must be <= 0.999; got 1.0"),
    (GRUDecoder(random_state=None), "random_state must be an integer"),
    (ClickDecoder(method="svm"), r"method must be one of \('lda', 'logistic'\); got 'svm'"),
    (ClickDecoder(on_threshold=0.3, off_threshold=0.6), "off_threshold must be <= on_threshold"),
    (FeaturePreprocessor(smoothing="gauss"), "smoothing must be one of"),
])
def test_bad_hyperparameters(est, match, linear_data):
    est = clone(est)
    with pytest.raises(ConfigError, match=match):
        _fit(est, linear_data[0], linear_data[1])


def test_bad_on_invalid(linear_data):
    dec = WienerFilter(n_lags=1, alpha=1.0).fit(linear_data[0], linear_data[1])
    with pytest.raises(ConfigError, match=r"on_invalid must be one of \('raise', 'hold'\); got 'skip'"):
        dec.predict(linear_data[2], on_invalid="skip")


def test_click_needs_two_classes(linear_data):
    X = linear_data[0]
    with pytest.raises(ValidationError, match="y must contain 2 classes"):
        ClickDecoder().fit(X, np.zeros(len(X)))
    with pytest.raises(ValidationError, match="Only binary classification is supported"):
        ClickDecoder().fit(X, np.arange(len(X)) % 3)


def test_feature_names_length_mismatch(linear_data):
    with pytest.raises(ValidationError, match="feature_names must have 20 entries"):
        WienerFilter().fit(linear_data[0], linear_data[1], feature_names=["a", "b"])


def test_mismatched_rows(linear_data):
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        KalmanFilter().fit(linear_data[0], linear_data[1][:-1])
