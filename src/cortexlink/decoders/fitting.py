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
import math
import time
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_choice
from cortexlink.decoders.labels import MAX_LAG_S

__all__ = ["DECODER_KINDS", "make_decoder", "make_click_decoder", "training_set", "lagged_training_set", "refit_set", "FitResult", "fit_decoders",
           "refit_decoder", "refit_intent_lag", "check_intent_lag"]

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


#: The click decoder's ``on_threshold`` in a closed loop unless its params name one (the class's own
#: default is 0.7). Webgrid, Kalman, cortex preset, seeds 0-2: 96 ch 9x9 1.55 -> 2.14 bps (0.97:
#: 2.28; false clicks 13 -> 2-7 per minute, fewer intents detected), 256 ch 30x30 2.56 -> 3.11,
#: 1024 ch 30x30 4.20 -> 4.20: a false click costs a correct one, a missed click only a retry.
CLICK_ON_THRESHOLD = 0.9


def make_click_decoder(params: dict | None = None) -> Any:
    """An unfitted :class:`~cortexlink.decoders.ClickDecoder` with ``params`` (``on_threshold``
    :data:`CLICK_ON_THRESHOLD` unless given), checked as its ``fit`` would check them.

    Raises
    ------
    ConfigError
        For a parameter it does not take (naming the valid ones) or an invalid value.
    """
    from cortexlink.decoders import ClickDecoder

    params = dict(params or {})
    dec = ClickDecoder()
    _check_names("ClickDecoder", params, dec.get_params())
    params.setdefault("on_threshold", CLICK_ON_THRESHOLD)
    dec.set_params(**params)
    dec._check_params()
    return dec


def _check_names(cls_name: str, params: dict, valid: Any) -> None:
    valid = set(valid)
    unknown = sorted((str(k) for k in params if k not in valid))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown[:10]} for {cls_name}; valid: {sorted(valid)}")


def training_set(blocks: Sequence[Any], labels: str = "intent", lag_bins: int | str = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoder training data from open-loop blocks: features, velocity labels, click labels.

    See :func:`lagged_training_set` for the parameters; this returns its first three items.
    """
    return lagged_training_set(blocks, labels, lag_bins)[:3]


def lagged_training_set(blocks: Sequence[Any], labels: str = "intent", lag_bins: int | str = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Decoder training data from open-loop blocks: features, velocity labels, click labels, and
    the label lag used (bins).

    Parameters
    ----------
    blocks : sequence of blocks (see the module docstring)
    labels : {"target", "cursor", "intent"}
        Velocity labels (:mod:`cortexlink.decoders.labels`): ``"target"`` (direction to the target
        at the cursor's speed) and ``"cursor"`` (the cursor's velocity) are what a lab records;
        ``"intent"`` (default here, for callers with traces of their own) is the simulated
        participant's true intent, an oracle.
    lag_bins : int or "auto"
        Features of bin ``t`` are paired with labels of bin ``t - lag_bins`` (cortex follows a
        cursor it watches late); ``"auto"`` chooses it with
        :func:`~cortexlink.decoders.labels.best_label_lag` (blocks then need ``dt_s``).

    Click labels are the participant's click intent (>= 0.5), unlagged. Bins with any
    non-finite feature or label are dropped.

    Raises
    ------
    ConfigError
        If no block holds features, or the labels need kinematics the blocks lack.
    """
    from cortexlink.decoders.labels import best_label_lag, label_velocity

    used = [b for b in blocks if b.features is not None and len(b.features)]
    if not used:
        raise ConfigError("no calibration bins to fit on: run a calibration block (with the implant) first")
    ys = [label_velocity(b, labels) for b in used]
    if isinstance(lag_bins, str):
        check_choice("lag_bins", lag_bins, ("auto",))
        lag_bins, _ = best_label_lag([b.features for b in used], ys, float(getattr(used[0], "dt_s", 0.02)))
    if isinstance(lag_bins, bool) or not isinstance(lag_bins, (int, np.integer)) or lag_bins < 0:
        raise ConfigError(f"lag_bins must be an integer >= 0 or 'auto'; got {lag_bins!r}")
    X, y, c = [], [], []
    for b, yb in zip(used, ys):
        k = int(lag_bins)
        if len(b.features) <= k:
            continue
        X.append(b.features[k:])
        y.append(yb[:len(yb) - k])
        c.append(np.asarray(b.click_intent)[k:] if k else np.asarray(b.click_intent))
    if not X:
        raise ConfigError(f"no calibration bins left after a label lag of {lag_bins} bins")
    X, y, c = np.concatenate(X), np.concatenate(y), np.concatenate(c)
    ok = np.all(np.isfinite(X), axis=1) & np.all(np.isfinite(y), axis=1)
    return X[ok].astype(np.float64), y[ok], (c[ok] >= 0.5).astype(int), int(lag_bins)


def _refit_rows(blocks: Sequence[Any], exclude_after_target_s: float, skip: int) -> list[np.ndarray]:
    """Per block, the bins ReFIT may use (see :func:`refit_set`): a target, finite features and a
    decoded velocity, at least ``exclude_after_target_s`` and ``skip`` bins into the block's
    target (so ``row - lag`` is a bin of the same target for every lag up to ``skip``)."""
    rows = []
    for b in blocks:
        n = len(b.target_xy)
        ok = (np.all(np.isfinite(b.features), axis=1) & np.all(np.isfinite(b.target_xy), axis=1)
              & np.all(np.isfinite(b.decoded_velocity), axis=1))
        changed = np.r_[True, np.any(b.target_xy[1:] != b.target_xy[:-1], axis=1)] if n else np.zeros(0, bool)
        since = np.arange(n) - np.maximum.accumulate(np.where(changed, np.arange(n), 0))
        n_ex = int(round(exclude_after_target_s / b.dt_s))
        rows.append(np.flatnonzero(ok & (since >= max(n_ex, skip))))
    return rows


def _gather(blocks: Sequence[Any], name: str, rows: list[np.ndarray], lag: int = 0) -> np.ndarray:
    """Attribute ``name`` of every block at its ``rows - lag``, concatenated."""
    return np.concatenate([np.asarray(getattr(b, name))[r - lag] for b, r in zip(blocks, rows)])


def refit_set(blocks: Sequence[Any], exclude_after_target_s: float = 0.3, *, lag_bins: int = 0,
              skip_bins: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ReFIT data from closed-loop blocks: ``X, decoded_velocity, cursor_xy, target_xy, on_target``.

    Bins without a target, with non-finite features or without a decoded velocity are dropped,
    and so are the first ``exclude_after_target_s`` after each new target: the participant has
    not reacted to it yet, so "toward the target" is not its intention there.

    ``lag_bins``: the cursor position and on-target flag of each bin are those of ``lag_bins``
    earlier in its block — where the participant saw the cursor when it formed the intention the
    bin's features carry (its visual delay and the cortical lag); the first ``skip_bins``
    (default ``lag_bins``) of each block and of each target are dropped (a cursor seen for the
    previous target says nothing of the intention for this one).
    """
    skip = lag_bins if skip_bins is None else skip_bins
    if skip < lag_bins:
        raise ConfigError(f"skip_bins must be at least lag_bins ({lag_bins}); got {skip}")
    rows = _refit_rows(blocks, exclude_after_target_s, skip)
    return (_gather(blocks, "features", rows).astype(np.float64), _gather(blocks, "decoded_velocity", rows),
            _gather(blocks, "cursor_xy", rows, lag_bins), _gather(blocks, "target_xy", rows),
            _gather(blocks, "on_target", rows, lag_bins))


def refit_intent_lag(blocks: Sequence[Any], max_lag_s: float = MAX_LAG_S,
                     exclude_after_target_s: float = 0.3) -> tuple[int, list[float]]:
    """The cursor lag (bins) at which ReFIT's intention labels are best explained by the features:
    for each candidate lag the labels are re-estimated from where the cursor was that many bins
    earlier (:func:`refit_set`, :func:`~cortexlink.decoders.kalman.intended_velocity`), on the
    same bins for every candidate, and scored by in-sample ridge R² (:func:`~cortexlink.decoders.
    labels.ridge_r2`) — the calibration's lag choice applied to the closed loop, from recorded
    data only. Returns ``(lag, r2 per lag)``; 0 when there are too few bins to tell."""
    from cortexlink.decoders.kalman import intended_velocity
    from cortexlink.decoders.labels import ridge_r2

    dt = min((b.dt_s for b in blocks), default=0.0)
    n_lag = int(round(max_lag_s / dt)) if dt > 0 else 0
    if n_lag == 0:
        return 0, [float("nan")]
    rows = _refit_rows(blocks, exclude_after_target_s, n_lag)
    if sum(r.size for r in rows) < 50:
        return 0, [float("nan")] * (n_lag + 1)
    X = _gather(blocks, "features", rows).astype(np.float64)
    dv, tgt = _gather(blocks, "decoded_velocity", rows), _gather(blocks, "target_xy", rows)
    Ys = [intended_velocity(dv, _gather(blocks, "cursor_xy", rows, lag), tgt, _gather(blocks, "on_target", rows, lag))
          for lag in range(n_lag + 1)]
    r2 = ridge_r2(X, Ys)
    finite = [v if np.isfinite(v) else -np.inf for v in r2]
    return int(np.argmax(finite)), r2


@dataclasses.dataclass
class FitResult:
    """What :func:`fit_decoders` / :func:`refit_decoder` return: the decoders and a JSON-able ``info``."""

    decoder: Any
    click_decoder: Any
    info: dict
    speed_gain: Any = None


def fit_decoders(kind: str, params: dict | None, blocks: Sequence[Any], *, feature_names: Sequence[str] | None = None,
                 click: bool = True, click_params: dict | None = None, on_no_click: str = "raise",
                 labels: str = "intent", lag_bins: int | str = 0, speed_gain: Any = None,
                 velocity_tau_s: float | None = None, bias_tau_s: float | None = None) -> FitResult:
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
    labels, lag_bins : the velocity labels and their lag (:func:`lagged_training_set`)
    speed_gain : None, "auto" or float
        A :class:`~cortexlink.decoders.speed_gain.SpeedGain` for the decoder's output
        (``FitResult.speed_gain``): ``"auto"`` sets its ``s0`` from the rest noise measured on
        held-out calibration bins, a number is ``s0`` in screen units/s, None is none.
    velocity_tau_s : float or None
        For Kalman kinds whose ``params`` do not name ``velocity_tau_bins``: the correlation
        time of the velocity prior in seconds (``velocity_tau_bins = velocity_tau_s / dt_s`` of
        the blocks; see :class:`~cortexlink.decoders.KalmanFilter`). None: dynamics fitted to
        the labels. Other kinds ignore it.
    bias_tau_s : float or None
        Bias correction (:class:`~cortexlink.decoders.speed_gain.BiasCorrector`) with this time
        constant: ``info["bias_correction"]`` holds its settings, the speed threshold measured on
        the training bins. None: none.
    """
    from cortexlink.decoders.speed_gain import SpeedGain, auto_speed_gain

    check_choice("on_no_click", on_no_click, ("raise", "note"))
    t0 = time.perf_counter()
    X, y, c, lag = lagged_training_set(blocks, labels, lag_bins)
    params = dict(params or {})
    if velocity_tau_s is not None and kind in ("kalman", "refit_kalman") and "velocity_tau_bins" not in params:
        if (isinstance(velocity_tau_s, bool) or not isinstance(velocity_tau_s, (int, float))
                or not math.isfinite(velocity_tau_s) or velocity_tau_s <= 0):
            raise ConfigError(f"velocity_tau_s must be null or a finite time > 0 (seconds); got {velocity_tau_s!r}")
        params["velocity_tau_bins"] = float(velocity_tau_s) / float(getattr(blocks[0], "dt_s", 0.02))
    dec = make_decoder(kind, params)
    if dec is None:
        raise ConfigError("decoder 'perfect' has nothing to fit")
    dec.fit(X, y, feature_names=None if feature_names is None else tuple(feature_names))
    info: dict[str, Any] = {"cmd": "fit", "n_bins": int(X.shape[0]), "n_features": int(X.shape[1]),
                            "n_click_bins": int(c.sum()), "labels": labels, "label_lag_bins": lag,
                            "velocity_tau_bins": params.get("velocity_tau_bins")}
    gain = None
    if speed_gain == "auto":
        gain = auto_speed_gain(lambda: make_decoder(kind, params), X, y)
        if gain is None:
            info["note_speed_gain"] = "speed gain 'auto': too few rest bins to measure the rest noise; no gain"
    elif speed_gain is not None:
        gain = speed_gain if isinstance(speed_gain, SpeedGain) else SpeedGain(speed_gain)
    info["speed_gain"] = None if gain is None else gain.to_dict()
    _bias_info(info, dec, X, bias_tau_s, blocks)
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
    return FitResult(dec, click_dec, info, gain)


def _bias_info(info: dict, dec: Any, X: np.ndarray, bias_tau_s: float | None, blocks: Sequence[Any]) -> None:
    """``info["bias_correction"]``: the settings of a bias corrector for ``dec`` (None: off, or no
    speed threshold could be measured, said in ``info["note_bias"]``)."""
    from cortexlink.decoders.speed_gain import BiasCorrector, bias_speed_threshold

    info["bias_correction"] = None
    if bias_tau_s is None:
        return
    thr = bias_speed_threshold(dec, X)
    if thr is None:
        info["note_bias"] = "bias correction: the decoder's speeds on its training bins give no threshold; none"
        return
    info["bias_correction"] = BiasCorrector(bias_tau_s, thr, float(getattr(blocks[0], "dt_s", 0.02))).to_dict()


def check_intent_lag(path: str, value: Any) -> Any:
    """A ReFIT intention lag setting: None (the current cursor), ``"auto"`` or seconds in [0, 1].

    Raises
    ------
    ConfigError
        Naming ``path``, for anything else.
    """
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{path} must be null, 'auto' or seconds in [0, 1]; got {value!r}")
    return float(value)


def refit_decoder(decoder: Any, blocks: Sequence[Any], *, in_place: bool = True, prior: Any = None,
                  intent_lag: Any = 0, keep: float = 0.0, bias_tau_s: float | None = None) -> FitResult:
    """ReFIT: re-estimate a ReFIT-Kalman decoder from closed-loop blocks (see :func:`refit_set`).

    ``in_place=False`` refits a copy (a decoder may keep running while its successor is fitted).
    ``prior``: the calibration's ``(X, y)`` (:func:`lagged_training_set` of the fit's blocks,
    labels and lag), refitted together with the closed-loop bins (``X_prior``/``y_prior`` of
    :meth:`~cortexlink.decoders.ReFITKalmanFilter.refit`); None: the closed-loop bins alone.
    ``intent_lag``: bins by which the intention is re-estimated from an earlier cursor position
    (:func:`refit_set`); ``"auto"`` chooses it from the data (:func:`refit_intent_lag`); 0 is
    Gilja et al.'s current cursor. ``keep``: SmoothBatch blending (``keep`` of the current
    observation model kept; :meth:`~cortexlink.decoders.ReFITKalmanFilter.refit`). ``bias_tau_s``:
    as in :func:`fit_decoders`, the threshold measured on the closed-loop bins.
    """
    if not hasattr(decoder, "refit"):
        raise ConfigError(f"refit needs decoder kind 'refit_kalman'; got {type(decoder).__name__}")
    t0 = time.perf_counter()
    if intent_lag == "auto":
        lag, _ = refit_intent_lag(blocks)
    elif isinstance(intent_lag, (int, np.integer)) and not isinstance(intent_lag, bool) and 0 <= intent_lag <= 1000:
        lag = int(intent_lag)
    else:
        raise ConfigError(f"intent_lag must be 'auto' or a whole number of bins in [0, 1000]; got {intent_lag!r}")
    Xr, dv, cur, tgt, ont = refit_set(blocks, lag_bins=lag)
    dec = decoder if in_place else copy.deepcopy(decoder)
    Xp, yp = prior if prior is not None else (None, None)
    dec.refit(Xr, dv, cur, tgt, ont, X_prior=Xp, y_prior=yp, keep=keep)
    info = {"cmd": "refit", "n_bins": int(Xr.shape[0]), "intent_lag_bins": lag, "keep": float(keep),
            "n_prior_bins": 0 if Xp is None else int(len(Xp))}
    _bias_info(info, dec, Xr, bias_tau_s, blocks)
    info["fit_s"] = time.perf_counter() - t0
    return FitResult(dec, None, info)
