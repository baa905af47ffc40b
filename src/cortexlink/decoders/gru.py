"""GRU decoder: a causal recurrent network trained with torch, stepped in numpy.

``torch`` is imported inside :meth:`GRUDecoder.fit` and :meth:`GRUDecoder.predict` only;
:meth:`GRUDecoder.step` runs a hand-written GRU cell in numpy (float32, preallocated
buffers, input standardisation and output scaling folded into the weights), so a loaded
decoder streams without torch installed.

Training: inputs and outputs are standardised; the series is cut at a random offset
each epoch into ``batch_size`` contiguous streams that are run window by window
(truncated back-propagation through time over ``seq_len`` bins) carrying the hidden
state between windows, so the network learns to run indefinitely from a zero state as
it does online. The last ``validation_fraction`` of the bins (time-ordered) is held out
for early stopping; the best epoch's weights are kept.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

import numpy as np
from scipy.special import expit

from sklearn.base import BaseEstimator, RegressorMixin

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import ChannelMap
from cortexlink.decoders._base import DecoderMixin, as_float_param, as_int_param, check_shapes, finite_bin, register

logger = logging.getLogger(__name__)

__all__ = ["GRUDecoder"]


def _build_module(n_in: int, proj: int, hidden: int, n_layers: int, n_out: int, dropout: float):
    """Dropout -> [Linear(n_in, proj, no bias)] -> GRU -> Dropout -> Linear readout."""
    import torch

    class _GRUNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.in_drop = torch.nn.Dropout(dropout)
            self.proj = torch.nn.Linear(n_in, proj, bias=False) if proj else None
            self.gru = torch.nn.GRU(proj or n_in, hidden, num_layers=n_layers, batch_first=True,
                                    dropout=dropout if n_layers > 1 else 0.0)
            self.out_drop = torch.nn.Dropout(dropout)
            self.readout = torch.nn.Linear(hidden, n_out)

        def forward(self, x, h=None):
            x = self.in_drop(x)
            if self.proj is not None:
                x = self.proj(x)
            z, h = self.gru(x, h)
            return self.readout(self.out_drop(z)), h

    return _GRUNet()


@register
class GRUDecoder(DecoderMixin, RegressorMixin, BaseEstimator):
    """Causal GRU decoder (bins x features -> bins x outputs).

    Parameters
    ----------
    hidden_size : int, default=256
    input_proj : int or None, default=128
        With more features than this, a learned linear projection (no bias) to
        ``input_proj`` dimensions precedes the GRU: several times cheaper to train and
        step with 1024 features, and a low-rank regulariser. None: no projection.
    n_layers : int, default=1
    dropout : float in [0, 1), default=0.2
        Dropout on the inputs and on the GRU output during training.
    learning_rate : float, default=2e-3
        Adam step size.
    weight_decay : float, default=1e-4
        Adam L2 penalty.
    max_epochs : int, default=60
    patience : int, default=6
        Epochs without validation improvement before stopping.
    validation_fraction : float in [0, 0.5), default=0.15
        Last fraction of the bins held out (time-ordered) for early stopping; not used
        with fewer than 200 bins (then all ``max_epochs`` run on all bins).
    seq_len : int, default=32
        Bins per truncated back-propagation window.
    batch_size : int, default=32
        Parallel contiguous streams per gradient step (at most; fewer on recordings
        shorter than ``16 * seq_len * batch_size`` bins, so an epoch has >= 16 steps).
    n_threads : int, default=1
        torch intra-op threads during ``fit`` and ``predict`` (restored afterwards).
        One thread makes the result independent of the machine's core count and
        avoids the large slow-downs of oversubscribed OpenMP threads on busy cores.
    max_fit_time_s : float or None, default=None
        Stop training after this many seconds (the result then depends on the machine).
    random_state : int, default=0
        Seed of weight initialisation, dropout and window offsets (fit is deterministic).

    Attributes
    ----------
    weights_ : dict of str -> ndarray
        The network's ``state_dict`` as float32 arrays.
    x_mean_, x_scale_, y_mean_, y_scale_ : ndarray
        Standardisation of inputs and outputs.
    n_epochs_, best_epoch_ : int
    history_ : dict
        ``train_loss`` and ``val_loss`` per epoch (standardised MSE).
    fit_time_s_ : float
    """

    _persist = ("x_mean_", "x_scale_", "y_mean_", "y_scale_", "n_outputs_", "y_ndim_", "n_epochs_",
                "best_epoch_", "fit_time_s_", "history_")
    _shapes = {"x_mean_": "f", "x_scale_": "f", "y_mean_": "m", "y_scale_": "m"}

    def __init__(self, hidden_size: int = 256, input_proj: int | None = 128, n_layers: int = 1, dropout: float = 0.2,
                 learning_rate: float = 2e-3, weight_decay: float = 1e-4, max_epochs: int = 60,
                 patience: int = 6, validation_fraction: float = 0.15, seq_len: int = 32,
                 batch_size: int = 32, n_threads: int = 1, max_fit_time_s: float | None = None, random_state: int = 0) -> None:
        self.hidden_size = hidden_size
        self.input_proj = input_proj
        self.n_layers = n_layers
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.n_threads = n_threads
        self.max_fit_time_s = max_fit_time_s
        self.random_state = random_state

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    # ---------------------------------------------------------------------------------
    def _check_params(self) -> None:
        as_int_param("hidden_size", self.hidden_size, 1)
        if self.input_proj is not None:
            as_int_param("input_proj", self.input_proj, 1)
        as_int_param("n_layers", self.n_layers, 1)
        as_float_param("dropout", self.dropout, 0.0, 0.999)
        as_float_param("learning_rate", self.learning_rate, 0.0, lo_open=True)
        as_float_param("weight_decay", self.weight_decay, 0.0)
        as_int_param("max_epochs", self.max_epochs, 1)
        as_int_param("patience", self.patience, 1)
        as_float_param("validation_fraction", self.validation_fraction, 0.0, 0.5)
        as_int_param("seq_len", self.seq_len, 1)
        as_int_param("batch_size", self.batch_size, 1)
        as_int_param("n_threads", self.n_threads, 1)
        if self.max_fit_time_s is not None:
            as_float_param("max_fit_time_s", self.max_fit_time_s, 0.0, lo_open=True)
        if self.random_state is None:
            raise ConfigError("random_state must be an integer (fit is always seeded); got None")
        as_int_param("random_state", self.random_state, 0)

    def fit(self, X: Any, y: Any, *, feature_names: Sequence[str] | None = None,
            channel_map: ChannelMap | None = None) -> "GRUDecoder":
        """Train the network.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
            Consecutive bins.
        y : array (n_bins, n_outputs) or (n_bins,)
        feature_names, channel_map : optional
            Stored for ``check_compatible`` / ``load``.

        Returns
        -------
        self
        """
        import torch

        self._check_params()
        X, Y = self._validate_fit(X, y, feature_names, channel_map)
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(int(self.n_threads))
        try:
            return self._train(X, Y)
        finally:
            torch.set_num_threads(prev_threads)

    def _train(self, X: np.ndarray, Y: np.ndarray) -> "GRUDecoder":
        import torch

        self.y_ndim_ = Y.ndim
        Y = Y.reshape(Y.shape[0], -1)
        n, f = X.shape
        m = Y.shape[1]
        t0 = time.perf_counter()
        self.x_mean_ = X.mean(axis=0)
        xs = X.std(axis=0)
        self.x_scale_ = np.where(xs > 1e-12 * np.maximum(1.0, np.abs(self.x_mean_)), xs, 1.0)
        self.y_mean_ = Y.mean(axis=0)
        ys = Y.std(axis=0)
        self.y_scale_ = np.where(ys > 1e-12 * np.maximum(1.0, np.abs(self.y_mean_)), ys, 1.0)
        Xn = ((X - self.x_mean_) / self.x_scale_).astype(np.float32)
        Yn = ((Y - self.y_mean_) / self.y_scale_).astype(np.float32)

        n_val = int(round(n * float(self.validation_fraction))) if n >= 200 else 0
        n_tr = n - n_val
        T = int(self.seq_len)
        rng = np.random.default_rng(int(self.random_state))
        hidden, n_layers, drop = int(self.hidden_size), int(self.n_layers), float(self.dropout)
        history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            net = _build_module(f, self._proj_dim(f), hidden, n_layers, m, drop).float()
            opt = torch.optim.Adam(net.parameters(), lr=float(self.learning_rate),
                                   weight_decay=float(self.weight_decay))
            Xt = torch.from_numpy(Xn)
            Yt = torch.from_numpy(Yn)
            best = (math.inf, 0, {k: v.detach().clone() for k, v in net.state_dict().items()})
            bad_epochs = 0
            epoch = 0
            for epoch in range(1, int(self.max_epochs) + 1):
                net.train()
                loss_sum, count = 0.0, 0
                for xb, yb, first in self._windows(Xt[:n_tr], Yt[:n_tr], T, int(self.batch_size), rng):
                    if first:
                        h = None
                    opt.zero_grad(set_to_none=True)
                    out, h = net(xb, h)
                    h = h.detach()
                    loss = torch.nn.functional.mse_loss(out, yb)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                    loss_sum += loss.detach().item() * yb.numel()
                    count += yb.numel()
                history["train_loss"].append(loss_sum / max(count, 1))
                if n_val:
                    net.eval()
                    with torch.no_grad():
                        out, _ = net(Xt[None, n_tr:])
                        val = float(torch.nn.functional.mse_loss(out[0], Yt[n_tr:]))
                    history["val_loss"].append(val)
                else:
                    val = history["train_loss"][-1]
                if val < best[0] - 1e-6 * abs(best[0]) or epoch == 1:
                    best = (val, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                logger.debug("GRUDecoder epoch %d: train %.4f val %.4f", epoch, history["train_loss"][-1], val)
                if n_val and bad_epochs >= int(self.patience):
                    break
                if self.max_fit_time_s is not None and time.perf_counter() - t0 > float(self.max_fit_time_s):
                    logger.info("GRUDecoder: stopping at epoch %d (max_fit_time_s)", epoch)
                    break
        if not n_val:
            best = (history["train_loss"][-1], epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
        self.weights_ = {k: v.numpy().astype(np.float32) for k, v in best[2].items()}
        self.best_epoch_ = int(best[1])
        self.n_epochs_ = int(epoch)
        self.history_ = history
        self.n_outputs_ = m
        self.fit_time_s_ = time.perf_counter() - t0
        logger.info("GRUDecoder: %d epochs (best %d) in %.1f s", epoch, self.best_epoch_, self.fit_time_s_)
        self.reset_state()
        return self

    @staticmethod
    def _windows(X, Y, T: int, B: int, rng: np.random.Generator):
        """Yield (x, y, first) windows of B contiguous streams, T bins each, in time order."""
        n = X.shape[0]
        offset = int(rng.integers(0, min(T, max(n - T, 1)))) if n > T else 0
        usable = n - offset
        # at least ~16 gradient steps per epoch: fewer streams on short recordings
        B = max(1, min(B, usable // (16 * T))) if usable >= T else 1
        Ls = usable // B
        if Ls >= T:
            Ls = (Ls // T) * T
        Xs = X[offset:offset + B * Ls].reshape(B, Ls, X.shape[1])
        Ys = Y[offset:offset + B * Ls].reshape(B, Ls, Y.shape[1])
        step = min(T, Ls)
        for a in range(0, Ls, step):
            yield Xs[:, a:a + step], Ys[:, a:a + step], a == 0

    # ---------------------------------------------------------------------------------
    def _proj_dim(self, n_features: int) -> int:
        p = self.input_proj
        return int(p) if p is not None and n_features > int(p) else 0

    def _module(self, dtype: str = "float64"):
        import torch

        net = _build_module(self.n_features_in_, self._proj_dim(self.n_features_in_), int(self.hidden_size),
                            int(self.n_layers), self.n_outputs_, 0.0)
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.weights_.items()})
        net.eval()
        return net.double() if dtype == "float64" else net

    def predict(self, X: Any, *, on_invalid: str = "raise") -> np.ndarray:
        """Run the network over a block of bins from a zero hidden state.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
        on_invalid : {"raise", "hold"}
            ``"hold"``: bins with NaN/Inf hold the previous output and leave the hidden
            state untouched, as :meth:`step` does.

        Returns
        -------
        ndarray (n_bins, n_outputs), or (n_bins,) if fitted with 1-D y
        """
        import torch

        X = self._validate_predict(X, on_invalid)
        good = np.all(np.isfinite(X), axis=1)
        Xg = (X[good] - self.x_mean_) / self.x_scale_
        out = np.empty((X.shape[0], self.n_outputs_))
        if Xg.shape[0]:
            net = self._module("float32")
            prev_threads = torch.get_num_threads()
            torch.set_num_threads(int(self.n_threads))
            try:
                with torch.no_grad():
                    pred, _ = net(torch.from_numpy(Xg.astype(np.float32))[None])
            finally:
                torch.set_num_threads(prev_threads)
            pred = pred[0].numpy().astype(np.float64) * self.y_scale_ + self.y_mean_
        else:
            pred = np.empty((0, self.n_outputs_))
        if good.all():
            out = pred
        else:
            last = self._initial_output()
            gi = 0
            for t in range(X.shape[0]):
                if good[t]:
                    last = pred[gi]
                    gi += 1
                out[t] = last
        return out[:, 0] if self.y_ndim_ == 1 else out

    def _initial_output(self) -> np.ndarray:
        """Output for a zero hidden state (held before the first valid bin)."""
        w = self.weights_
        return ((w["readout.bias"].astype(np.float64)) * self.y_scale_ + self.y_mean_)

    # ---------------------------------------------------------------------------------
    def _reset_stream(self) -> None:
        w = self.weights_
        H = int(self.hidden_size)
        layers = []
        self._proj = None
        if "proj.weight" in w:
            # fold (x - mean) / scale into the projection; its constant part into layer 0's bias
            P = w["proj.weight"].astype(np.float64) / self.x_scale_[None, :]
            p_off = -(P @ self.x_mean_)
            self._proj = np.ascontiguousarray(P, dtype=np.float32)
            self._pbuf = np.empty(P.shape[0], np.float32)
        for li in range(int(self.n_layers)):
            W_ih = w[f"gru.weight_ih_l{li}"].astype(np.float64)
            b_ih = w[f"gru.bias_ih_l{li}"].astype(np.float64)
            if li == 0 and self._proj is not None:
                b_ih = b_ih + W_ih @ p_off
            elif li == 0:     # fold (x - mean) / scale into the first layer
                W_ih = W_ih / self.x_scale_[None, :]
                b_ih = b_ih - W_ih @ self.x_mean_
            layers.append({
                "W_ih": np.ascontiguousarray(W_ih, dtype=np.float32),
                "b_ih": b_ih.astype(np.float32),
                "W_hh": np.ascontiguousarray(w[f"gru.weight_hh_l{li}"], dtype=np.float32),
                "b_hh": w[f"gru.bias_hh_l{li}"].astype(np.float32),
                "h": np.zeros(H, np.float32),
                "gi": np.empty(3 * H, np.float32), "gh": np.empty(3 * H, np.float32),
                "rz": np.empty(2 * H, np.float32), "n": np.empty(H, np.float32),
                "tmp": np.empty(H, np.float32), "h_new": np.empty(H, np.float32),
            })
        self._layers = layers
        W_o = w["readout.weight"].astype(np.float64) * self.y_scale_[:, None]
        self._W_o = np.ascontiguousarray(W_o, dtype=np.float32)
        self._b_o = w["readout.bias"].astype(np.float64) * self.y_scale_ + self.y_mean_
        self._x32 = np.empty(self.n_features_in_, np.float32)
        self._out = self._initial_output()
        self._H = H

    def step(self, x: Any) -> np.ndarray:
        """Advance the network by one bin (streaming counterpart of :meth:`predict`).

        Parameters
        ----------
        x : array (n_features,)

        Returns
        -------
        ndarray (n_outputs,)
            The decoded output; the previous one if ``x`` held NaN/Inf (then
            ``last_step_valid_`` is False and ``n_invalid_steps_`` grows).
        """
        x = self._check_step_input(x)
        if not finite_bin(x):
            self._note_invalid()
            return self._out.copy()
        H = self._H
        inp = self._x32
        inp[:] = x
        L0 = self._layers[0]
        if self._proj is not None:
            inp = np.dot(self._proj, inp, out=self._pbuf)
        np.dot(L0["W_ih"], inp, out=L0["gi"])
        for li, Ly in enumerate(self._layers):
            gi, gh, rz, nn, tmp, h = Ly["gi"], Ly["gh"], Ly["rz"], Ly["n"], Ly["tmp"], Ly["h"]
            if li:
                np.dot(Ly["W_ih"], inp, out=gi)
            gi += Ly["b_ih"]
            np.dot(Ly["W_hh"], h, out=gh)
            gh += Ly["b_hh"]
            np.add(gi[:2 * H], gh[:2 * H], out=rz)
            expit(rz, out=rz)
            np.multiply(rz[:H], gh[2 * H:], out=nn)
            nn += gi[2 * H:]
            np.tanh(nn, out=nn)
            np.subtract(h, nn, out=tmp)           # h' = n + z * (h - n)
            tmp *= rz[H:]
            np.add(nn, tmp, out=h)
            inp = h
        out = self._W_o @ inp
        out = out.astype(np.float64)
        out += self._b_o
        self._out = out
        self.last_step_valid_ = True
        return out.copy()

    # ---------------------------------------------------------------------------------
    def _extra_state(self) -> tuple[dict, dict]:
        return {"weight_names": sorted(self.weights_)}, {"w/" + k: v for k, v in self.weights_.items()}

    def _restore_extra(self, meta: dict, arrays: dict) -> None:
        self.weights_ = {k: arrays["w/" + k] for k in meta["weight_names"]}
        self.history_ = {k: list(v) for k, v in self.history_.items()}

    def _check_loaded(self) -> None:
        super()._check_loaded()
        H, f = int(self.hidden_size), self.n_features_in_
        P = self._proj_dim(f)
        want = {"readout.weight": (self.n_outputs_, H), "readout.bias": (self.n_outputs_,)}
        if P:
            want["proj.weight"] = (P, f)
        for li in range(int(self.n_layers)):
            want.update({f"gru.weight_ih_l{li}": (3 * H, (P or f) if li == 0 else H), f"gru.weight_hh_l{li}": (3 * H, H),
                         f"gru.bias_ih_l{li}": (3 * H,), f"gru.bias_hh_l{li}": (3 * H,)})
        check_shapes(self.weights_, want, f"(weights_ of hidden_size={H}, projection={P}, n_features_in_={f})")
