"""The centre-out task: reach from the centre to one of ``n_targets`` targets on a circle and back.

Selection is by dwell (holding the cursor inside the target for ``dwell_s``); a click with the
cursor inside the target also selects it. A trial that is not selected within ``timeout_s`` fails.
The same task serves as the open-loop calibration task: the caller moves the cursor toward
:meth:`CentreOutTask.current_target` while the participant intends along (Gilja et al. 2012).

References
----------
Georgopoulos AP, Kalaska JF, Caminiti R, Massey JT (1982) On the relations between the direction
of two-dimensional arm movements and cell discharge in primate motor cortex. J Neurosci 2:1527.
Gilja V, Nuyujukian P, Chestek CA, et al. (2012) A high-performance neural prosthesis enabled by
control algorithm design. Nat Neurosci 15:1752-1757.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_positive
from cortexlink.tasks.base import Target, Task, TaskEvent

logger = logging.getLogger(__name__)

__all__ = ["CentreOutTask", "CENTRE_IDX"]

#: ``target_idx`` of the centre target in events and trial records.
CENTRE_IDX = -1


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class CentreOutTask(Task):
    """Centre-out reaching with dwell (or click) selection.

    Outer targets sit at angles ``2 pi k / n_targets`` (k = 0 .. n_targets - 1, target 0 on the
    +x axis) on a circle of ``radius``. Their order is drawn in shuffled blocks (every target once
    per block, seeded); with ``return_to_centre`` every outer target is preceded by the centre
    target. The task starts at the ``t_s`` of its first :meth:`update`.

    On each :meth:`update` the current target is selected (event ``"select"``) when the cursor has
    stayed inside it (distance <= ``target_radius``) for ``dwell_s`` (unless ``click``), or when a
    click fires with the cursor inside it. It fails (event ``"timeout"``) when ``timeout_s`` passes first. Either way the
    next target comes on in the same bin (event ``"target_on"``). After ``n_trials`` outer trials
    the task is :attr:`done` (event ``"done"``).

    Parameters
    ----------
    n_targets : int
        Number of outer targets (1 to 64).
    radius : float
        Distance of the outer targets from the centre, screen units (0, 1].
    target_radius : float
        Acceptance radius of every target, screen units (0, 1].
    dwell_s : float
        Hold time inside a target that selects it, seconds (>= 0; 0 selects on entry).
    timeout_s : float
        Time allowed per trial, seconds (> 0).
    n_trials : int or None
        Outer trials before the task is done; None runs until the caller stops.
    seed : int
        Seed of the target order (>= 0).
    return_to_centre : bool
        If True, alternate the centre target and an outer target; otherwise go from outer target
        to outer target (a block never starts with the target that ended the previous one).
    click : bool
        If True, targets are selected by a click inside them only (``Target.click`` True, no
        dwell selection), so a calibration block holds click intent; ``dwell_s`` is then unused.

    Notes
    -----
    Each trial record (see :attr:`trials`) holds ``time_to_target_s`` (target onset to the last
    entry into the target before selection, i.e. excluding the final hold, as in Gilja et al.
    2012), ``trial_time_s`` (onset to selection) and ``path_efficiency``: the straight-line
    distance from the cursor position at onset to its position at selection over the length of
    the path actually travelled (1 is a straight path; None when the cursor did not move).
    """

    name = "centre_out"

    def __init__(self, n_targets: int = 8, radius: float = 0.7, target_radius: float = 0.1, dwell_s: float = 0.3,
                 timeout_s: float = 5.0, n_trials: int | None = None, seed: int = 0,
                 return_to_centre: bool = True, click: bool = False) -> None:
        if isinstance(n_targets, bool) or not isinstance(n_targets, numbers.Integral) or not 1 <= n_targets <= 64:
            raise ConfigError(f"n_targets must be an integer in [1, 64]; got {n_targets!r}")
        self.n_targets = int(n_targets)
        self.radius = check_positive("radius", radius)
        if self.radius > 1.0:
            raise ConfigError(f"radius must be in (0, 1] screen units; got {radius!r}")
        self.target_radius = check_positive("target_radius", target_radius)
        if self.target_radius > 1.0:
            raise ConfigError(f"target_radius must be in (0, 1] screen units; got {target_radius!r}")
        self.dwell_s = check_positive("dwell_s", dwell_s, allow_zero=True)
        self.timeout_s = check_positive("timeout_s", timeout_s)
        if self.dwell_s >= self.timeout_s:
            raise ConfigError(f"dwell_s must be < timeout_s ({self.timeout_s}); got {dwell_s!r}")
        if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral)
                                     or n_trials < 1):
            raise ConfigError(f"n_trials must be None or an integer >= 1; got {n_trials!r}")
        self.n_trials = None if n_trials is None else int(n_trials)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
        self.seed = int(seed)
        if not isinstance(return_to_centre, (bool, np.bool_)):
            raise ConfigError(f"return_to_centre must be a bool; got {return_to_centre!r}")
        self.return_to_centre = bool(return_to_centre)
        if not isinstance(click, (bool, np.bool_)):
            raise ConfigError(f"click must be a bool; got {click!r}")
        self.click = bool(click)
        ang = 2.0 * np.pi * np.arange(self.n_targets) / self.n_targets
        self.target_positions = np.stack([self.radius * np.cos(ang), self.radius * np.sin(ang)], axis=1)
        self.target_positions.flags.writeable = False
        self.reset()

    # ------------------------------------------------------------------ state machine
    def reset(self) -> None:
        """Start afresh: same seed, same target order, no trials."""
        self._rng = np.random.default_rng(self.seed)
        self._block: list[int] = []
        self._last_outer: int | None = None
        self._done = False
        self._t_start: float | None = None
        self.trials: list[dict[str, Any]] = []
        self.events: list[TaskEvent] = []
        self._idx = CENTRE_IDX if self.return_to_centre else self._next_outer()
        self._begin_trial(None, None)

    def _next_outer(self) -> int:
        if not self._block:
            block = [int(i) for i in self._rng.permutation(self.n_targets)]
            if self.n_targets > 1 and block[0] == self._last_outer:
                block[0], block[-1] = block[-1], block[0]
            self._block = block
        self._last_outer = self._block.pop(0)
        return self._last_outer

    def _begin_trial(self, t_s: float | None, xy: np.ndarray | None) -> None:
        self._t_on = t_s
        self._start_xy = None if xy is None else np.array(xy, dtype=np.float64)
        self._last_xy = self._start_xy
        self._path = 0.0
        self._inside_since: float | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def current_target_idx(self) -> int:
        """Index of the current target (``CENTRE_IDX`` = -1 for the centre)."""
        return self._idx

    def target_xy(self, idx: int) -> tuple[float, float]:
        """Position of target ``idx`` (``CENTRE_IDX`` for the centre), screen units."""
        if idx == CENTRE_IDX:
            return (0.0, 0.0)
        x, y = self.target_positions[idx]
        return (float(x), float(y))

    def current_target(self) -> Target | None:
        """The current target, selected by dwell (or by click when ``click``); None when done."""
        if self._done:
            return None
        return Target(xy=self.target_xy(self._idx), radius=self.target_radius, click=self.click,
                      dwell_s=0.0 if self.click else self.dwell_s)

    @property
    def n_outer_done(self) -> int:
        """Outer trials finished so far (successful or not)."""
        return sum(1 for tr in self.trials if tr["target_idx"] != CENTRE_IDX)

    def update(self, t_s: float, cursor_xy: np.ndarray, click: bool) -> list[TaskEvent]:
        """Advance one bin; see the class docstring for the events.

        Parameters
        ----------
        t_s : float
            Session time of the bin, seconds.
        cursor_xy : array (2,)
            Cursor position after the effector moved.
        click : bool
            True if a click fired on this bin.

        Returns
        -------
        list of TaskEvent
        """
        if self._done:
            return []
        t_s = float(t_s)
        xy = np.array([float(cursor_xy[0]), float(cursor_xy[1])])
        out: list[TaskEvent] = []
        if self._t_on is None:
            self._t_start = t_s
            self._begin_trial(t_s, xy)
            out.append(self._target_on_event(t_s))
        if np.all(np.isfinite(xy)):
            self._path += float(np.hypot(*(xy - self._last_xy)))
            self._last_xy = xy
        txy = np.asarray(self.target_xy(self._idx))
        inside = bool(np.hypot(*(xy - txy)) <= self.target_radius)
        if inside:
            if self._inside_since is None:
                self._inside_since = t_s
        else:
            self._inside_since = None
        elapsed = t_s - self._t_on
        via = None
        if inside and click:
            via = "click"
        elif inside and not self.click and t_s - self._inside_since >= self.dwell_s - 1e-9:
            via = "dwell"
        if via is not None:
            dist = float(np.hypot(*(xy - self._start_xy)))
            record = {
                "target_idx": self._idx, "success": True, "via": via, "t_on_s": self._t_on,
                "time_to_target_s": self._inside_since - self._t_on, "trial_time_s": elapsed,
                "path_efficiency": dist / self._path if self._path > 1e-12 else None,
            }
            out.append(TaskEvent(t_s, "select", dict(record)))
        elif elapsed >= self.timeout_s - 1e-9:
            record = {"target_idx": self._idx, "success": False, "via": None, "t_on_s": self._t_on,
                      "time_to_target_s": None, "trial_time_s": elapsed, "path_efficiency": None}
            out.append(TaskEvent(t_s, "timeout", dict(record)))
        else:
            record = None
        if record is not None:
            self.trials.append(record)
            if self.n_trials is not None and self.n_outer_done >= self.n_trials:
                self._done = True
                out.append(TaskEvent(t_s, "done", {"n_trials": self.n_outer_done}))
            else:
                if self.return_to_centre and self._idx != CENTRE_IDX:
                    self._idx = CENTRE_IDX
                else:
                    self._idx = self._next_outer()
                self._begin_trial(t_s, xy)
                out.append(self._target_on_event(t_s))
        self.events.extend(out)
        return out

    def _target_on_event(self, t_s: float) -> TaskEvent:
        x, y = self.target_xy(self._idx)
        return TaskEvent(t_s, "target_on", {"target_idx": self._idx, "xy": [x, y]})

    # ------------------------------------------------------------------ metrics
    def metrics(self, elapsed_s: float) -> dict[str, Any]:
        """Figures of the block so far, over the outer (centre-to-target) trials.

        Parameters
        ----------
        elapsed_s : float
            Time the block has run, seconds (> 0).

        Returns
        -------
        dict
            ``n_trials``, ``n_success``, ``success_rate``, ``mean_time_to_target_s``,
            ``median_time_to_target_s``, ``mean_trial_time_s``, ``path_efficiency`` (mean over
            successful trials), ``per_target`` (``{"k": {"n_trials", "n_success",
            "mean_time_to_target_s"}}``), ``n_centre_trials``, ``centre_success_rate``,
            ``trials_per_min`` and ``elapsed_s``. Figures with no trial to average are None.
        """
        elapsed_s = check_positive("elapsed_s", elapsed_s)
        outer = [tr for tr in self.trials if tr["target_idx"] != CENTRE_IDX]
        centre = [tr for tr in self.trials if tr["target_idx"] == CENTRE_IDX]
        ok = [tr for tr in outer if tr["success"]]
        ttt = np.array([tr["time_to_target_s"] for tr in ok], dtype=np.float64)
        eff = np.array([tr["path_efficiency"] for tr in ok if tr["path_efficiency"] is not None], dtype=np.float64)
        per_target = {}
        for k in range(self.n_targets):
            trs = [tr for tr in outer if tr["target_idx"] == k]
            times = [tr["time_to_target_s"] for tr in trs if tr["success"]]
            per_target[str(k)] = {"n_trials": len(trs), "n_success": len(times),
                                  "mean_time_to_target_s": float(np.mean(times)) if times else None}
        return {
            "n_trials": len(outer),
            "n_success": len(ok),
            "success_rate": len(ok) / len(outer) if outer else None,
            "mean_time_to_target_s": _none_if_nan(float(np.mean(ttt))) if ttt.size else None,
            "median_time_to_target_s": _none_if_nan(float(np.median(ttt))) if ttt.size else None,
            "mean_trial_time_s": float(np.mean([tr["trial_time_s"] for tr in ok])) if ok else None,
            "path_efficiency": float(np.mean(eff)) if eff.size else None,
            "per_target": per_target,
            "n_centre_trials": len(centre),
            "centre_success_rate": (sum(tr["success"] for tr in centre) / len(centre)) if centre else None,
            "trials_per_min": len(outer) * 60.0 / elapsed_s,
            "elapsed_s": elapsed_s,
        }

    def draw(self, ax: Any) -> None:  # pragma: no cover - plotting
        """Draw the targets (the current one filled) on a matplotlib axes."""
        from matplotlib.patches import Circle

        for k in [CENTRE_IDX, *range(self.n_targets)]:
            ax.add_patch(Circle(self.target_xy(k), self.target_radius, fill=(k == self._idx), alpha=0.6))
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_aspect("equal")
