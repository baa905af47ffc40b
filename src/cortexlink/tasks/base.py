"""Task building blocks shared by every closed-loop task: :class:`Target`, :class:`TaskEvent`, :class:`Task`.

Screen coordinates are "screen units" with x, y in [-1, 1] (centre (0, 0), y up); velocities
are screen units per second; time advances once per bin (``dt_s``, default 0.02 s). The
closed loop (the runtime's cursor node) calls ``current_target()`` for the participant, moves
the cursor, then ``update(t_s, cursor_xy, click)``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from cortexlink.core.types import Target  # defined in core so that sim can use it too

__all__ = ["Target", "TaskEvent", "Task"]


@dataclasses.dataclass(frozen=True)
class TaskEvent:
    """Something that happened in a task on one bin.

    Attributes
    ----------
    t_s : float
        Session time of the bin, seconds.
    kind : str
        ``"target_on"``, ``"select"``, ``"correct"``, ``"incorrect"``, ``"timeout"``, ``"move"``,
        ``"done"``, ...
    data : dict
        JSON-able details (target index, square, UCI move, ...).
    """

    t_s: float
    kind: str
    data: dict = dataclasses.field(default_factory=dict)


class Task(abc.ABC):
    """A closed-loop task state machine advanced once per bin."""

    name: str = "task"

    @abc.abstractmethod
    def reset(self) -> None:
        """Start the task afresh (same seed, same sequence)."""

    @abc.abstractmethod
    def current_target(self) -> Target | None:
        """The goal the participant aims at now (None: rest)."""

    @abc.abstractmethod
    def update(self, t_s: float, cursor_xy: np.ndarray, click: bool) -> list[TaskEvent]:
        """Advance one bin, after the effector moved; ``click`` is True on a bin where a click fired."""

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """True when the task has finished."""

    @abc.abstractmethod
    def metrics(self, elapsed_s: float) -> dict[str, Any]:
        """JSON-able figures of the block so far."""

    def draw(self, ax: Any) -> None:  # pragma: no cover - optional
        """Draw the task layout on a matplotlib axes (optional)."""
