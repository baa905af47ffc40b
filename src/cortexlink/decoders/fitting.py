"""Fitting the closed loop's decoders: the one place a velocity and click decoder are built,
trained on calibration blocks and refitted (ReFIT) from closed-loop blocks.

Every closed loop (a session file, the demo, the operator UI, a benchmark) calls these plain
functions from its decoder node; none writes its own fit.

A *block* here is anything with the per-bin arrays these functions read (a
:class:`~cortexlink.tasks.trace.BlockTrace`, or a namespace with the same attribute names):
``features`` (bins x features, NaN where missing), ``intended_velocity`` / ``cursor_velocity``
(bins x 2), ``click_intent`` (bins), and for ReFIT ``decoded_velocity``, ``cursor_xy``,
``target_xy``, ``on_target`` and ``dt_s``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_choice

__all__ = ["DECODER_KINDS", "make_decoder", "make_click_decoder", "training_set", "refit_set", "FitResult", "fit_decoders",
           "refit_decoder"]

#: Velocity decoder kinds a session or graph may name (``perfect``: the cursor follows the
#: participant's intent; nothing is fitted).
DECODER_KINDS = ("wiener", "kalman", "refit_kalman", "gru", "perfect")


def make_decoder(kind: str, params: dict | None = None) -> Any:
    """An unfitted velocity decoder from its session name (None for ``perfect``).

    Raises
    ------
    ConfigError
        For an unknown kind or a parameter the decoder does not take (naming the valid ones).
    """
    from cortexlink.decoders import GRUDecoder, KalmanFilter, ReFITKalmanFilter, WienerFilter

    params = dict(params or {})
    if kind == "perfect":
        if params:
            raise ConfigError(f"decoder 'perfect' takes no params; got {sorted(params)}")
        return None
    cls = {"wiener": WienerFilter, "kalman": KalmanFilter, "refit_kalman": ReFITKalmanFilter,
           "gru": GRUDecoder}.get(kind)
    if cls is None:
        raise ConfigError(f"decoder.kind must be one of {list(DECODER_KINDS)}; got {kind!r}")
    dec = cls()
    _check_names(cls.__name__, params, dec.get_params())
    dec.set_params(**params)
    dec._check_params()              # what fit would refuse, refused now (``session check`` = ``run``)
    return dec


def make_click_decoder(params: dict | None = None) -> Any:
    """An unfitted :class:`~cortexlink.decoders.ClickDecoder` with ``params``, checked as its
    ``fit`` would check them.

    Raises
    ------
    ConfigError
        For a parameter it does not take (naming the valid ones) or an invalid value.
    """
    from cortexlink.decoders import ClickDecoder

    params = dict(params or {})
    dec = ClickDecoder()
    _check_names("ClickDecoder", params, dec.get_params())
    dec.set_params(**params)
    dec._check_params()
    return dec


def _check_names(cls_name: str, params: dict, valid: Any) -> None:
    valid = set(valid)
    unknown = sorted((str(k) for k in params if k not in valid))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown[:10]} for {cls_name}; valid: {sorted(valid)}")


def training_set(blocks: Sequence[Any], labels: str = "intent") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoder training data from open-loop blocks: features, velocity labels, click labels.

    Parameters
    ----------
    blocks : sequence of blocks (see the module docstring)
    labels : {"intent", "cursor"}
        ``"intent"`` (default): the simulated participant's true intended velocity. This is an
        oracle no real calibration has; it is the default because with ``"cursor"`` (what a lab
        observes: the velocity of the cursor that moved by itself) closed-loop Webgrid on the
        current simulator falls to ~0 bps for Kalman and ReFIT alike (open work, see README).

    Click labels are the participant's click intent (>= 0.5). Bins with any non-finite
    feature or label are dropped.

    Raises
    ------
    ConfigError
        If no block holds features.
    """
    check_choice("labels", labels, ("cursor", "intent"))
    key = "cursor_velocity" if labels == "cursor" else "intended_velocity"
    used = [b for b in blocks if b.features is not None and len(b.features)]
    if not used:
        raise ConfigError("no calibration bins to fit on: run a calibration block (with the implant) first")
    X = np.concatenate([b.features for b in used])
    y = np.concatenate([getattr(b, key) for b in used])
    c = np.concatenate([b.click_intent for b in used])
    ok = np.all(np.isfinite(X), axis=1) & np.all(np.isfinite(y), axis=1)
    return X[ok].astype(np.float64), y[ok], (c[ok] >= 0.5).astype(int)


def refit_set(blocks: Sequence[Any], exclude_after_target_s: float = 0.3
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ReFIT data from closed-loop blocks: ``X, decoded_velocity, cursor_xy, target_xy, on_target``.

    Bins without a target, with non-finite features or without a decoded velocity are dropped,
    and so are the first ``exclude_after_target_s`` after each new target: the participant has
    not reacted to it yet, so "toward the target" is not its intention there.
    """
    parts = []
    for b in blocks:
        n = len(b.target_xy)
        ok = (np.all(np.isfinite(b.features), axis=1) & np.all(np.isfinite(b.target_xy), axis=1)
              & np.all(np.isfinite(b.decoded_velocity), axis=1))
        changed = np.r_[True, np.any(b.target_xy[1:] != b.target_xy[:-1], axis=1)] if n else np.zeros(0, bool)
        n_ex = int(round(exclude_after_target_s / b.dt_s))
        recent = np.zeros(n, bool)
        for o in np.flatnonzero(changed):
            recent[o:o + n_ex] = True
        parts.append(ok & ~recent)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name)[k] for b, k in zip(blocks, parts)])

    return (cat("features").astype(np.float64), cat("decoded_velocity"), cat("cursor_xy"), cat("target_xy"),
            cat("on_target"))


@dataclasses.dataclass
class FitResult:
    """What :func:`fit_decoders` / :func:`refit_decoder` return: the decoders and a JSON-able ``info``."""

    decoder: Any
    click_decoder: Any
    info: dict


def fit_decoders(kind: str, params: dict | None, blocks: Sequence[Any], *, feature_names: Sequence[str] | None = None,
                 click: bool = True, click_params: dict | None = None, on_no_click: str = "raise") -> FitResult:
    """Fit a new velocity decoder (and click decoder) on calibration blocks.

    Parameters
    ----------
    kind, params : the velocity decoder (:func:`make_decoder`)
    blocks : sequence of calibration blocks
    feature_names : names of the feature columns (stored with the decoder, checked on load)
    click : bool
        Also fit a :class:`~cortexlink.decoders.ClickDecoder` on the click intent.
    click_params : dict
    on_no_click : {"raise", "note"}
        When ``click`` is true and the calibration holds no click intent: raise a
        :class:`~cortexlink.ConfigError`, or fit no click decoder and say so in ``info["note"]``.
    """
    check_choice("on_no_click", on_no_click, ("raise", "note"))
    t0 = time.perf_counter()
    X, y, c = training_set(blocks)
    dec = make_decoder(kind, params)
    if dec is None:
        raise ConfigError("decoder 'perfect' has nothing to fit")
    dec.fit(X, y, feature_names=None if feature_names is None else tuple(feature_names))
    info: dict[str, Any] = {"cmd": "fit", "n_bins": int(X.shape[0]), "n_features": int(X.shape[1]),
                            "n_click_bins": int(c.sum())}
    click_dec = None
    if click:
        if c.size == 0 or c.min() == c.max():
            msg = ("click decoding is on but the calibration blocks hold no click intent (use a click task, "
                   "e.g. centre_out with task_params: {click: true})")
            if on_no_click == "raise":
                raise ConfigError(msg)
            info["note"] = msg
        else:
            click_dec = make_click_decoder(click_params).fit(X, c)
    info["fit_s"] = time.perf_counter() - t0
    return FitResult(dec, click_dec, info)


def refit_decoder(decoder: Any, blocks: Sequence[Any], *, in_place: bool = True) -> FitResult:
    """ReFIT: re-estimate a ReFIT-Kalman decoder from closed-loop blocks (see :func:`refit_set`).

    ``in_place=False`` refits a copy (a decoder may keep running while its successor is fitted).
    """
    if not hasattr(decoder, "refit"):
        raise ConfigError(f"refit needs decoder kind 'refit_kalman'; got {type(decoder).__name__}")
    t0 = time.perf_counter()
    Xr, dv, cur, tgt, ont = refit_set(blocks)
    dec = decoder if in_place else copy.deepcopy(decoder)
    dec.refit(Xr, dv, cur, tgt, ont)
    return FitResult(dec, None, {"cmd": "refit", "n_bins": int(Xr.shape[0]), "fit_s": time.perf_counter() - t0})
