"""The operator's session: a closed loop run by a paced real-time worker thread, driven by commands.

:class:`SessionController` builds a :class:`~cortexlink.tasks.loop.ClosedLoop` from a session
(:func:`~cortexlink.runtime.session.load_session`, the same builder as ``cortexlink session run``)
and runs it in one worker thread, one bin (``dt_s``, 20 ms) per ``dt_s`` of wall-clock time
(a deadline scheduler: bin ``k`` is processed once its samples would be complete,
``t0 + (k + 1) * dt_s``). Between blocks the implant keeps streaming through feature
extraction ("idle" bins), so the array views stay live.

Commands arrive on a thread-safe queue and are applied between bins:

========================  ===================================================================
``calibrate``             open-loop centre-out block (the cursor moves by itself, the
                          participant intends along); its bins train the decoders
``fit``                   fit the velocity (and click) decoder on every calibration block so far
``start``                 closed-loop block of ``centre_out``, ``webgrid`` or ``chess``
``stop``                  end the running block
``refit``                 ReFIT-Kalman: re-estimate from the closed-loop blocks since the last fit
``estop`` / ``release``   emergency stop: the cursor is held and clicks are suppressed from the
                          next bin on, latched until released (works in every state)
``mouse``                 mouse mode on/off: the operator's pointer drives the cursor
``mouse_move``            the pointer position (screen units); ``mouse_click`` a click
``record_start/stop``     record the session (:mod:`cortexlink.io.session_log`)
``recalibrate_noise``     re-estimate noise RMS, thresholds and bad channels from the next
                          second of data
========================  ===================================================================

Fits run in a helper thread while the loop keeps streaming; the fitted decoder is swapped in
between bins. After each bin the worker publishes a :class:`~cortexlink.web.snapshot.Snapshot`
to :attr:`SessionController.snapshots` (a latest-value holder): it never waits for a reader.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import datetime as _dt
import logging
import math
import numbers
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cortexlink.core.errors import ConfigError, CortexlinkError
from cortexlink.core.validation import check_positive
from cortexlink.web.snapshot import LatestValue, Part, Snapshot, finite_list, jsonable

logger = logging.getLogger(__name__)

__all__ = ["SessionController", "ControlError", "COMMANDS", "validate_command", "MAX_BLOCK_S", "PRIORITIES",
           "set_thread_priority"]

TASK_NAMES = ("centre_out", "webgrid", "chess")
#: Longest block a command may ask for (per-bin features of a block are kept in memory for ReFIT).
MAX_BLOCK_S = 600.0
RASTER_CHANNELS = 128

#: Fields each command takes and their kinds (see :func:`validate_command`).
COMMANDS: dict[str, dict[str, str]] = {
    "calibrate": {"seconds": "seconds"},
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
_DEFAULT_SECONDS = {"centre_out": 60.0, "webgrid": 60.0, "chess": None}


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
        elif kind == "task":
            if v not in TASK_NAMES:
                raise ControlError(f"{cmd}.{k} must be one of {list(TASK_NAMES)}; got {v!r}")
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
        (logger.warning if warn else logger.info)("could not set the real-time worker's priority to %r: %s",
                                                  priority, info["error"])
    return info


class _OperatorEffector:
    """Wraps the loop's :class:`~cortexlink.tasks.cursor.CursorEffector` for the operator.

    * ``halt``: the cursor does not move at all in the bin, even with velocity smoothing (the
      smoothing memory is cleared) and no click fires;
    * ``mouse``: clicks come from the operator (:meth:`click`), not from the decoder or the
      simulated participant.
    Everything else is delegated.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.halt = False
        self.mouse = False
        self._click_pending = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def xy(self) -> np.ndarray:
        return self.inner.xy

    @property
    def velocity(self) -> np.ndarray:
        return self.inner.velocity

    def reset(self, xy: Any = (0.0, 0.0)) -> None:
        self.inner.reset(xy)

    def click(self) -> None:
        """Queue an operator click for the next bin (mouse mode)."""
        self._click_pending = True

    def step(self, velocity: Any, click: bool = False) -> tuple[np.ndarray, bool]:
        if self.halt:
            self._click_pending = False
            s = self.inner.smoothing
            self.inner.smoothing = 0.0
            try:
                return self.inner.step(np.zeros(2), False)
            finally:
                self.inner.smoothing = s
        if self.mouse:
            click, self._click_pending = self._click_pending, False
        return self.inner.step(velocity, bool(click))


class _Pending:
    __slots__ = ("cmd", "args", "future")

    def __init__(self, cmd: str, args: dict) -> None:
        self.cmd = cmd
        self.args = args
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class SessionController:
    """Run a closed-loop session in a real-time worker thread and take operator commands.

    Parameters
    ----------
    session : path, YAML text, dict or None
        A session (:func:`~cortexlink.runtime.session.load_session`); its implant, participant,
        decoder and click decoder are used, and its blocks give the default length and task
        parameters of ``calibrate`` and ``start``. None: the built-in demo session.
    n_channels : int, optional
        Override the implant's channel count.
    realtime_factor : float
        Wall-clock pacing: 1.0 runs one bin per ``dt_s`` (real time); 2.0 twice as fast (a
        simulated session only).
    record_dir : path
        Parent folder of recordings (``record_start`` creates ``record_dir/<name>``).
    participant_id : str
        Pseudonymous participant code written to recordings.
    slow_hz : float
        Rate of the heavier snapshot part (heat map, metrics, latency statistics).
    latency_window_s : float
        Latency percentiles in snapshots are over this many recent seconds.
    history_s : float
        Per-bin timing kept for :meth:`latency_history`.
    priority : {"normal", "high", "realtime"}
        Scheduling of the worker thread (see :func:`set_thread_priority`). ``"realtime"``
        (SCHED_FIFO) keeps the loop on time when other processes, a browser included, load
        the machine; it needs the privilege to do so.

    Attributes
    ----------
    snapshots : LatestValue
        The latest :class:`~cortexlink.web.snapshot.Snapshot`.
    config : dict
        The validated session.

    Examples
    --------
    >>> with SessionController({"implant": {"n_channels": 32}, ...}) as ctl:   # doctest: +SKIP
    ...     ctl.command("calibrate", {"seconds": 20})
    """

    def __init__(self, session: Any = None, *, n_channels: int | None = None, realtime_factor: float = 1.0,
                 record_dir: str | Path = Path("runs") / "recordings", participant_id: str = "sim-0001",
                 slow_hz: float = 5.0, latency_window_s: float = 5.0, history_s: float = 3600.0,
                 priority: str = "normal") -> None:
        from cortexlink.runtime.session import load_session

        cfg = load_session(session)
        if n_channels is not None:
            cfg["implant"]["n_channels"] = check_positive("n_channels", n_channels, integer=True)
            cfg = load_session(cfg)
        self.config = cfg
        self.dt_s = float(cfg["loop"]["dt_s"])
        self.realtime_factor = check_positive("realtime_factor", realtime_factor)
        self.record_dir = Path(record_dir)
        self.participant_id = participant_id
        from cortexlink.core.validation import check_choice

        self.priority = check_choice("priority", priority, PRIORITIES)
        self.priority_info: dict = {"requested": self.priority, "applied": None, "error": None}
        self.slow_every = max(1, int(round(1.0 / (check_positive("slow_hz", slow_hz) * self.dt_s))))
        self.snapshots = LatestValue()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._stop_evt = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "created"
        self._rec_lock = threading.Lock()
        self._recording: Any = None
        self._loop: Any = None
        self._last_recording: dict | None = None
        # direct (lock-free) operator inputs, read by the worker at the top of each bin
        self._estop = False
        self._estop_requested_after_bin: int | None = None
        self._estop_bin: int | None = None
        self._mouse = False
        self._pointer: tuple[float, float] | None = None
        self.n_bins = 0                    # bins completed since start (global bin index of the next bin)
        n_win = max(1, int(round(latency_window_s / self.dt_s)))
        self._win = {k: np.full(n_win, np.nan) for k in ("loop_us", "busy_us", "late_us")}
        n_hist = max(1, int(round(history_s / self.dt_s)))
        self._hist = {k: np.full(n_hist, np.nan) for k in ("loop_us", "busy_us", "late_us")}
        self._hist_missed = np.zeros(n_hist, bool)
        self.n_deadline_misses = 0
        self.n_resyncs = 0
        self._resync_logged = -math.inf
        self.faults: collections.deque = collections.deque(maxlen=50)
        self.n_faults = 0

    # ================================================================== lifecycle
    def start(self, timeout_s: float = 120.0) -> "SessionController":
        """Start the worker (it builds the loop and calibrates the noise first) and wait until it runs.

        Raises
        ------
        CortexlinkError
            If the session could not be set up (the fault is in :attr:`faults`).
        """
        if self._thread is not None:
            raise ControlError("the session was already started", 409)
        self._state = "starting"
        self._thread = threading.Thread(target=self._main, name="cortexlink-rt", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise CortexlinkError(f"the session did not start within {timeout_s:g} s")
        if self._state == "error":
            msg = self.faults[-1]["message"] if self.faults else "unknown error"
            raise CortexlinkError(f"the session could not start: {msg}")
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the worker (the running block is ended, a recording is closed)."""
        self._stop_evt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        job = getattr(self, "_job_thread", None)
        if job is not None:
            job.join(timeout_s)

    def __enter__(self) -> "SessionController":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop_evt.is_set()

    @property
    def state(self) -> str:
        """``created``, ``starting``, ``idle``, ``calibrating``, ``closed_loop``, ``stopped`` or ``error``."""
        return self._state

    def set_realtime_factor(self, factor: float) -> None:
        """Change the wall-clock pacing (takes effect from the next bin)."""
        self.realtime_factor = check_positive("realtime_factor", factor)

    def set_priority(self, priority: str, *, warn: bool = True) -> dict:
        """Change the worker thread's scheduling while it runs (see :func:`set_thread_priority`).

        Returns ``{"requested", "applied", "error"}``; on failure the previous scheduling stays.
        """
        from cortexlink.core.validation import check_choice

        priority = check_choice("priority", priority, PRIORITIES)
        if self._thread is not None and self._thread.native_id is not None:
            info = set_thread_priority(self._thread.native_id, priority, warn=warn)
            if info["applied"] == priority:
                self.priority = priority
            self.priority_info = info
        else:
            self.priority = priority
        return self.priority_info

    # ================================================================== commands
    def command(self, cmd: str, args: dict | None = None, *, timeout_s: float = 10.0) -> dict:
        """Validate and apply one command; return its JSON-able result.

        ``estop``, ``release``, ``mouse``, ``mouse_move`` and ``mouse_click`` act at once
        (read by the worker at the start of the next bin); the others are applied by the
        worker between bins and this call waits for its answer.

        Raises
        ------
        ControlError
            With ``status`` 400 (bad request), 409 (not possible now) or 503 (no answer).
        """
        cmd, args = validate_command({"cmd": cmd, **(args or {})})
        if cmd == "estop":
            return self.estop()
        if cmd == "release":
            return self.release()
        if cmd == "mouse":
            self._mouse = bool(args["enabled"])
            if not self._mouse:
                self._pointer = None
            return {"mouse": self._mouse}
        if cmd == "mouse_move":
            if not self._mouse:
                raise ControlError("mouse_move needs mouse mode; send {\"cmd\": \"mouse\", \"enabled\": true} first", 409)
            self._pointer = (args["x"], args["y"])
            return {"pointer": [args["x"], args["y"]]}
        if cmd == "mouse_click":
            if not self._mouse or self._loop is None:
                raise ControlError("mouse_click needs mouse mode; send {\"cmd\": \"mouse\", \"enabled\": true} first", 409)
            self._eff.click()
            return {"click": True}
        if cmd == "record_start":
            return self._record_start(args.get("name"))
        if cmd == "record_stop":
            return self._record_stop()
        if cmd in ("calibrate", "start"):
            args = dict(args)
            args["_task"] = self._make_block_task(cmd, args)
        return self._submit(cmd, args, timeout_s)

    def _submit(self, cmd: str, args: dict, timeout_s: float) -> dict:
        if not self.running:
            raise ControlError(f"the session is not running (state {self._state!r}); command {cmd!r} not applied", 409)
        p = _Pending(cmd, args)
        self._q.put(p)
        try:
            return p.future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            p.future.cancel()
            raise ControlError(f"the session did not answer command {cmd!r} within {timeout_s:g} s", 503) from None

    def add_tap(self, tap: Any, timeout_s: float = 10.0) -> None:
        """Append a :class:`~cortexlink.tasks.loop.LoopTap` to the running loop (between bins)."""
        self._submit("_attach_tap", {"tap": tap}, timeout_s)

    def remove_tap(self, tap: Any, timeout_s: float = 10.0) -> None:
        """Remove a tap added with :meth:`add_tap` (between bins)."""
        self._submit("_detach_tap", {"tap": tap}, timeout_s)

    def estop(self) -> dict:
        """Engage the emergency stop: from the next bin on the cursor is held and clicks are
        suppressed, until :meth:`release`. Works in every state, even when the worker is busy."""
        received = self.n_bins
        if not self._estop:
            self._estop_requested_after_bin = received
            self._estop_bin = None
            self._estop = True
            logger.warning("EMERGENCY STOP engaged after bin %d", received)
        return {"estop": True, "received_after_bin": received}

    def release(self) -> dict:
        """Release a latched emergency stop."""
        was = self._estop
        self._estop = False
        if was:
            logger.warning("emergency stop released after bin %d", self.n_bins)
        return {"estop": False, "was_engaged": was}

    def _make_block_task(self, cmd: str, args: dict) -> Any:
        from cortexlink.tasks.schedule import make_task

        if cmd == "calibrate":
            kind, params = "centre_out", dict(self._calibration_params())
        else:
            kind = args["task"]
            params = dict(self._block_defaults(kind)[2])
            params.update(args.get("task_params") or {})
        try:
            return make_task(kind, params, seed=self.config["seed"])
        except (ConfigError, TypeError, ValueError) as exc:
            raise ControlError(f"{cmd}: invalid task_params for {kind}: {exc}") from None

    def _calibration_params(self) -> dict:
        for b in self.config["blocks"]:
            if b["kind"] == "calibration" and b.get("task") == "centre_out":
                return b["task_params"]
        return {"click": True}

    def _calibration_seconds(self) -> float:
        for b in self.config["blocks"]:
            if b["kind"] == "calibration" and b.get("seconds"):
                return min(float(b["seconds"]), MAX_BLOCK_S)
        return 60.0

    def _block_defaults(self, task: str) -> tuple[float | None, float, dict]:
        for b in self.config["blocks"]:
            if b["kind"] in ("closed_loop", "evaluation") and b.get("task") == task:
                secs = b.get("seconds")
                return (None if secs is None else min(float(secs), MAX_BLOCK_S),
                        min(float(b["max_seconds"]), MAX_BLOCK_S), b["task_params"])
        return _DEFAULT_SECONDS[task], MAX_BLOCK_S, {}

    # ------------------------------------------------------------------ recording
    def _record_start(self, name: str | None) -> dict:
        from cortexlink.web.recording import Recording

        with self._rec_lock:
            if self._recording is not None:
                raise ControlError(f"already recording to {self._recording.path}; stop it first", 409)
            if not self.running or self._loop is None:
                raise ControlError(f"the session is not running (state {self._state!r})", 409)
            name = name or _dt.datetime.now().strftime("rec-%Y%m%d-%H%M%S")
            out = self.record_dir / name
            if out.exists():
                raise ControlError(f"recording folder {out} already exists; choose another name", 409)
            try:
                rec = Recording(out, self._loop, self.config, participant_id=self.participant_id)
            except (CortexlinkError, OSError) as exc:
                raise ControlError(f"cannot start recording in {out}: {exc}", 409) from None
            try:
                self.add_tap(rec.tap)
            except ControlError:
                rec.close()
                raise
            self._recording = rec
            return {"recording": True, "dir": str(out)}

    def _record_stop(self) -> dict:
        with self._rec_lock:
            rec = self._recording
            if rec is None:
                raise ControlError("not recording", 409)
            if self.running:
                self.remove_tap(rec.tap)
            self._recording = None
            summary = rec.close()
            self._last_recording = summary
            return {"recording": False, **summary}

    # ================================================================== worker
    def _main(self) -> None:
        if self.priority != "normal":
            self.priority_info = set_thread_priority(threading.get_native_id(), self.priority)
        try:
            self._setup()
        except Exception as exc:  # noqa: BLE001 - reported as a fault, the caller raises
            logger.exception("session setup failed")
            self._fault("setup", exc)
            self._state = "error"
            self._ready.set()
            return
        self._state = "idle"
        self._publish(None)
        self._ready.set()
        try:
            self._run_paced()
        finally:
            self._shutdown()

    def _setup(self) -> None:
        from cortexlink.decoders.fitting import make_decoder

        cfg = self.config
        loop = build_loop(cfg)
        self._eff = _OperatorEffector(loop.effector)
        loop.effector = self._eff
        if loop.implant is not None:
            loop.warm_up()
        self._loop = loop
        self._dec_kind = cfg["decoder"]["kind"]
        self._decoder = make_decoder(self._dec_kind, cfg["decoder"]["params"])
        self._fitted = self._dec_kind == "perfect"
        self._click_decoder = None
        self._calib: list = []
        self._closed: list = []
        self._n_blocks = 0
        self._run: Any = None
        self._run_kind: str | None = None
        self._run_mouse_bins = 0
        self._chess_moves: list[str] = []
        self._chess_dirty = True
        self._job: str | None = None
        self._job_future: concurrent.futures.Future | None = None
        self._job_thread: threading.Thread | None = None
        self._last_job: dict | None = None
        self._last_block: dict | None = None
        self._n_refits = 0
        self._seq = 0
        self._slow_version = 0
        self._meta_version = 0
        self._raster = collections.deque(maxlen=8)
        self._decoded = None
        self._click_proba = None
        self._clicked = False
        self._idle_failures = 0
        self._n_bin_errors = 0
        imp = loop.implant
        if imp is not None:
            names = loop.fx.feature_names
            self._tx_idx = np.asarray([i for i, nm in enumerate(names) if nm.endswith("/tx")], np.intp)
            self._n_ch = imp.channel_map.n_channels
            self._raster_idx = self._tx_idx[:RASTER_CHANNELS]
            self._rate = np.zeros(self._n_ch)
        else:
            self._tx_idx = np.zeros(0, np.intp)
            self._raster_idx = self._tx_idx
            self._n_ch = 0
            self._rate = np.zeros(0)
        self._calib_obj = None
        self._meta = self._build_meta()
        self._slow = self._build_slow()

    def _run_paced(self) -> None:
        clock = time.perf_counter
        avail = clock() + self.dt_s / self.realtime_factor      # bin 0's samples are complete
        while not self._stop_evt.is_set():
            period = self.dt_s / self.realtime_factor
            d = avail - clock()
            if d > 0:
                time.sleep(d)
            start = clock()
            halt = self._estop
            out = None
            try:
                self._drain_commands()
                self._poll_job()
                halt = self._estop
                out = self._one_bin(halt)
                if self._state == "error":
                    break
                self._publish(out, halt=halt)
                self._n_bin_errors = 0
            except Exception as exc:  # noqa: BLE001 - a bug in one bin must not end the session
                logger.exception("real-time worker: bin %d failed", self.n_bins)
                self._fault("worker", exc)
                self._n_bin_errors += 1
                if self._n_bin_errors >= 50:
                    logger.error("real-time worker: 50 bins in a row failed; stopping the session")
                    self._state = "error"
                    break
            end = clock()
            i = self.n_bins % self._win["loop_us"].size
            h = self.n_bins % self._hist["loop_us"].size
            loop_us = out.get("loop_latency_us", float("nan")) if out else float("nan")
            missed = end > avail + period
            for key, val in (("loop_us", loop_us), ("busy_us", (end - start) * 1e6),
                             ("late_us", (start - avail) * 1e6)):
                self._win[key][i] = val
                self._hist[key][h] = val
            self._hist_missed[h] = missed
            self.n_deadline_misses += int(missed)
            self.n_bins += 1
            avail += period
            behind = end - avail
            if behind > 10 * period:      # far behind (machine suspended, or fast-forward too fast): resynchronise
                self.n_resyncs += 1
                avail = end + period
                if end - self._resync_logged > 10.0:
                    self._resync_logged = end
                    logger.warning("real-time worker fell %.0f ms behind; resynchronised (%d times so far)",
                                   behind * 1e3, self.n_resyncs)

    def _shutdown(self) -> None:
        self._stop_evt.set()                        # refuse new commands from here on
        self._fail_queued()
        try:
            if self._run is not None:
                self._end_block("stopped")
        except Exception as exc:  # noqa: BLE001
            self._fault("end_block", exc)
        with self._rec_lock:
            rec = self._recording
            if rec is not None:
                try:
                    if rec.tap in self._loop.taps:
                        self._loop.taps.remove(rec.tap)
                    self._last_recording = rec.close()
                except Exception as exc:  # noqa: BLE001
                    self._fault("record_stop", exc)
                self._recording = None
        self._fail_queued()
        if self._state != "error":
            self._state = "stopped"
        try:
            self._slow = self._build_slow()
            self._publish(None)
        except Exception:  # noqa: BLE001
            logger.exception("final snapshot failed")

    def _fail_queued(self) -> None:
        while True:
            try:
                p = self._q.get_nowait()
            except queue.Empty:
                return
            if p.future.set_running_or_notify_cancel():
                p.future.set_exception(ControlError(f"the session stopped; command {p.cmd!r} not applied", 409))

    # ------------------------------------------------------------------ commands in the worker
    def _drain_commands(self) -> None:
        while True:
            try:
                p = self._q.get_nowait()
            except queue.Empty:
                return
            if not p.future.set_running_or_notify_cancel():
                continue
            try:
                p.future.set_result(self._apply(p.cmd, p.args))
            except ControlError as exc:
                p.future.set_exception(exc)
            except Exception as exc:  # noqa: BLE001 - a command never kills the session
                logger.exception("command %s failed", p.cmd)
                self._fault(p.cmd, exc)
                p.future.set_exception(ControlError(f"command {p.cmd!r} failed: {type(exc).__name__}: {exc}", 409))

    def _busy_reason(self, cmd: str) -> str | None:
        if self._run is not None:
            return f"a {self._run_kind} block ({self._run.name!r}) is running; stop it first"
        if self._job is not None:
            return f"the {self._job} job is still running"
        return None

    def _apply(self, cmd: str, a: dict) -> dict:
        loop = self._loop
        if cmd == "_attach_tap":
            loop.taps.append(a["tap"])
            return {"ok": True}
        if cmd == "_detach_tap":
            if a["tap"] in loop.taps:
                loop.taps.remove(a["tap"])
            return {"ok": True}
        if cmd == "stop":
            if self._run is None:
                raise ControlError("stop: no block is running", 409)
            return {"stopped": self._end_block("operator")}
        if cmd == "recalibrate_noise":
            if loop.implant is None:
                raise ControlError("recalibrate_noise: this session has no implant (decoder 'perfect')", 409)
            loop.fx.recalibrate()
            return {"recalibrating_s": float(loop.fx.calibration_s)}
        busy = self._busy_reason(cmd)
        if busy is not None:
            raise ControlError(f"{cmd}: {busy}", 409)
        if cmd == "calibrate":
            if loop.implant is None:
                raise ControlError("calibrate: decoder 'perfect' needs no calibration (the session has no implant)", 409)
            secs = a.get("seconds", self._calibration_seconds())
            self._begin("calibration", a["_task"], "open", secs, None)
            return {"block": self._run.name, "seconds": secs}
        if cmd == "fit":
            if self._dec_kind == "perfect":
                raise ControlError("fit: decoder 'perfect' has nothing to fit", 409)
            if not self._calib:
                raise ControlError("fit: no calibration block yet; run 'calibrate' first", 409)
            self._start_job("fit", self._job_fit, list(self._calib))
            return {"job": "fit", "n_calibration_blocks": len(self._calib)}
        if cmd == "refit":
            if not hasattr(self._decoder, "refit"):
                raise ControlError(f"refit: needs decoder kind 'refit_kalman'; this session uses {self._dec_kind!r}", 409)
            if not self._fitted:
                raise ControlError("refit: the decoder is not fitted; run 'calibrate' and 'fit' first", 409)
            if not self._closed:
                raise ControlError("refit: no closed-loop block since the last fit; run a closed-loop block "
                                   "('start') first", 409)
            self._start_job("refit", self._job_refit, list(self._closed))
            return {"job": "refit", "n_closed_loop_blocks": len(self._closed)}
        if cmd == "start":
            task = a["_task"]
            kind = a["task"]
            d_secs, d_max, _ = self._block_defaults(kind)
            secs = a.get("seconds", d_secs)
            if self._dec_kind == "perfect":
                mode = "perfect"
            elif self._fitted:
                mode = "closed"
            elif self._mouse:
                mode = "open"          # the operator drives; the autopilot is overridden
            else:
                raise ControlError("start: the decoder is not fitted; run 'calibrate' and 'fit' first "
                                   "(or turn on mouse mode to try the task yourself)", 409)
            if secs is None and task.name != "chess":
                secs = 60.0
            self._begin("closed_loop", task, mode, secs, d_max)
            return {"block": self._run.name, "task": kind, "mode": mode, "seconds": secs}
        raise ControlError(f"unknown command {cmd!r}", 400)      # pragma: no cover - validated before

    def _begin(self, kind: str, task: Any, mode: str, seconds: float | None, max_seconds: float | None) -> None:
        self._n_blocks += 1
        name = f"{self._n_blocks:02d}-{'calibration' if kind == 'calibration' else task.name}"
        closed = mode == "closed"
        self._run = self._loop.begin_block(
            task, mode=mode, seconds=seconds, max_seconds=max_seconds or MAX_BLOCK_S,
            decoder=self._decoder if closed else None, click_decoder=self._click_decoder if closed else None,
            name=name, keep_features=mode != "perfect")
        self._run_kind = kind
        self._run_mouse_bins = 0
        self._chess_moves = []
        self._chess_dirty = True
        self._state = "calibrating" if kind == "calibration" else "closed_loop"
        logger.info("block %s started (%s, %s)", name, task.name, mode)

    def _end_block(self, reason: str) -> dict:
        run, kind = self._run, self._run_kind
        self._run = None
        self._run_kind = None
        self._state = "idle"
        trace = self._loop.end_block(run)
        info = {"name": trace.name, "kind": kind, "task": trace.task, "mode": trace.mode, "n_bins": trace.n_bins,
                "seconds": trace.n_bins * self.dt_s, "reason": reason, "metrics": _metrics_summary(trace.metrics)}
        if trace.n_bins > 0 and trace.features is not None:
            if kind == "calibration":
                self._calib.append(trace)
            elif trace.mode == "closed" and self._run_mouse_bins == 0:
                self._closed.append(trace)
            elif trace.mode == "closed":
                info["note"] = "mouse mode was used: not kept for ReFIT"
        self._last_block = info
        self._slow = self._build_slow()
        return info

    # ------------------------------------------------------------------ fit jobs (helper thread)
    def _start_job(self, name: str, fn: Callable, traces: list) -> None:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def target() -> None:
            t0 = time.perf_counter()
            try:
                res = fn(traces)
                res["seconds"] = time.perf_counter() - t0
                fut.set_result(res)
            except BaseException as exc:  # noqa: BLE001 - handed to the worker
                fut.set_exception(exc)

        self._job = name
        self._job_future = fut
        self._job_thread = threading.Thread(target=target, name=f"cortexlink-{name}", daemon=True)
        self._job_thread.start()

    def _job_fit(self, traces: list) -> dict:
        from cortexlink.decoders.fitting import fit_decoders

        cfg = self.config
        res = fit_decoders(self._dec_kind, cfg["decoder"]["params"], traces, feature_names=self._loop.feature_names_,
                           click=cfg["click_decoder"]["enabled"], click_params=cfg["click_decoder"]["params"],
                           on_no_click="note")
        return {"decoder": res.decoder, "click_decoder": res.click_decoder, "n_bins": res.info["n_bins"],
                "n_features": res.info["n_features"], "note": res.info.get("note")}

    def _job_refit(self, traces: list) -> dict:
        from cortexlink.decoders.fitting import refit_decoder

        res = refit_decoder(self._decoder, traces, in_place=False)
        return {"decoder": res.decoder, "n_bins": res.info["n_bins"]}

    def _poll_job(self) -> None:
        fut = self._job_future
        if fut is None or not fut.done():
            return
        name = self._job
        self._job = None
        self._job_future = None
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001
            self._fault(name, exc)
            self._last_job = {"job": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            logger.warning("%s failed: %s", name, exc)
        else:
            self._decoder = res.pop("decoder")
            if name == "fit":
                self._click_decoder = res.pop("click_decoder")
                self._fitted = True
                self._closed = []
            else:
                self._n_refits += 1
                self._closed = []
            self._last_job = {"job": name, "ok": True, **jsonable(res)}
            logger.info("%s done: %s", name, self._last_job)
        self._slow = self._build_slow()

    # ------------------------------------------------------------------ one bin
    def _one_bin(self, halt: bool) -> dict | None:
        loop = self._loop
        run = self._run
        self._eff.halt = halt
        self._eff.mouse = self._mouse
        if halt and self._estop_bin is None:
            self._estop_bin = self.n_bins
        if run is not None:
            ov = None
            if self._mouse:
                ov = self._mouse_velocity()
                self._run_mouse_bins += 1
            try:
                out = loop.step_bin(run, override_velocity=ov, halt=halt)
            except Exception as exc:  # noqa: BLE001 - a failing bin ends the block, not the session
                logger.exception("bin failed in block %s", run.name)
                self._fault("step_bin", exc)
                try:
                    self._end_block("fault")
                except Exception as exc2:  # noqa: BLE001
                    self._fault("end_block", exc2)
                    self._run = None
                    self._state = "idle"
                return None
            if out["events"] and run.task.name == "chess":
                for ev in out["events"]:
                    if ev.kind in ("move", "opponent_move"):
                        self._chess_moves.append(str(ev.data.get("san", ev.data.get("uci", "?"))))
                        self._chess_dirty = True
            self._decoded = out["decoded_velocity"]
            self._click_proba = out["click_proba"]
            self._clicked = out["clicked"]
            row = out["features"]
            if run.done:
                self._end_block("done")
            res = {"loop_latency_us": out["loop_latency_us"], "row": row, "velocity": out["velocity"]}
        else:
            res = self._idle_bin()
        return res

    def _idle_bin(self) -> dict:
        loop = self._loop
        self._decoded = None
        self._click_proba = None
        self._clicked = False
        if loop.implant is None:
            loop.t_s += self.dt_s
            return {"loop_latency_us": float("nan"), "row": None, "velocity": None}
        try:
            loop.implant.set_intent(velocity=(0.0, 0.0), click=0.0)
            chunk = loop.implant.read(loop.samples_per_bin)
            t0 = time.perf_counter_ns()
            bf = loop.fx.step(chunk)
            lat = (time.perf_counter_ns() - t0) / 1e3
            for tap in loop.taps:
                tap.samples(loop, chunk, bf)
            self._idle_failures = 0
        except Exception as exc:  # noqa: BLE001
            self._idle_failures += 1
            self._fault("idle_bin", exc)
            if self._idle_failures >= 10:
                logger.error("the implant stream failed 10 bins in a row; stopping the session")
                self._state = "error"
            return {"loop_latency_us": float("nan"), "row": None, "velocity": None}
        loop.t_s += self.dt_s
        row = bf.data[-1] if bf.n_bins else None
        return {"loop_latency_us": lat, "row": row, "velocity": None}

    def _mouse_velocity(self) -> np.ndarray:
        p = self._pointer
        if p is None:
            return np.zeros(2)
        err = np.asarray(p, dtype=float) - np.asarray(self._eff.xy, dtype=float)
        v = err / 0.08                              # reach the pointer with an ~80 ms time constant
        sp = float(np.hypot(*v))
        vmax = 4.0
        return v * (vmax / sp) if sp > vmax else v

    # ------------------------------------------------------------------ snapshots
    def _publish(self, out: dict | None, *, halt: bool = False) -> None:
        loop = self._loop
        row = None if out is None else out.get("row")
        if row is not None and self._n_ch:
            tx = row[self._tx_idx]
            ok = np.isfinite(tx)
            if ok.any():
                alpha = min(1.0, self.dt_s / 1.0)         # ~1 s time constant
                self._rate[ok] += alpha * (tx[ok] / self.dt_s - self._rate[ok])
            r = row[self._raster_idx]
            self._raster.append((self.n_bins, np.where(np.isfinite(r), np.minimum(r, 255), 0).astype(np.uint8).tobytes()))
        if self.n_bins % self.slow_every == 0 and out is not None:
            self._slow = self._build_slow()
            if loop.implant is not None and loop.fx.is_calibrated and loop.fx.calibration_ is not self._calib_obj:
                self._meta = self._build_meta()
        run = self._run
        xy = self._eff.xy
        fast: dict[str, Any] = {
            "seq": self._seq, "bin": self.n_bins, "t_s": round(float(loop.t_s), 4), "state": self._state,
            "job": self._job, "estop": self._estop, "halted": bool(halt), "estop_bin": self._estop_bin,
            "estop_requested_after_bin": self._estop_requested_after_bin, "mouse": self._mouse,
            "recording": self._recording is not None,
            "cursor": [float(xy[0]), float(xy[1])],
            "velocity": None, "decoded": None, "click_proba": None, "clicked": bool(self._clicked),
            "block": None, "target": None, "lit_cell": None, "chess": None,
            "raster_rows": tuple(self._raster),
        }
        if out is not None and out.get("velocity") is not None:
            v = out["velocity"]
            fast["velocity"] = [float(v[0]), float(v[1])]
        if self._decoded is not None and np.all(np.isfinite(self._decoded)):
            fast["decoded"] = [float(self._decoded[0]), float(self._decoded[1])]
        if self._click_proba is not None and math.isfinite(self._click_proba):
            fast["click_proba"] = float(self._click_proba)
        if run is not None:
            task = run.task
            fast["block"] = {"name": run.name, "kind": self._run_kind, "task": task.name, "mode": run.mode,
                             "n": run.n, "n_max": run.n_max,
                             "elapsed_s": round(float(loop.t_s - run.t_start), 3)}
            tg = task.current_target()
            if tg is not None:
                fast["target"] = {"xy": [float(tg.xy[0]), float(tg.xy[1])], "r": float(tg.radius)}
            if task.name == "webgrid":
                fast["lit_cell"] = int(task.lit_cell)
            elif task.name == "centre_out":
                fast["target_idx"] = int(task.current_target_idx)
            elif task.name == "chess":
                fast["chess"] = {"stage": task.stage}
        self._seq += 1
        self.snapshots.set(Snapshot(self._seq, fast, self._slow, self._meta))

    def _latency_stats(self) -> dict:
        out: dict[str, Any] = {}
        for k, arr in self._win.items():
            a = arr[np.isfinite(arr)]
            out[k] = ({"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
                       "n": int(a.size)} if a.size else None)
        out["deadline_misses"] = int(self.n_deadline_misses)
        out["resyncs"] = int(self.n_resyncs)
        out["window_s"] = self._win["loop_us"].size * self.dt_s
        out["realtime_factor"] = self.realtime_factor
        out["priority"] = self.priority_info
        return out

    def _build_slow(self) -> Part:
        loop = self._loop
        run = self._run
        self._slow_version += 1
        data: dict[str, Any] = {
            "version": self._slow_version,
            "rate_hz": finite_list(self._rate, 1) if self._n_ch else [],
            "latency": self._latency_stats(),
            "metrics": None, "task_info": None,
            "decoder": {"kind": self._dec_kind, "fitted": bool(self._fitted), "n_refits": self._n_refits,
                        "click_decoder": self._click_decoder is not None, "n_features": int(loop.n_features)},
            "counts": {"calibration_blocks": len(self._calib), "closed_loop_blocks_since_fit": len(self._closed),
                       "blocks": self._n_blocks},
            "last_job": self._last_job, "last_block": self._last_block,
            "recording": self._recording_status(),
            "faults": list(self.faults)[-10:], "n_faults": self.n_faults,
            "t_s": float(loop.t_s),
        }
        if run is not None:
            task = run.task
            elapsed = max(float(loop.t_s - run.t_start), self.dt_s)
            if task.name == "chess":
                n_sel = 2 * task.n_moves + task.wrong_selections
                data["metrics"] = {"n_moves": task.n_moves, "wrong_selections": task.wrong_selections,
                                   "moves_per_minute": task.n_moves * 60.0 / elapsed,
                                   "selection_accuracy": (n_sel - task.wrong_selections) / n_sel if n_sel else None,
                                   "elapsed_s": elapsed}
                if self._chess_dirty:
                    self._chess_info = {"fen": task.board.fen(), "moves": list(self._chess_moves),
                                        "extent": list(task.board_extent), "color": task.participant_color,
                                        "max_moves": task.max_moves}
                    self._chess_dirty = False
                data["task_info"] = {"task": "chess", **self._chess_info}
            else:
                data["metrics"] = _metrics_summary(task.metrics(elapsed))
                if task.name == "webgrid":
                    data["task_info"] = {"task": "webgrid", "n": task.n, "workspace": list(task.workspace)}
                elif task.name == "centre_out":
                    data["task_info"] = {"task": "centre_out", "targets": task.target_positions.tolist(),
                                         "target_radius": float(task.target_radius)}
        return Part(self._slow_version, jsonable(data))

    def _recording_status(self) -> dict:
        rec = self._recording
        if rec is None:
            return {"active": False, "last": self._last_recording}
        try:
            return rec.status()
        except Exception as exc:  # noqa: BLE001
            return {"active": True, "dir": str(rec.path), "error": str(exc)}

    def _build_meta(self) -> Part:
        loop = self._loop
        self._meta_version += 1
        data: dict[str, Any] = {
            "version": self._meta_version, "session": self.config["name"], "seed": self.config["seed"],
            "dt_s": self.dt_s, "decoder": self._dec_kind, "tasks": list(TASK_NAMES),
            "n_channels": self._n_ch, "raster_channels": int(self._raster_idx.size),
            "calibration_s": self._calibration_seconds(),
            "block_defaults": {t: {"seconds": self._block_defaults(t)[0]} for t in TASK_NAMES},
            "max_block_s": MAX_BLOCK_S, "grid": None, "noise_rms_uv": [], "bad": [],
        }
        if loop.implant is not None:
            cm = loop.implant.channel_map
            data["grid"] = _grid_layout(cm.positions_um)
            data["fs_hz"] = float(loop.implant.fs_hz)
            if loop.fx.is_calibrated:
                cal = loop.fx.calibration_
                self._calib_obj = cal
                data["noise_rms_uv"] = finite_list(loop.fx.noise_rms_uv_, 2)
                data["bad"] = [int(i) for i in np.flatnonzero(loop.fx.bad_channels_)]
        return Part(self._meta_version, data)

    def _fault(self, where: str, exc: BaseException) -> None:
        self.n_faults += 1
        loop = getattr(self, "_loop", None)
        self.faults.append({"bin": self.n_bins, "t_s": None if loop is None else round(float(loop.t_s), 3),
                            "where": where, "message": f"{type(exc).__name__}: {exc}"[:500]})

    # ================================================================== helpers for callers
    def latency_history(self, since_bin: int = 0, until_bin: int | None = None) -> dict[str, np.ndarray]:
        """Per-bin timing of bins ``[since_bin, until_bin)`` (within the kept history).

        Returns
        -------
        dict
            ``loop_us`` (samples in → cursor updated, from :meth:`ClosedLoop.step_bin`; feature
            extraction only in idle bins), ``busy_us`` (the whole bin: commands, loop, snapshot),
            ``late_us`` (start of the bin after its samples were complete), ``missed`` (bool: the
            bin finished after the next bin's samples were complete).
        """
        until = self.n_bins if until_bin is None else min(int(until_bin), self.n_bins)
        cap = self._hist["loop_us"].size
        since = max(int(since_bin), until - cap, 0)
        idx = np.arange(since, until) % cap
        out = {k: v[idx].copy() for k, v in self._hist.items()}
        out["missed"] = self._hist_missed[idx].copy()
        return out

    def wait_for(self, predicate: Callable[[Snapshot], bool], timeout_s: float = 10.0, poll_s: float = 0.01) -> Snapshot:
        """Poll :attr:`snapshots` until ``predicate(snapshot)`` is true; return that snapshot.

        Raises
        ------
        TimeoutError
            After ``timeout_s`` seconds, naming the last state seen.
        """
        t_end = time.monotonic() + timeout_s
        snap = None
        while True:
            snap = self.snapshots.get()
            if snap is not None and predicate(snap):
                return snap
            if time.monotonic() > t_end:
                st = None if snap is None else snap.fast.get("state")
                raise TimeoutError(f"condition not met within {timeout_s:g} s (last state {st!r})")
            time.sleep(poll_s)


def _metrics_summary(m: dict | None) -> dict | None:
    if m is None:
        return None
    drop = {"per_target", "pgn", "seconds_per_move", "seconds_to_pickup"}
    return jsonable({k: v for k, v in m.items() if k not in drop})


def _grid_layout(pos: np.ndarray) -> dict:
    """Column and row of each electrode from its position (a square grid by index if positions clash)."""
    pos = np.asarray(pos, dtype=float)
    n = pos.shape[0]
    xs = np.unique(np.round(pos[:, 0], 3))
    ys = np.unique(np.round(pos[:, 1], 3))
    col = np.searchsorted(xs, np.round(pos[:, 0], 3))
    row = np.searchsorted(ys, np.round(pos[:, 1], 3))
    if len({(int(c), int(r)) for c, r in zip(col, row)}) < n or xs.size * ys.size > 16 * n:
        nc = int(math.ceil(math.sqrt(n)))
        col, row = np.arange(n) % nc, np.arange(n) // nc
        return {"cols": nc, "rows": int(math.ceil(n / nc)), "col": col.tolist(), "row": row.tolist()}
    return {"cols": int(xs.size), "rows": int(ys.size), "col": col.tolist(), "row": row.tolist()}


def build_loop(cfg: dict) -> Any:
    """The in-thread :class:`~cortexlink.tasks.loop.ClosedLoop` a validated session describes (the
    operator UI's loop until it becomes a client of the runtime graph)."""
    from cortexlink.sim import SimulatedImplant
    from cortexlink.sim.participant import ParticipantConfig, SimulatedParticipant
    from cortexlink.tasks.loop import ClosedLoop

    imp_cfg = dict(cfg["implant"])
    preset = imp_cfg.pop("preset")
    implant = None
    if cfg["decoder"]["kind"] != "perfect":
        implant = SimulatedImplant.from_preset(preset, **{"seed": cfg["seed"], **imp_cfg})
    dt = cfg["loop"]["dt_s"]
    part_cfg = ParticipantConfig(**cfg["participant"]) if cfg["participant"] else None
    participant = SimulatedParticipant(part_cfg, seed=cfg["seed"], dt_s=dt)
    fk = cfg["loop"].get("feature_kinds")
    from cortexlink.tasks.cursor import CursorEffector

    effector = CursorEffector(dt_s=dt, **cfg.get("effector", {}))
    return ClosedLoop(implant, participant=participant, effector=effector, dt_s=dt,
                      feature_kinds=tuple(fk) if fk else None, seed=cfg["seed"])
