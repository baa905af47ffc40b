"""Metrics per output and blocked (time-ordered) cross-validation helpers."""

import numpy as np
import pytest

from cortexlink import ConfigError, ValidationError
from cortexlink.decoders import WienerFilter
from cortexlink.decoders.metrics import (blocked_cv_splits, cross_validate_blocked, holdout_split, mse,
                                         pearson_r, r2_score, score_all)


def test_r2_pearson_mse_per_output():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((500, 3))
    np.testing.assert_allclose(r2_score(y, y), 1.0)
    np.testing.assert_allclose(r2_score(y, np.broadcast_to(y.mean(0), y.shape)), 0.0, atol=1e-12)
    pred = np.column_stack([y[:, 0], 2 * y[:, 1] + 1, -y[:, 2]])
    np.testing.assert_allclose(pearson_r(y, pred), [1.0, 1.0, -1.0])
    np.testing.assert_allclose(mse(y, pred), np.mean((y - pred) ** 2, axis=0))
    from sklearn.metrics import r2_score as sk_r2
    np.testing.assert_allclose(r2_score(y, pred), sk_r2(y, pred, multioutput="raw_values"))
    assert r2_score(y[:, 0], y[:, 0]).shape == (1,)
    s = score_all(y, pred)
    assert set(s) == {"r2", "pearson_r", "mse"} and len(s["r2"]) == 3


def test_constant_truth_gives_nan_not_error():
    y = np.column_stack([np.ones(10), np.arange(10.0)])
    r2 = r2_score(y, y + 0.1)
    assert np.isnan(r2[0]) and np.isfinite(r2[1])


def test_metric_shape_errors():
    with pytest.raises(ValidationError, match=r"same shape.*got \(10, 2\) and \(10, 3\)"):
        r2_score(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValidationError, match="at least 2 bins"):
        mse(np.zeros((1, 2)), np.zeros((1, 2)))


def test_blocked_cv_splits_are_contiguous_and_gapped():
    splits = blocked_cv_splits(103, n_folds=5, gap=3)
    assert len(splits) == 5
    tests = np.concatenate([te for _, te in splits])
    np.testing.assert_array_equal(tests, np.arange(103))          # every bin tested once, in order
    for train, test in splits:
        assert np.all(np.diff(test) == 1)
        dist = np.min(np.abs(train[:, None] - test[None, :]))
        assert dist > 3                                          # the gap is respected
        assert np.intersect1d(train, test).size == 0


def test_blocked_cv_bad_arguments():
    with pytest.raises(ConfigError, match="n_folds must be an integer >= 2; got 1"):
        blocked_cv_splits(10, 1)
    with pytest.raises(ConfigError, match="gap must be an integer >= 0; got -1"):
        blocked_cv_splits(10, 2, -1)
    with pytest.raises(ValidationError, match="n_folds=5 blocks need at least 5 bins; got n=3"):
        blocked_cv_splits(3, 5)
    with pytest.raises(ValidationError, match="leaves no training bins"):
        blocked_cv_splits(10, 2, gap=10)


def test_holdout_and_cross_validate(linear_data):
    train, test = holdout_split(100, 0.2, gap=5)
    assert train[-1] == 74 and test[0] == 80 and test[-1] == 99
    X, y, _, _ = linear_data
    scores = cross_validate_blocked(WienerFilter(n_lags=2, alpha=1.0), X, y, n_folds=3, gap=2)
    assert scores.shape == (3, 2) and np.all(scores > 0.8)
