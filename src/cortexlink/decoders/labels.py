"""Calibration labels a lab has: velocity labels from the cursor's kinematics, and their lag.

In an open-loop calibration the cursor moves by itself and the participant imagines moving it.
A lab does not know what the participant intended; it records the cursor. Two kinds of labels
come from that record (:data:`LABELS`):

``"cursor"``
    The cursor's own velocity, bin by bin.
``"target"``
    The direction from the cursor to its target with the cursor's speed (zero where the cursor
    is still): the intention-estimation labels of ReFIT (Gilja et al. 2012) applied to the
    calibration, which keep the direction of intent while the cursor's path wanders.
``"intent"``
    The simulated participant's true intended velocity: an oracle no lab has, kept to report an
    upper bound.

Cortex watching a cursor lags it (visual latency, ~0.1-0.2 s), so lab labels are paired with the
features of a later bin. :func:`best_label_lag` chooses that lag from the data: the lag whose
labels a ridge regression on the features explains best (one SVD of the features, then one
projection per candidate lag), the way a lab picks a decoder's lag by its fit.

Reference: Gilja V, Nuyujukian P, Chestek CA, et al. (2012) A high-performance neural
prosthesis enabled by control algorithm design. Nat Neurosci 15:1752-1757.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.validation import check_choice
from cortexlink.decoders._base import check_finite

__all__ = ["LABELS", "label_velocity", "best_label_lag", "ridge_r2", "intended_velocity", "MAX_LAG_S"]

#: Calibration label kinds (see the module docstring); the first is the default.
LABELS = ("target", "cursor", "intent")
#: Longest lag :func:`best_label_lag` tries, seconds.
MAX_LAG_S = 0.4


def label_velocity(block: Any, labels: str) -> np.ndarray:
    """Velocity labels (bins x 2) of one calibration block.

    ``block`` has ``intended_velocity`` for ``"intent"``; ``cursor_velocity`` (and ``cursor_xy``,
    ``target_xy`` for ``"target"``) otherwise, NaN where the bin was not recorded.

    Raises
    ------
    ConfigError
        If the block lacks what the labels need (kinematics were not recorded).
    """
    check_choice("labels", labels, LABELS)
    if labels == "intent":
        return np.asarray(block.intended_velocity, dtype=np.float64).reshape(-1, 2)
    cv = getattr(block, "cursor_velocity", None)
    if cv is None:
        raise ConfigError(f"labels {labels!r} need the calibration's cursor kinematics, which this block lacks "
                          "(a decoder fed by a cursor node gets them with its fit command)")
    cv = np.asarray(cv, dtype=np.float64).reshape(-1, 2)
    if labels == "cursor":
        return cv
    d = np.asarray(block.target_xy, dtype=np.float64).reshape(-1, 2) - np.asarray(block.cursor_xy, np.float64).reshape(-1, 2)
    dist = np.hypot(d[:, 0], d[:, 1])
    speed = np.hypot(cv[:, 0], cv[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = d * (speed / dist)[:, None]
    out[dist <= 1e-9] = 0.0                   # on the target's centre: at rest
    no_target = ~np.all(np.isfinite(d), axis=1)
    out[no_target] = cv[no_target]            # no target on screen: what the cursor did
    return out


def ridge_r2(X: np.ndarray, Ys: Sequence[np.ndarray], ridge: float = 1.0) -> list[float]:
    """In-sample ridge R² of each candidate label set ``Ys[k]`` (rows of ``X``) from the features
    ``X``, all on the rows where ``X`` and every candidate are finite: features z-scored, reduced
    by one SVD, ``ridge`` relative to the mean squared singular value. NaN for every candidate
    when fewer than 50 rows are left."""
    ok = np.all(np.isfinite(X), axis=1)
    for yk in Ys:
        ok &= np.all(np.isfinite(yk), axis=1)
    if ok.sum() < 50:
        return [float("nan")] * len(Ys)
    Xc = X[ok]
    mu, sd = Xc.mean(0), Xc.std(0)
    Z = (Xc - mu) / np.where(sd > 0, sd, 1.0)
    U, s, _ = np.linalg.svd(Z, full_matrices=False)
    lam = ridge * float(np.mean(s ** 2)) / max(len(s), 1)
    shrink = s ** 2 / (s ** 2 + lam)
    r2 = []
    for yk in Ys:
        t = yk[ok] - yk[ok].mean(0)
        fit = U @ (shrink[:, None] * (U.T @ t))
        den = float(np.sum(t ** 2))
        r2.append(1.0 - float(np.sum((t - fit) ** 2)) / den if den > 0 else float("nan"))
    return r2


def best_label_lag(X_blocks: Sequence[np.ndarray], y_blocks: Sequence[np.ndarray], dt_s: float,
                   max_lag_s: float = MAX_LAG_S, ridge: float = 1.0) -> tuple[int, list[float]]:
    """The lag (bins) at which features best explain the labels: features of bin ``t`` go with
    labels of bin ``t - lag``.

    Each block is trimmed by the largest lag so every candidate is scored on the same feature
    rows. Features are z-scored, reduced by one SVD and scored by in-sample ridge R² (``ridge``
    relative to the mean squared singular value). Returns ``(lag, r2 per lag)``; lag 0 when the
    data are too short to tell.
    """
    n_lag = int(round(max_lag_s / dt_s))
    rows, ys = [], []
    for X, y in zip(X_blocks, y_blocks):
        if len(X) > n_lag + 10:
            rows.append(X[n_lag:])
            ys.append([y[n_lag - k: len(y) - k] for k in range(n_lag + 1)])
    if not rows or n_lag == 0:
        return 0, [float("nan")]
    Xc = np.concatenate(rows).astype(np.float64)
    Y = [np.concatenate([yb[k] for yb in ys]) for k in range(n_lag + 1)]
    r2 = ridge_r2(Xc, Y, ridge)
    finite = [v if np.isfinite(v) else -np.inf for v in r2]
    return int(np.argmax(finite)), r2


def intended_velocity(decoded_velocity: Any, cursor_pos: Any, target_pos: Any, on_target: Any) -> np.ndarray:
    """ReFIT intention estimate (Gilja et al. 2012).

    The decoded velocity is rotated to point from the cursor at the target, keeping its
    speed; while the cursor is on the target the intended velocity is zero.

    Parameters
    ----------
    decoded_velocity, cursor_pos, target_pos : array (n_bins, n_dims)
    on_target : array of bool (n_bins,)

    Returns
    -------
    ndarray (n_bins, n_dims)
    """
    v = np.asarray(decoded_velocity, dtype=np.float64)
    c = np.asarray(cursor_pos, dtype=np.float64)
    g = np.asarray(target_pos, dtype=np.float64)
    on = np.asarray(on_target)
    if v.ndim != 2:
        raise ValidationError(f"decoded_velocity must be 2-D (bins x dims); got shape {v.shape}")
    for name, arr in (("cursor_pos", c), ("target_pos", g)):
        if arr.shape != v.shape:
            raise ValidationError(f"{name} must have the shape of decoded_velocity {v.shape}; got {arr.shape}")
        check_finite(name, arr)
    check_finite("decoded_velocity", v)
    if on.shape != (v.shape[0],):
        raise ValidationError(f"on_target must have shape ({v.shape[0]},); got {on.shape}")
    if on.dtype != bool:
        if not np.all(np.isin(on, (0, 1))):
            raise ValidationError("on_target must be boolean (or 0/1)")
        on = on.astype(bool)
    to_target = g - c
    dist = np.linalg.norm(to_target, axis=1, keepdims=True)
    speed = np.linalg.norm(v, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        direction = np.where(dist > 0, to_target / np.where(dist > 0, dist, 1.0), 0.0)
    out = speed * direction
    out[on] = 0.0
    return out
