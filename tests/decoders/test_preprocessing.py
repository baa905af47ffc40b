"""FeaturePreprocessor: channel selection, bad channels, smoothing, lags, Pipeline use."""

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

from cortexlink import ChannelMap, ValidationError
from cortexlink.core.types import BinnedFeatures
from cortexlink.decoders import FeaturePreprocessor, WienerFilter

NAMES = tuple(f"ch{c:04d}/{k}" for k in ("tx", "sbp") for c in range(4))


def _bf(X):
    return BinnedFeatures(X, np.arange(len(X)) * 10, 10, 1000.0, NAMES)


def test_select_by_channel_name_and_exclude_bad():
    X = np.random.default_rng(0).standard_normal((50, 8))
    pre = FeaturePreprocessor(channels=["ch0001", "ch0002/sbp"]).fit(_bf(X))
    assert list(pre.get_feature_names_out()) == ["ch0001/tx", "ch0001/sbp", "ch0002/sbp"]
    cmap = ChannelMap.grid(4).with_bad([0, 2])
    pre = FeaturePreprocessor().fit(_bf(X), channel_map=cmap)
    assert list(pre.get_feature_names_out()) == ["ch0001/tx", "ch0003/tx", "ch0001/sbp", "ch0003/sbp"]
    # NaN on a dropped bad channel does not invalidate the bin
    Xn = X.copy()
    Xn[:, 0] = np.nan
    assert np.all(np.isfinite(pre.transform(Xn)))
    pre.reset_state()
    pre.step(Xn[0])
    assert pre.last_step_valid_


def test_selection_errors():
    X = np.ones((10, 8))
    with pytest.raises(ValidationError, match="need feature names"):
        FeaturePreprocessor(channels=["ch0001"]).fit(X)
    with pytest.raises(ValidationError, match="no feature named or on channel 'ch0042'"):
        FeaturePreprocessor(channels=["ch0042"]).fit(_bf(X))
    with pytest.raises(ValidationError, match=r"channels indices must be in \[0, 8\)"):
        FeaturePreprocessor(channels=[9]).fit(X)
    with pytest.raises(ValidationError, match="no features left"):
        FeaturePreprocessor(channels=np.zeros(8, bool)).fit(X)


def test_smoothing_and_lags_are_causal():
    X = np.zeros((20, 1))
    X[10] = 1.0
    for params in (dict(smoothing="ema", smooth_bins=3), dict(smoothing="boxcar", smooth_bins=4)):
        Z = FeaturePreprocessor(standardize=False, **params).fit(np.zeros((5, 1))).transform(X)
        assert np.all(Z[:10] == 0) and Z[10, 0] > 0
    box = FeaturePreprocessor(standardize=False, smoothing="boxcar", smooth_bins=4).fit(np.zeros((5, 1)))
    np.testing.assert_allclose(box.transform(X)[10:15, 0], [0.25, 0.25, 0.25, 0.25, 0.0])
    lag = FeaturePreprocessor(standardize=False, n_lags=3).fit(np.zeros((5, 1))).transform(X)
    np.testing.assert_array_equal(lag[10], [1, 0, 0])
    np.testing.assert_array_equal(lag[12], [0, 0, 1])


def test_in_a_sklearn_pipeline(linear_data):
    Xtr, ytr, Xte, yte = linear_data
    pipe = make_pipeline(FeaturePreprocessor(smoothing="ema", smooth_bins=2), WienerFilter(n_lags=2))
    r2 = pipe.fit(Xtr, ytr).score(Xte, yte)
    assert r2 > 0.9
