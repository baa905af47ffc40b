"""The perfect-decoder loop: the simulated participant drives the cursor directly.

With a perfect decoder the cursor velocity is exactly the participant's intended velocity and a
click fires on the bin where the click intent rises through 0.5. This is the ceiling a neural
decoder can reach with this participant and the calibration of
:class:`~cortexlink.sim.participant.ParticipantConfig` against a person using a mouse on a 30 x 30
Webgrid (~10 bps for Neuralink staff, 11.77 bps for a journalist, 2024 press coverage of
Neuralink's PRIME update). Measured (120 s, seeds 0-4): 11.4 +- 0.3 bps, 98.8% accuracy, Fitts
throughput 4.5 bits/s (mouse: 3.7-4.9 bits/s, Soukoreff & MacKenzie 2004).

Reproduce the calibration figure::

    python -c "from cortexlink.tasks.perfect import perfect_decoder_webgrid as f; \\
print([round(f(seed=s)['bps'], 2) for s in range(5)])"
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_positive
from cortexlink.tasks.base import Task, TaskEvent
from cortexlink.tasks.cursor import CursorEffector
from cortexlink.tasks.webgrid import WebgridTask

if TYPE_CHECKING:  # pragma: no cover
    from cortexlink.sim.participant import ParticipantConfig, SimulatedParticipant

logger = logging.getLogger(__name__)

__all__ = ["perfect_decoder_loop", "perfect_decoder_webgrid", "fitts_throughput"]


def perfect_decoder_loop(task: Task, participant: "SimulatedParticipant", duration_s: float, *,
                         effector: CursorEffector | None = None, stop_when_done: bool = True,
                         click_threshold: float = 0.5) -> list[TaskEvent]:
    """Run participant -> effector -> task for ``duration_s`` with a perfect decoder.

    Bin k (``t = k * dt``): the participant sees the cursor as displayed, its intended velocity
    moves the cursor for one bin, a click fires when its click intent crosses ``click_threshold``
    upward, and the task is updated at the end of the bin (``t + dt``).

    Parameters
    ----------
    task : Task
        A task, already reset.
    participant : SimulatedParticipant
        The participant; its ``dt_s`` is the bin.
    duration_s : float
        Time to run, seconds.
    effector : CursorEffector, optional
        Default ``CursorEffector(dt_s=participant.dt_s)``.
    stop_when_done : bool
        Stop early when ``task.done``.
    click_threshold : float
        Click intent level whose upward crossing fires a click.

    Returns
    -------
    list of TaskEvent
        Every event of the run.

    Raises
    ------
    ConfigError
        If ``duration_s`` is not positive or the effector's ``dt_s`` differs from the participant's.
    """
    duration_s = check_positive("duration_s", duration_s)
    dt_s = participant.dt_s
    if effector is None:
        effector = CursorEffector(dt_s=dt_s)
    if abs(effector.dt_s - dt_s) > 1e-12:
        raise ConfigError(f"effector.dt_s must equal participant.dt_s ({dt_s}); got {effector.dt_s}")
    events: list[TaskEvent] = []
    prev_click = 0.0
    for k in range(int(round(duration_s / dt_s))):
        intent = participant.step(k * dt_s, effector.xy, task.current_target())
        fire = intent.click >= click_threshold > prev_click
        prev_click = intent.click
        xy, clicked = effector.step(intent.velocity, fire)
        events.extend(task.update((k + 1) * dt_s, xy, clicked))
        if stop_when_done and task.done:
            break
    return events


def perfect_decoder_webgrid(duration_s: float = 120.0, n: int = 30, seed: int = 0,
                            participant_config: "ParticipantConfig | None" = None, *,
                            dt_s: float = 0.02) -> dict[str, Any]:
    """Webgrid metrics of the simulated participant with a perfect decoder.

    Parameters
    ----------
    duration_s : float
        Length of the block, seconds.
    n : int
        Grid size (n x n cells).
    seed : int
        Seed; the task and the participant get independent streams derived from it.
    participant_config : ParticipantConfig, optional
        Default ``ParticipantConfig()`` (calibrated to a mouse user).
    dt_s : float
        Bin duration, seconds.

    Returns
    -------
    dict
        :meth:`WebgridTask.metrics` over ``duration_s`` plus ``n_clicks`` and ``seed``.
    """
    from cortexlink.sim.participant import SimulatedParticipant

    task_seed, part_seed = (int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(2))
    task = WebgridTask(n=n, seed=task_seed)
    participant = SimulatedParticipant(participant_config, seed=part_seed, dt_s=dt_s)
    effector = CursorEffector(dt_s=dt_s)
    events = perfect_decoder_loop(task, participant, duration_s, effector=effector)
    out = task.metrics(duration_s)
    out.update({"n_clicks": effector.n_clicks, "seed": seed, **fitts_throughput(events, task.cell_width)})
    return out


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
