"""The Webgrid task and its bitrate.

A square grid of ``n`` x ``n`` cells covers the workspace; one cell is lit at a time. A click
selects the cell under the cursor: *correct* if it is the lit cell (a new cell then lights,
drawn uniformly among the others, so never the same cell twice in a row), *incorrect*
otherwise (the lit cell stays). Performance is the achieved bitrate of Nuyujukian et al.
(2018), the definition Neuralink's Webgrid uses::

    B = log2(N - 1) * max(S_c - S_i, 0) / t

with ``N = n * n`` the number of selectable cells, ``S_c`` / ``S_i`` the correct / incorrect
selections and ``t`` the elapsed time in seconds. ``log2(N - 1)`` is the information of one
choice among the N - 1 cells that are not the one just selected; every incorrect selection
cancels a correct one (it would have to be undone).

References
----------
Nuyujukian P, Albites Sanabria J, Saab J, et al. (2018) Cortical control of a tablet computer by
people with paralysis. PLoS ONE 13(11): e0204566.
Neuralink (2024) PRIME study progress update (Webgrid, bits per second).
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Iterable, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_positive
from cortexlink.tasks.base import Target, Task, TaskEvent

logger = logging.getLogger(__name__)

__all__ = ["WebgridTask", "webgrid_bitrate", "bitrate_over_time", "fitts_throughput"]


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0; got {value!r}")
    return int(value)


def webgrid_bitrate(n_targets_total: int, n_correct: int, n_incorrect: int, elapsed_s: float) -> float:
    """Achieved bitrate of a selection task, bits per second.

    ``B = log2(N - 1) * max(n_correct - n_incorrect, 0) / elapsed_s`` (Nuyujukian et al. 2018).

    Parameters
    ----------
    n_targets_total : int
        Number of selectable targets N (``n * n`` for an n x n Webgrid), >= 2.
    n_correct, n_incorrect : int
        Correct and incorrect selections, >= 0.
    elapsed_s : float
        Time over which they were made, seconds (> 0).

    Returns
    -------
    float
        Bits per second (0 when incorrect selections outnumber correct ones).

    Raises
    ------
    ConfigError
        If a count is not a non-negative integer, ``n_targets_total < 2`` or ``elapsed_s <= 0``.

    Examples
    --------
    >>> round(webgrid_bitrate(900, 100, 4, 60.0), 3)  # log2(899) * 96 / 60
    15.699
    """
    n_total = _check_count("n_targets_total", n_targets_total)
    if n_total < 2:
        raise ConfigError(f"n_targets_total must be an integer >= 2; got {n_targets_total!r}")
    nc = _check_count("n_correct", n_correct)
    ni = _check_count("n_incorrect", n_incorrect)
    t = check_positive("elapsed_s", elapsed_s)
    return math.log2(n_total - 1) * max(nc - ni, 0) / t


def bitrate_over_time(events: Iterable[TaskEvent], n_targets_total: int, window_s: float = 30.0,
                      step_s: float = 1.0, *, t_start_s: float | None = None,
                      t_end_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Running Webgrid bitrate over a sliding window.

    At each time ``t`` (every ``step_s`` from ``t_start_s + step_s`` to ``t_end_s``) the bitrate
    of the ``"correct"`` and ``"incorrect"`` events in ``(max(t_start_s, t - window_s), t]``
    is computed over that window's length (shorter than ``window_s`` at the start).

    Parameters
    ----------
    events : iterable of TaskEvent
        Events of a Webgrid block (other kinds are ignored).
    n_targets_total : int
        N, the number of selectable cells (``n * n``).
    window_s : float
        Window length, seconds.
    step_s : float
        Spacing of the output times, seconds.
    t_start_s : float, optional
        Start of the block; default the time of the first event (0 if there is none).
    t_end_s : float, optional
        End of the block; default the time of the last event.

    Returns
    -------
    t : ndarray
        Window end times, seconds.
    bps : ndarray
        Bitrate of each window, bits per second.

    Raises
    ------
    ConfigError
        For a non-positive ``window_s`` / ``step_s`` or ``n_targets_total < 2``.
    """
    window_s = check_positive("window_s", window_s)
    step_s = check_positive("step_s", step_s)
    if isinstance(n_targets_total, bool) or not isinstance(n_targets_total, numbers.Integral) or n_targets_total < 2:
        raise ConfigError(f"n_targets_total must be an integer >= 2; got {n_targets_total!r}")
    evs = list(events)
    t_ok = np.array(sorted(e.t_s for e in evs if e.kind == "correct"), dtype=np.float64)
    t_bad = np.array(sorted(e.t_s for e in evs if e.kind == "incorrect"), dtype=np.float64)
    t0 = float(t_start_s) if t_start_s is not None else (min(e.t_s for e in evs) if evs else 0.0)
    t1 = float(t_end_s) if t_end_s is not None else (max(e.t_s for e in evs) if evs else t0)
    n_out = int(math.floor((t1 - t0) / step_s + 1e-9))
    if n_out <= 0:
        return np.zeros(0), np.zeros(0)
    t = t0 + step_s * np.arange(1, n_out + 1)
    lo = np.maximum(t0, t - window_s)

    def count(times: np.ndarray) -> np.ndarray:
        return np.searchsorted(times, t, side="right") - np.searchsorted(times, lo, side="right")

    net = np.maximum(count(t_ok) - count(t_bad), 0)
    bps = math.log2(n_targets_total - 1) * net / (t - lo)
    return t, bps


class WebgridTask(Task):
    """Webgrid: select the lit cell of an ``n`` x ``n`` grid by clicking on it.

    The task starts at the ``t_s`` of its first :meth:`update`, which emits the first
    ``"target_on"``. On a bin where ``click`` is True the cell under the cursor is selected:

    - ``"correct"`` if it is the lit cell; a new cell is drawn uniformly among the other
      ``n * n - 1`` cells and a ``"target_on"`` event follows in the same bin;
    - ``"incorrect"`` otherwise; the lit cell stays;
    - ``"click_ignored"`` during the lockout after a selection, or with the cursor off the grid
      (neither counts as a selection).

    When ``duration_s`` is set the task is :attr:`done` (event ``"done"``) once that much time
    has passed since it started.

    Parameters
    ----------
    n : int
        Cells per side (2 to 1000); N = n * n targets.
    workspace : (float, float)
        The grid covers ``[lo, hi]`` in both x and y, screen units.
    seed : int
        Seed of the lit-cell sequence (>= 0).
    duration_s : float, optional
        Length of the block; None runs until the caller stops.
    lockout_s : float
        Clicks within this time after a selection are ignored (>= 0).

    Notes
    -----
    Cells are indexed ``row * n + col`` with column 0 at ``x = lo`` and row 0 at ``y = lo``
    (y points up). For the participant the target is the lit cell's centre with radius half a
    cell width, selected by click.
    """

    name = "webgrid"

    def __init__(self, n: int = 30, workspace: Sequence[float] = (-1.0, 1.0), seed: int = 0,
                 duration_s: float | None = None, lockout_s: float = 0.0) -> None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 2 <= n <= 1000:
            raise ConfigError(f"n must be an integer in [2, 1000]; got {n!r}")
        self.n = int(n)
        try:
            lo, hi = (float(v) for v in workspace)
        except (TypeError, ValueError):
            raise ConfigError(f"workspace must be a (low, high) pair of finite numbers; got {workspace!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigError(f"workspace must be a (low, high) pair of finite numbers with low < high; "
                              f"got {workspace!r}")
        self.workspace = (lo, hi)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
        self.seed = int(seed)
        self.duration_s = None if duration_s is None else check_positive("duration_s", duration_s)
        self.lockout_s = check_positive("lockout_s", lockout_s, allow_zero=True)
        self.reset()

    # ------------------------------------------------------------------ geometry
    @property
    def n_targets_total(self) -> int:
        """N = n * n, the number of selectable cells."""
        return self.n * self.n

    @property
    def cell_width(self) -> float:
        """Width of one cell, screen units."""
        return (self.workspace[1] - self.workspace[0]) / self.n

    def cell_center(self, cell_idx: int) -> tuple[float, float]:
        """Centre (x, y) of cell ``cell_idx`` in screen units."""
        row, col = divmod(int(cell_idx), self.n)
        lo, w = self.workspace[0], self.cell_width
        return (lo + (col + 0.5) * w, lo + (row + 0.5) * w)

    def cell_at(self, xy: Any) -> int | None:
        """Index of the cell under ``xy``, or None when ``xy`` is off the grid (or not finite)."""
        x, y = float(xy[0]), float(xy[1])
        lo, hi = self.workspace
        if not (lo <= x <= hi and lo <= y <= hi):
            return None
        w = self.cell_width
        col = min(int((x - lo) / w), self.n - 1)
        row = min(int((y - lo) / w), self.n - 1)
        return row * self.n + col

    # ------------------------------------------------------------------ state machine
    def reset(self) -> None:
        """Start afresh: same seed, same sequence of lit cells, counters cleared."""
        self._rng = np.random.default_rng(self.seed)
        self._lit = int(self._rng.integers(self.n_targets_total))
        self._t_start: float | None = None
        self._t_lit: float | None = None
        self._lockout_until = -math.inf
        self._done = False
        self.n_correct = 0
        self.n_incorrect = 0
        self.n_clicks_ignored = 0
        self.lit_history: list[int] = [self._lit]
        self.events: list[TaskEvent] = []

    @property
    def lit_cell(self) -> int:
        """Index of the lit cell."""
        return self._lit

    @property
    def done(self) -> bool:
        return self._done

    def current_target(self) -> Target | None:
        """The lit cell's centre, radius half a cell width, selected by click (None when done)."""
        if self._done:
            return None
        return Target(xy=self.cell_center(self._lit), radius=0.5 * self.cell_width, click=True)

    def _cell_data(self, cell: int) -> dict:
        row, col = divmod(cell, self.n)
        x, y = self.cell_center(cell)
        return {"cell": cell, "row": row, "col": col, "xy": [x, y]}

    def _light_next(self) -> None:
        r = int(self._rng.integers(self.n_targets_total - 1))
        self._lit = r + 1 if r >= self._lit else r
        self.lit_history.append(self._lit)

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
        out: list[TaskEvent] = []
        if self._t_start is None:
            self._t_start = self._t_lit = t_s
            out.append(TaskEvent(t_s, "target_on", self._cell_data(self._lit)))
        if click:
            cell = self.cell_at(cursor_xy)
            xy = [float(cursor_xy[0]), float(cursor_xy[1])]
            if t_s < self._lockout_until - 1e-9 or cell is None:
                self.n_clicks_ignored += 1
                reason = "off_grid" if cell is None else "lockout"
                out.append(TaskEvent(t_s, "click_ignored", {"reason": reason, "xy": xy}))
            else:
                self._lockout_until = t_s + self.lockout_s
                data = {"cell": cell, "lit_cell": self._lit, "xy": xy,
                        "time_since_target_on_s": t_s - self._t_lit}
                if cell == self._lit:
                    self.n_correct += 1
                    out.append(TaskEvent(t_s, "correct", data))
                    self._light_next()
                    self._t_lit = t_s
                    out.append(TaskEvent(t_s, "target_on", self._cell_data(self._lit)))
                else:
                    self.n_incorrect += 1
                    out.append(TaskEvent(t_s, "incorrect", data))
        if self.duration_s is not None and t_s - self._t_start >= self.duration_s - 1e-9:
            self._done = True
            out.append(TaskEvent(t_s, "done", {"n_correct": self.n_correct, "n_incorrect": self.n_incorrect}))
        self.events.extend(out)
        return out

    # ------------------------------------------------------------------ metrics
    def metrics(self, elapsed_s: float) -> dict[str, Any]:
        """Figures of the block so far.

        Parameters
        ----------
        elapsed_s : float
            Time the block has run, seconds (> 0).

        Returns
        -------
        dict
            ``bps`` (achieved bitrate), ``ntpm`` (net correct targets per minute,
            ``(correct - incorrect) * 60 / elapsed_s``), ``n_correct``, ``n_incorrect``,
            ``n_selections``, ``accuracy`` (correct / selections; None before any),
            ``time_per_correct_s`` (None before any), ``bits_per_selection`` (log2(N - 1)),
            ``n_targets_total``, ``n``, ``n_clicks_ignored``, ``elapsed_s``.
        """
        elapsed_s = check_positive("elapsed_s", elapsed_s)
        n_sel = self.n_correct + self.n_incorrect
        return {
            "bps": webgrid_bitrate(self.n_targets_total, self.n_correct, self.n_incorrect, elapsed_s),
            "ntpm": (self.n_correct - self.n_incorrect) * 60.0 / elapsed_s,
            "n_correct": self.n_correct,
            "n_incorrect": self.n_incorrect,
            "n_selections": n_sel,
            "accuracy": self.n_correct / n_sel if n_sel else None,
            "time_per_correct_s": elapsed_s / self.n_correct if self.n_correct else None,
            "bits_per_selection": math.log2(self.n_targets_total - 1),
            "n_targets_total": self.n_targets_total,
            "n": self.n,
            "n_clicks_ignored": self.n_clicks_ignored,
            "elapsed_s": elapsed_s,
        }

    def draw(self, ax: Any) -> None:  # pragma: no cover - plotting
        """Draw the grid outline and the lit cell on a matplotlib axes."""
        from matplotlib.patches import Rectangle

        lo, hi = self.workspace
        w = self.cell_width
        ax.add_patch(Rectangle((lo, lo), hi - lo, hi - lo, fill=False, lw=1.0, ec="0.5"))
        x, y = self.cell_center(self._lit)
        ax.add_patch(Rectangle((x - w / 2, y - w / 2), w, w, color="tab:blue"))
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")


def fitts_throughput(events: list[TaskEvent], width: float) -> dict[str, Any]:
    """Fitts' law throughput of the correct selections of a Webgrid run (a sanity check).

    Each correct selection is a pointing movement from the previous click (the start, for the
    first) to the lit cell: ``ID = log2(D / W + 1)`` (Shannon form) with ``D`` that distance and
    ``W`` the nominal cell width, and ``MT`` the time from the cell lighting up to its click
    (serial task: includes the reaction time, as in ISO 9241-9 serial pointing). Throughput is
    ``mean(ID) / mean(MT)``; for a mouse it is ~3.7-4.9 bits/s (Soukoreff & MacKenzie 2004; they
    use the effective width, which this nominal-width figure approximates).

    Parameters
    ----------
    events : list of TaskEvent
        Events of a Webgrid run.
    width : float
        Cell width, screen units.

    Returns
    -------
    dict
        ``fitts_throughput_bits_s``, ``mean_fitts_id_bits``, ``mean_movement_time_s`` (None
        without a correct selection).
    """
    start = np.zeros(2)
    target = None
    ids, mts = [], []
    for e in events:
        if e.kind == "target_on":
            target = np.asarray(e.data["xy"], dtype=np.float64)
        elif e.kind == "correct" and target is not None:
            d = float(np.hypot(*(target - start)))
            ids.append(np.log2(d / width + 1.0))
            mts.append(e.data["time_since_target_on_s"])
            start = np.asarray(e.data["xy"], dtype=np.float64)
    if not ids:
        return {"fitts_throughput_bits_s": None, "mean_fitts_id_bits": None, "mean_movement_time_s": None}
    return {"fitts_throughput_bits_s": float(np.mean(ids) / np.mean(mts)), "mean_fitts_id_bits": float(np.mean(ids)),
            "mean_movement_time_s": float(np.mean(mts))}
