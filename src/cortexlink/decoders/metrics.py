"""Decoding metrics per output and time-ordered (blocked) cross-validation.

Neighbouring bins of neural data are strongly correlated, so shuffled K-fold
cross-validation leaks information between training and test bins and overstates
accuracy. The helpers here cut the recording into contiguous blocks and leave a
``gap`` of bins between each test block and the training bins around it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

__all__ = ["r2_score", "pearson_r", "mse", "score_all", "blocked_cv_splits", "holdout_split",
           "cross_validate_blocked"]


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yt.ndim == 1:
        yt = yt[:, None]
    if yp.ndim == 1:
        yp = yp[:, None]
    if yt.ndim != 2 or yt.shape != yp.shape:
        raise ValidationError(f"y_true and y_pred must have the same shape (bins x outputs); "
                              f"got {np.shape(y_true)} and {np.shape(y_pred)}")
    if yt.shape[0] < 2:
        raise ValidationError(f"need at least 2 bins to score; got {yt.shape[0]}")
    return yt, yp


def r2_score(y_true: Any, y_pred: Any) -> np.ndarray:
    """Coefficient of determination per output, ``1 - SS_res / SS_tot``.

    Parameters
    ----------
    y_true, y_pred : array (n_bins, n_outputs) or (n_bins,)

    Returns
    -------
    ndarray (n_outputs,)
        R² of each output; NaN for an output that is constant in ``y_true``.
    """
    yt, yp = _pair(y_true, y_pred)
    ss_res = np.sum((yt - yp) ** 2, axis=0)
    ss_tot = np.sum((yt - yt.mean(axis=0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def pearson_r(y_true: Any, y_pred: Any) -> np.ndarray:
    """Pearson correlation per output (NaN where either side is constant)."""
    yt, yp = _pair(y_true, y_pred)
    a = yt - yt.mean(axis=0)
    b = yp - yp.mean(axis=0)
    den = np.sqrt(np.sum(a * a, axis=0) * np.sum(b * b, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, np.sum(a * b, axis=0) / np.where(den > 0, den, 1.0), np.nan)


def mse(y_true: Any, y_pred: Any) -> np.ndarray:
    """Mean squared error per output."""
    yt, yp = _pair(y_true, y_pred)
    return np.mean((yt - yp) ** 2, axis=0)


def score_all(y_true: Any, y_pred: Any) -> dict[str, list[float]]:
    """R², Pearson r and MSE per output as a JSON-able dict of lists."""
    return {"r2": r2_score(y_true, y_pred).tolist(), "pearson_r": pearson_r(y_true, y_pred).tolist(),
            "mse": mse(y_true, y_pred).tolist()}


def blocked_cv_splits(n: int, n_folds: int = 5, gap: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Time-ordered K-fold splits: each test fold is one contiguous block.

    Parameters
    ----------
    n : int
        Number of bins.
    n_folds : int
        Number of contiguous test blocks (>= 2).
    gap : int
        Bins dropped from training on each side of a test block, so that training
        bins near it (and their lag history) do not overlap it.

    Returns
    -------
    list of (train_idx, test_idx)
        Index arrays; test blocks are in time order and cover every bin once.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n must be a positive integer; got {n!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer >= 2; got {n_folds!r}")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ConfigError(f"gap must be an integer >= 0; got {gap!r}")
    if n < n_folds:
        raise ValidationError(f"n_folds={n_folds} blocks need at least {n_folds} bins; got n={n}")
    edges = np.linspace(0, n, n_folds + 1).round().astype(int)
    idx = np.arange(n)
    splits = []
    for k in range(n_folds):
        a, b = edges[k], edges[k + 1]
        train = idx[(idx < a - gap) | (idx >= b + gap)]
        if train.size == 0:
            raise ValidationError(f"gap={gap} leaves no training bins for fold {k} of n={n}")
        splits.append((train, idx[a:b]))
    return splits


def holdout_split(n: int, test_fraction: float = 0.2, gap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered hold-out: the last ``test_fraction`` of bins is the test set.

    ``gap`` bins between training and test are dropped.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    n_test = max(1, int(round(n * test_fraction)))
    n_train = n - n_test - gap
    if n_train < 1:
        raise ValidationError(f"n={n} bins leave no training data with test_fraction={test_fraction}, gap={gap}")
    return np.arange(n_train), np.arange(n - n_test, n)


def cross_validate_blocked(estimator: Any, X: Any, y: Any, n_folds: int = 5, gap: int = 0,
                           scorer: Callable[[Any, Any], np.ndarray] = r2_score) -> np.ndarray:
    """Fit a clone of ``estimator`` on each blocked fold and score its test block.

    Returns
    -------
    ndarray (n_folds, n_outputs)
        The scorer's output for each fold (R² per output by default).
    """
    from sklearn.base import clone

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    scores = []
    for train, test in blocked_cv_splits(X.shape[0], n_folds, gap):
        est = clone(estimator).fit(X[train], y[train])
        scores.append(np.atleast_1d(scorer(y[test], est.predict(X[test]))))
    return np.asarray(scores)
