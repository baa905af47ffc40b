"""Streaming: stacked step() outputs equal predict()/transform(); NaN input holds and is counted."""

import numpy as np
import pytest

from cortexlink import ValidationError
from cortexlink.decoders import (ClickDecoder, FeaturePreprocessor, GRUDecoder, KalmanFilter,
                                 ReFITKalmanFilter, StreamingPipeline, WienerFilter)

CONTINUOUS = [
    WienerFilter(n_lags=4),
    WienerFilter(n_lags=1, alpha=0.0),
    KalmanFilter(),
    KalmanFilter(steady_state=False),
    ReFITKalmanFilter(),
    GRUDecoder(hidden_size=12, max_epochs=2, seq_len=16, batch_size=4),
    GRUDecoder(hidden_size=12, input_proj=8, n_layers=2, max_epochs=2, seq_len=16, batch_size=4),
]


def _ids(est):
    return repr(est)


@pytest.fixture(scope="module")
def fitted(linear_data):
    Xtr, ytr, _, _ = linear_data
    return [est.__class__(**est.get_params()).fit(Xtr, ytr) for est in CONTINUOUS]


@pytest.mark.parametrize("i", range(len(CONTINUOUS)), ids=[_ids(e) for e in CONTINUOUS])
def test_step_equals_predict(fitted, linear_data, i):
    dec = fitted[i]
    _, _, Xte, _ = linear_data
    Xte = Xte[:200]
    pred = dec.predict(Xte)
    dec.reset_state()
    steps = np.stack([dec.step(x) for x in Xte])
    assert steps.shape == pred.shape
    tol = 1e-5 if isinstance(dec, GRUDecoder) else 1e-9
    np.testing.assert_allclose(steps, pred, rtol=tol, atol=tol)
    assert dec.n_invalid_steps_ == 0 and dec.last_step_valid_
    # reset_state starts over
    dec.reset_state()
    np.testing.assert_allclose(dec.step(Xte[0]), pred[0], rtol=tol, atol=tol)


@pytest.mark.parametrize("i", range(len(CONTINUOUS)), ids=[_ids(e) for e in CONTINUOUS])
def test_nan_step_holds_last_output_and_counts(fitted, linear_data, i):
    dec = fitted[i]
    Xte = linear_data[2][:60].copy()
    Xte[10, 3] = np.nan
    Xte[11, :] = np.inf
    Xte[0, 0] = np.nan                      # before any valid bin: the initial output is held
    dec.reset_state()
    outs = []
    for t, x in enumerate(Xte):
        outs.append(dec.step(x))
        assert dec.last_step_valid_ == (t not in (0, 10, 11))
    outs = np.stack(outs)
    assert dec.n_invalid_steps_ == 3
    np.testing.assert_array_equal(outs[10], outs[9])
    np.testing.assert_array_equal(outs[11], outs[9])
    assert np.all(np.isfinite(outs))
    # offline with the same policy gives the same outputs
    tol = 1e-5 if isinstance(dec, GRUDecoder) else 1e-9
    np.testing.assert_allclose(outs, dec.predict(Xte, on_invalid="hold"), rtol=tol, atol=tol)
    with pytest.raises(ValidationError, match="finite"):
        dec.predict(Xte)


@pytest.mark.parametrize("i", range(len(CONTINUOUS)), ids=[_ids(e) for e in CONTINUOUS])
def test_wrong_feature_count_is_named(fitted, linear_data, i):
    dec = fitted[i]
    Xte = linear_data[2]
    with pytest.raises(ValidationError, match=r"expecting 20 features.*received 19"):
        dec.predict(Xte[:, :19])
    dec.reset_state()
    with pytest.raises(ValidationError, match=r"expecting 20 features.*received 21"):
        dec.step(np.ones(21))


def test_one_d_target_gives_one_d_output(linear_data):
    Xtr, ytr, Xte, _ = linear_data
    for dec in (WienerFilter(n_lags=2), KalmanFilter()):
        dec.fit(Xtr, ytr[:, 0])
        assert dec.predict(Xte).shape == (Xte.shape[0],)
        assert dec.step(Xte[0]).shape == (1,)


def test_any_number_of_outputs(linear_data):
    Xtr, ytr, Xte, _ = linear_data
    y3 = np.column_stack([ytr, ytr[:, 0] - ytr[:, 1]])
    for dec in (WienerFilter(n_lags=2), KalmanFilter(), GRUDecoder(hidden_size=8, max_epochs=1)):
        assert dec.fit(Xtr, y3).predict(Xte).shape == (Xte.shape[0], 3)


@pytest.mark.parametrize("params", [
    dict(), dict(smoothing="ema", smooth_bins=4), dict(smoothing="boxcar", smooth_bins=3, n_lags=3),
    dict(standardize=False, smoothing="ema", n_lags=2), dict(channels=[0, 2, 5], n_lags=2),
])
def test_preprocessor_step_equals_transform(linear_data, params):
    Xtr, _, Xte, _ = linear_data
    pre = FeaturePreprocessor(**params).fit(Xtr)
    Z = pre.transform(Xte[:100])
    pre.reset_state()
    np.testing.assert_allclose(np.stack([pre.step(x) for x in Xte[:100]]), Z, rtol=1e-10, atol=1e-10)
    assert Z.shape[1] == pre.n_features_out_ == len(pre.get_feature_names_out())
    # NaN: hold
    Xn = Xte[:30].copy()
    Xn[5, pre.selected_idx_[0]] = np.nan
    pre.reset_state()
    held = np.stack([pre.step(x) for x in Xn])
    np.testing.assert_array_equal(held[5], held[4])
    assert pre.n_invalid_steps_ == 1
    np.testing.assert_allclose(held, pre.transform(Xn, on_invalid="hold"), rtol=1e-10, atol=1e-10)


def test_streaming_pipeline_step_equals_predict(linear_data):
    Xtr, ytr, Xte, _ = linear_data
    pipe = StreamingPipeline([("pre", FeaturePreprocessor(smoothing="ema", smooth_bins=3)),
                              ("dec", KalmanFilter())]).fit(Xtr, ytr)
    pred = pipe.predict(Xte[:100])
    pipe.reset_state()
    np.testing.assert_allclose(np.stack([pipe.step(x) for x in Xte[:100]]), pred, rtol=1e-9, atol=1e-9)


def test_click_step_equals_predict():
    X, y, _ = _click_data()
    dec = ClickDecoder().fit(X[:2000], y[:2000])
    Xte = X[2000:]
    proba = dec.predict_proba(Xte)[:, 1]
    state = dec.predict(Xte)
    events = dec.predict_events(Xte)
    dec.reset_state()
    res = [dec.step(x) for x in Xte]
    np.testing.assert_allclose([r.proba for r in res], proba, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(dec.classes_[[r.state for r in res]], state)
    np.testing.assert_array_equal(np.flatnonzero([r.onset for r in res]), events)
    # NaN holds state and probability, no event
    dec.reset_state()
    dec.step(Xte[0])
    r = dec.step(np.full(X.shape[1], np.nan))
    assert not r.valid and not r.onset and dec.n_invalid_steps_ == 1 and not dec.last_step_valid_


def _click_data(n=3000, n_features=12, seed=1, shift_sd=1.2):
    """Rest with occasional sustained click intents (20-40 bins); features shift with intent."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, int)
    starts = []
    t = 50
    while t < n - 60:
        d = int(rng.integers(20, 41))
        y[t:t + d] = 1
        starts.append(t)
        t += d + int(rng.integers(60, 120))
    shift = rng.standard_normal(n_features)
    X = 1.0 + shift_sd * np.outer(y, shift) + rng.standard_normal((n, n_features))
    return X, y, np.array(starts)


@pytest.mark.parametrize("cls", [KalmanFilter, ReFITKalmanFilter])
def test_kalman_compiled_step_equals_the_array_code(linear_data, cls):
    # 1-D float32/float64 bins take the compiled kernel; a list takes the general array code
    Xtr, ytr, Xte, _ = linear_data
    dec = cls().fit(Xtr, ytr)
    assert dec._fast
    ref = []
    dec.reset_state()
    for x in Xte[:50]:
        ref.append(dec.step(x.tolist()))
    for dt in (np.float64, np.float32):
        X = np.ascontiguousarray(Xte[:50], dtype=dt)
        dec.reset_state()
        out = []
        for x in X:
            y = dec.step(x)
            out.append(y.copy())
            y[:] = 1e6                                # the caller's copy: the filter state is untouched
        tol = 1e-9 if dt is np.float64 else 1e-4
        np.testing.assert_allclose(out, dec.__class__(**dec.get_params()).fit(Xtr, ytr).predict(X.astype(np.float64)),
                                   rtol=tol, atol=tol)
        if dt is np.float64:
            np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
