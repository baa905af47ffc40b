"""Click decoder: per-bin discriminant, HMM filtering and hysteresis (one intent, one click).

Each bin's features give a log likelihood ratio of "click" vs "rest" from a linear
discriminant (shrinkage LDA, or logistic regression). A two-state hidden Markov model
filters these causally: its transition probabilities are learned from how long clicks
and rests last in the training labels, so brief noisy bins do not flip the state.
Hysteresis on the filtered probability (switch on above ``on_threshold``, off below
``off_threshold``, plus an optional refractory period) turns it into a 0/1 click
state; a click *event* is an onset of that state, so a sustained intent gives exactly
one click.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import type_of_target

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.types import ChannelMap
from cortexlink.decoders._base import DecoderMixin, as_float_param, as_int_param, finite_bin, register

logger = logging.getLogger(__name__)

__all__ = ["ClickDecoder", "ClickStep"]


class ClickStep(NamedTuple):
    """Result of :meth:`ClickDecoder.step` for one bin.

    Attributes
    ----------
    state : int
        1 while clicking, 0 otherwise (``classes_[state]`` is the label ``predict`` gives).
    proba : float
        Filtered probability of the click state.
    onset : bool
        True on the bin where a click starts (the click *event*).
    valid : bool
        False when the input held NaN/Inf and the previous state was held.
    """

    state: int
    proba: float
    onset: bool
    valid: bool


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@register
class ClickDecoder(DecoderMixin, ClassifierMixin, BaseEstimator):
    """Binary click-intent decoder with HMM smoothing and hysteresis.

    Parameters
    ----------
    method : {"lda", "logistic"}, default="lda"
        Per-bin discriminant: shrinkage LDA (Ledoit-Wolf; robust to collinear and
        constant features) or L2 logistic regression.
    hmm : bool, default=True
        Filter the per-bin evidence with a two-state HMM.
    p_stay : float in (0, 1) or None, default=None
        HMM probability of staying in a state from one bin to the next. None: learned
        from the training labels (mean dwell time of rest and of click).
    on_threshold : float, default=0.7
        Filtered probability at or above which the click state turns on.
    off_threshold : float, default=0.3
        Probability below which it turns off (must be <= on_threshold).
    llr_clip : float or None, default=4.0
        Bound on the evidence (log likelihood ratio) of any single bin, so that one
        outlier bin cannot start or end a click on its own (robust emission model).
        None: no bound.
    release_bins : int, default=3
        The click ends only after the probability stayed below ``off_threshold`` for
        this many consecutive bins (debounce: a brief dropout inside one sustained
        intent does not split it into two clicks).
    refractory_bins : int, default=0
        Bins after a click ends during which no new click can start.
    C : float, default=1.0
        Inverse regularisation of the logistic regression.

    Attributes
    ----------
    classes_ : ndarray (2,)
        The labels; ``classes_[1]`` is the click state.
    coef_ : ndarray (n_features,), intercept_ : float
        Discriminant on raw features: ``log odds = x @ coef_ + intercept_``.
    log_prior_odds_ : float
        Log odds of click in the training labels.
    transition_ : ndarray (2, 2)
        HMM transition matrix (rows: from rest, from click).
    """

    _persist = ("classes_", "coef_", "intercept_", "log_prior_odds_", "transition_", "n_outputs_")
    _shapes = {"classes_": "2", "coef_": "f", "transition_": "2 2"}

    def __init__(self, method: str = "lda", hmm: bool = True, p_stay: float | None = None,
                 on_threshold: float = 0.7, off_threshold: float = 0.3, llr_clip: float | None = 4.0,
                 release_bins: int = 3,
                 refractory_bins: int = 0, C: float = 1.0) -> None:
        self.method = method
        self.hmm = hmm
        self.p_stay = p_stay
        self.on_threshold = on_threshold
        self.off_threshold = off_threshold
        self.llr_clip = llr_clip
        self.release_bins = release_bins
        self.refractory_bins = refractory_bins
        self.C = C

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = False
        tags.classifier_tags.multi_class = False
        return tags

    # ---------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.method not in ("lda", "logistic"):
            raise ConfigError(f"method must be one of ('lda', 'logistic'); got {self.method!r}")
        if not isinstance(self.hmm, (bool, np.bool_)):
            raise ConfigError(f"hmm must be True or False; got {self.hmm!r}")
        if self.p_stay is not None:
            as_float_param("p_stay", self.p_stay, 0.0, 1.0, lo_open=True)
            if self.p_stay >= 1.0:
                raise ConfigError(f"p_stay must be < 1; got {self.p_stay!r}")
        on = as_float_param("on_threshold", self.on_threshold, 0.0, 1.0)
        off = as_float_param("off_threshold", self.off_threshold, 0.0, 1.0)
        if off > on:
            raise ConfigError(f"off_threshold must be <= on_threshold ({on}); got {off}")
        if self.llr_clip is not None:
            as_float_param("llr_clip", self.llr_clip, 0.0, lo_open=True)
        as_int_param("release_bins", self.release_bins, 1)
        as_int_param("refractory_bins", self.refractory_bins, 0)
        as_float_param("C", self.C, 0.0, lo_open=True)

    def fit(self, X: Any, y: Any, *, feature_names: Sequence[str] | None = None,
            channel_map: ChannelMap | None = None) -> "ClickDecoder":
        """Fit the discriminant and learn the HMM transitions from ``y``.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
            Consecutive bins.
        y : array (n_bins,)
            Two labels (e.g. 0 = rest, 1 = click intent); the larger is the click.
        feature_names, channel_map : optional
            Stored for ``check_compatible`` / ``load``.

        Returns
        -------
        self
        """
        self._check_params()
        X, y = self._validate_fit(X, y, feature_names, channel_map, y_numeric=False, multi_output=False)
        y_type = type_of_target(y, input_name="y", raise_unknown=True)
        if y_type not in ("binary", "unknown") and len(np.unique(y)) > 2:
            raise ValidationError("Only binary classification is supported (click vs rest). "
                                  f"The type of the target is {y_type}.")
        classes, yi = np.unique(y, return_inverse=True)
        if classes.size != 2:
            raise ValidationError(f"y must contain 2 classes (rest and click); got {classes.size} class "
                                  f"({classes.tolist()})")
        self.classes_ = classes
        n, f = X.shape
        mean = X.mean(axis=0)
        sd = X.std(axis=0)
        sd = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(mean)), sd, 1.0)
        Z = (X - mean) / sd
        prior1 = float(np.clip(yi.mean(), 1.0 / (n + 2), 1.0 - 1.0 / (n + 2)))
        self.log_prior_odds_ = math.log(prior1 / (1.0 - prior1))
        if self.method == "lda":
            from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

            clf = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(Z, yi)
        else:
            from sklearn.linear_model import LogisticRegression

            clf = LogisticRegression(C=float(self.C), max_iter=1000).fit(Z, yi)
        w = np.asarray(clf.coef_, dtype=np.float64).ravel() / sd
        b = float(np.ravel(clf.intercept_)[0]) - float(mean @ w)
        if not (np.all(np.isfinite(w)) and math.isfinite(b)):
            raise ValidationError("ClickDecoder.fit produced non-finite weights; the features are degenerate")
        self.coef_ = w
        self.intercept_ = b
        # transitions
        if self.p_stay is not None:
            ps = float(self.p_stay)
            T = np.array([[ps, 1 - ps], [1 - ps, ps]])
        else:
            T = np.empty((2, 2))
            for k in (0, 1):
                from_k = yi[:-1] == k
                stay = np.sum(from_k & (yi[1:] == k))
                T[k, k] = (stay + 1.0) / (from_k.sum() + 2.0)      # Laplace-smoothed
                T[k, 1 - k] = 1.0 - T[k, k]
        self.transition_ = T
        self.n_outputs_ = 1
        self.reset_state()
        return self

    # ---------------------------------------------------------------------------------
    def _filter(self, p1: float, llr: float) -> float:
        """One HMM forward step from P(click)=p1 at t-1, given this bin's log-likelihood ratio."""
        T = self.transition_
        pred1 = p1 * T[1, 1] + (1.0 - p1) * T[0, 1]
        pred1 = min(max(pred1, 1e-300), 1.0 - 1e-16)
        return _sigmoid(math.log(pred1) - math.log1p(-pred1) + llr)

    def _initial_p(self) -> float:
        return _sigmoid(self.log_prior_odds_)

    def _run(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(proba, state, onset) for a block of bins from the reset state (NaN rows hold)."""
        n = X.shape[0]
        good = np.all(np.isfinite(X), axis=1)
        dec = np.where(good[:, None], X, 0.0) @ self.coef_ + self.intercept_
        dec[~good] = np.nan
        proba = np.empty(n)
        state = np.zeros(n, dtype=np.int64)
        onset = np.zeros(n, dtype=bool)
        p, s, refr = self._initial_p(), 0, 0
        for t in range(n):
            d = dec[t]
            if math.isfinite(d):
                p, s, on, refr = self._advance(p, s, refr, float(d))
                onset[t] = on
            proba[t] = p
            state[t] = s
        return proba, state, onset

    def _advance(self, p: float, s: int, cnt: int, d: float) -> tuple[float, int, bool, int]:
        """One bin of the state machine; ``cnt`` counts refractory bins left (off) or
        consecutive low bins (on)."""
        if self.hmm:
            llr = d - self.log_prior_odds_
            if self.llr_clip is not None:
                llr = min(max(llr, -self.llr_clip), self.llr_clip)
            p = self._filter(p, llr)
        else:
            p = _sigmoid(d)
        on = False
        if s == 0:
            if cnt > 0:
                cnt -= 1
            elif p >= self.on_threshold:
                s, on, cnt = 1, True, 0
        else:
            low = p < self.off_threshold or (self.off_threshold == self.on_threshold and p < self.on_threshold)
            cnt = cnt + 1 if low else 0
            if cnt >= int(self.release_bins):
                s, cnt = 0, int(self.refractory_bins)
        return p, s, on, cnt

    def predict_proba(self, X: Any, *, on_invalid: str = "raise") -> np.ndarray:
        """Filtered probability of rest and click per bin, shape (n_bins, 2)."""
        X = self._validate_predict(X, on_invalid)
        p = self._run(X)[0]
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Any, *, on_invalid: str = "raise") -> np.ndarray:
        """Click state per bin after hysteresis, as labels (``classes_[0]`` or ``classes_[1]``)."""
        X = self._validate_predict(X, on_invalid)
        return self.classes_[self._run(X)[1]]

    def predict_events(self, X: Any, *, on_invalid: str = "raise") -> np.ndarray:
        """Indices of the bins where a click starts (one per sustained intent)."""
        X = self._validate_predict(X, on_invalid)
        return np.flatnonzero(self._run(X)[2])

    # ---------------------------------------------------------------------------------
    def _reset_stream(self) -> None:
        self._p = self._initial_p()
        self._s = 0
        self._refr = 0

    def step(self, x: Any) -> ClickStep:
        """Process one bin.

        Parameters
        ----------
        x : array (n_features,)

        Returns
        -------
        ClickStep
            ``(state, proba, onset, valid)``; with NaN/Inf input the previous state and
            probability are held, ``onset`` is False and ``valid`` False.
        """
        x = self._check_step_input(x)
        if not finite_bin(x):
            self._note_invalid()
            return ClickStep(self._s, self._p, False, False)
        d = float(np.dot(x, self.coef_)) + self.intercept_
        self._p, self._s, on, self._refr = self._advance(self._p, self._s, self._refr, d)
        self.last_step_valid_ = True
        return ClickStep(self._s, self._p, on, True)
