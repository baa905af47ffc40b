"""Operator commands: their fields and validation, and the scheduling of the graph's thread.

A command is ``{"cmd": name, ...fields}``; :func:`validate_command` checks it before it is sent
on the bus (status 400 for a malformed request). Whether it can be applied now is the graph's
node's decision (status 409, with its reason).
"""

from __future__ import annotations

import logging
import math
import numbers
import re
from typing import Any

from cortexlink.core.errors import CortexlinkError
from cortexlink.runtime.nodes._operator import CALIBRATION_TASKS

logger = logging.getLogger(__name__)

__all__ = ["ControlError", "COMMANDS", "validate_command", "MAX_BLOCK_S", "TASK_NAMES", "PRIORITIES",
           "set_thread_priority"]

TASK_NAMES = ("centre_out", "webgrid", "chess")
#: Longest block a command may ask for (per-bin features of a block are kept in memory for ReFIT).
MAX_BLOCK_S = 600.0

#: Fields each command takes and their kinds (see :func:`validate_command`).
COMMANDS: dict[str, dict[str, str]] = {
    "calibrate": {"seconds": "seconds", "task": "calibration_task", "task_params": "mapping"},
    "fit": {},
    "start": {"task": "task", "seconds": "seconds", "task_params": "mapping"},
    "stop": {},
    "refit": {},
    "estop": {},
    "release": {},
    "mouse": {"enabled": "bool"},
    "mouse_move": {"x": "coord", "y": "coord"},
    "mouse_click": {},
    "record_start": {"name": "name"},
    "record_stop": {},
    "recalibrate_noise": {},
}
_REQUIRED = {"start": ("task",), "mouse": ("enabled",), "mouse_move": ("x", "y")}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ControlError(CortexlinkError, ValueError):
    """A control request that cannot be applied; ``status`` is the HTTP status to answer with.

    400: malformed (unknown command, wrong field or type); 409: not possible in the current
    state (fit before calibrate, refit without a closed-loop block, ...); 503: the session
    did not answer in time.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = int(status)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def validate_command(obj: Any) -> tuple[str, dict]:
    """Check a control request ``{"cmd": name, ...fields}``; return ``(name, fields)``.

    Raises
    ------
    ControlError
        (status 400) naming what is wrong: not an object, missing or unknown command, unknown
        or missing field, wrong type or out-of-range value.
    """
    if not isinstance(obj, dict):
        raise ControlError(f"a control request must be a JSON object such as {{\"cmd\": \"fit\"}}; "
                           f"got a JSON {_json_type(obj)}")
    if "cmd" not in obj:
        raise ControlError(f"missing field 'cmd'; allowed commands: {sorted(COMMANDS)}")
    cmd = obj["cmd"]
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise ControlError(f"unknown command {cmd!r}; allowed commands: {sorted(COMMANDS)}")
    spec = COMMANDS[cmd]
    args = {k: v for k, v in obj.items() if k != "cmd"}
    unknown = sorted(set(args) - set(spec))
    if unknown:
        allowed = sorted(spec) if spec else "none"
        raise ControlError(f"command {cmd!r} got unknown field(s) {unknown}; allowed fields: {allowed}")
    for k in _REQUIRED.get(cmd, ()):
        if k not in args:
            raise ControlError(f"command {cmd!r} needs field {k!r} ({_KIND_TEXT[spec[k]]})")
    for k, v in args.items():
        kind = spec[k]
        if kind == "seconds":
            if not _is_number(v) or not 0 < float(v) <= MAX_BLOCK_S:
                raise ControlError(f"{cmd}.{k} must be {_KIND_TEXT[kind]}; got {v!r}")
            args[k] = float(v)
        elif kind in ("task", "calibration_task"):
            names = TASK_NAMES if kind == "task" else CALIBRATION_TASKS
            if v not in names:
                raise ControlError(f"{cmd}.{k} must be one of {list(names)}; got {v!r}")
        elif kind == "mapping":
            if not isinstance(v, dict) or len(v) > 32:
                raise ControlError(f"{cmd}.{k} must be {_KIND_TEXT[kind]}; got {_json_type(v)} {v!r}"[:300])
        elif kind == "bool":
            if not isinstance(v, bool):
                raise ControlError(f"{cmd}.{k} must be true or false; got {v!r}")
        elif kind == "coord":
            if not _is_number(v) or abs(float(v)) > 2.0:
                raise ControlError(f"{cmd}.{k} must be {_KIND_TEXT[kind]}; got {v!r}")
            args[k] = float(v)
        elif kind == "name":
            if not isinstance(v, str) or not _NAME_RE.match(v):
                raise ControlError(f"{cmd}.{k} must be {_KIND_TEXT[kind]}; got {v!r}")
    return cmd, args


_KIND_TEXT = {
    "seconds": f"a number of seconds > 0 and <= {MAX_BLOCK_S:g}",
    "task": f"one of {list(TASK_NAMES)}",
    "mapping": "a JSON object of task parameters (at most 32 keys)",
    "bool": "true or false",
    "coord": "a number in [-2, 2] (screen units)",
    "name": "1-64 letters, digits, '.', '_' or '-' starting with a letter or digit",
}


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


PRIORITIES = ("normal", "high", "realtime")


def set_thread_priority(native_id: int, priority: str, *, warn: bool = True) -> dict:
    """Set the scheduling of one OS thread (Linux): ``normal`` (SCHED_OTHER, nice 0), ``high``
    (nice -10) or ``realtime`` (SCHED_FIFO 50).

    ``high`` and ``realtime`` need ``CAP_SYS_NICE`` or an ``rtprio``/``nice`` limit in
    ``/etc/security/limits.conf``; without it the thread keeps its scheduling and ``error`` says why.

    Returns
    -------
    dict
        ``{"requested", "applied", "error"}``.
    """
    import os

    info: dict[str, Any] = {"requested": priority, "applied": None, "error": None}
    try:
        if not hasattr(os, "sched_setscheduler") or not hasattr(os, "setpriority"):
            raise OSError("thread priorities are not supported on this platform")
        if priority == "realtime":
            prio = min(50, os.sched_get_priority_max(os.SCHED_FIFO))
            os.sched_setscheduler(native_id, os.SCHED_FIFO, os.sched_param(prio))
        else:
            os.sched_setscheduler(native_id, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, native_id, -10 if priority == "high" else 0)
        info["applied"] = priority
    except OSError as exc:
        info["error"] = (f"{type(exc).__name__}: {exc} (needs CAP_SYS_NICE or an rtprio/nice limit in "
                         "/etc/security/limits.conf)")
        (logger.warning if warn else logger.info)("could not set the graph thread's priority to %r: %s",
                                                  priority, info["error"])
    return info

