"""The decoder's output stage: bias correction, a speed-dependent gain with its dead zone set from
measured rest noise, and the click freeze (:func:`output_stage`).

A velocity decoder's output is never zero when the participant means to hold still: on this
simulator the cursor drifts at 0.1-0.2 screen units/s during the participant's visual delay, more
than half a 30 x 30 Webgrid cell. :class:`SpeedGain` passes a decoded velocity ``v`` of speed
``s`` as ``v * s**2 / (s**2 + s0**2)``: fast movements keep their speed, slow ones (mostly noise)
shrink, a soft dead zone of width ``s0`` (like the speed-dependent gain of a computer mouse,
and the nonlinear velocity gains of clinical systems). ``s0`` is not chosen by hand: at fit
time :func:`rest_speed` measures the decoder's output speed at rest on calibration bins it was
not fitted on, and ``s0 = SPEED_GAIN_K * rest speed`` (:func:`auto_speed_gain`).

:class:`BiasCorrector` (Jarosiewicz et al. 2015, Sci Transl Med 7:313ra179) removes a slowly
varying bias from the decoded velocity: the bias is the exponentially weighted running mean of
the decoded velocities whose speed exceeds a threshold (the 66th centile of the speeds the
decoder gave on its own training bins, :func:`bias_speed_threshold`; slower output is mostly
the participant counteracting the bias), subtracted before the gain.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_positive

__all__ = ["SpeedGain", "rest_speed", "auto_speed_gain", "check_speed_gain", "output_stage", "SPEED_GAIN_K",
           "HOLDOUT_FRACTION", "BiasCorrector", "bias_speed_threshold", "BIAS_SPEED_CENTILE"]

#: ``s0`` in units of the measured median decoded speed at rest. Chosen on the closed-loop bench
#: (Kalman, Webgrid 30 x 30, seed 1 at 1,024 channels: k = 0.7 / 1.0 / 1.5 gave 6.2 / 5.9 / 4.4 bps;
#: at 256 channels seeds 0-2, k = 1.0 / 1.5 / 2.0 / 3.0 gave 2.8 / 2.7 / 2.7 / 1.7 bps): the rest
#: noise measured in open loop is ~3x the closed loop's, so k = 1 already suppresses it.
SPEED_GAIN_K = 1.0
#: The last fraction of the calibration bins held out to measure the rest noise.
HOLDOUT_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class SpeedGain:
    """``v -> v * s**2 / (s**2 + s0_units_s**2)`` with ``s = |v|`` (screen units per second).

    Attributes
    ----------
    s0_units_s : float
        Speed at which the gain is one half (> 0, finite).
    rest_speed_units_s : float or None
        The measured median decoded speed at rest it was set from (None: set by hand).
    """

    s0_units_s: float
    rest_speed_units_s: float | None = None

    def __post_init__(self) -> None:
        s0 = self.s0_units_s
        if isinstance(s0, bool) or not isinstance(s0, (int, float)) or not math.isfinite(s0) or s0 <= 0:
            raise ConfigError(f"speed gain s0_units_s must be a finite number > 0 (screen units/s); got {s0!r}")

    def __call__(self, v: Any) -> np.ndarray:
        """The gained velocity (same shape as ``v``: one (2,) velocity or rows of them)."""
        v = np.asarray(v, dtype=np.float64)
        s2 = np.sum(v * v, axis=-1, keepdims=True)
        return v * (s2 / (s2 + self.s0_units_s ** 2))

    def to_dict(self) -> dict:
        return {"s0_units_s": float(self.s0_units_s), "rest_speed_units_s": self.rest_speed_units_s}

    @classmethod
    def from_dict(cls, d: dict | None) -> "SpeedGain | None":
        """The gain :meth:`to_dict` wrote (None for None or an empty mapping)."""
        return cls(float(d["s0_units_s"]), d.get("rest_speed_units_s")) if d else None


#: Decoded speeds above this centile of the training bins' feed the bias estimate (Jarosiewicz et
#: al. 2015: "high enough to exclude low-velocity movements generated in an effort to counteract
#: existing biases").
BIAS_SPEED_CENTILE = 66.0


class BiasCorrector:
    """``v -> v - b``, where ``b`` is the exponentially weighted running mean (time constant
    ``tau_s``) of the decoded velocities faster than ``speed_threshold`` (units/s), updated bin
    by bin (``dt_s``) before it is subtracted. :meth:`reset` (a block start) sets ``b`` to 0, so a
    block is reproduced from its own bins (replay)."""

    def __init__(self, tau_s: float, speed_threshold: float, dt_s: float) -> None:
        self.tau_s, self.speed_threshold, self.dt_s = (
            check_positive(f"bias correction {name}", x)
            for name, x in (("tau_s", tau_s), ("speed_threshold", speed_threshold), ("dt_s", dt_s)))
        self._a = 1.0 - math.exp(-self.dt_s / self.tau_s)
        self.bias = np.zeros(2)
        self.n_updates = 0

    def reset(self) -> None:
        self.bias = np.zeros(2)
        self.n_updates = 0

    def __call__(self, v: np.ndarray) -> np.ndarray:
        if math.hypot(float(v[0]), float(v[1])) > self.speed_threshold:
            self.bias += self._a * (v - self.bias)
            self.n_updates += 1
        return v - self.bias

    def to_dict(self) -> dict:
        return {"tau_s": self.tau_s, "speed_threshold": self.speed_threshold, "dt_s": self.dt_s}

    @classmethod
    def from_dict(cls, d: dict | None) -> "BiasCorrector | None":
        """A fresh corrector with :meth:`to_dict`'s settings (None for None or an empty mapping)."""
        return cls(float(d["tau_s"]), float(d["speed_threshold"]), float(d["dt_s"])) if d else None


def bias_speed_threshold(decoder: Any, X: np.ndarray) -> float | None:
    """The :data:`BIAS_SPEED_CENTILE` centile of the speeds ``decoder`` outputs over ``X`` (its
    training bins, in time order); None when it is not a finite number > 0."""
    out = np.asarray(decoder.predict(X), dtype=np.float64).reshape(-1, 2)
    s = np.hypot(out[:, 0], out[:, 1])
    s = s[np.isfinite(s)]
    t = float(np.percentile(s, BIAS_SPEED_CENTILE)) if s.size else math.nan
    return t if math.isfinite(t) and t > 0 else None


def output_stage(v: Any, gain: SpeedGain | None, click_step: Any = None,
                 freeze_proba: float | None = None, bias: BiasCorrector | None = None) -> tuple[np.ndarray, bool]:
    """The decoded velocity as it drives the cursor, the one rule of the live decoder node and of
    replay: ``bias`` corrected (it updates its estimate), ``gain`` applied, then held at zero
    while the click decoder's step ``click_step`` (a :class:`~cortexlink.decoders.ClickStep`, or
    None) is in its click state or its probability is at least ``freeze_proba``. Returns
    ``(velocity, frozen)``."""
    v = np.asarray(v, dtype=np.float64)
    if bias is not None:
        v = bias(v)
    if gain is not None:
        v = gain(v)
    if click_step is not None and freeze_proba is not None and (
            click_step.state == 1 or click_step.proba >= freeze_proba):
        return np.zeros(2), True
    return v, False


def rest_speed(make: Any, X: np.ndarray, y: np.ndarray, *, holdout: float = HOLDOUT_FRACTION,
               rest_fraction: float = 0.1) -> float | None:
    """Median decoded speed at rest on held-out calibration bins.

    ``make()`` builds an unfitted decoder; it is fitted on the first ``1 - holdout`` of the bins
    (in time order) and run over the rest with ``predict``. Rest bins are those whose label speed
    is at most ``rest_fraction`` of the labels' 95th-percentile speed, or the slowest tenth of the
    held-out bins if that is more (a calibration whose cursor seldom stops). None when fewer than
    50 bins are fitted or 20 held out.
    """
    n = len(X)
    n_fit = int(round(n * (1.0 - holdout)))
    if n_fit < 50 or n - n_fit < 20:
        return None
    speed = np.hypot(y[:, 0], y[:, 1])
    held = speed[n_fit:]
    rest = held <= max(rest_fraction * float(np.percentile(speed, 95)), float(np.percentile(held, 10)))
    dec = make()
    dec.fit(X[:n_fit], y[:n_fit])
    out = np.asarray(dec.predict(X[n_fit:]), dtype=np.float64).reshape(-1, 2)
    s = np.hypot(out[:, 0], out[:, 1])[rest]
    s = s[np.isfinite(s)]
    return float(np.median(s)) if s.size else None


def auto_speed_gain(make: Any, X: np.ndarray, y: np.ndarray, k: float | None = None) -> SpeedGain | None:
    """A :class:`SpeedGain` with ``s0 = k *`` :func:`rest_speed` (``k`` default
    :data:`SPEED_GAIN_K`); None when rest cannot be measured."""
    k = SPEED_GAIN_K if k is None else k
    r = rest_speed(make, X, y)
    if r is None or not r > 0:
        return None
    return SpeedGain(k * r, r)


def check_speed_gain(path: str, value: Any) -> Any:
    """A speed-gain setting: None (none), ``"auto"`` or a half-gain speed > 0 (screen units/s).

    Raises
    ------
    ConfigError
        Naming ``path``, for anything else.
    """
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{path} must be null, 'auto' or a speed > 0 (screen units/s); got {value!r}")
    return float(value)
