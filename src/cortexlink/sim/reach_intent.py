"""A seeded centre-out-like velocity intent for :class:`~cortexlink.sim.SimulatedImplant`'s ``intent_fn``.

Real M1 decoding figures (offline velocity R²) come from centre-out reaching: point-to-point
movements with bell-shaped speed profiles separated by holds, not a smooth random walk. The
implant's built-in intent is the latter; :class:`CentreOutIntent` gives the former, so simulated
and real R² are measured on the same kind of movement.

Each trial: a rest at the centre, a reach to one of ``n_directions`` targets, a hold there, and
the reach back. A reach of duration ``T`` and peak speed ``p`` follows the minimum-jerk speed
profile ``p * 16 * u**2 * (1 - u)**2`` (``u = t / T``; Flash & Hogan 1985), so the way back
mirrors the way out and the intended position returns to the centre.
"""

from __future__ import annotations

import bisect
import numbers
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_range

__all__ = ["CentreOutIntent"]


def _check_pair(name: str, value: Any, lo: float, hi: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a (low, high) pair of numbers in [{lo}, {hi}]; got {value!r}") from None
    if not (np.isfinite(a) and np.isfinite(b)) or not lo <= a <= b <= hi:
        raise ConfigError(f"{name} must be a (low, high) pair with {lo} <= low <= high <= {hi}; got {value!r}")
    return a, b


class CentreOutIntent:
    """``intent_fn(sample_idx) -> (vx, vy, click)``: seeded centre-out reaches, rests and holds.

    Parameters
    ----------
    seed : int
        Seed (>= 0); trial ``k`` draws only from ``(seed, k)``, so the schedule does not depend on
        how often or in what order it is queried.
    fs_hz : float
        Sampling rate of the implant the intent drives (sample indices are converted with it).
    reach_s : (float, float)
        Duration of each reach, uniform (s; default 0.3-0.8 s).
    peak_speed : (float, float)
        Peak speed of each reach, uniform (normalised intent units, as in
        :meth:`SimulatedImplant.set_intent`; default 0.5-1.5).
    rest_s : (float, float)
        Rest at the centre before each reach out, uniform (s; default 0.2-0.6 s).
    hold_s : (float, float)
        Hold at the target before the reach back, uniform (s; default 0.2-0.5 s).
    n_directions : int
        Number of equally spaced target directions (1 to 64; default 8).

    Raises
    ------
    ConfigError
        For a value outside the ranges above.

    Examples
    --------
    >>> from cortexlink.sim import SimulatedImplant
    >>> imp = SimulatedImplant(n_channels=16, intent_fn=CentreOutIntent(seed=1))
    """

    def __init__(self, seed: int = 0, fs_hz: float = 30000.0, *, reach_s: Any = (0.3, 0.8),
                 peak_speed: Any = (0.5, 1.5), rest_s: Any = (0.2, 0.6), hold_s: Any = (0.2, 0.5),
                 n_directions: int = 8) -> None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
        if isinstance(n_directions, bool) or not isinstance(n_directions, numbers.Integral) \
                or not 1 <= n_directions <= 64:
            raise ConfigError(f"n_directions must be an integer in [1, 64]; got {n_directions!r}")
        self.seed = int(seed)
        self.fs_hz = check_range("fs_hz", fs_hz, 1.0, 1e7)
        self.reach_s = _check_pair("reach_s", reach_s, 0.01, 100.0)
        self.peak_speed = _check_pair("peak_speed", peak_speed, 0.0, 10.0)
        self.rest_s = _check_pair("rest_s", rest_s, 0.0, 100.0)
        self.hold_s = _check_pair("hold_s", hold_s, 0.0, 100.0)
        self.n_directions = int(n_directions)
        self._starts: list[float] = [0.0]   # start time (s) of each trial, and of the next one
        self._trials: list[tuple[float, float, float, float, float, float]] = []

    def _trial(self, k: int) -> tuple[float, float, float, float, float, float]:
        """(rest, reach, hold, peak, ux, uy) of trial ``k``, generating trials up to it."""
        while len(self._trials) <= k:
            rng = np.random.default_rng([self.seed, len(self._trials)])
            rest, reach, hold = (rng.uniform(*r) for r in (self.rest_s, self.reach_s, self.hold_s))
            peak = rng.uniform(*self.peak_speed)
            ang = 2 * np.pi * int(rng.integers(0, self.n_directions)) / self.n_directions
            self._trials.append((rest, reach, hold, peak, float(np.cos(ang)), float(np.sin(ang))))
            self._starts.append(self._starts[-1] + rest + 2 * reach + hold)
        return self._trials[k]

    def velocity_at_s(self, t_s: float) -> tuple[float, float]:
        """Intended velocity at time ``t_s`` (s, >= 0)."""
        while self._starts[-1] <= t_s:
            self._trial(len(self._trials))
        k = bisect.bisect_right(self._starts, t_s) - 1
        rest, reach, hold, peak, ux, uy = self._trial(k)
        t = t_s - self._starts[k] - rest
        if t < 0 or reach <= t < reach + hold or t >= 2 * reach + hold:
            return 0.0, 0.0
        sign = 1.0
        if t >= reach:
            t, sign = t - reach - hold, -1.0
        u = t / reach
        s = sign * peak * 16.0 * u * u * (1.0 - u) * (1.0 - u)
        return s * ux, s * uy

    def __call__(self, sample_idx: int) -> tuple[float, float, float]:
        vx, vy = self.velocity_at_s(max(int(sample_idx), 0) / self.fs_hz)
        return vx, vy, 0.0

    def __repr__(self) -> str:
        return (f"CentreOutIntent(seed={self.seed}, reach_s={self.reach_s}, peak_speed={self.peak_speed}, "
                f"rest_s={self.rest_s}, hold_s={self.hold_s}, n_directions={self.n_directions})")
