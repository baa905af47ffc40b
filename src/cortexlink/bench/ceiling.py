"""The perfect-decoder ceiling: the simulated participant drives the cursor directly.

With a perfect decoder the cursor velocity is exactly the participant's intended velocity and a
click fires on the bin where the click intent rises through 0.5. This is the ceiling a neural
decoder can reach with this participant and the calibration of
:class:`~cortexlink.sim.participant.ParticipantConfig` against a person using a mouse on a 30 x 30
Webgrid (~10 bps for Neuralink staff, 11.77 bps for a journalist, 2024 press coverage of
Neuralink's PRIME update). Measured (120 s, seeds 0-4): 11.4 +- 0.3 bps, 98.8% accuracy, Fitts
throughput 4.5 bits/s (mouse: 3.7-4.9 bits/s, Soukoreff & MacKenzie 2004).

Reproduce the calibration figure::

    python -c "from cortexlink.bench.ceiling import perfect_decoder_webgrid as f; \\
print([round(f(seed=s)['bps'], 2) for s in range(5)])"
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cortexlink.core.validation import check_positive

__all__ = ["perfect_decoder_webgrid", "perfect_decoder_session"]


def perfect_decoder_session(task: str, task_params: dict, duration_s: float, *, seed: int = 0,
                            participant_config: Any = None, dt_s: float = 0.02) -> dict:
    """The session (for :func:`~cortexlink.runtime.session.run_session`) of one task block with a
    perfect decoder: bin k (``t = k * dt``), the participant sees the cursor as displayed, its
    intended velocity moves the cursor for one bin, a click fires when its click intent rises
    through 0.5, and the task is updated at the end of the bin. No implant runs.

    ``participant_config``: a :class:`~cortexlink.sim.participant.ParticipantConfig` (default:
    calibrated to a mouse user). A task that finishes early ends the block.
    """
    check_positive("duration_s", duration_s)
    part = {} if participant_config is None else dataclasses.asdict(participant_config)
    block = {"name": task, "kind": "evaluation", "task": task, "seconds": float(duration_s),
             "task_params": dict(task_params)}
    return {"name": f"perfect-{task}", "seed": int(seed), "participant": part, "loop": {"dt_s": float(dt_s)},
            "decoder": {"kind": "perfect"}, "blocks": [block]}


def perfect_decoder_webgrid(duration_s: float = 120.0, n: int = 30, seed: int = 0,
                            participant_config: Any = None, *, dt_s: float = 0.02) -> dict[str, Any]:
    """Webgrid metrics of the simulated participant with a perfect decoder, run on the runtime graph.

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
        :meth:`~cortexlink.tasks.webgrid.WebgridTask.metrics` over ``duration_s`` plus ``n_clicks``,
        ``seed`` and the Fitts throughput (:func:`~cortexlink.tasks.webgrid.fitts_throughput`).
    """
    from cortexlink.runtime.session import run_session
    from cortexlink.tasks.webgrid import fitts_throughput

    task_seed, part_seed = (int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(2))
    res = run_session(perfect_decoder_session("webgrid", {"n": n, "seed": task_seed}, duration_s, seed=part_seed,
                                              participant_config=participant_config, dt_s=dt_s), progress=False)
    trace, task = res["traces"][0], res["tasks"]["webgrid"]
    out = task.metrics(duration_s)
    out.update({"n_clicks": int(np.count_nonzero(trace.clicks)), "seed": seed,
                **fitts_throughput(trace.events, task.cell_width)})
    return out
