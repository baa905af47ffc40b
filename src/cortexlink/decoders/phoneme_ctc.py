"""Phoneme decoder: a causal GRU trained with CTC on trials of binned features, stepped in numpy.

:class:`PhonemeDecoder` maps each trial (bins x features at 20 ms) to per-frame log-probabilities
over the 41 classes of :mod:`cortexlink.core.phonemes` (0 = CTC blank, 1..39 phonemes, 40 = SIL):

``x -> (x - mean_d) / sd_d -> softsign(W_d z + b_d) -> stack kernel_bins bins every stride_bins
-> GRU (n_layers x hidden_size) -> Linear -> log_softmax``

where ``d`` is the recording day: each day has its own standardisation and its own affine layer
(identity-initialised), so slow changes of the recording between days are absorbed there while the
recurrent layers are shared. The stacking is causal (frame ``j`` sees bins ``j*s .. j*s+k-1``), so
the network runs online: :meth:`PhonemeDecoder.step` takes one bin and returns a frame every
``stride_bins`` bins, equal to :meth:`PhonemeDecoder.predict_logprobs` on the same trial.

``torch`` is imported only by ``fit``, ``predict_logprobs``/``predict`` and ``adapt_day``;
``step`` is numpy (float64, input standardisation folded into the day layer), so a loaded decoder
streams without torch.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import N_CLASSES, collapse_ctc
from cortexlink.core.types import ChannelMap
from cortexlink.decoders._base import (DecoderMixin, as_float_param, as_int_param, check_is_fitted,
                                       check_n_features, finite_bin, register)
from cortexlink.decoders._phoneme_net import as_days as _as_days
from cortexlink.decoders._phoneme_net import as_labels as _as_labels
from cortexlink.decoders._phoneme_net import as_trials as _as_trials
from cortexlink.decoders._phoneme_net import day_stats as _day_stats

logger = logging.getLogger(__name__)

__all__ = ["PhonemeDecoder"]


@register
class PhonemeDecoder(DecoderMixin, BaseEstimator):
    """Causal CTC phoneme decoder with day-specific input layers (trials of bins -> 41-class log-probs).

    Parameters
    ----------
    hidden_size : int, default=256
        GRU units per layer.
    n_layers : int, default=2
    input_proj : int or None, default=128
        Width of a shared linear projection (no bias) after the day layer, before stacking;
        None, or not fewer than the features: no projection (the GRU then sees
        ``kernel_bins * n_features`` inputs). With 512 features it halves the training time per
        trial on one CPU core.
    kernel_bins : int, default=4
        Bins stacked into one GRU input (4 x 20 ms = 80 ms of context per frame).
    stride_bins : int, default=2
        Bins between output frames (40 ms frames). Halves the recurrent steps (training and
        streaming cost) while leaving ~5-10 frames per phoneme at 50-70 words/min, well above
        CTC's one frame per label (the public baselines use stride 4 with their larger models).
    dropout : float in [0, 1), default=0.2
        On the day layer's output, between GRU layers and on the GRU output (training only).
    learning_rate : float, default=3e-3
        Adam peak step size (linear warm-up over the first <= 50 updates, cosine decay to 10 %).
    weight_decay : float, default=1e-5
        Adam L2 penalty.
    n_epochs : int, default=20
        Passes over the training trials (the best epoch by validation PER is kept).
    batch_size : int, default=32
        Trials per update (padded to the longest; trials of similar length are batched together).
        On one CPU core an update costs about the same per trial from 16 to 64 trials.
    validation_fraction : float in [0, 0.5], default=0.1
        Trials held out (seeded random choice) to pick the best epoch; 0 keeps the last epoch.
    white_noise_sd, offset_sd : float, default=0.8, 0.2
        Training augmentation in standardised units: white noise per value, constant offset per
        trial and feature.
    n_time_masks, time_mask_max_bins : int, default=2, 8
        Training augmentation: spans of up to ``time_mask_max_bins`` bins set to the day's mean.
    n_threads : int, default=1
        torch intra-op threads in fit/predict/adapt (restored afterwards).
    max_fit_time_s : float or None, default=None
        Stop training after this many seconds (the result then depends on the machine).
    random_state : int, default=0
        Seed of weights, validation split, batch order, dropout and augmentation.

    Attributes
    ----------
    days_ : ndarray of int
        Trained recording days, ascending; row ``i`` of the day arrays belongs to ``days_[i]``.
    day_mean_, day_scale_ : ndarray (n_days, n_features)
        Per-day standardisation.
    day_weight_ : ndarray (n_days, n_features, n_features), day_bias_ : (n_days, n_features)
        Per-day affine layers (applied to standardised features, before softsign).
    weights_ : dict of str -> ndarray
        Shared layers (``gru.*``, ``readout.*``) as float32 arrays.
    history_ : dict
        ``train_loss``, ``val_loss`` (CTC, per epoch), ``val_per`` (greedy phoneme error rate on
        the validation trials, SIL excluded; NaN without validation), ``adapt`` (one record per
        :meth:`adapt_day` call).
    best_epoch_, n_epochs_, n_updates_ : int
    train_seconds_ : float
        Wall time of the training loop in ``fit``.
    n_unseen_day_ : int
        Trials (predict) and stream resets (``reset_state``) that asked for a day without its own
        layer and used the closest earlier trained day's (the earliest if none is earlier).
    """

    _persist = ("days_", "day_mean_", "day_scale_", "day_weight_", "day_bias_", "best_epoch_", "n_epochs_",
                "n_updates_", "train_seconds_", "history_")

    def __init__(self, hidden_size: int = 256, n_layers: int = 2, input_proj: int | None = 128, kernel_bins: int = 4, stride_bins: int = 2,
                 dropout: float = 0.2, learning_rate: float = 3e-3, weight_decay: float = 1e-5,
                 n_epochs: int = 20, batch_size: int = 32, validation_fraction: float = 0.1,
                 white_noise_sd: float = 0.8, offset_sd: float = 0.2, n_time_masks: int = 2,
                 time_mask_max_bins: int = 8, n_threads: int = 1, max_fit_time_s: float | None = None,
                 random_state: int = 0) -> None:
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.input_proj = input_proj
        self.kernel_bins = kernel_bins
        self.stride_bins = stride_bins
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.white_noise_sd = white_noise_sd
        self.offset_sd = offset_sd
        self.n_time_masks = n_time_masks
        self.time_mask_max_bins = time_mask_max_bins
        self.n_threads = n_threads
        self.max_fit_time_s = max_fit_time_s
        self.random_state = random_state

    # ---------------------------------------------------------------------------------- checks
    def _check_params(self) -> None:
        as_int_param("hidden_size", self.hidden_size, 1)
        as_int_param("n_layers", self.n_layers, 1)
        if self.input_proj is not None:
            as_int_param("input_proj", self.input_proj, 1)
        as_int_param("kernel_bins", self.kernel_bins, 1)
        as_int_param("stride_bins", self.stride_bins, 1)
        if self.stride_bins > self.kernel_bins:
            raise ConfigError(f"stride_bins must be <= kernel_bins ({self.kernel_bins}) so that no bin is "
                              f"skipped; got {self.stride_bins}")
        as_float_param("dropout", self.dropout, 0.0, 0.999)
        as_float_param("learning_rate", self.learning_rate, 0.0, lo_open=True)
        as_float_param("weight_decay", self.weight_decay, 0.0)
        as_int_param("n_epochs", self.n_epochs, 1)
        as_int_param("batch_size", self.batch_size, 1)
        as_float_param("validation_fraction", self.validation_fraction, 0.0, 0.5)
        as_float_param("white_noise_sd", self.white_noise_sd, 0.0)
        as_float_param("offset_sd", self.offset_sd, 0.0)
        as_int_param("n_time_masks", self.n_time_masks, 0)
        as_int_param("time_mask_max_bins", self.time_mask_max_bins, 0)
        as_int_param("n_threads", self.n_threads, 1)
        if self.max_fit_time_s is not None:
            as_float_param("max_fit_time_s", self.max_fit_time_s, 0.0, lo_open=True)
        if self.random_state is None:
            raise ConfigError("random_state must be an integer (fit is always seeded); got None")
        as_int_param("random_state", self.random_state, 0)

    def _check_lengths(self, Xs: list[np.ndarray], Y: list[np.ndarray]) -> None:
        from cortexlink.decoders._phoneme_net import ctc_min_frames, n_frames

        k, s = int(self.kernel_bins), int(self.stride_bins)
        for i, (x, yi) in enumerate(zip(Xs, Y)):
            nf = n_frames(x.shape[0], k, s)
            need = ctc_min_frames(yi)
            if nf < need:
                raise ValidationError(
                    f"trial {i}: {x.shape[0]} bins give {nf} output frames (kernel_bins={k}, stride_bins={s}) "
                    f"but its {yi.size} labels need at least {need} (one per label, one blank between "
                    f"repeats); use a smaller stride_bins or drop the trial")

    def _check_X(self, X: Any, days: Any, name: str = "X") -> tuple[list[np.ndarray], np.ndarray]:
        Xs, names = _as_trials(X, name)
        check_n_features(type(self).__name__, self.n_features_in_, Xs[0].shape[1])
        if names is not None and self.feature_names_ is not None and names != self.feature_names_:
            from cortexlink.decoders._base import IncompatibleDecoderError, _describe_name_mismatch
            raise IncompatibleDecoderError(_describe_name_mismatch(self.feature_names_, names))
        return Xs, _as_days(days, len(Xs))

    def _day_row(self, day: int, count: bool = True) -> int:
        """Row of the day arrays used for ``day`` (closest earlier trained day when unseen)."""
        pos = int(np.searchsorted(self.days_, day, side="right")) - 1
        if pos >= 0 and self.days_[pos] == day:
            return pos
        row = max(pos, 0)
        if count:
            self.n_unseen_day_ = getattr(self, "n_unseen_day_", 0) + 1
            if not getattr(self, "_warned_unseen", False):
                self._warned_unseen = True
                logger.warning("PhonemeDecoder: day %d has no input layer (trained days %s); using day %d's "
                               "(counted in n_unseen_day_; adapt_day() trains one)", day, self.days_.tolist(),
                               int(self.days_[row]))
        return row

    def _standardise(self, Xs: list[np.ndarray], rows: np.ndarray, on_invalid: str = "raise",
                     dtype=np.float64) -> list[np.ndarray]:
        out = []
        for i, (x, r) in enumerate(zip(Xs, rows)):
            z = ((x - self.day_mean_[r]) / self.day_scale_[r]).astype(dtype, copy=False)
            bad = ~np.all(np.isfinite(x), axis=1)
            if bad.any():
                if on_invalid == "raise":
                    raise ValidationError(f"X[{i}] must hold only finite values; got NaN/Inf in {int(bad.sum())} "
                                          f"bins (first bin {int(np.flatnonzero(bad)[0])}); use on_invalid='zero' "
                                          f"to replace such bins by the day's mean, as step() does")
                z[bad] = 0.0
            out.append(z)
        return out

    # ---------------------------------------------------------------------------------- fit
    def fit(self, X: Sequence[Any], y: Sequence[Any], days: Sequence[int] | None = None, *,
            feature_names: Sequence[str] | None = None, channel_map: ChannelMap | None = None,
            progress: Callable[[dict], Any] | None = None) -> "PhonemeDecoder":
        """Train the network with CTC.

        Parameters
        ----------
        X : list of arrays (n_bins_i, n_features) or of BinnedFeatures
            One array per trial, 20 ms bins.
        y : list of int arrays
            Class ids per trial (1..40: phonemes and SIL; no blanks).
        days : list of int, optional
            Recording day of each trial (default all 0); each day gets its own input layer.
        feature_names, channel_map : optional
            Stored for ``check_compatible`` / ``load``.
        progress : callable, optional
            Called after every epoch with a dict (epoch, n_epochs, train_loss, val_loss, val_per,
            seconds, n_updates).

        Returns
        -------
        self
        """
        import torch

        from cortexlink.decoders import _phoneme_net as pn

        self._check_params()
        Xs, names = _as_trials(X, dtype=np.float32)         # float32: a large training set is copied once
        Y = _as_labels(y, len(Xs))
        d = _as_days(days, len(Xs))
        for i, x in enumerate(Xs):
            if not np.all(np.isfinite(x)):
                raise ValidationError(f"X[{i}] must hold only finite values; got "
                                      f"{int(np.sum(~np.isfinite(x)))} NaN/Inf")
        self._check_lengths(Xs, Y)
        if feature_names is not None:
            fn = tuple(str(n) for n in feature_names)
            if names is not None and fn != names:
                raise ValidationError("feature_names must match the trials' BinnedFeatures.feature_names")
            names = fn
        F = Xs[0].shape[1]
        if names is not None and len(names) != F:
            raise ValidationError(f"feature_names must have {F} entries (one per feature); got {len(names)}")
        if channel_map is not None and not isinstance(channel_map, ChannelMap):
            raise ValidationError(f"channel_map must be a cortexlink.ChannelMap; got {type(channel_map).__name__}")
        self.feature_names_ = names
        self.channel_map_ = channel_map
        self.n_features_in_ = F

        self.days_ = np.unique(d)
        rows = np.searchsorted(self.days_, d)
        mean = np.zeros((self.days_.size, F))
        scale = np.ones((self.days_.size, F))
        for r in range(self.days_.size):
            mean[r], scale[r] = _day_stats([x for x, ri in zip(Xs, rows) if ri == r])
        self.day_mean_, self.day_scale_ = mean, scale
        Xn = self._standardise(Xs, rows, dtype=np.float32)
        del Xs

        rng = np.random.default_rng(int(self.random_state))
        n = len(Xn)
        n_val = int(round(n * float(self.validation_fraction)))
        n_val = min(n_val, n - 1)
        perm = rng.permutation(n)
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        with pn.torch_settings(int(self.n_threads)), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            net = pn.build_net(self.days_.size, F, int(self.kernel_bins), int(self.stride_bins),
                               int(self.hidden_size), int(self.n_layers), float(self.dropout),
                               self._proj_dim())
            gen = torch.Generator().manual_seed(int(self.random_state) + 1)
            res = pn.train_ctc(net, list(net.parameters()), Xn, Y, rows, train_idx, val_idx,
                               kernel_bins=int(self.kernel_bins), stride_bins=int(self.stride_bins),
                               n_epochs=int(self.n_epochs), batch_size=int(self.batch_size),
                               learning_rate=float(self.learning_rate), weight_decay=float(self.weight_decay),
                               augment=self._augment(gen), rng=rng, max_time_s=self.max_fit_time_s,
                               progress=progress)
        state = {k: v.numpy() for k, v in res["state"].items()}
        self.day_weight_ = state.pop("day_weight").astype(np.float32)
        self.day_bias_ = state.pop("day_bias").astype(np.float32)
        self.weights_ = {k: v.astype(np.float32) for k, v in state.items()}
        self.history_ = dict(res["history"], adapt=[])
        self.best_epoch_ = int(res["best_epoch"])
        self.n_epochs_ = int(res["n_epochs"])
        self.n_updates_ = int(res["n_updates"])
        self.train_seconds_ = float(res["seconds"])
        logger.info("PhonemeDecoder: %d epochs (%d updates, best %d) in %.1f s", self.n_epochs_, self.n_updates_,
                    self.best_epoch_, self.train_seconds_)
        self.n_unseen_day_ = 0
        self.reset_state(int(self.days_[0]))
        return self

    def _proj_dim(self) -> int:
        p = self.input_proj
        return int(p) if p is not None and self.n_features_in_ > int(p) else 0

    def _augment(self, gen):
        from cortexlink.decoders._phoneme_net import Augment

        return Augment(float(self.white_noise_sd), float(self.offset_sd), int(self.n_time_masks),
                       int(self.time_mask_max_bins), gen)

    def _net(self, dtype: str = "float64"):
        """The torch network with the fitted weights (eval mode)."""
        import torch

        from cortexlink.decoders._phoneme_net import build_net

        net = build_net(self.days_.size, self.n_features_in_, int(self.kernel_bins), int(self.stride_bins),
                        int(self.hidden_size), int(self.n_layers), 0.0, self._proj_dim())
        state = {k: torch.from_numpy(np.array(v)) for k, v in self.weights_.items()}
        state["day_weight"] = torch.from_numpy(np.array(self.day_weight_))
        state["day_bias"] = torch.from_numpy(np.array(self.day_bias_))
        net.load_state_dict(state)
        net.eval()
        return net.double() if dtype == "float64" else net.float()

    # ---------------------------------------------------------------------------------- predict
    def predict_logprobs(self, X: Sequence[Any], days: Sequence[int] | int | None = None, *,
                         on_invalid: str = "raise") -> list[np.ndarray]:
        """Per-frame log-probabilities of each trial (offline; float64, equal to :meth:`step`'s rows).

        Parameters
        ----------
        X : list of arrays (n_bins_i, n_features)
        days : list of int or int, optional
            Recording day per trial (default 0). A day without a trained layer uses the closest
            earlier trained day's and is counted in ``n_unseen_day_``.
        on_invalid : {"raise", "zero"}
            ``"zero"``: bins holding NaN/Inf are replaced by the day's mean, as :meth:`step` does.

        Returns
        -------
        list of ndarray (n_frames_i, 41)
            ``n_frames_i = (n_bins_i - kernel_bins) // stride_bins + 1`` (0 for shorter trials).
        """
        import torch

        from cortexlink.decoders._phoneme_net import forward_logprobs, torch_settings

        check_is_fitted(self)
        if on_invalid not in ("raise", "zero"):
            raise ConfigError(f"on_invalid must be one of ('raise', 'zero'); got {on_invalid!r}")
        Xs, d = self._check_X(X, days)
        rows = np.array([self._day_row(int(di)) for di in d], np.int64)
        Z = self._standardise(Xs, rows, on_invalid)
        with torch_settings(int(self.n_threads)):
            return forward_logprobs(self._net("float64"), Z, rows, int(self.kernel_bins), int(self.stride_bins),
                                    torch.float64)

    def predict(self, X: Sequence[Any], days: Sequence[int] | int | None = None, *,
                on_invalid: str = "raise") -> list[np.ndarray]:
        """Greedy CTC phoneme ids per trial (argmax per frame, repeats merged, blanks dropped).

        Returns
        -------
        list of int32 ndarray
            Class ids 1..40 (SIL included).
        """
        return [collapse_ctc(lp.argmax(axis=1)) for lp in self.predict_logprobs(X, days, on_invalid=on_invalid)]

    def phoneme_error_rate(self, X: Sequence[Any], y: Sequence[Any], days: Sequence[int] | int | None = None, *,
                           include_sil: bool = False) -> float:
        """Greedy phoneme error rate on labelled trials: summed edit distance / summed reference length."""
        from cortexlink.decoders._phoneme_net import phoneme_error_rate

        hyps = self.predict(X, days)
        return phoneme_error_rate(_as_labels(y, len(hyps)), hyps, include_sil=include_sil)

    # ---------------------------------------------------------------------------------- adapt
    def adapt_day(self, X: Sequence[Any], y: Sequence[Any], day: int, n_updates: int = 200, *,
                  learning_rate: float | None = None, batch_size: int | None = None) -> "PhonemeDecoder":
        """Fit (or fine-tune) the input layer of one day; the shared layers stay fixed.

        A new day gets its own standardisation (from ``X``) and an affine layer initialised from
        the closest earlier trained day's (the earliest if none is earlier); an existing day keeps its
        standardisation and continues from its layer. Same augmentation as ``fit``, no validation.

        Parameters
        ----------
        X, y : labelled trials of that day (as in ``fit``)
        day : int >= 0
        n_updates : int, default=200
            Adam updates (batches of ``batch_size`` trials).
        learning_rate, batch_size : optional
            Default: the decoder's.

        Returns
        -------
        self
        """
        import torch

        from cortexlink.decoders import _phoneme_net as pn

        check_is_fitted(self)
        day = as_int_param("day", day, 0)
        n_updates = as_int_param("n_updates", n_updates, 1)
        lr = float(self.learning_rate) if learning_rate is None else as_float_param(
            "learning_rate", learning_rate, 0.0, lo_open=True)
        bs = int(self.batch_size) if batch_size is None else as_int_param("batch_size", batch_size, 1)
        Xs, d = self._check_X(X, day)
        Y = _as_labels(y, len(Xs))
        for i, x in enumerate(Xs):
            if not np.all(np.isfinite(x)):
                raise ValidationError(f"X[{i}] must hold only finite values")
        self._check_lengths(Xs, Y)
        new = day not in set(self.days_.tolist())
        if new:
            src = self._day_row(day, count=False)
            mean, scale = _day_stats(Xs)
            w0, b0 = self.day_weight_[src].copy(), self.day_bias_[src].copy()
        else:
            r = int(np.searchsorted(self.days_, day))
            mean, scale = self.day_mean_[r], self.day_scale_[r]
            w0, b0 = self.day_weight_[r].copy(), self.day_bias_[r].copy()
        Xn = [((x - mean) / scale).astype(np.float32) for x in Xs]
        rng = np.random.default_rng([int(self.random_state), day, len(self.history_.get("adapt", []))])
        with pn.torch_settings(int(self.n_threads)), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**31)))
            net = self._net("float32")
            net.day_weight = torch.nn.Parameter(torch.from_numpy(w0[None].astype(np.float32)))
            net.day_bias = torch.nn.Parameter(torch.from_numpy(b0[None].astype(np.float32)))
            for name, p in net.named_parameters():
                p.requires_grad_(name in ("day_weight", "day_bias"))
            net.drop.p = float(self.dropout)
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            idx = np.arange(len(Xs))
            res = pn.train_ctc(net, [net.day_weight, net.day_bias], Xn, Y, np.zeros(len(Xs), np.int64), idx,
                               np.zeros(0, np.int64), kernel_bins=int(self.kernel_bins),
                               stride_bins=int(self.stride_bins), n_epochs=10**9, batch_size=bs, learning_rate=lr,
                               weight_decay=float(self.weight_decay), augment=self._augment(gen), rng=rng,
                               max_updates=n_updates, label=f"PhonemeDecoder.adapt_day({day})")
        w = res["state"]["day_weight"].numpy()[0].astype(np.float32)
        b = res["state"]["day_bias"].numpy()[0].astype(np.float32)
        if new:
            pos = int(np.searchsorted(self.days_, day))
            self.days_ = np.insert(self.days_, pos, day)
            self.day_mean_ = np.insert(self.day_mean_, pos, mean, axis=0)
            self.day_scale_ = np.insert(self.day_scale_, pos, scale, axis=0)
            self.day_weight_ = np.insert(self.day_weight_, pos, w, axis=0)
            self.day_bias_ = np.insert(self.day_bias_, pos, b, axis=0)
        else:
            self.day_weight_[r] = w
            self.day_bias_[r] = b
        losses = res["history"]["train_loss"]
        self.history_.setdefault("adapt", []).append(
            {"day": day, "new": new, "n_trials": len(Xs), "n_updates": int(res["n_updates"]),
             "first_loss": float(losses[0]), "last_loss": float(losses[-1]), "seconds": float(res["seconds"])})
        self.reset_state(day)
        return self

    # ---------------------------------------------------------------------------------- streaming
    def reset_state(self, day: int = 0) -> "PhonemeDecoder":
        """Start a new stream (a new trial) on recording ``day``; returns self.

        An unseen ``day`` uses the closest earlier trained day's input layer (counted in
        ``n_unseen_day_``, logged once).
        """
        check_is_fitted(self)
        day = as_int_param("day", day, 0)
        self.n_invalid_steps_ = 0
        self.last_step_valid_ = True
        if not hasattr(self, "n_unseen_day_"):
            self.n_unseen_day_ = 0
        r = self._day_row(day)
        self.stream_day_ = day
        W = self.day_weight_[r].astype(np.float64)
        Wf = W / self.day_scale_[r][None, :]
        self._A = np.ascontiguousarray(Wf)
        self._b = self.day_bias_[r].astype(np.float64) - Wf @ self.day_mean_[r]
        self._b_mean = self.day_bias_[r].astype(np.float64)       # output of the layer for the day's mean
        w = self.weights_
        self._P = np.ascontiguousarray(w["proj.weight"], dtype=np.float64) if "proj.weight" in w else None
        k = int(self.kernel_bins)
        F = self.n_features_in_ if self._P is None else self._P.shape[0]
        self._ring = np.zeros((k, F))
        self._stack = np.empty(k * F)
        self._t = 0
        H = int(self.hidden_size)
        self._layers = []
        for li in range(int(self.n_layers)):
            self._layers.append(tuple(np.ascontiguousarray(w[f"gru.{n}_l{li}"], dtype=np.float64)
                                      for n in ("weight_ih", "bias_ih", "weight_hh", "bias_hh")))
        self._h = [np.zeros(H) for _ in range(int(self.n_layers))]
        self._W_o = np.ascontiguousarray(w["readout.weight"], dtype=np.float64)
        self._b_o = w["readout.bias"].astype(np.float64)
        return self

    def step(self, x: Any) -> np.ndarray:
        """Feed one bin; returns the frames completed by it.

        Parameters
        ----------
        x : array (n_features,)
            One bin. NaN/Inf: the bin is replaced by the day's mean (``n_invalid_steps_`` grows,
            ``last_step_valid_`` is False), so the frame timing is kept.

        Returns
        -------
        ndarray (n, 41), n = 0 or 1
            A row of log-probabilities every ``stride_bins`` bins from bin ``kernel_bins`` on;
            stacked over a trial they equal :meth:`predict_logprobs`.

        Notes
        -----
        Cost: one ``n_features x n_features`` mat-vec per bin (the day layer, standardisation
        folded in) and the projection; the GRU and read-out once per frame. With 512 features and
        the defaults about 0.16 ms per bin on average (float64 numpy, one core of this machine).
        """
        x = self._check_step_input(x)
        k, s, F = int(self.kernel_bins), int(self.stride_bins), self._ring.shape[1]
        if finite_bin(x):
            a = self._A @ x
            a += self._b
            self.last_step_valid_ = True
        else:
            self._note_invalid()
            a = self._b_mean.copy()
        a /= 1.0 + np.abs(a)                                         # softsign
        self._ring[self._t % k] = a if self._P is None else self._P @ a
        self._t += 1
        if self._t < k or (self._t - k) % s:
            return np.zeros((0, N_CLASSES))
        start = self._t - k
        for i in range(k):                                           # oldest bin first
            self._stack[i * F:(i + 1) * F] = self._ring[(start + i) % k]
        inp = self._stack
        H = int(self.hidden_size)
        for li, (W_ih, b_ih, W_hh, b_hh) in enumerate(self._layers):
            h = self._h[li]
            gi = W_ih @ inp + b_ih
            gh = W_hh @ h + b_hh
            rz = expit(gi[:2 * H] + gh[:2 * H])
            nn = np.tanh(gi[2 * H:] + rz[:H] * gh[2 * H:])
            h = nn + rz[H:] * (h - nn)
            self._h[li] = h
            inp = h
        logits = self._W_o @ inp + self._b_o
        m = logits.max()
        return (logits - (m + np.log(np.sum(np.exp(logits - m)))))[None, :]

    # ---------------------------------------------------------------------------------- persistence
    def _extra_state(self) -> tuple[dict, dict]:
        return {"weight_names": sorted(self.weights_)}, {"w/" + k: v for k, v in self.weights_.items()}

    def _restore_extra(self, meta: dict, arrays: dict) -> None:
        self.weights_ = {k: arrays["w/" + k] for k in meta["weight_names"]}
        self.history_ = {k: list(v) for k, v in self.history_.items()}
        self.days_ = np.asarray(self.days_, np.int64)
