"""A simulated participant: the behaviour of a person steering a cursor toward targets.

The model is a delayed visual feedback controller with a forward model, the standard account of
visually guided pointing:

1. **Perception with delay.** The participant sees the displayed cursor ``visual_delay_s`` late
   (it keeps a buffer of the positions it was shown).
2. **Forward model.** It adds what it has commanded since then (an efference copy of its own,
   noise-free commands) to the delayed view, weighted by ``forward_model_weight``: a Smith
   predictor (Miall et al. 1993; Wolpert et al. 1995). With weight 1 and a decoder that does
   what was intended, the estimate is exact up to motor noise; with weight < 1, or when the
   decoder does something else than intended, the delayed feedback makes the movement overshoot
   and correct.
3. **Feedback control.** Intended velocity is proportional to the estimated position error
   (``feedback_gain_per_s``), capped at ``max_speed_units_s``, through a first-order muscle
   lag (``motor_tau_s``). Exponential approach to the target makes movement time grow with
   log(distance / size): Fitts' law from iterative corrections (Crossman & Goodeve 1963).
4. **Signal-dependent motor noise.** The executed velocity is the command plus noise whose
   standard deviation is proportional to speed (Harris & Wolpert 1998), temporally correlated
   (``motor_noise_tau_s``), plus a small speed-independent floor.
5. **Reaction time.** A new target is acted on ``reaction_time_s`` after it appears (simple
   visual reaction time, which includes the visual latency); before that the participant keeps
   aiming at the previous target.
6. **Click.** Once it believes the cursor is inside the target (estimated position within
   ``confidence`` x radius) it holds still; after ``hold_s`` inside it raises its click intent
   to 1 for ``click_duration_s``, then releases it, and does not click again until the target
   changes, it has left the target (beyond its radius) and come back, or ``reclick_delay_s`` passed after the
   release without the target changing (the click had no visible effect).

7. **Adaptation.** It learns how its commands move the cursor (gain, rotation, cross-talk of
   the decoder) from what it sees, and plans through the inverse of that map
   (``adaptation_tau_s``; Krakauer et al. 2000), which keeps the loop stable under a decoder
   whose gain is off by 2-3x or rotated by tens of degrees.

The default :class:`ParticipantConfig` is calibrated so that with a perfect decoder (the cursor
does what the participant intends, a click fires when the click intent crosses 0.5) the
participant scores like a person with a mouse on a 30 x 30 Webgrid: Neuralink reported ~10 bps
for its staff using a mouse and a journalist scored 11.77 bps (72 NTPM) on the public Webgrid
with a mouse (2024 press coverage of the PRIME study update). Measured with
:func:`cortexlink.bench.ceiling.perfect_decoder_webgrid` (120 s, seeds 0-4): 11.4 +- 0.3 bps (69.7 NTPM), 98.8% of selections correct, Fitts throughput
4.5 bits/s with a mean 0.85 s per target (reaction time included).

References
----------
Krakauer JW, Pine ZM, Ghilardi MF, Ghez C (2000) Learning of visuomotor transformations for
vectorial planning of reaching trajectories. J Neurosci 20:8916-8924.
Crossman ERFW, Goodeve PJ (1963/1983) Feedback control of hand-movement and Fitts' law.
Q J Exp Psychol A 35:251-278.
Fitts PM (1954) The information capacity of the human motor system in controlling the amplitude
of movement. J Exp Psychol 47:381-391.
Gilja V, Nuyujukian P, Chestek CA, et al. (2012) A high-performance neural prosthesis enabled by
control algorithm design. Nat Neurosci 15:1752-1757.
Harris CM, Wolpert DM (1998) Signal-dependent noise determines motor planning. Nature 394:780-784.
Miall RC, Weir DJ, Wolpert DM, Stein JF (1993) Is the cerebellum a Smith predictor? J Mot Behav
25:203-216.
Nuyujukian P, Albites Sanabria J, Saab J, et al. (2018) Cortical control of a tablet computer by
people with paralysis. PLoS ONE 13:e0204566.
Soukoreff RW, MacKenzie IS (2004) Towards a standard for pointing device evaluation.
Int J Hum-Comput Stud 61:751-789.
Wolpert DM, Ghahramani Z, Jordan MI (1995) An internal model for sensorimotor integration.
Science 269:1880-1882.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import numbers
from typing import Any

import numpy as np

from cortexlink.core.config import ConfigMixin
from cortexlink.core.errors import ConfigError
from cortexlink.core.types import Target
from cortexlink.core.validation import check_choice, check_positive, check_range

logger = logging.getLogger(__name__)

__all__ = ["ParticipantConfig", "ParticipantIntent", "SimulatedParticipant", "OBSERVATION_POLICIES"]

#: What the participant intends in open-loop blocks (:attr:`ParticipantConfig.observation`).
OBSERVATION_POLICIES = ("track", "self")
#: Time constant over which it perceives the cursor's velocity from its delayed view, seconds.
VELOCITY_PERCEPTION_TAU_S = 0.05


@dataclasses.dataclass(frozen=True)
class ParticipantConfig(ConfigMixin):
    """Validated parameters of a :class:`SimulatedParticipant`.

    Every field is checked when the config is built; an invalid value raises
    :class:`~cortexlink.ConfigError` naming the field, the allowed range and the value received.
    Use :meth:`replace` to derive a modified copy. Distances are screen units (the screen spans
    [-1, 1]), so one unit is half the screen width.

    Parameters
    ----------
    visual_delay_s : float
        Latency of visual feedback about the cursor, seconds (0 to 1). Visuomotor feedback
        delays are ~100-200 ms (Miall et al. 1993; Franklin & Wolpert 2011, Neuron 72:425);
        default 0.17.
    reaction_time_s : float
        Mean time from a target's appearance to acting on it, seconds (0 to 2). Simple visual
        reaction times are ~0.2-0.25 s (Welford 1980, Reaction Times); in a continuous task
        like Webgrid the next target is expected, so the fast end: default 0.2.
    reaction_time_sd_s : float
        Trial-to-trial standard deviation of the reaction time, seconds (0 to 1); ~20-50 ms
        (Luce 1986, Response Times). Default 0.03.
    feedback_gain_per_s : float
        Proportional gain from estimated position error (units) to intended velocity
        (units/s), 0.1 to 100 per second. It sets the time constant of the final approach
        (1 / gain); with the exponential approach of Crossman & Goodeve (1963) it corresponds to
        a Fitts throughput near gain / ln 2 for the corrective phase. Default 7 (a 0.14 s
        approach), which with the speed cap and the reaction time gives ~4.5 bits/s of Fitts
        throughput on Webgrid, within the 3.7-4.9 bits/s measured for mice (Soukoreff &
        MacKenzie 2004).
    max_speed_units_s : float
        Cap on intended speed, screen units per second (0.01 to 100). Peak cursor speeds of fast
        mouse pointing across a screen are ~1.5-2 screen widths per second; default 3.5 units/s.
        Also the normalisation of :meth:`SimulatedParticipant.neural_intent`.
    motor_tau_s : float
        Time constant of the first-order lag from command to executed velocity (muscle
        excitation-activation dynamics, tens of ms), seconds (0 to 1). Default 0.05.
    motor_noise : float
        Signal-dependent noise: standard deviation of the executed velocity per unit of
        commanded speed, per axis (0 to 2). Harris & Wolpert (1998) make motor noise SD
        proportional to the command; the constant is not a universal number (van Beers, Haggard
        & Wolpert 2004, J Neurophysiol 91:1050, fit it to reaching scatter). Default 0.08, a
        calibrated value: with the 50 ms correlation time below it gives the ~99% Webgrid
        selection accuracy of a practised mouse user (see the module docstring).
    motor_noise_tau_s : float
        Correlation time of the motor noise, seconds (0 to 10; 0 = white per bin). Default 0.05
        (noise on the command is smoothed by the limb's own dynamics).
    motor_noise_floor_units_s : float
        Speed-independent velocity noise (tremor, jitter) SD per axis, units/s (0 to 10).
        Default 0.01.
    forward_model_weight : float
        Weight of the efference-copy prediction added to the delayed view, 0 (pure delayed
        feedback) to 1 (full Smith predictor; Miall et al. 1993). Default 0.95: the internal model
        of a well-practised tool is good but not perfect, so some overshoot is corrected late.
    confidence : float
        The participant believes it is on the target when its estimated position is within
        ``confidence`` x the target radius (0.01 to 2; < 1 aims well inside the target).
        Default 0.7.
    neural_speed_units_s : float
        Intended speed (units/s) that drives the implant's units by one tuning depth
        (``SimulatedImplant.set_intent`` velocity of norm 1), 0.01 to 100. M1 firing grows
        roughly linearly with speed over the working range (Moran & Schwartz 1999); a typical
        Webgrid cursor speed of ~1 unit/s (half a screen width per second) uses the full
        cosine-tuning depth, faster movements modulate more (rates are rectified at 0).
        Default 1.0.
    visual_confirmation : bool
        Click only when the cursor it *sees* (the delayed view) is inside the target too, not
        only its forward-model estimate: people click on seeing the pointer in the box. With a
        noisy decoder the efference-copy estimate says "there" while the cursor has drifted off;
        the delayed view catches that. Default True.
    hold_s : float
        Time it holds still inside the target before clicking, seconds (0 to 5). Default 0 (the
        stop before a click comes from ``visual_confirmation`` and ``click_lookahead_s``: it
        clicks once it sees the cursor inside and not about to leave).
    click_lookahead_s : float
        It clicks only if the cursor, carried on for this long at the velocity it sees and did not
        command (drift: the seen velocity minus what its own delayed commands explain; all the
        seen velocity while it observes an autopilot), would still be inside ``confidence`` x
        the radius: it waits for a drifting cursor to settle and clicks at once on one that
        stopped, seconds (0 to 1; 0 = position only).
        People judge where a moving pointer is heading and time their clicks to it; a click takes
        ~0.1-0.2 s from decision to button (a reaction time). Default 0.15.
    observation : {"track", "self"}
        What it intends in an open-loop block, where an autopilot moves the cursor and the
        participant is asked to imagine moving it (set :attr:`SimulatedParticipant.observing`).
        ``"track"`` (default): it follows the cursor it sees, intending the velocity it perceives
        (its delayed view, smoothed over ~50 ms) through its motor lag; its estimate of where the
        cursor is now extrapolates the seen motion over its visual delay, and it clicks on what it
        sees. Motor cortex during observed movement is modulated by the movement seen, lagging
        it (Tkach, Reimer & Hatsopoulos 2007, J Neurosci 27:13241). ``"self"``: it plans its own
        reach as if it moved the cursor (the former model; its intent is then faster than the
        autopilot and stops while the cursor still moves).
    lapse_rate_hz : float
        Rate at which attention lapses begin during observation (open-loop) blocks, per second
        (0 to 10). During a lapse its intent is zero and it does not click: the calibration
        labels a lab records (the cursor) then say "moving" while cortex says "rest".
        Mind-wandering takes ~5-15 % of time in sustained, monotonous tasks (Smallwood &
        Schooler 2015, Annu Rev Psychol 66:487); default 0.1 per second with ``lapse_s`` 0.5
        (~5 % of the time).
    lapse_s : float
        Mean duration of an attention lapse, seconds (exponential), 0.01 to 10. Default 0.5.
    click_duration_s : float
        How long the click intent stays at 1, seconds (0.001 to 5). A mouse button press lasts
        ~0.1 s. Default 0.1.
    reclick_delay_s : float
        When a click had no visible effect (the target did not change: a missed click, a click
        swallowed by a refractory period, or an incorrect selection), the participant tries again
        this long after releasing it if it still believes it is on the target, seconds (0 to 5).
        A perception-and-decision latency like a reaction time; default 0.25.
    adaptation_tau_s : float
        Memory of the internal model of the cursor: the participant learns how its commands move
        the cursor (a 2 x 2 map: gain, rotation, cross-talk of the decoder) by least squares over
        roughly this much movement time, and inverts it to plan, seconds (0 to 1000; 0 = no
        adaptation, the map stays the identity). People adapt to a new visuomotor gain within a
        few movements and to a rotation over tens (Krakauer et al. 2000, J Neurosci 20:8916);
        default 5. Without it a decoder whose gain is ~2x off makes the delayed loop oscillate.
    """

    visual_delay_s: float = 0.17
    reaction_time_s: float = 0.2
    reaction_time_sd_s: float = 0.03
    feedback_gain_per_s: float = 7.0
    max_speed_units_s: float = 3.5
    motor_tau_s: float = 0.05
    motor_noise: float = 0.08
    motor_noise_tau_s: float = 0.05
    motor_noise_floor_units_s: float = 0.01
    forward_model_weight: float = 0.95
    confidence: float = 0.7
    visual_confirmation: bool = True
    neural_speed_units_s: float = 1.0
    hold_s: float = 0.0
    click_duration_s: float = 0.1
    reclick_delay_s: float = 0.25
    adaptation_tau_s: float = 5.0
    click_lookahead_s: float = 0.15
    observation: str = "track"
    lapse_rate_hz: float = 0.1
    lapse_s: float = 0.5

    def __post_init__(self) -> None:
        s = lambda k, lo, hi: object.__setattr__(self, k, check_range(k, getattr(self, k), lo, hi))  # noqa: E731
        s("visual_delay_s", 0.0, 1.0)
        s("reaction_time_s", 0.0, 2.0)
        s("reaction_time_sd_s", 0.0, 1.0)
        s("feedback_gain_per_s", 0.1, 100.0)
        s("max_speed_units_s", 0.01, 100.0)
        s("motor_tau_s", 0.0, 1.0)
        s("motor_noise", 0.0, 2.0)
        s("motor_noise_tau_s", 0.0, 10.0)
        s("motor_noise_floor_units_s", 0.0, 10.0)
        s("forward_model_weight", 0.0, 1.0)
        s("confidence", 0.01, 2.0)
        s("hold_s", 0.0, 5.0)
        s("click_duration_s", 0.001, 5.0)
        s("reclick_delay_s", 0.0, 5.0)
        s("adaptation_tau_s", 0.0, 1000.0)
        s("click_lookahead_s", 0.0, 1.0)
        s("lapse_rate_hz", 0.0, 10.0)
        s("lapse_s", 0.01, 10.0)
        check_choice("observation", self.observation, OBSERVATION_POLICIES)
        if not isinstance(self.visual_confirmation, (bool, np.bool_)):
            raise ConfigError(f"visual_confirmation must be True or False; got {self.visual_confirmation!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class ParticipantIntent:
    """What the simulated participant intends on one bin.

    Attributes
    ----------
    velocity : ndarray (2,)
        The velocity the participant commands, screen units per second as it plans them (through
        its learnt inverse of the decoder; motor noise included). With a perfect decoder it is
        the cursor velocity.
    click : float
        Click intent in [0, 1].
    on_target_belief : bool
        True while the participant believes the cursor is on its target.
    """

    velocity: np.ndarray
    click: float
    on_target_belief: bool


def _target_key(target: Any) -> tuple | None:
    if target is None:
        return None
    return (float(target.xy[0]), float(target.xy[1]), float(target.radius), bool(target.click),
            float(getattr(target, "dwell_s", 0.0)))


class SimulatedParticipant:
    """The behaviour model of a person controlling a cursor (see the module docstring).

    Parameters
    ----------
    config : ParticipantConfig, optional
        Parameters; default ``ParticipantConfig()``.
    seed : int
        Seed of the reaction-time and motor-noise draws (>= 0). Same seed, same behaviour.
    dt_s : float
        Bin duration, seconds: :meth:`step` is called once per bin.
    **overrides
        Fields of ``config`` to change (validated).

    Raises
    ------
    ConfigError
        For an invalid config, override, seed or ``dt_s``.

    Notes
    -----
    Call :meth:`step` once per bin with the cursor as it is displayed *before* the bin's movement
    is applied. A target counts as new when its position, radius or selection mode changes.
    Diagnostics of the last step: :attr:`seen_xy` (the delayed view), :attr:`estimated_xy` (delayed
    view plus forward model, or plus the seen motion while observing), :attr:`seen_velocity`,
    :attr:`goal` (the target acted on) and :attr:`command_map` (the learnt command -> cursor map).
    While an autopilot, not the participant, moves the cursor (open-loop calibration) set
    :attr:`adapt` to False and :attr:`observing` to True.
    """

    def __init__(self, config: ParticipantConfig | None = None, *, seed: int = 0, dt_s: float = 0.02,
                 **overrides: Any) -> None:
        if config is None:
            config = ParticipantConfig()
        if not isinstance(config, ParticipantConfig):
            raise ConfigError(f"config must be a ParticipantConfig or None; got {type(config).__name__}")
        if overrides:
            config = config.replace(**overrides)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
        self.config = config
        self.seed = int(seed)
        self.dt_s = check_positive("dt_s", dt_s)
        self._lag_bins = config.visual_delay_s / self.dt_s
        self._buf_len = int(math.ceil(self._lag_bins)) + 2
        self._motor_a = 1.0 - math.exp(-self.dt_s / config.motor_tau_s) if config.motor_tau_s > 0 else 1.0
        self._noise_rho = math.exp(-self.dt_s / config.motor_noise_tau_s) if config.motor_noise_tau_s > 0 else 0.0
        self._perceive_a = 1.0 - math.exp(-self.dt_s / VELOCITY_PERCEPTION_TAU_S)
        #: Whether the internal model of the cursor adapts (see ``adaptation_tau_s``). Set it to
        #: False while the participant is not the one moving the cursor (open-loop calibration
        #: with an autopilot): otherwise it learns the autopilot's speed as its own gain.
        #: :meth:`reset` leaves it as it is.
        self.adapt = True
        #: Whether it is watching an autopilot move the cursor (an open-loop block): then it
        #: follows ``config.observation`` and has attention lapses. :meth:`reset` leaves it as it is.
        self.observing = False
        self.reset()

    def reset(self) -> None:
        """Forget everything seen and restart the random draws (same seed, same behaviour)."""
        self._rng = np.random.default_rng(self.seed)
        self._seen = collections.deque(maxlen=self._buf_len)
        self._efference = collections.deque(maxlen=self._buf_len)
        self._E = np.zeros(2)            # cumulative commanded displacement so far
        self._u = np.zeros(2)            # current (lagged) command
        self._noise = np.zeros(2)        # unit-variance correlated noise state
        self._k = 0                      # bins stepped
        self._shown_key: tuple | None = None   # the latest target shown
        self._pending: Any = None        # a target seen but not yet acted on
        self._switch_k: int | None = None
        self.goal: Any = None            # the target acted on
        self._hold_bins = 0
        self._click_left = 0
        self._clicked = False
        self._release_k: int | None = None
        self.seen_xy = np.zeros(2)
        self.estimated_xy = np.zeros(2)
        self._prev_seen: np.ndarray | None = None
        self._prev_e_seen: np.ndarray | None = None
        self._sxx = np.zeros((2, 2))
        self._sxy = np.zeros((2, 2))
        self._map = np.eye(2)
        self._map_inv = np.eye(2)
        self._v_seen = np.zeros(2)       # perceived cursor velocity (from the delayed view)
        self._v_cmd_seen = np.zeros(2)   # its own commanded velocity at the time of that view
        self._prev_view: np.ndarray | None = None
        self._prev_e_view = np.zeros(2)
        self._lapse_left = 0             # bins of attention lapse left

    @property
    def seen_velocity(self) -> np.ndarray:
        """The cursor velocity it perceives from its delayed view (units/s; a copy)."""
        return self._v_seen.copy()

    @property
    def command_map(self) -> np.ndarray:
        """The participant's current estimate of how its commands move the cursor (2 x 2)."""
        return self._map.copy()

    def _adapt(self, seen: np.ndarray, e_seen: np.ndarray) -> None:
        """Update the internal model (command -> cursor map) by recursive least squares.

        The seen cursor displacement of the bin is regressed on the commanded displacement the
        view reflects, with forgetting time constant ``adaptation_tau_s`` counted over bins with
        movement only, and a weak prior on the identity map.
        """
        prev_seen, prev_e = self._prev_seen, self._prev_e_seen
        self._prev_seen, self._prev_e_seen = seen.copy(), e_seen.copy()
        tau = self.config.adaptation_tau_s
        if tau <= 0 or prev_seen is None or not self.adapt:
            return
        de = e_seen - prev_e
        if float(np.hypot(de[0], de[1])) < 0.05 * self.config.max_speed_units_s * self.dt_s:
            return                       # too little movement to learn from
        lam = math.exp(-self.dt_s / tau)
        ds = seen - prev_seen
        self._sxx = lam * self._sxx + np.outer(de, de)
        self._sxy = lam * self._sxy + np.outer(ds, de)
        prior = 5.0 * (self.config.max_speed_units_s * self.dt_s) ** 2 * np.eye(2)
        m = (self._sxy + prior) @ np.linalg.inv(self._sxx + prior)
        u, sv, vt = np.linalg.svd(m)
        sv = np.clip(sv, 0.2, 5.0)
        self._map = (u * sv) @ vt
        self._map_inv = (vt.T / sv) @ u.T

    @property
    def max_speed_units_s(self) -> float:
        return self.config.max_speed_units_s

    def _delayed(self, buf: collections.deque) -> np.ndarray:
        """Linear interpolation of ``buf`` ``lag_bins`` back from its newest entry."""
        n = len(buf)
        lag = min(self._lag_bins, n - 1)
        i0 = int(math.floor(lag))
        frac = lag - i0
        a = buf[n - 1 - i0]
        if frac <= 1e-12:
            return a.copy()
        b = buf[n - 2 - i0]
        return (1.0 - frac) * a + frac * b

    def step(self, t_s: float, displayed_cursor_xy: Any, target: "Target | None") -> ParticipantIntent:
        """One bin of behaviour.

        Parameters
        ----------
        t_s : float
            Session time of the bin (seconds; informational, timing counts bins of ``dt_s``).
        displayed_cursor_xy : array-like (2,)
            The cursor as displayed now. A non-finite position is not seen (the last one is kept).
        target : Target or None
            The task's current target (None: rest).

        Returns
        -------
        ParticipantIntent
        """
        cfg = self.config
        xy = np.asarray(displayed_cursor_xy, dtype=np.float64).reshape(2)
        if not np.all(np.isfinite(xy)):
            xy = self._seen[-1].copy() if self._seen else np.zeros(2)
        self._seen.append(xy.copy())
        self._efference.append(self._E.copy())
        seen = self._delayed(self._seen)
        e_seen = self._delayed(self._efference)   # commanded displacement the view already shows
        self._adapt(seen, e_seen)
        if self._prev_view is not None:
            a = self._perceive_a
            self._v_seen = self._v_seen + a * ((seen - self._prev_view) / self.dt_s - self._v_seen)
            self._v_cmd_seen = self._v_cmd_seen + a * ((e_seen - self._prev_e_view) / self.dt_s - self._v_cmd_seen)
        self._prev_view, self._prev_e_view = seen.copy(), e_seen.copy()
        track = self.observing and cfg.observation == "track"
        if track:      # it does not move this cursor: where it is now is the seen motion carried on
            est = seen + cfg.visual_delay_s * self._v_seen
        else:
            est = seen + cfg.forward_model_weight * (self._map @ (self._E - e_seen))
        self.seen_xy, self.estimated_xy = seen, est
        lapsed = False
        if self.observing and cfg.lapse_rate_hz > 0:
            if self._lapse_left == 0 and self._rng.random() < cfg.lapse_rate_hz * self.dt_s:
                self._lapse_left = max(1, int(round(self._rng.exponential(cfg.lapse_s) / self.dt_s)))
            if self._lapse_left > 0:
                self._lapse_left -= 1
                lapsed = True

        # --- targets: act on a new one after the reaction time
        key = _target_key(target)
        if key != self._shown_key:
            self._shown_key = key
            self._pending = target
            rt = max(0.0, cfg.reaction_time_s + cfg.reaction_time_sd_s * float(self._rng.standard_normal()))
            self._switch_k = self._k + int(round(rt / self.dt_s))
        if self._switch_k is not None and self._k >= self._switch_k:
            self.goal = self._pending
            self._switch_k = None
            self._hold_bins = 0
            self._clicked = False
            self._release_k = None

        # --- belief and intended velocity
        goal = self.goal
        inside = False
        left = True                     # clearly off the target (outside its full radius)
        if goal is None:
            v_des = np.zeros(2)
        else:
            err = np.array([goal.xy[0], goal.xy[1]], dtype=np.float64) - est
            dist = float(np.hypot(err[0], err[1]))
            inside = dist <= cfg.confidence * goal.radius
            left = dist > goal.radius
            if lapsed:
                v_des = np.zeros(2)     # not attending
            elif track:
                v_des = self._v_seen.copy()   # intends the motion it sees
            elif inside:
                v_des = np.zeros(2)     # hold still on the target
            else:
                speed = min(cfg.feedback_gain_per_s * dist, cfg.max_speed_units_s)
                v_des = self._map_inv @ (err * (speed / dist))   # inverse model: screen -> command
        self._u = self._u + self._motor_a * (v_des - self._u)
        self._E = self._E + self._u * self.dt_s

        # --- signal-dependent, temporally correlated motor noise
        z = self._rng.standard_normal(2)
        self._noise = self._noise_rho * self._noise + math.sqrt(1.0 - self._noise_rho ** 2) * z
        sd = cfg.motor_noise * float(np.hypot(self._u[0], self._u[1])) + cfg.motor_noise_floor_units_s
        velocity = self._u + sd * self._noise

        # --- click: hold, press, release; once per entry into the target, retried if it had no effect
        if (self._clicked and self._click_left == 0 and self._release_k is not None and self._switch_k is None
                and self._k - self._release_k >= cfg.reclick_delay_s / self.dt_s - 1e-9):
            self._clicked = False
            self._release_k = None
        confirmed = inside and not lapsed
        if confirmed and (cfg.visual_confirmation or track):
            r_ok = cfg.confidence * goal.radius
            if track:       # all the motion it sees is the autopilot's
                ahead = seen + cfg.click_lookahead_s * self._v_seen
            else:           # its own commands are in `est`; what it did not command goes on drifting
                drift = self._v_seen - self._map @ self._v_cmd_seen
                ahead = est + cfg.click_lookahead_s * drift
            confirmed = (float(np.hypot(goal.xy[0] - seen[0], goal.xy[1] - seen[1])) <= r_ok
                         and float(np.hypot(goal.xy[0] - ahead[0], goal.xy[1] - ahead[1])) <= r_ok)
        if goal is not None and goal.click and confirmed and self._switch_k is None:
            if not self._clicked:
                self._hold_bins += 1
                if self._hold_bins * self.dt_s >= cfg.hold_s - 1e-9:
                    self._clicked = True
                    self._release_k = None
                    self._click_left = max(1, int(round(cfg.click_duration_s / self.dt_s)))
        else:
            self._hold_bins = 0
            if left:
                self._clicked = False
        click = 0.0
        if self._click_left > 0:
            click = 1.0
            self._click_left -= 1
            if self._click_left == 0:
                self._release_k = self._k + 1
        self._k += 1
        return ParticipantIntent(velocity=velocity, click=click, on_target_belief=inside)

    def neural_intent(self, intent: ParticipantIntent) -> tuple[float, float, float]:
        """Map an intent to the simulated implant's normalised intent.

        Parameters
        ----------
        intent : ParticipantIntent
            The output of :meth:`step`.

        Returns
        -------
        (vx_n, vy_n, click) : tuple of float
            Velocity divided by ``neural_speed_units_s`` and clipped at ``max_speed_units_s`` (a non-finite
            velocity maps to 0), and the click intent clipped to [0, 1]; ready for
            ``SimulatedImplant.set_intent(velocity=(vx_n, vy_n), click=click)``.
        """
        cfg = self.config
        v = np.asarray(intent.velocity, dtype=np.float64).reshape(2) / cfg.neural_speed_units_s
        if not np.all(np.isfinite(v)):
            v = np.zeros(2)
        norm = float(np.hypot(v[0], v[1]))
        cap = max(cfg.max_speed_units_s / cfg.neural_speed_units_s, 1.0)
        if norm > cap:
            v = v * (cap / norm)
        c = float(intent.click)
        c = min(max(c, 0.0), 1.0) if math.isfinite(c) else 0.0
        return float(v[0]), float(v[1]), c
