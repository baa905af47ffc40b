"""PhonemeDecoder: learns a synthetic phoneme-emission task, step == predict, seeds, days, save/load, bad input."""

import logging

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, NotFittedError, ValidationError
from cortexlink.core.phonemes import N_CLASSES, SIL
from cortexlink.decoders import PhonemeDecoder, load

N_FEATURES = 16
_MEANS = np.random.default_rng(1234).standard_normal((N_CLASSES, N_FEATURES)) * 1.5


def make_trials(n_trials, seed, noise=0.5, gain=1.0, offset=0.0, n_labels=(4, 9), dur=(3, 8)):
    """Each class a fixed random mean pattern held for 3-8 bins, plus noise; silence around the labels.

    ``gain``/``offset`` change the recording (a different day): x = gain * clean + offset + noise.
    """
    rng = np.random.default_rng(seed)
    X, Y = [], []
    for _ in range(n_trials):
        y = rng.integers(1, SIL + 1, rng.integers(n_labels[0], n_labels[1] + 1))
        rows = [np.zeros((rng.integers(2, 6), N_FEATURES))]
        rows += [np.repeat(_MEANS[c][None], rng.integers(dur[0], dur[1] + 1), 0) for c in y]
        rows.append(np.zeros((rng.integers(4, 8), N_FEATURES)))
        clean = np.concatenate(rows)
        X.append(gain * clean + offset + noise * rng.standard_normal(clean.shape))
        Y.append(y.astype(np.int32))
    return X, Y


SMALL = dict(hidden_size=64, n_layers=1, n_epochs=20, batch_size=8, learning_rate=1e-2, white_noise_sd=0.2,
             offset_sd=0.1, validation_fraction=0.0, random_state=0)


@pytest.fixture(scope="module")
def trained():
    X, Y = make_trials(150, seed=0)
    return PhonemeDecoder(**SMALL).fit(X, Y)


def test_learns_synthetic_phonemes(trained):
    Xt, Yt = make_trials(50, seed=1)
    per = trained.phoneme_error_rate(Xt, Yt)
    assert per < 0.10, per
    assert trained.history_["train_loss"][-1] < 0.5 * trained.history_["train_loss"][0]
    assert trained.n_epochs_ == 20 and trained.n_updates_ == 20 * 19 and trained.train_seconds_ > 0
    # an untrained-length check: predict returns class ids 1..40 only
    hyp = trained.predict(Xt[:5])
    assert all(h.dtype == np.int32 and (h.size == 0 or (h.min() >= 1 and h.max() <= SIL)) for h in hyp)


def test_logprobs_shape_and_normalised(trained):
    Xt, _ = make_trials(3, seed=2)
    Xt.append(Xt[0][:3])                                   # shorter than kernel_bins: no frame
    lps = trained.predict_logprobs(Xt)
    for x, lp in zip(Xt, lps):
        assert lp.shape == (max(0, (x.shape[0] - 4) // 2 + 1), N_CLASSES)
        np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize("proj", [None, 8])
def test_step_equals_predict(proj):
    X, Y = make_trials(20, seed=3)
    dec = PhonemeDecoder(**dict(SMALL, hidden_size=16, n_layers=2, n_epochs=2, input_proj=proj,
                                kernel_bins=3, stride_bins=2)).fit(X, Y)
    x = X[0].copy()
    x[7] = np.nan                                          # replaced by the day's mean in both
    off = dec.predict_logprobs([x], on_invalid="zero")[0]
    dec.reset_state(0)
    rows = [dec.step(b) for b in x]
    assert all(r.shape in ((0, N_CLASSES), (1, N_CLASSES)) for r in rows)
    assert [i for i, r in enumerate(rows) if len(r)] == list(range(2, x.shape[0], 2))
    np.testing.assert_allclose(np.concatenate(rows), off, atol=1e-5, rtol=0)
    assert np.abs(np.concatenate(rows) - off).max() < 1e-9
    assert dec.n_invalid_steps_ == 1
    dec.reset_state(0)                                     # a second stream starts fresh
    again = np.concatenate([dec.step(b) for b in x])
    np.testing.assert_array_equal(again, np.concatenate(rows))
    with pytest.raises(ValidationError, match="finite"):
        dec.predict_logprobs([x])


def test_seeded_reproducible():
    X, Y = make_trials(24, seed=4)
    kw = dict(SMALL, hidden_size=16, n_epochs=2)
    a = PhonemeDecoder(**kw).fit(X, Y)
    b = PhonemeDecoder(**kw).fit(X, Y)
    c = PhonemeDecoder(**dict(kw, random_state=1)).fit(X, Y)
    for k in a.weights_:
        np.testing.assert_array_equal(a.weights_[k], b.weights_[k])
    np.testing.assert_array_equal(a.day_weight_, b.day_weight_)
    assert a.history_["train_loss"] == b.history_["train_loss"]
    assert not np.array_equal(a.weights_["readout.weight"], c.weights_["readout.weight"])


def test_validation_split_keeps_best_epoch():
    X, Y = make_trials(40, seed=5)
    seen = []
    dec = PhonemeDecoder(**dict(SMALL, hidden_size=16, n_epochs=3, validation_fraction=0.25)).fit(
        X, Y, progress=seen.append)
    per = dec.history_["val_per"]
    assert len(per) == 3 and all(np.isfinite(per))
    assert dec.best_epoch_ == 1 + int(np.lexsort((dec.history_["val_loss"], per))[0])
    assert [s["epoch"] for s in seen] == [1, 2, 3]


def test_save_load_round_trip(trained, tmp_path):
    path = trained.save(tmp_path / "ph.npz")
    back = load(path)
    assert isinstance(back, PhonemeDecoder) and back.get_params() == trained.get_params()
    Xt, _ = make_trials(3, seed=6)
    for a, b in zip(trained.predict_logprobs(Xt), back.predict_logprobs(Xt)):
        np.testing.assert_array_equal(a, b)
    back.reset_state(0)
    rows = np.concatenate([back.step(b) for b in Xt[0]])
    np.testing.assert_allclose(rows, trained.predict_logprobs(Xt[:1])[0], atol=1e-9)
    assert back.history_["train_loss"] == trained.history_["train_loss"]
    np.testing.assert_array_equal(back.days_, [0])


def test_day_layers_and_unseen_day(caplog):
    # day 2 records the same speech with other gains and offsets per feature
    rng = np.random.default_rng(7)
    gain, offset = rng.uniform(0.4, 2.5, N_FEATURES), rng.normal(0, 3, N_FEATURES)
    X0, Y0 = make_trials(75, seed=8)
    X1, Y1 = make_trials(75, seed=9, gain=gain, offset=offset)
    dec = PhonemeDecoder(**SMALL).fit(X0 + X1, Y0 + Y1, days=[0] * 75 + [2] * 75)
    np.testing.assert_array_equal(dec.days_, [0, 2])
    T0, U0 = make_trials(30, seed=10)
    T1, U1 = make_trials(30, seed=11, gain=gain, offset=offset)
    per0, per2 = dec.phoneme_error_rate(T0, U0, days=0), dec.phoneme_error_rate(T1, U1, days=2)
    assert per0 < 0.15 and per2 < 0.15, (per0, per2)
    # day 0's layer on day 2's recording does much worse
    assert dec.phoneme_error_rate(T1, U1, days=0) > 2 * per2 + 0.1
    assert dec.n_unseen_day_ == 0
    # the layers differ between days (they learned the recordings apart)
    assert not np.allclose(dec.day_mean_[0], dec.day_mean_[1])
    # day 3 is unseen: day 2's layer is used, counted, logged once
    with caplog.at_level(logging.WARNING, logger="cortexlink.decoders.phoneme_ctc"):
        same = dec.predict_logprobs(T1[:2], days=3)
        dec.reset_state(3)
    assert dec.n_unseen_day_ == 3
    assert sum("day 3 has no input layer" in r.message for r in caplog.records) == 1
    for a, b in zip(same, dec.predict_logprobs(T1[:2], days=2)):
        np.testing.assert_array_equal(a, b)


def test_adapt_day_trains_only_the_new_day(trained):
    import copy

    dec = copy.deepcopy(trained)
    rng = np.random.default_rng(12)
    gain, offset = rng.uniform(0.4, 2.5, N_FEATURES), rng.normal(0, 3, N_FEATURES)
    mix = np.linalg.qr(rng.standard_normal((N_FEATURES, N_FEATURES)))[0]     # a rotated recording
    X, Y = make_trials(60, seed=13)
    X = [gain * (x @ mix) + offset for x in X]
    Xt, Yt = make_trials(30, seed=14)
    Xt = [gain * (x @ mix) + offset for x in Xt]
    before = dec.phoneme_error_rate(Xt, Yt, days=5)        # day 0's layer on a new recording
    shared = {k: v.copy() for k, v in dec.weights_.items()}
    dec.adapt_day(X, Y, day=5, n_updates=150, learning_rate=3e-2)
    after = dec.phoneme_error_rate(Xt, Yt, days=5)
    assert after < 0.5 * before and after < 0.3, (before, after)
    np.testing.assert_array_equal(dec.days_, [0, 5])
    for k in shared:
        np.testing.assert_array_equal(dec.weights_[k], shared[k])
    np.testing.assert_array_equal(dec.day_weight_[0], trained.day_weight_[0])
    rec = dec.history_["adapt"][-1]
    assert rec["day"] == 5 and rec["new"] and rec["n_updates"] == 150 and rec["last_loss"] < rec["first_loss"]


# ----------------------------------------------------------------------------- bad input

def test_bad_training_input():
    X, Y = make_trials(4, seed=15)
    dec = PhonemeDecoder(**dict(SMALL, n_epochs=1))
    with pytest.raises(ValidationError, match="list of trials"):
        dec.fit(np.zeros((3, 10, N_FEATURES)), Y)
    with pytest.raises(ValidationError, match="at least one trial"):
        dec.fit([], [])
    with pytest.raises(ValidationError, match=r"same number of features; X\[0\] has 16, X\[1\] has 15"):
        dec.fit([X[0], X[1][:, :15]] + X[2:], Y)
    with pytest.raises(ValidationError, match=r"X\[2\] is empty"):
        dec.fit(X[:2] + [np.zeros((0, N_FEATURES))] + X[3:], Y)
    with pytest.raises(ValidationError, match=r"X\[1\] must be 2-D"):
        dec.fit([X[0], X[1][0]] + X[2:], Y)
    with pytest.raises(ValidationError, match=r"class ids in 1..40 .*got values from 0"):
        dec.fit(X, [Y[0], np.array([0, 3]), *Y[2:]])
    with pytest.raises(ValidationError, match=r"class ids in 1..40 .*to 41"):
        dec.fit(X, [Y[0], np.array([41, 3]), *Y[2:]])
    with pytest.raises(ValidationError, match=r"y\[0\] is empty"):
        dec.fit(X, [np.array([], np.int32)] + Y[1:])
    with pytest.raises(ValidationError, match="integer class ids"):
        dec.fit(X, [Y[0].astype(float)] + Y[1:])
    with pytest.raises(ValidationError, match="one label sequence per trial"):
        dec.fit(X, Y[:3])
    with pytest.raises(ValidationError, match="one int per trial"):
        dec.fit(X, Y, days=[0, 1])
    with pytest.raises(ValidationError, match="integers >= 0"):
        dec.fit(X, Y, days=[0, -1, 0, 0])
    bad = [x.copy() for x in X]
    bad[1][2, 3] = np.inf
    with pytest.raises(ValidationError, match=r"X\[1\] must hold only finite"):
        dec.fit(bad, Y)


def test_labels_longer_than_frames():
    x = np.zeros((20, N_FEATURES))                         # (20 - 4) // 2 + 1 = 9 frames
    with pytest.raises(ValidationError, match=r"trial 0: 20 bins give 9 output frames .* 8 labels need at least 10"):
        PhonemeDecoder(**SMALL).fit([x], [np.array([1, 2, 3, 3, 4, 5, 5, 6])])
    with pytest.raises(ValidationError, match="trial 0: 3 bins give 0 output frames"):
        PhonemeDecoder(**SMALL).fit([x[:3]], [np.array([1])])


@pytest.mark.parametrize("param, value, match", [
    ("hidden_size", 0, "hidden_size must be an integer >= 1"),
    ("stride_bins", 5, "stride_bins must be <= kernel_bins"),
    ("dropout", 1.0, "dropout must be <= 0.999"),
    ("validation_fraction", 0.7, "validation_fraction must be <= 0.5"),
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("input_proj", 0, "input_proj must be an integer >= 1"),
    ("random_state", None, "random_state must be an integer"),
    ("n_time_masks", -1, "n_time_masks must be an integer >= 0"),
])
def test_bad_params(param, value, match):
    X, Y = make_trials(2, seed=16)
    with pytest.raises(ConfigError, match=match):
        PhonemeDecoder(**{param: value}).fit(X, Y)


def test_bad_use_after_fit(trained):
    with pytest.raises(NotFittedError):
        PhonemeDecoder().predict([np.zeros((10, N_FEATURES))])
    with pytest.raises(NotFittedError):
        PhonemeDecoder().reset_state()
    with pytest.raises(ValidationError, match="X has 15 features, but PhonemeDecoder is expecting 16"):
        trained.predict([np.zeros((10, 15))])
    with pytest.raises(ValidationError, match="expecting 16 features"):
        trained.step(np.zeros(15))
    with pytest.raises(ConfigError, match="on_invalid"):
        trained.predict_logprobs([np.zeros((10, N_FEATURES))], on_invalid="hold")
    with pytest.raises(ConfigError, match="day must be an integer >= 0"):
        trained.reset_state(-1)
    with pytest.raises(ConfigError, match="n_updates must be an integer >= 1"):
        trained.adapt_day([np.zeros((10, N_FEATURES))], [np.array([1])], day=1, n_updates=0)
    trained.reset_state(0)


def test_binned_features_trials_keep_feature_names():
    from sklearn.base import clone

    from cortexlink.core.types import BinnedFeatures

    X, Y = make_trials(12, seed=17)
    names = tuple(f"ch{i:04d}/tx" for i in range(N_FEATURES))
    bf = [BinnedFeatures(x.astype(np.float32), np.arange(x.shape[0], dtype=np.int64) * 600, 600, 30000.0, names)
          for x in X]
    dec = clone(PhonemeDecoder(**dict(SMALL, hidden_size=8, n_epochs=1))).fit(bf, Y)
    assert dec.feature_names_ == names
    dec.check_compatible(feature_names=names)
    other = [BinnedFeatures(b.data, b.bin_start_samples, 600, 30000.0, names[::-1]) for b in bf[:1]]
    with pytest.raises(ValidationError, match="feature layout differs"):
        dec.predict(other)
