"""Closed-loop tasks (centre-out, Webgrid, chess), the cursor effector and their metrics.

Light to import: numpy only. The simulated participant lives in :mod:`cortexlink.sim.participant`.
"""

from cortexlink.tasks.base import Target, Task, TaskEvent
from cortexlink.tasks.centre_out import CentreOutTask
from cortexlink.tasks.cursor import CursorEffector
from cortexlink.tasks.webgrid import WebgridTask, bitrate_over_time, fitts_throughput, webgrid_bitrate

__all__ = [
    "Target",
    "Task",
    "TaskEvent",
    "CursorEffector",
    "CentreOutTask",
    "WebgridTask",
    "webgrid_bitrate",
    "bitrate_over_time",
    "fitts_throughput",
]
