"""Wiener filter: ridge regression of the outputs on a stack of past bins."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import ChannelMap
from cortexlink.decoders._base import DecoderMixin, as_float_param, as_int_param, finite_bin, register

logger = logging.getLogger(__name__)

__all__ = ["WienerFilter", "lagged_gram"]

#: Above this many lagged features (n_lags * n_features), ``alpha="cv"`` scores the grid on one
#: time-ordered hold-out (the last 20% of bins) instead of ``cv`` folds: each fold costs an
#: eigendecomposition, O(p**3).
CV_FULL_MAX_DIM = 2048

#: Default ridge grid, relative to the mean diagonal of the (standardised) Gram matrix.
DEFAULT_RELATIVE_ALPHAS = tuple(float(a) for a in np.logspace(-5, 2, 15))


def _fix_1d(est: Any, out: np.ndarray) -> np.ndarray:
    return out[:, 0] if est.y_ndim_ == 1 else out


def lagged_gram(Z: np.ndarray, Y: np.ndarray, n_lags: int, start: int = 0,
                stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix and cross-product of the lag-stacked design, without building it.

    Row ``t`` of the design is ``[z_t, z_{t-1}, ..., z_{t-L+1}]`` (rows before 0 are
    zeros). Returns ``(D^T D, D^T Y)`` summed over rows ``start <= t < stop``.
    The Gram matrix is built from ``L`` products of the (shifted) data with itself
    plus small edge corrections, so its cost is ``L`` times that of ``Z^T Z``
    instead of ``L**2`` times.

    Parameters
    ----------
    Z : ndarray (n, f)
    Y : ndarray (n, m)
    n_lags : int
    start, stop : int
        Rows of the design to sum over.

    Returns
    -------
    G : ndarray (L*f, L*f)
        Block ``(i, j)`` is ``sum_t z_{t-i} z_{t-j}^T``.
    C : ndarray (L*f, m)
        Block ``i`` is ``sum_t z_{t-i} y_t^T``.
    """
    n, f = Z.shape
    L = int(n_lags)
    stop = n if stop is None else stop
    m_rows = stop - start
    # segment S holds z_{start-L+1} .. z_{stop-1}; design row t uses S[t-start+L-1-i] for lag i
    lo = start - (L - 1)
    S = np.zeros((m_rows + L - 1, f))
    src_lo = max(lo, 0)
    S[src_lo - lo:] = Z[src_lo:stop]
    length = S.shape[0]
    G = np.empty((L * f, L * f))
    for d in range(L):
        full = S[d:].T @ S[:length - d]          # sum_{s=d}^{len-1} S_s S_{s-d}^T
        for i in range(L - d):
            j = i + d
            blk = full.copy() if i + 1 < L - d else full
            lo_n = L - 1 - j                      # rows s = d .. L-2-i are outside the sum
            if lo_n > 0:
                blk -= S[d:d + lo_n].T @ S[0:lo_n]
            if i > 0:                              # rows s = len-i .. len-1 are outside the sum
                blk -= S[length - i:].T @ S[length - i - d:length - d]
            G[i * f:(i + 1) * f, j * f:(j + 1) * f] = blk
            if d:
                G[j * f:(j + 1) * f, i * f:(i + 1) * f] = blk.T
    Yseg = Y[start:stop]
    C = np.empty((L * f, Y.shape[1]))
    for i in range(L):
        C[i * f:(i + 1) * f] = S[L - 1 - i:L - 1 - i + m_rows].T @ Yseg
    return G, C


@register
class WienerFilter(DecoderMixin, RegressorMixin, BaseEstimator):
    """Linear decoder: ridge regression of the outputs on the last ``n_lags`` bins.

    ``y_t = b + sum_{k=0}^{n_lags-1} W_k^T x_{t-k}``. Features are standardised
    internally (so ``alpha`` does not depend on their units); bins before the first
    one are taken to equal the training mean. By default the ridge strength is chosen
    by time-ordered (blocked) cross-validation.

    Parameters
    ----------
    n_lags : int, default=5
        Number of bins of history, including the current one (1 = no history).
        Fit cost grows as ``(n_lags * n_features) ** 3`` when ``alpha="cv"``.
    alpha : float or "cv", default="cv"
        Ridge penalty on standardised features (as in ``sklearn.linear_model.Ridge``).
        ``"cv"``: chosen from ``alphas`` by ``cv``-fold blocked cross-validation.
        ``0`` gives the minimum-norm least-squares solution (never NaN).
    alphas : sequence of float, optional
        Candidate penalties for ``alpha="cv"``, *relative* to the mean diagonal of
        the Gram matrix (about the number of bins). Default ``logspace(-5, 2, 15)``.
    cv : int, default=5
        Number of contiguous folds for ``alpha="cv"``; ``n_lags - 1`` bins next to each
        test fold are left out of training. With more than ``CV_FULL_MAX_DIM`` (2048)
        lagged features one time-ordered hold-out (last 20%) is used instead, since each
        fold costs an eigendecomposition of the ``(n_lags * n_features)``-square Gram matrix.

    Attributes
    ----------
    coef_ : ndarray (n_lags, n_features, n_outputs)
        ``coef_[k]`` multiplies the bin ``k`` steps back, in the input's units.
    intercept_ : ndarray (n_outputs,)
    x_mean_ : ndarray (n_features,)
        Value assumed for bins before the first.
    alpha_ : float
        Penalty used (absolute, on standardised features).
    cv_scores_ : ndarray (n_alphas,) or None
        Mean blocked-CV R² of each candidate when ``alpha="cv"``.
    n_invalid_steps_ : int
        Steps whose input held NaN/Inf (the output was held).
    last_step_valid_ : bool
        Whether the last ``step`` input was finite.

    Examples
    --------
    >>> dec = WienerFilter(n_lags=3).fit(X_train, vel_train)   # doctest: +SKIP
    >>> vel = dec.predict(X_test)                               # doctest: +SKIP
    """

    _persist = ("coef_", "intercept_", "x_mean_", "x_scale_", "alpha_", "cv_scores_", "n_outputs_",
                "y_ndim_")
    _nonfinite_ok = ("cv_scores_",)
    _shapes = {"coef_": "n_lags f m", "intercept_": "m", "x_mean_": "f", "x_scale_": "f"}

    def __init__(self, n_lags: int = 5, alpha: float | str = "cv", alphas: Sequence[float] | None = None,
                 cv: int = 5) -> None:
        self.n_lags = n_lags
        self.alpha = alpha
        self.alphas = alphas
        self.cv = cv

    # ---------------------------------------------------------------------------------
    def _check_params(self) -> tuple[int, int, np.ndarray]:
        """Check the hyperparameters (ConfigError naming the bad one); return the lag count, the
        fold count and the relative alphas."""
        L = as_int_param("n_lags", self.n_lags, 1)
        cv = as_int_param("cv", self.cv, 2)
        if isinstance(self.alpha, str):
            if self.alpha != "cv":
                raise ConfigError(f"alpha must be a number >= 0 or 'cv'; got {self.alpha!r}")
        else:
            as_float_param("alpha", self.alpha, 0.0)
        rel_alphas = DEFAULT_RELATIVE_ALPHAS if self.alphas is None else self.alphas
        if isinstance(rel_alphas, (str, bytes, dict)):
            raise ConfigError(f"alphas must be a sequence of numbers >= 0; got {type(rel_alphas).__name__}")
        try:
            rel_alphas = np.asarray([as_float_param("alphas[i]", a, 0.0) for a in rel_alphas])
        except TypeError as exc:
            raise ConfigError(f"alphas must be a sequence of numbers >= 0; got {type(self.alphas).__name__}") from exc
        if rel_alphas.size == 0:
            raise ConfigError("alphas must hold at least one value; got an empty sequence")
        return L, cv, rel_alphas

    def fit(self, X: Any, y: Any, *, feature_names: Sequence[str] | None = None,
            channel_map: ChannelMap | None = None) -> "WienerFilter":
        """Fit the filter.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
        y : array (n_bins, n_outputs) or (n_bins,)
        feature_names : sequence of str, optional
            Stored and checked by ``load`` / ``check_compatible``; taken from X when it
            is a BinnedFeatures.
        channel_map : ChannelMap, optional
            Stored with the decoder.

        Returns
        -------
        self
        """
        L, cv, rel_alphas = self._check_params()
        X, Y = self._validate_fit(X, y, feature_names, channel_map)
        self.y_ndim_ = Y.ndim
        Y = Y.reshape(Y.shape[0], -1)
        n, f = X.shape
        m = Y.shape[1]
        x_mean = X.mean(axis=0)
        x_scale = X.std(axis=0)
        x_scale[x_scale < 1e-12 * max(1.0, float(np.abs(x_mean).max(initial=0.0)))] = 1.0
        y_mean = Y.mean(axis=0)
        Z = (X - x_mean) / x_scale
        Yc = Y - y_mean
        G, C = lagged_gram(Z, Yc, L)
        p = G.shape[0]
        scale = float(np.trace(G)) / p if p else 1.0
        scale = scale if scale > 0 else 1.0

        self.cv_scores_ = None
        if self.alpha == "cv":
            n_folds = min(cv, n // 2)
            if n_folds < 2:
                alpha = float(rel_alphas[len(rel_alphas) // 2]) * scale
                logger.info("WienerFilter: only %d bins, skipping CV (alpha=%g)", n, alpha)
            else:
                edges = np.linspace(0, n, n_folds + 1).round().astype(int)
                folds = list(zip(edges[:-1], edges[1:]))
                if p > CV_FULL_MAX_DIM:
                    folds = [(n - max(1, n // 5), n)]
                    logger.info("WienerFilter: %d lagged features > %d, choosing alpha on a time-ordered "
                                "hold-out (last 20%%) instead of %d folds", p, CV_FULL_MAX_DIM, n_folds)
                scores = self._cv_alphas(Z, Yc, G, C, L, folds, rel_alphas * scale)
                best = int(np.nanargmax(scores)) if np.any(np.isfinite(scores)) else len(rel_alphas) // 2
                alpha = float(rel_alphas[best] * scale)
                self.cv_scores_ = scores
                if best in (0, len(rel_alphas) - 1) and len(rel_alphas) > 2:
                    logger.info("WienerFilter: CV chose the edge of the alpha grid (relative %g)",
                                rel_alphas[best])
        else:
            alpha = float(self.alpha)
        W = _ridge_solve(G, C, alpha)                       # (L*f, m) on standardised features
        W = W.reshape(L, f, m) / x_scale[None, :, None]
        self.coef_ = W
        self.intercept_ = y_mean - np.einsum("f,lfm->m", x_mean, W)
        self.x_mean_ = x_mean
        self.x_scale_ = x_scale
        self.alpha_ = alpha
        self.n_outputs_ = m
        self.reset_state()
        return self

    @staticmethod
    def _cv_alphas(Z: np.ndarray, Yc: np.ndarray, G: np.ndarray, C: np.ndarray, L: int,
                   folds: list[tuple[int, int]], alphas: np.ndarray) -> np.ndarray:
        """Mean R² over contiguous test blocks ``[a, b)`` for each alpha (one eigh per block)."""
        n = Z.shape[0]
        gap = L - 1
        r2 = np.zeros((len(folds), alphas.size))
        for k, (a, b) in enumerate(folds):
            ea, eb = max(0, a - gap), min(n, b + gap)
            G_out, C_out = lagged_gram(Z, Yc, L, ea, eb)
            G_te, C_te = (G_out, C_out) if (ea, eb) == (a, b) else lagged_gram(Z, Yc, L, a, b)
            Gtr = G - G_out
            Ctr = C - C_out
            lam, V = scipy.linalg.eigh(Gtr, overwrite_a=True, check_finite=False, driver="evd")
            lam = np.maximum(lam, 0.0)
            VtC = V.T @ Ctr
            Yte = Yc[a:b]
            ss_tot = np.sum((Yte - Yte.mean(axis=0)) ** 2, axis=0)
            ss_tot = np.where(ss_tot > 0, ss_tot, 1.0)
            yy = np.sum(Yte ** 2, axis=0)
            for ai, alpha in enumerate(alphas):
                d = lam + alpha
                inv = np.where(d > 1e-12 * max(lam[-1], 1e-300), 1.0 / np.where(d > 0, d, 1.0), 0.0)
                W = V @ (inv[:, None] * VtC)
                sse = yy - 2 * np.sum(W * C_te, axis=0) + np.sum(W * (G_te @ W), axis=0)
                # predictions are centred on the training mean; correct SS for the fold's own mean
                r2[k, ai] = float(np.mean(1.0 - np.maximum(sse, 0.0) / ss_tot))
        return r2.mean(axis=0)

    # ---------------------------------------------------------------------------------
    def predict(self, X: Any, *, on_invalid: str = "raise") -> np.ndarray:
        """Decode a block of bins, starting from the reset state.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
        on_invalid : {"raise", "hold"}
            ``"hold"``: a bin with NaN/Inf keeps the previous output and is left out of
            the history, exactly as :meth:`step` does.

        Returns
        -------
        ndarray (n_bins, n_outputs), or (n_bins,) if fitted with 1-D y
        """
        X = self._validate_predict(X, on_invalid)
        bad = ~np.all(np.isfinite(X), axis=1)
        if bad.any():
            return _fix_1d(self, self._predict_hold(X, bad))
        return _fix_1d(self, self._predict_clean(X))

    def _predict_clean(self, X: np.ndarray) -> np.ndarray:
        L = self.coef_.shape[0]
        n = X.shape[0]
        Xp = np.concatenate([np.broadcast_to(self.x_mean_, (L - 1, X.shape[1])), X]) if L > 1 else X
        out = np.empty((n, self.n_outputs_))
        out[:] = self.intercept_
        for k in range(L):
            out += Xp[L - 1 - k:L - 1 - k + n] @ self.coef_[k]
        return out

    def _predict_hold(self, X: np.ndarray, bad: np.ndarray) -> np.ndarray:
        good = np.flatnonzero(~bad)
        out = np.empty((X.shape[0], self.n_outputs_))
        pred = self._predict_clean(X[good]) if good.size else np.empty((0, self.n_outputs_))
        last = self._initial_output()
        gi = 0
        for t in range(X.shape[0]):
            if not bad[t]:
                last = pred[gi]
                gi += 1
            out[t] = last
        return out

    def _initial_output(self) -> np.ndarray:
        """Output for a history of training-mean bins (held before the first valid bin)."""
        return self.intercept_ + self.x_mean_ @ self.coef_.sum(axis=0)

    # ---------------------------------------------------------------------------------
    def _reset_stream(self) -> None:
        L, f, m = self.coef_.shape
        self._buf = np.empty((2 * L, f))
        self._buf[:] = self.x_mean_
        self._pos = 0
        self._w_flat = np.ascontiguousarray(self.coef_[::-1].reshape(L * f, m))
        self._out = self._initial_output()
        self._L = L

    def step(self, x: Any) -> np.ndarray:
        """Decode one bin (the streaming counterpart of :meth:`predict`).

        Parameters
        ----------
        x : array (n_features,)

        Returns
        -------
        ndarray (n_outputs,)
            A new array; the previous output if ``x`` held NaN/Inf (then
            ``last_step_valid_`` is False and ``n_invalid_steps_`` grows).
        """
        x = self._check_step_input(x)
        if not finite_bin(x):
            self._note_invalid()
            return self._out.copy()
        L, j, buf = self._L, self._pos, self._buf
        buf[j] = x
        buf[j + L] = x
        out = np.dot(buf[j + 1:j + 1 + L].reshape(-1), self._w_flat)
        out += self.intercept_
        self._pos = j + 1 if j + 1 < L else 0
        self._out = out
        self.last_step_valid_ = True
        return out.copy()


def _ridge_solve(G: np.ndarray, C: np.ndarray, alpha: float) -> np.ndarray:
    """Solve ``(G + alpha I) W = C``; Cholesky when well posed, else a pseudo-inverse."""
    p = G.shape[0]
    if alpha > 0:
        A = G.copy()
        A[np.diag_indices(p)] += alpha
        try:
            c, low = scipy.linalg.cho_factor(A, overwrite_a=True, check_finite=False)
            W = scipy.linalg.cho_solve((c, low), C, check_finite=False)
            if np.all(np.isfinite(W)):
                return W
        except np.linalg.LinAlgError:
            pass
    lam, V = scipy.linalg.eigh(G, check_finite=False, driver="evd")
    d = lam + alpha
    tol = max(float(lam[-1]), 0.0) * p * np.finfo(float).eps
    inv = np.where(d > tol, 1.0 / np.where(d > tol, d, 1.0), 0.0)
    return V @ (inv[:, None] * (V.T @ C))
