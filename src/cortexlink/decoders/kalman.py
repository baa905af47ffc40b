"""Kalman filter decoders (Wu et al. 2006) and ReFIT re-estimation (Gilja et al. 2012).

State design
------------
The hidden state is the vector of outputs ``y`` (any number of them: only velocities,
positions and velocities, forces...) **plus a constant 1**. The constant enters as
offset terms that are learned with everything else::

    y_t = A y_{t-1} + b + w_t,        w_t ~ N(0, W)      (dynamics, least squares)
    x_t = C y_t     + d + q_t,        q_t ~ N(0, Q)      (observation, least squares)

which is the augmented model ``s_t = [y_t; 1]`` with ``A_aug = [[A, b], [0, 1]]`` and
``H = [C, d]`` used for velocity Kalman filters in BCI (Wu et al. 2006, Gilja et al.
2012), with the constant's variance fixed at zero so it never needs estimating. Nothing
in the model assumes a bin width: ``A`` and ``W`` are learned per bin.

Numerics
--------
The update runs in information form, so the ``n_features x n_features`` innovation
covariance is never inverted: with ``J = C^T Q^{-1} C`` (precomputed by a Cholesky
solve), the posterior covariance is ``G = (I + P^- J)^{-1} P^-`` (a solve, not an
inverse), the gain ``K = G C^T Q^{-1}``, and the covariance update uses the Joseph
form ``P = (I - K C) P^- (I - K C)^T + K Q K^T`` with ``K Q K^T = G J G``. The
steady-state gain is the fixed point of that recursion; with it each step is one
``n_outputs x n_features`` matrix-vector product.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.types import ChannelMap
from cortexlink.decoders._base import (DecoderMixin, as_float_param, as_int_param, check_finite,
                                       check_is_fitted, check_n_features, finite_bin, register)
from cortexlink.decoders.labels import intended_velocity

logger = logging.getLogger(__name__)

__all__ = ["KalmanFilter", "ReFITKalmanFilter", "intended_velocity", "NOISE_SCALE_GRID"]

#: Candidate process-noise scales for ``process_noise_scale="auto"``.
NOISE_SCALE_GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


_KERNELS: Any = None


def _step_kernels() -> Any:
    """The compiled streaming kernels (numba is imported on first use: fit or load)."""
    global _KERNELS
    if _KERNELS is None:
        from cortexlink.decoders import _kernels

        _KERNELS = _kernels
    return _KERNELS


def _lstsq_intercept(U: np.ndarray, V: np.ndarray, ridge: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``V ~ U @ B + c`` (B: u x v, c: v), ridge-stabilised for collinear U."""
    mu_u, mu_v = U.mean(axis=0), V.mean(axis=0)
    Uc, Vc = U - mu_u, V - mu_v
    G = Uc.T @ Uc
    tr = float(np.trace(G)) / max(G.shape[0], 1)
    G[np.diag_indices_from(G)] += ridge * (tr if tr > 0 else 1.0)
    B = scipy.linalg.solve(G, Uc.T @ Vc, assume_a="pos", check_finite=False)
    return B, mu_v - mu_u @ B


def _shrunk_covariance(R: np.ndarray, shrinkage: float | str) -> tuple[np.ndarray, float]:
    """Covariance of residuals ``R`` shrunk toward its diagonal; floors zero variances.

    ``"auto"`` uses the Ledoit-Wolf coefficient of the standardised residuals.
    """
    n, f = R.shape
    var = R.var(axis=0)
    pos = var[var > 0]
    floor = (float(np.median(pos)) if pos.size else 1.0)
    var_f = np.where(var > 1e-12 * floor, var, floor)   # constant feature: any finite variance works
    sd = np.sqrt(var_f)
    Rs = (R - R.mean(axis=0)) / sd
    if shrinkage == "auto":
        from sklearn.covariance import ledoit_wolf_shrinkage

        gamma = float(ledoit_wolf_shrinkage(Rs, assume_centered=True)) if n > 1 else 1.0
    else:
        gamma = float(shrinkage)
    corr = (Rs.T @ Rs) / n
    corr *= (1.0 - gamma)
    corr[np.diag_indices(f)] = 1.0
    corr[np.diag_indices(f)] += 1e-6                     # keeps Q positive definite when collinear
    return corr * sd[:, None] * sd[None, :], gamma


@register
class KalmanFilter(DecoderMixin, RegressorMixin, BaseEstimator):
    """Linear-Gaussian state-space decoder; state = outputs + constant (see module doc).

    Parameters
    ----------
    steady_state : bool, default=True
        Use the converged (steady-state) gain from the first bin: identical to the
        time-varying filter after a short transient and much faster per step.
    obs_shrinkage : float in [0, 1] or "auto", default="auto"
        Shrinkage of the observation-noise covariance ``Q`` toward its diagonal
        (Ledoit-Wolf coefficient when "auto"). Keeps ``Q`` well conditioned with many
        features, collinear or constant features and few bins.
    process_noise_scale : float > 0 or "auto", default="auto"
        Multiplies the learned process noise ``W`` (> 1 trusts the neural data more,
        like neural-decoding's ``1/C``). "auto": chosen from ``NOISE_SCALE_GRID`` by the
        R² of a model fitted on the first 80% of the bins and run on the last 20%
        (time-ordered hold-out), then refitted on all bins (with ``velocity_tau_bins``,
        "auto" is 1).
    velocity_tau_bins : float > 0 or None, default=None
        None: the dynamics ``A``, ``b``, ``W`` are fitted to the training labels. A number:
        the prior on the outputs is a first-order process with this correlation time (bins):
        ``A = a I`` with ``a = exp(-1 / tau)``, ``W = (1 - a**2) cov(y)``, ``b = (1 - a) mean(y)``,
        and the observation model is fitted as usual. For closed loops calibrated on an
        autopilot's smooth kinematics: fitted dynamics then describe the autopilot, whose slow
        changes make the filter smooth heavily, while the person steering corrects within a
        reaction time; the filter's gain then follows the measured observation noise (less
        smoothing with more channels).
    max_iter : int, default=10000
        Iterations allowed for the steady-state Riccati recursion.
    tol : float, default=1e-10
        Relative change of the covariance at which the recursion has converged.

    Attributes
    ----------
    A_, b_, W_ : ndarrays
        Dynamics ``y_t = A y_{t-1} + b + w``, ``w ~ N(0, W)``.
    C_, d_, Q_ : ndarrays
        Observation ``x_t = C y_t + d + q``, ``q ~ N(0, Q)``.
    y_mean_, P0_ : ndarrays
        Initial state mean and covariance (training mean and covariance of y).
    K_ : ndarray (n_outputs, n_features)
        Steady-state Kalman gain.
    obs_shrinkage_ : float
        Shrinkage used for Q.
    process_noise_scale_ : float
        Scale applied to W (chosen when ``process_noise_scale="auto"``).
    noise_scale_scores_ : ndarray or None
        Hold-out R² of each ``NOISE_SCALE_GRID`` entry when "auto".
    n_invalid_steps_, last_step_valid_ :
        Streaming fault counters (see :meth:`step`).
    """

    _persist = ("A_", "b_", "W_", "C_", "d_", "Q_", "y_mean_", "P0_", "K_", "M_", "c_", "J_", "HtQinv_",
                "e_", "obs_shrinkage_", "n_outputs_", "y_ndim_", "n_iter_", "process_noise_scale_",
                "noise_scale_scores_")
    _nonfinite_ok = ("noise_scale_scores_",)
    _shapes = {"A_": "m m", "b_": "m", "W_": "m m", "C_": "f m", "d_": "f", "Q_": "f f", "y_mean_": "m", "P0_": "m m",
               "K_": "m f", "M_": "m m", "c_": "m", "J_": "m m", "HtQinv_": "m f", "e_": "m"}
    _min_samples = 3

    def __init__(self, steady_state: bool = True, obs_shrinkage: float | str = "auto",
                 process_noise_scale: float | str = "auto", max_iter: int = 10000, tol: float = 1e-10,
                 velocity_tau_bins: float | None = None) -> None:
        self.steady_state = steady_state
        self.obs_shrinkage = obs_shrinkage
        self.process_noise_scale = process_noise_scale
        self.max_iter = max_iter
        self.tol = tol
        self.velocity_tau_bins = velocity_tau_bins

    # ---------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.steady_state, (bool, np.bool_)):
            raise ConfigError(f"steady_state must be True or False; got {self.steady_state!r}")
        if isinstance(self.obs_shrinkage, str):
            if self.obs_shrinkage != "auto":
                raise ConfigError(f"obs_shrinkage must be a number in [0, 1] or 'auto'; got {self.obs_shrinkage!r}")
        else:
            as_float_param("obs_shrinkage", self.obs_shrinkage, 0.0, 1.0)
        if isinstance(self.process_noise_scale, str):
            if self.process_noise_scale != "auto":
                raise ConfigError(f"process_noise_scale must be a number > 0 or 'auto'; "
                                  f"got {self.process_noise_scale!r}")
        else:
            as_float_param("process_noise_scale", self.process_noise_scale, 0.0, lo_open=True)
        as_int_param("max_iter", self.max_iter, 1)
        as_float_param("tol", self.tol, 0.0, lo_open=True)
        if self.velocity_tau_bins is not None:
            as_float_param("velocity_tau_bins", self.velocity_tau_bins, 0.0, lo_open=True)

    def fit(self, X: Any, y: Any, *, feature_names: Sequence[str] | None = None,
            channel_map: ChannelMap | None = None) -> "KalmanFilter":
        """Learn dynamics and observation model by least squares.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
        y : array (n_bins, n_outputs) or (n_bins,)
            Consecutive bins (the dynamics are learned from neighbouring rows).
        feature_names, channel_map : optional
            Stored for ``check_compatible`` / ``load``.

        Returns
        -------
        self
        """
        self._check_params()
        X, Y = self._validate_fit(X, y, feature_names, channel_map)
        self.y_ndim_ = Y.ndim
        Y = Y.reshape(Y.shape[0], -1)
        self.noise_scale_scores_ = None
        if self.process_noise_scale == "auto":
            scale = 1.0
            if X.shape[0] >= 50 and self.velocity_tau_bins is None:
                scale, self.noise_scale_scores_ = self._select_noise_scale(X, Y)
        else:
            scale = float(self.process_noise_scale)
        self._fit_all(X, Y, scale)
        return self

    def _fit_dynamics(self, Y: np.ndarray, scale: float) -> None:
        m = Y.shape[1]
        P0 = np.atleast_2d(np.cov(Y, rowvar=False, bias=True))
        if self.velocity_tau_bins is None:
            B, b = _lstsq_intercept(Y[:-1], Y[1:])
            self.A_ = B.T
            self.b_ = b
            Rw = Y[1:] - (Y[:-1] @ B + b)
            W = np.atleast_2d(np.cov(Rw, rowvar=False, bias=True)) * scale
        else:                                   # a first-order prior with a set correlation time
            a = math.exp(-1.0 / float(self.velocity_tau_bins))
            self.A_ = a * np.eye(m)
            self.b_ = (1.0 - a) * Y.mean(axis=0)
            W = (1.0 - a * a) * P0 * scale
        y_scale = float(np.trace(P0)) / m if np.trace(P0) > 0 else 1.0
        W[np.diag_indices(m)] += 1e-9 * y_scale + 1e-300
        P0[np.diag_indices(m)] += 1e-9 * y_scale + 1e-300
        self.W_ = W
        self.P0_ = P0
        self.y_mean_ = Y.mean(axis=0)
        self.n_outputs_ = m
        self.process_noise_scale_ = float(scale)

    def _fit_all(self, X: np.ndarray, Y: np.ndarray, scale: float) -> None:
        self._fit_dynamics(Y, scale)
        self._fit_observation(X, Y)

    def _select_noise_scale(self, X: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
        """Pick the process-noise scale on a time-ordered hold-out (last 20% of the bins)."""
        n = X.shape[0]
        n_tr = n - max(10, n // 5)
        probe = KalmanFilter(steady_state=True, obs_shrinkage=self.obs_shrinkage, max_iter=self.max_iter,
                             tol=self.tol)
        probe.n_features_in_ = X.shape[1]
        probe.feature_names_, probe.channel_map_, probe.y_ndim_ = None, None, 2
        probe._fit_all(X[:n_tr], Y[:n_tr], 1.0)
        W1 = probe.W_.copy()
        Yv = Y[n_tr:]
        ss_tot = np.sum((Yv - Yv.mean(axis=0)) ** 2, axis=0)
        ss_tot = np.where(ss_tot > 0, ss_tot, 1.0)
        scores = np.empty(len(NOISE_SCALE_GRID))
        for i, sc in enumerate(NOISE_SCALE_GRID):
            probe.W_ = W1 * sc
            probe._steady_gain()
            pred = probe._run_steady(X[n_tr:])
            scores[i] = float(np.mean(1.0 - np.sum((Yv - pred) ** 2, axis=0) / ss_tot))
        best = int(np.argmax(scores)) if np.any(np.isfinite(scores)) else NOISE_SCALE_GRID.index(1.0)
        return float(NOISE_SCALE_GRID[best]), scores

    def _fit_observation(self, X: np.ndarray, Y: np.ndarray, keep: float = 0.0) -> None:
        """Observation model, its noise and the gains (shared by fit and ReFIT); ``keep`` > 0
        blends the fitted ``C``, ``d``, ``Q`` with the current ones (``keep`` of the current)."""
        Bc, d = _lstsq_intercept(Y, X)
        C = Bc.T                                               # (f, m)
        Q, gamma = _shrunk_covariance(X - (Y @ Bc + d), self.obs_shrinkage)
        if keep > 0:
            C, d, Q = (keep * old + (1.0 - keep) * new for old, new in ((self.C_, C), (self.d_, d), (self.Q_, Q)))
        cf = scipy.linalg.cho_factor(Q, check_finite=False)
        QinvC = scipy.linalg.cho_solve(cf, C, check_finite=False)
        self.C_, self.d_, self.Q_ = C, d, Q
        self.obs_shrinkage_ = gamma
        self.HtQinv_ = np.ascontiguousarray(QinvC.T)            # (m, f)
        J = C.T @ QinvC
        self.J_ = 0.5 * (J + J.T)
        self.e_ = self.HtQinv_ @ d
        self._steady_gain()
        if not (np.all(np.isfinite(self.K_)) and np.all(np.isfinite(self.M_))):
            raise ValidationError("KalmanFilter.fit produced non-finite gains; the data are degenerate "
                                  "(check for constant outputs or all-constant features)")
        self.reset_state()

    def _posterior(self, P_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(G, P): posterior covariance G = (I + P^- J)^{-1} P^- and its Joseph-form update."""
        m = P_m.shape[0]
        I = np.eye(m)
        G = np.linalg.solve(I + P_m @ self.J_, P_m)
        G = 0.5 * (G + G.T)
        IKH = I - G @ self.J_
        P = IKH @ P_m @ IKH.T + G @ self.J_ @ G
        return G, 0.5 * (P + P.T)

    def _steady_gain(self) -> None:
        A, W = self.A_, self.W_
        P = self.P0_
        tol, n_iter = float(self.tol), 0
        G = P
        for n_iter in range(1, int(self.max_iter) + 1):  # noqa: B007 - the count is read after the loop
            P_m = A @ P @ A.T + W
            G, P_new = self._posterior(P_m)
            delta = np.max(np.abs(P_new - P)) / max(np.max(np.abs(P_new)), 1e-300)
            P = P_new
            if delta < tol:
                break
        else:
            logger.warning("KalmanFilter: steady-state recursion did not converge in %d iterations", n_iter)
        self.n_iter_ = n_iter
        m = A.shape[0]
        IGJ = np.eye(m) - G @ self.J_
        self.K_ = np.ascontiguousarray(G @ self.HtQinv_)       # (m, f)
        self.M_ = IGJ @ A
        self.c_ = IGJ @ self.b_ - G @ self.e_

    # ---------------------------------------------------------------------------------
    def predict(self, X: Any, *, on_invalid: str = "raise") -> np.ndarray:
        """Run the filter over a block of bins from the initial state.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
        on_invalid : {"raise", "hold"}
            ``"hold"``: bins with NaN/Inf hold the previous output and leave the state
            untouched, as :meth:`step` does.

        Returns
        -------
        ndarray (n_bins, n_outputs), or (n_bins,) if fitted with 1-D y
        """
        X = self._validate_predict(X, on_invalid)
        n, m = X.shape[0], self.n_outputs_
        out = np.empty((n, m))
        good = np.all(np.isfinite(X), axis=1)
        if not good.all():
            X = np.where(good[:, None], X, 0.0)        # bad rows are skipped below; avoids Inf arithmetic
        if self.steady_state:
            out = self._run_steady(X, good)
        else:
            U = X @ self.HtQinv_.T
            U[~good] = np.nan
            yv, P = self.y_mean_.copy(), self.P0_.copy()
            last = yv
            for t in range(n):
                if math.isfinite(U[t].sum()):
                    yv, P = self._tv_update(yv, P, U[t])
                    last = yv
                out[t] = last
        return out[:, 0] if self.y_ndim_ == 1 else out

    def _run_steady(self, X: np.ndarray, good: np.ndarray | None = None) -> np.ndarray:
        """Steady-state filter over finite rows of X (rows not ``good`` hold the output)."""
        U = X @ self.K_.T
        U += self.c_
        if good is not None:
            U[~good] = np.nan
        out = np.empty((X.shape[0], self.n_outputs_))
        M = self.M_
        yv = self.y_mean_.copy()
        last = yv
        for t in range(X.shape[0]):
            u = U[t]
            if good is None or good[t]:
                yv = M @ yv + u
                last = yv
            out[t] = last
        return out

    def _tv_update(self, yv: np.ndarray, P: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y_m = self.A_ @ yv + self.b_
        P_m = self.A_ @ P @ self.A_.T + self.W_
        G, P = self._posterior(P_m)
        return y_m + G @ (u - self.e_ - self.J_ @ y_m), P

    def _reset_stream(self) -> None:
        self._y = self.y_mean_.copy()
        self._P = self.P0_.copy()
        self._out = self.y_mean_.copy()
        self._fast = False
        if self.steady_state:
            self.K_ = np.ascontiguousarray(self.K_, dtype=np.float64)
            self.M_ = np.ascontiguousarray(self.M_, dtype=np.float64)
            self.c_ = np.ascontiguousarray(self.c_, dtype=np.float64)
            _step_kernels().warm(self.K_, self.c_, self.M_)
            self._fast = True

    def step(self, x: Any) -> np.ndarray:
        """Filter one bin (streaming counterpart of :meth:`predict`).

        Parameters
        ----------
        x : array (n_features,)

        Returns
        -------
        ndarray (n_outputs,)
            The posterior state mean; the previous one if ``x`` held NaN/Inf (then
            ``last_step_valid_`` is False and ``n_invalid_steps_`` grows).
        """
        if (getattr(self, "_fast", False) and type(x) is np.ndarray and x.ndim == 1
                and x.shape[0] == self.n_features_in_ and (x.dtype == np.float32 or x.dtype == np.float64)
                and x.flags.c_contiguous):
            # the real-time path: one compiled call (see cortexlink.decoders._kernels)
            u = np.empty(self._y.shape[0])
            if not _KERNELS.kalman_steady_step(self.K_, self.c_, self.M_, self._y, x, u):
                self._note_invalid()
                return self._out.copy()
            self._y = u
            self._out = u
            self.last_step_valid_ = True
            return u.copy()
        x = self._check_step_input(x)
        if not finite_bin(x):
            self._note_invalid()
            return self._out.copy()
        if self.steady_state:
            u = self.K_ @ x
            u += self.c_
            u += self.M_ @ self._y
            self._y = u
        else:
            u = self.HtQinv_ @ x
            self._y, self._P = self._tv_update(self._y, self._P, u)
        self._out = self._y
        self.last_step_valid_ = True
        return self._y.copy()


@register
class ReFITKalmanFilter(KalmanFilter):
    """Kalman filter that can be re-estimated from closed-loop data (ReFIT, Gilja 2012).

    Fit it like :class:`KalmanFilter` (e.g. on arm or observation-task data); then call
    :meth:`refit` with a closed-loop block: the decoded velocities are replaced by the
    participant's inferred intention (:func:`intended_velocity`) and the observation
    model (``C``, ``d``, ``Q``) is re-learned from them. The outputs must be the
    velocities (``n_outputs`` = number of spatial dimensions).

    Parameters
    ----------
    refit_dynamics : bool, default=False
        Also re-learn ``A``, ``b``, ``W`` from the intention (Gilja et al. keep the
        dynamics of the initial fit).
    steady_state, obs_shrinkage, process_noise_scale, max_iter, tol, velocity_tau_bins :
        As in :class:`KalmanFilter`.

    Attributes
    ----------
    n_refits_ : int
        How many times :meth:`refit` has been applied.
    """

    _persist = KalmanFilter._persist + ("n_refits_",)

    def __init__(self, steady_state: bool = True, obs_shrinkage: float | str = "auto",
                 process_noise_scale: float | str = "auto", max_iter: int = 10000, tol: float = 1e-10,
                 refit_dynamics: bool = False, velocity_tau_bins: float | None = None) -> None:
        super().__init__(steady_state=steady_state, obs_shrinkage=obs_shrinkage,
                         process_noise_scale=process_noise_scale, max_iter=max_iter, tol=tol,
                         velocity_tau_bins=velocity_tau_bins)
        self.refit_dynamics = refit_dynamics

    def fit(self, X: Any, y: Any, *, feature_names: Sequence[str] | None = None,
            channel_map: ChannelMap | None = None) -> "ReFITKalmanFilter":
        """Fit as :class:`KalmanFilter` (see there)."""
        super().fit(X, y, feature_names=feature_names, channel_map=channel_map)
        self.n_refits_ = 0
        return self

    intended_velocity = staticmethod(intended_velocity)

    def refit(self, X: Any, decoded_velocity: Any, cursor_pos: Any, target_pos: Any,
              on_target: Any, *, X_prior: Any = None, y_prior: Any = None, keep: float = 0.0) -> "ReFITKalmanFilter":
        """Re-estimate the observation model from closed-loop data.

        Parameters
        ----------
        X : array (n_bins, n_features) or BinnedFeatures
            Features recorded during closed-loop control, same layout as in ``fit``.
        decoded_velocity : array (n_bins, n_outputs)
            What the decoder output in those bins.
        cursor_pos, target_pos : array (n_bins, n_outputs)
            Cursor and target positions in those bins.
        on_target : array of bool (n_bins,)
            True while the cursor is on the target (intention taken as zero).
        X_prior, y_prior : arrays (n_prior, n_features) and (n_prior, n_outputs), optional
            Calibration bins and their labels, fitted together with the closed-loop bins and
            their re-estimated intention. Gilja et al. refit on the closed-loop block alone; a
            short block has fewer bins than a high-channel-count decoder has features, and its
            observation noise is then poorly estimated (Webgrid 30 x 30 after 40 s, 1,024
            channels, seed 0: 1.47 bps alone, 5.07 with the calibration's bins).
        keep : float in [0, 1), default 0
            SmoothBatch (Orsborn et al. 2012): the observation model fitted on these bins is
            blended with the current one, ``keep`` of the current (``C``, ``d`` and ``Q`` each),
            instead of replacing it. 0: ReFIT's replacement.

        Returns
        -------
        self
        """
        check_is_fitted(self)
        self._check_params()
        from cortexlink.core.types import BinnedFeatures

        if isinstance(X, BinnedFeatures):
            if self.feature_names_ is not None and tuple(X.feature_names) != self.feature_names_:
                from cortexlink.decoders._base import IncompatibleDecoderError, _describe_name_mismatch

                raise IncompatibleDecoderError(_describe_name_mismatch(self.feature_names_, X.feature_names))
            X = X.data
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValidationError(f"X must be 2-D (bins x features); got shape {X.shape}")
        check_n_features(type(self).__name__, self.n_features_in_, X.shape[1])
        check_finite("X", X)
        v = np.asarray(decoded_velocity, dtype=np.float64)
        if v.ndim == 1 and self.n_outputs_ == 1:
            v = v[:, None]
        if v.ndim != 2 or v.shape != (X.shape[0], self.n_outputs_):
            raise ValidationError(f"decoded_velocity must have shape ({X.shape[0]}, {self.n_outputs_}) "
                                  f"(bins x velocity outputs); got {v.shape}")
        c = np.asarray(cursor_pos, dtype=np.float64).reshape(v.shape) if np.size(cursor_pos) == v.size \
            else np.asarray(cursor_pos)
        g = np.asarray(target_pos, dtype=np.float64).reshape(v.shape) if np.size(target_pos) == v.size \
            else np.asarray(target_pos)
        intent = intended_velocity(v, c, g, on_target)
        if (X_prior is None) != (y_prior is None):
            raise ValidationError("X_prior and y_prior go together (the calibration's features and labels)")
        if X_prior is not None:
            Xp = np.asarray(X_prior, dtype=np.float64)
            yp = np.asarray(y_prior, dtype=np.float64)
            if yp.ndim == 1 and self.n_outputs_ == 1:
                yp = yp[:, None]
            if Xp.ndim != 2 or Xp.shape[1] != X.shape[1] or yp.shape != (Xp.shape[0], self.n_outputs_):
                raise ValidationError(f"X_prior / y_prior must be (n, {X.shape[1]}) / (n, {self.n_outputs_}); "
                                      f"got {Xp.shape} / {np.shape(y_prior)}")
            check_finite("X_prior", Xp)
            check_finite("y_prior", yp)
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 <= keep < 1.0:
            raise ValidationError(f"keep must be a number in [0, 1); got {keep!r}")
        if X.shape[0] < self._min_samples:
            raise ValidationError(f"ReFITKalmanFilter.refit needs at least {self._min_samples} bins; "
                                  f"got n_samples={X.shape[0]}")
        if self.refit_dynamics:
            B, b = _lstsq_intercept(intent[:-1], intent[1:])
            self.A_, self.b_ = B.T, b
            Rw = intent[1:] - (intent[:-1] @ B + b)
            W = np.atleast_2d(np.cov(Rw, rowvar=False, bias=True)) * self.process_noise_scale_
            W[np.diag_indices(self.n_outputs_)] += 1e-9 * max(float(np.trace(W)), 1e-300)
            self.W_ = W
        if X_prior is not None:
            self._fit_observation(np.vstack([Xp, X]), np.vstack([yp, intent]), float(keep))
        else:
            self._fit_observation(X, intent, float(keep))
        self.n_refits_ += 1
        logger.info("ReFIT: observation model re-estimated from %d bins (refit %d)", X.shape[0], self.n_refits_)
        return self
