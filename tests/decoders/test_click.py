"""Click decoder: one sustained intent gives exactly one click event."""

import numpy as np
import pytest

from cortexlink.decoders import ClickDecoder
from test_streaming import _click_data


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_one_event_per_intent(seed):
    X, y, starts = _click_data(n=6000, seed=seed)
    split = next(t for t in range(3000, 6000) if y[t - 1] == 0 and y[t] == 0)   # split in a rest period
    dec = ClickDecoder().fit(X[:split], y[:split])
    Xte, yte, st = X[split:], y[split:], starts[starts >= split] - split
    events = dec.predict_events(Xte)
    assert len(events) == len(st)
    # each event lands within a few bins after its intent starts
    assert np.all((events - st >= 0) & (events - st <= 4))
    state = dec.predict(Xte)
    assert np.mean(state == yte) > 0.95


def test_without_hysteresis_a_noisy_intent_flickers():
    X, y, starts = _click_data(n=6000, seed=2, shift_sd=0.8)
    raw = ClickDecoder(hmm=False, on_threshold=0.5, off_threshold=0.5, release_bins=1).fit(X[:3000], y[:3000])
    n_true = int(np.sum(starts >= 3000))
    assert len(raw.predict_events(X[3000:])) > 1.5 * n_true


def test_refractory_period_blocks_new_onsets():
    X, y, _ = _click_data(n=3000, seed=4)
    dec = ClickDecoder(refractory_bins=10_000).fit(X, y)
    assert len(dec.predict_events(X)) == 1


def test_string_labels_and_learned_transitions():
    X, y, _ = _click_data(n=3000, seed=5)
    labels = np.where(y == 1, "click", "rest")
    dec = ClickDecoder(method="logistic").fit(X, labels)
    assert list(dec.classes_) == ["click", "rest"]            # classes_[1] ("rest") is the "on" state
    assert dec.transition_.shape == (2, 2)
    np.testing.assert_allclose(dec.transition_.sum(1), 1.0)
    assert dec.transition_[0, 0] > 0.9 and dec.transition_[1, 1] > 0.9
    proba = dec.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0)
