"""Feature preprocessing for decoders: select, smooth causally, standardise, stack lags.

:class:`FeaturePreprocessor` is a scikit-learn transformer (use it in a ``Pipeline``)
and a streaming processor (``reset_state`` / ``step``) whose stacked ``step`` outputs
equal ``transform``. :class:`StreamingPipeline` chains it with a decoder and streams
the whole chain.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import scipy.signal
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.types import ChannelMap
from cortexlink.decoders._base import (DecoderMixin, _unwrap_features, as_int_param, check_is_fitted,
                                       check_shapes, finite_bin, register)

logger = logging.getLogger(__name__)

__all__ = ["FeaturePreprocessor", "StreamingPipeline"]


@register
class FeaturePreprocessor(DecoderMixin, TransformerMixin, BaseEstimator):
    """Select features, smooth them causally, standardise and stack past bins.

    Order: select -> smooth -> standardise -> lag-stack. Every stage is causal; bins
    before the first are taken to equal the training mean.

    Parameters
    ----------
    channels : sequence of int, of bool, or of str, optional
        Features to keep: column indices, a boolean mask, or names. A name matches a
        feature name exactly (``"ch0012/sbp"``) or the channel part before ``/``
        (``"ch0012"`` keeps every feature of that channel). Names need feature names
        (from a BinnedFeatures or ``feature_names=``). None keeps all.
    exclude_bad : bool, default=True
        Drop features of channels marked bad in the ``channel_map`` given to ``fit``.
    smoothing : {"none", "ema", "boxcar"}, default="none"
        Causal smoothing: exponential moving average with time constant
        ``smooth_bins`` bins, or the mean of the last ``smooth_bins`` bins.
    smooth_bins : int, default=5
        Time constant / window of the smoothing, in bins.
    standardize : bool, default=True
        Subtract the training mean and divide by the training standard deviation
        (constant features are divided by 1).
    n_lags : int, default=1
        Output ``[z_t, z_{t-1}, ..., z_{t-n_lags+1}]`` (newest first).

    Attributes
    ----------
    selected_idx_ : ndarray of int
        Input columns kept.
    mean_, scale_ : ndarray
        Standardisation of the (smoothed) selected features.
    raw_mean_ : ndarray
        Training mean of the selected raw features (initial smoother state).
    n_features_out_ : int
    """

    _persist = ("selected_idx_", "mean_", "scale_", "raw_mean_", "n_features_out_", "feature_names_in_sel_")

    def __init__(self, channels: Sequence[Any] | None = None, exclude_bad: bool = True, smoothing: str = "none",
                 smooth_bins: int = 5, standardize: bool = True, n_lags: int = 1) -> None:
        self.channels = channels
        self.exclude_bad = exclude_bad
        self.smoothing = smoothing
        self.smooth_bins = smooth_bins
        self.standardize = standardize
        self.n_lags = n_lags

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags

    # ---------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.smoothing not in ("none", "ema", "boxcar"):
            raise ConfigError(f"smoothing must be one of ('none', 'ema', 'boxcar'); got {self.smoothing!r}")
        as_int_param("smooth_bins", self.smooth_bins, 1)
        as_int_param("n_lags", self.n_lags, 1)
        for name in ("exclude_bad", "standardize"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name} must be True or False; got {getattr(self, name)!r}")

    def _select(self, n_features: int, names: tuple[str, ...] | None, channel_map: ChannelMap | None) -> np.ndarray:
        keep = np.ones(n_features, bool)
        ch = self.channels
        if ch is not None:
            arr = np.asarray(ch)
            if arr.dtype == bool:
                if arr.shape != (n_features,):
                    raise ValidationError(f"channels as a boolean mask must have shape ({n_features},); got {arr.shape}")
                keep = arr.copy()
            elif arr.dtype.kind in "iu":
                if arr.size and (arr.min() < -n_features or arr.max() >= n_features):
                    raise ValidationError(f"channels indices must be in [0, {n_features}); got {arr.tolist()[:10]}")
                keep = np.zeros(n_features, bool)
                keep[arr] = True
            elif arr.dtype.kind in "UO":
                if names is None:
                    raise ValidationError("channels given by name need feature names: pass a BinnedFeatures "
                                          "or feature_names= to fit")
                wanted = [str(c) for c in arr.ravel()]
                keep = np.zeros(n_features, bool)
                chan = [n.split("/", 1)[0] for n in names]
                for w in wanted:
                    hit = [i for i, (n, c) in enumerate(zip(names, chan)) if n == w or c == w]
                    if not hit:
                        raise ValidationError(f"channels: no feature named or on channel {w!r} "
                                              f"(features look like {names[:3]})")
                    keep[hit] = True
            else:
                raise ConfigError(f"channels must be indices, a boolean mask or names; got {ch!r}")
        if self.exclude_bad and channel_map is not None and channel_map.bad.any():
            bad_ids = {channel_map.channel_ids[i] for i in np.flatnonzero(channel_map.bad)}
            if names is not None:
                is_bad = np.array([n.split("/", 1)[0] in bad_ids for n in names])
            elif channel_map.n_channels == n_features:
                is_bad = channel_map.bad.copy()
            else:
                raise ValidationError(f"exclude_bad needs feature names to map {n_features} features onto "
                                      f"{channel_map.n_channels} channels")
            keep &= ~is_bad
        if not keep.any():
            raise ValidationError("no features left after channel selection and bad-channel exclusion")
        return np.flatnonzero(keep)

    def fit(self, X: Any, y: Any = None, *, feature_names: Sequence[str] | None = None,
            channel_map: ChannelMap | None = None) -> "FeaturePreprocessor":
        """Learn the selection, the smoother's initial state and the standardisation.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
        y : ignored
        feature_names : sequence of str, optional
        channel_map : ChannelMap, optional
            Used to drop bad channels (``exclude_bad``) and stored.

        Returns
        -------
        self
        """
        self._check_params()
        X, names = _unwrap_features(X, feature_names)
        from sklearn.utils.validation import validate_data

        X = validate_data(self, X, reset=True, dtype=np.float64, ensure_all_finite=False)
        from cortexlink.decoders._base import check_finite, check_min_samples

        check_finite("X", X)
        check_min_samples(type(self).__name__, X.shape[0], 1)
        if names is not None and len(names) != X.shape[1]:
            raise ValidationError(f"feature_names must have {X.shape[1]} entries; got {len(names)}")
        if channel_map is not None and not isinstance(channel_map, ChannelMap):
            raise ValidationError(f"channel_map must be a cortexlink.ChannelMap; got {type(channel_map).__name__}")
        self.feature_names_ = names
        self.channel_map_ = channel_map
        idx = self._select(X.shape[1], names, channel_map)
        self.selected_idx_ = idx
        self.feature_names_in_sel_ = None if names is None else tuple(names[i] for i in idx)
        Xs = X[:, idx]
        self.raw_mean_ = Xs.mean(axis=0)
        S = self._smooth(Xs)
        if self.standardize:
            self.mean_ = S.mean(axis=0)
            sd = S.std(axis=0)
            self.scale_ = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(self.mean_)), sd, 1.0)
        else:
            self.mean_ = np.zeros(idx.size)
            self.scale_ = np.ones(idx.size)
        self.n_features_out_ = idx.size * int(self.n_lags)
        self.reset_state()
        return self

    def _smooth(self, Xs: np.ndarray) -> np.ndarray:
        k = int(self.smooth_bins)
        if self.smoothing == "ema":
            a = 1.0 - math.exp(-1.0 / k)
            zi = ((1.0 - a) * self.raw_mean_)[None, :]
            return scipy.signal.lfilter([a], [1.0, -(1.0 - a)], Xs, axis=0, zi=zi)[0]
        if self.smoothing == "boxcar" and k > 1:
            pad = np.concatenate([np.broadcast_to(self.raw_mean_, (k - 1, Xs.shape[1])), Xs])
            c = np.cumsum(pad, axis=0)
            out = c[k - 1:].copy()
            out[1:] -= c[:-k]
            return out / k
        return Xs

    def _z_pad(self) -> np.ndarray:
        """Transformed value of a bin equal to the training mean (history before bin 0)."""
        return (self.raw_mean_ - self.mean_) / self.scale_

    def _transform_clean(self, Xs: np.ndarray) -> np.ndarray:
        Z = (self._smooth(Xs) - self.mean_) / self.scale_
        L = int(self.n_lags)
        if L == 1:
            return Z
        n, f = Z.shape
        Zp = np.concatenate([np.broadcast_to(self._z_pad(), (L - 1, f)), Z])
        return np.concatenate([Zp[L - 1 - k:L - 1 - k + n] for k in range(L)], axis=1)

    def transform(self, X: Any, *, on_invalid: str = "raise") -> np.ndarray:
        """Transform a block of bins from the reset state.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
        on_invalid : {"raise", "hold"}
            ``"hold"``: bins with NaN/Inf in a selected feature repeat the previous
            output and leave the smoother and lag state untouched, as :meth:`step`
            does. Unselected features are never looked at.

        Returns
        -------
        ndarray (n_bins, n_features_out_)
        """
        from cortexlink.decoders._base import check_finite

        X = self._validate_predict(X, "hold")
        if on_invalid not in ("raise", "hold"):
            raise ConfigError(f"on_invalid must be one of ('raise', 'hold'); got {on_invalid!r}")
        Xs = X[:, self.selected_idx_]
        if on_invalid == "raise":
            check_finite("X", Xs, " in a selected feature (use on_invalid='hold' to hold the last output, "
                                  "as step() does)")
        good = np.all(np.isfinite(Xs), axis=1)
        if good.all():
            return self._transform_clean(Xs)
        out = np.empty((X.shape[0], self.n_features_out_))
        pred = self._transform_clean(Xs[good]) if good.any() else np.empty((0, self.n_features_out_))
        last = self._initial_output()
        gi = 0
        for t in range(X.shape[0]):
            if good[t]:
                last = pred[gi]
                gi += 1
            out[t] = last
        return out

    def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> np.ndarray:
        """Output feature names: the selected names, with ``@lagK`` when ``n_lags > 1``."""
        check_is_fitted(self)
        if input_features is not None:
            base = [str(n) for n in input_features]
            if len(base) != self.n_features_in_:
                raise ValueError(f"input_features should have length equal to number of features "
                                 f"({self.n_features_in_}), got {len(base)}")
        elif self.feature_names_ is not None:
            base = list(self.feature_names_)
        else:
            base = [f"x{i}" for i in range(self.n_features_in_)]
        sel = [base[i] for i in self.selected_idx_]
        if int(self.n_lags) == 1:
            return np.asarray(sel, dtype=object)
        return np.asarray([f"{n}@lag{k}" for k in range(int(self.n_lags)) for n in sel], dtype=object)

    def _check_loaded(self) -> None:
        idx = self.selected_idx_
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or not np.all((idx >= 0) & (idx < self.n_features_in_)):
            raise ValidationError(f"selected_idx_ must list column indices in [0, {self.n_features_in_}); got {idx!r}")
        k = (idx.size,)
        check_shapes({"mean_": self.mean_, "scale_": self.scale_, "raw_mean_": self.raw_mean_},
                     {"mean_": k, "scale_": k, "raw_mean_": k}, f"(one per selected feature: {idx.size})")
        if self.n_features_out_ != idx.size * int(self.n_lags):
            raise ValidationError(f"n_features_out_ is {self.n_features_out_!r}; expected {idx.size * int(self.n_lags)}")

    # ---------------------------------------------------------------------------------
    def _initial_output(self) -> np.ndarray:
        return np.tile(self._z_pad(), int(self.n_lags))

    def _reset_stream(self) -> None:
        f = self.selected_idx_.size
        L, k = int(self.n_lags), int(self.smooth_bins)
        self._ema = self.raw_mean_.copy()
        self._a = 1.0 - math.exp(-1.0 / k)
        self._box = np.empty((2 * k, f))
        self._box[:] = self.raw_mean_
        self._box_pos = 0
        self._lag = np.empty((2 * L, f))
        self._lag[:] = self._z_pad()
        self._lag_pos = 0
        self._out = self._initial_output()

    def step(self, x: Any) -> np.ndarray:
        """Transform one bin (streaming counterpart of :meth:`transform`).

        Parameters
        ----------
        x : array (n_features,)

        Returns
        -------
        ndarray (n_features_out_,)
            The previous output if ``x`` held NaN/Inf (``last_step_valid_`` False).
        """
        x = self._check_step_input(x)
        xs = x[self.selected_idx_]
        if not finite_bin(xs):
            self._note_invalid()
            return self._out.copy()
        if self.smoothing == "ema":
            self._ema += self._a * (xs - self._ema)
            s = self._ema
        elif self.smoothing == "boxcar" and int(self.smooth_bins) > 1:
            k, j = int(self.smooth_bins), self._box_pos
            self._box[j] = xs
            self._box[j + k] = xs
            s = self._box[j + 1:j + 1 + k].mean(axis=0)
            self._box_pos = j + 1 if j + 1 < k else 0
        else:
            s = xs
        z = (s - self.mean_) / self.scale_
        L = int(self.n_lags)
        if L == 1:
            out = z
        else:
            j = self._lag_pos
            self._lag[j] = z
            self._lag[j + L] = z
            out = self._lag[j + 1:j + 1 + L][::-1].reshape(-1)
            self._lag_pos = j + 1 if j + 1 < L else 0
        self._out = np.array(out, dtype=np.float64)
        self.last_step_valid_ = True
        return self._out.copy()


class StreamingPipeline(Pipeline):
    """A scikit-learn ``Pipeline`` whose steps all stream: adds ``reset_state`` and ``step``.

    ``step(x)`` passes one bin through every transformer's ``step`` and returns the
    final estimator's ``step`` output; stacked, these equal ``predict(X)``.
    """

    def reset_state(self) -> "StreamingPipeline":
        """Reset every step's streaming state; returns self."""
        for _, est in self.steps:
            if est is not None and est != "passthrough":
                est.reset_state()
        return self

    def step(self, x: Any) -> Any:
        """Process one bin through the chain."""
        for _, est in self.steps:
            if est is None or est == "passthrough":
                continue
            x = est.step(x)
        return x
