"""The cursor effector: decoded velocity and click in, cursor position and click event out."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import LoopMode
from cortexlink.core.validation import check_positive, check_range

logger = logging.getLogger(__name__)

__all__ = ["CursorEffector", "autopilot_velocity", "cursor_command", "MODES", "AUTOPILOT_SPEED"]

#: Peak speed of the open-loop calibration cursor (screen units/s), near the speeds the participant
#: reaches on its own (its cap is ``max_speed_units_s`` 3.5), so that the calibration covers the
#: neural activity of closed-loop movements: at 1.0 the click decoder, never trained on fast
#: movement, clicked falsely during fast closed-loop reaches (Kalman, 256 channels, seed 0: wrong
#: clicks at 2.3 units/s, 5 per minute; at 2.5-3.0 none at speed).
AUTOPILOT_SPEED = 2.5

#: Loop modes of a block (:class:`~cortexlink.core.types.LoopMode`): ``open`` (calibration: the
#: cursor moves to the target by itself while the participant intends along), ``closed`` (the
#: decoder drives it), ``perfect`` (the cursor follows the participant's intent exactly).
MODES = tuple(LoopMode)


class CursorEffector:
    """A 2-D screen cursor driven by a velocity command, advanced once per bin.

    Each :meth:`step` smooths the commanded velocity with an exponential moving average,
    scales it by ``gain``, integrates it over ``dt_s`` and clamps the position to the
    screen ``[-bounds, bounds]`` in both axes. A velocity holding NaN/Inf does not move the
    cursor (the bin is counted in :attr:`n_nonfinite_held`). The click output is the click
    input passed through, except that a click less than ``refractory_s`` after the last
    *accepted* click is suppressed (counted in :attr:`n_clicks_suppressed`), so a decoder
    that reports one intended click on two close bins produces one click.

    Parameters
    ----------
    gain : float
        Multiplies the (smoothed) velocity, > 0.
    smoothing : float
        EMA weight of the previous velocity, in [0, 1): ``v = s * v_prev + (1 - s) * v_in``.
        0 means no smoothing.
    bounds : float
        Half-width of the square screen, in screen units (the cursor stays in
        ``[-bounds, bounds]``).
    dt_s : float
        Duration of one bin in seconds.
    refractory_s : float
        Minimum time between two accepted clicks, seconds (>= 0; 0 accepts every click).
    dwell_s : float or None
        Dwell fallback (None or 0: off): a click is also made when the cursor has stayed within
        ``dwell_radius`` of where it stopped for this long, seconds (> 0). One dwell click per
        stop: it re-arms once the cursor leaves that radius, and a click (decoded or dwell)
        disarms it, and so does :meth:`stop` (a halt). A participant whose click is missed
        still selects by holding still, as dwell-to-select interfaces let people do.

    Attributes
    ----------
    xy : ndarray (2,)
        Current cursor position (a copy).
    velocity : ndarray (2,)
        Velocity applied on the last step in screen units per second (after smoothing and
        gain; zero on a held bin).
    """

    def __init__(self, gain: float = 1.0, smoothing: float = 0.0, bounds: float = 1.0, dt_s: float = 0.02,
                 refractory_s: float = 0.3, dwell_s: float | None = None) -> None:
        self.gain = check_positive("gain", gain)
        self.smoothing = check_range("smoothing", smoothing, 0.0, 1.0)
        if self.smoothing >= 1.0:
            raise ConfigError(f"smoothing must be in [0, 1) (1 would freeze the cursor); got {smoothing!r}")
        self.bounds = check_positive("bounds", bounds)
        self.dt_s = check_positive("dt_s", dt_s)
        self.refractory_s = check_positive("refractory_s", refractory_s, allow_zero=True)
        self.dwell_s = None if dwell_s is None or dwell_s == 0 else check_positive("dwell_s", dwell_s)
        if self.dwell_s is not None and self.dwell_s < self.dt_s - 1e-12:
            raise ConfigError(f"dwell_s must be at least one bin ({self.dt_s} s) or 0/None (off); got {dwell_s!r}")
        self.reset()

    def reset(self, xy: Any = (0.0, 0.0)) -> None:
        """Put the cursor at ``xy`` (clamped to the screen) at rest and clear the counters.

        Raises
        ------
        ConfigError
            If ``xy`` is not two finite numbers.
        """
        try:
            p = np.asarray(xy, dtype=np.float64).reshape(2)
        except (TypeError, ValueError):
            raise ConfigError(f"xy must be two finite numbers (x, y); got {xy!r}") from None
        if not np.all(np.isfinite(p)):
            raise ConfigError(f"xy must be two finite numbers (x, y); got {xy!r}")
        self._xy = np.clip(p, -self.bounds, self.bounds)
        self._v_ema = np.zeros(2)
        self._v_applied = np.zeros(2)
        self._last_click_t_s = -math.inf
        self.n_steps = 0
        self.n_clicks = 0
        self.n_clicks_suppressed = 0
        self.n_nonfinite_held = 0
        self.n_dwell_clicks = 0
        self._anchor = self._xy.copy()
        self._dwell_t = 0.0
        self._dwell_armed = True

    @property
    def xy(self) -> np.ndarray:
        return self._xy.copy()

    @property
    def velocity(self) -> np.ndarray:
        return self._v_applied.copy()

    def stop(self) -> None:
        """Emergency stop / fault: forget the smoothing memory so that a zero command holds the
        cursor at once (with smoothing > 0 the remembered velocity would otherwise decay)."""
        self._v_ema = np.zeros(2)
        self._v_applied = np.zeros(2)
        self._dwell_armed = False      # no dwell selection where a halt left the cursor

    def step(self, velocity: Any, click: bool = False, dwell_radius: float | None = None) -> tuple[np.ndarray, bool]:
        """Advance one bin.

        Parameters
        ----------
        velocity : array-like (2,)
            Commanded velocity (vx, vy) in screen units per second. NaN/Inf holds the cursor
            for this bin and leaves the smoothing memory unchanged.
        click : bool
            True on a bin where the (decoded) click fired.
        dwell_radius : float, optional
            With ``dwell_s``: the radius the cursor must stay within (screen units; the current
            target's radius). None: no dwell on this bin (the timer restarts).

        Returns
        -------
        xy : ndarray (2,)
            Cursor position after the step.
        clicked : bool
            True if a click was accepted on this bin.
        """
        v = np.asarray(velocity, dtype=np.float64).reshape(2)
        if np.all(np.isfinite(v)):
            self._v_ema = self.smoothing * self._v_ema + (1.0 - self.smoothing) * v
            self._v_applied = self.gain * self._v_ema
            self._xy = np.clip(self._xy + self._v_applied * self.dt_s, -self.bounds, self.bounds)
        else:
            self._v_applied = np.zeros(2)
            self.n_nonfinite_held += 1
            if self.n_nonfinite_held in (1, 10, 100) or self.n_nonfinite_held % 1000 == 0:
                logger.warning("CursorEffector: non-finite velocity held the cursor (%d bins so far)",
                               self.n_nonfinite_held)
        clicked = False
        t_s = self.n_steps * self.dt_s
        dwell = self.dwell_s is not None and self._dwell(dwell_radius) and not click
        click = click or dwell
        if click:
            # a small epsilon so that a click exactly refractory_s later (in whole bins) is accepted
            if t_s - self._last_click_t_s >= self.refractory_s - 1e-9:
                clicked = True
                self._last_click_t_s = t_s
                self.n_clicks += 1
                self.n_dwell_clicks += dwell
                self._dwell_armed = False          # one selection per stop
            else:
                self.n_clicks_suppressed += 1
        self.n_steps += 1
        return self._xy.copy(), clicked

    def _dwell(self, radius: float | None) -> bool:
        """Advance the dwell timer after a move; True while it is due (armed and held long enough;
        the click, once accepted, disarms it)."""
        if radius is None or not radius > 0:      # no target now: the timer waits
            self._anchor = self._xy.copy()
            self._dwell_t = 0.0
            return False
        if float(np.hypot(*(self._xy - self._anchor))) > radius:     # moved on: a new stop may select
            self._anchor = self._xy.copy()
            self._dwell_t = 0.0
            self._dwell_armed = True
            return False
        self._dwell_t += self.dt_s
        return self._dwell_armed and self._dwell_t >= self.dwell_s - 1e-9


def autopilot_velocity(target: Any, xy: Any, max_speed: float) -> np.ndarray:
    """Open-loop (calibration) cursor velocity: straight to ``target``, at most ``max_speed``,
    slowing down near it (~150 ms time constant) and still once within a quarter radius."""
    if target is None:
        return np.zeros(2)
    err = np.asarray(target.xy, dtype=float) - np.asarray(xy, dtype=float)
    dist = float(np.hypot(*err))
    if dist < 0.25 * target.radius:
        return np.zeros(2)
    return err / dist * min(max_speed, dist / 0.15)


def cursor_command(effector: CursorEffector, mode: str, *, target: Any = None, decoded_velocity: Any = None,
                   decoded_click: bool = False, intended_velocity: Any = None, click_intent: float = 0.0,
                   prev_click_intent: float = 0.0, autopilot_speed: float = 1.0, override_velocity: Any = None,
                   halt: bool = False) -> tuple[np.ndarray, bool, np.ndarray]:
    """Move the cursor one bin: the one rule every closed loop applies.

    Parameters
    ----------
    effector : CursorEffector
    mode : {"open", "closed", "perfect"}
        ``open``: :func:`autopilot_velocity` toward ``target``, clicks where the participant's
        ``click_intent`` rises through 0.5; ``closed``: ``decoded_velocity`` and ``decoded_click``;
        ``perfect``: ``intended_velocity`` and the click intent's rise.
    override_velocity : (vx, vy), optional
        The operator's pointer ("mouse mode") instead of the mode's velocity.
    halt : bool
        Emergency stop or a watchdog fault: velocity zero, no click, and the effector's
        smoothing memory is cleared so that it holds at once. A non-finite velocity is held the
        same way.

    Returns
    -------
    xy : ndarray (2,)
        The cursor after the bin.
    clicked : bool
        A click was accepted in this bin.
    velocity : ndarray (2,)
        The velocity the effector was given.
    """
    if mode == "closed":
        vel = np.asarray(decoded_velocity, dtype=float).reshape(-1)[:2]
        click = bool(decoded_click)
    else:
        click = click_intent >= 0.5 > prev_click_intent
        if mode == "open":
            vel = autopilot_velocity(target, effector.xy, autopilot_speed)
        elif mode == "perfect":
            vel = np.asarray(intended_velocity, dtype=float).reshape(2)
        else:
            raise ConfigError(f"mode must be one of {[m.value for m in LoopMode]}; got {mode!r}")
    if override_velocity is not None:
        vel = np.asarray(override_velocity, dtype=float).reshape(2)
    if halt or not np.all(np.isfinite(vel)):
        vel = np.zeros(2)
        click = False
        effector.stop()
    dwell_r = float(target.radius) if (mode == "closed" and target is not None and not halt) else None
    xy, clicked = effector.step(vel, bool(click), dwell_radius=dwell_r)
    return xy, clicked, vel
