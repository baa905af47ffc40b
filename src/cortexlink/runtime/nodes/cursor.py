"""``cursor``: the cursor effector, the block schedule of tasks and the watchdog gate."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.messages import BinRow, Control, CursorState, Gate
from cortexlink.core.validation import check_keys
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.nodes._common import _NAN2, logger
from cortexlink.runtime.nodes._operator import CALIBRATION_TASKS, OperatorMixin, finite_or_none
from cortexlink.runtime.stats import LatencyStats
from cortexlink.tasks.cursor import AUTOPILOT_SPEED, cursor_command
from cortexlink.tasks.schedule import TASK_BLOCKS

__all__ = ["CursorNode"]


class _Block:
    def __init__(self, spec: dict, task: Any, mode: str, n_max: int, t_start: float, start_bin: int) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.kind = spec["kind"]
        self.task = task
        self.mode = mode
        self.n_max = n_max
        self.t_start = t_start
        self.start_bin = start_bin
        self.n = 0
        self.prev_c = 0.0
        self.events: list = []
        self.bins: list[int] = []
        self.cursor_xy: list = []
        self.cursor_velocity: list = []
        self.target_xy: list = []
        self.on_target: list = []
        self.latency = LatencyStats(1 << 17)
        self.n_halted = 0
        self.n_mouse = 0                   # bins the operator's pointer drove (not kept for ReFIT)

    @property
    def done(self) -> bool:
        return self.n >= self.n_max or bool(self.task.done)


@register_node
class CursorNode(OperatorMixin, Node):
    """Cursor and task: moves a :class:`~cortexlink.tasks.CursorEffector` once per bin, runs a
    schedule of task blocks, and is the watchdog's gate (velocity zero, no clicks while halted;
    held, with a last halted gate, from the moment the run stops: :meth:`stopping`).

    Parameters (``params``)
    -----------------------
    blocks : list of dict
        The session's block list (``kind``: calibration, fit, closed_loop, refit, evaluation;
        ``task``, ``seconds``, ``max_seconds``, ``task_params``, ``name``; see
        :mod:`cortexlink.tasks.schedule`). Empty: free-running cursor driven by the decoder.
    seed : int
        Seed of the tasks.
    effector : dict
        ``gain``, ``smoothing``, ``refractory_s``.
    autopilot_speed : float
        Peak speed of the open-loop calibration cursor, screen units/s (default
        :data:`cortexlink.tasks.cursor.AUTOPILOT_SPEED`).
    decoder_kind : str
        The decoder's kind (validation of ``fit``/``refit`` blocks). ``perfect``: the cursor
        follows the participant's intent (the ceiling); the ``intent`` input then only clocks the
        bins (a ``bin_clock`` source), there is no warm-up and nothing is fitted.
    stop_when_done : bool
        End the run when the schedule is finished.
    block_defaults : dict
        Interactive mode: default ``seconds``, ``max_seconds`` and ``task_params`` of the blocks
        the operator starts, by ``calibration``, ``centre_out``, ``webgrid``, ``chess``
        (``calibration`` also ``task``: centre_out, the default, or webgrid).

    Interactive mode (no ``blocks``, the ``operator`` input connected to ``operator.commands``):
    the operator begins and ends blocks, fits and refits, and drives the E-STOP and mouse mode
    (:mod:`cortexlink.runtime.nodes._operator`); between blocks the cursor rests and the loop
    keeps running. With a schedule, ``estop``/``release`` and mouse mode are still taken.

    The first bins (until the feature extractor is calibrated) are the warm-up; then each block
    resets its task, the cursor and the participant, and each bin moves the cursor by
    :func:`~cortexlink.tasks.cursor.cursor_command` (``open``: to the target by itself; ``closed``:
    the decoded velocity and click; ``perfect``: the participant's intent). The end-to-end latency
    of each update (cursor update time minus the time the bin's last chunk entered the graph) is
    kept per block. Each bin of a block is published on ``bins`` (one row of a
    :class:`~cortexlink.tasks.trace.BlockTrace`, for the ``trace`` and ``recorder`` nodes).
    """

    kind = "cursor"
    TICKS = True
    INPUTS = {
        "intent": PortSpec(maxlen=64, policy="drop_oldest", required=True, message="decoded_intent",
                           doc="decoder intent"),
        "participant": PortSpec(maxlen=1024, policy="drop_oldest", message="participant_intent",
                                doc="participant intent (open loop, clicks)"),
        "operator": PortSpec(maxlen=256, policy="drop_oldest", message="operator_command",
                             doc="operator commands (operator.commands)"),
    }
    OUTPUTS = {"state": "cursor_state", "control": "control", "gate": "gate", "events": "events", "bins": "bin_row"}
    PARAMS = {
        "blocks": Param("list", []),
        "seed": Param("int", 0, lo=0),
        "effector": Param("dict", {}),
        "autopilot_speed": Param("float", AUTOPILOT_SPEED, gt=0.0),
        "decoder_kind": Param("str", "refit_kalman"),
        "stop_when_done": Param("bool", True),
        "block_defaults": Param("dict", {}),
    }

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.tasks.cursor import CursorEffector
        from cortexlink.tasks.schedule import check_blocks

        path = f"nodes.{name}.params"
        eff = params["effector"]
        check_keys(f"{path}.effector", eff, ("gain", "smoothing", "refractory_s", "dwell_s"))
        check_keys(f"{path}.block_defaults", params["block_defaults"], ("calibration", "centre_out", "webgrid", "chess"))
        for k, v in params["block_defaults"].items():
            if not isinstance(v, dict):
                raise ConfigError(f"{path}.block_defaults.{k} must be a mapping; got {v!r}")
            check_keys(f"{path}.block_defaults.{k}", v,
                       ("seconds", "max_seconds", "task_params") + (("task",) if k == "calibration" else ()))
        cal_task = (params["block_defaults"].get("calibration") or {}).get("task", "centre_out")
        if cal_task not in CALIBRATION_TASKS:
            raise ConfigError(f"{path}.block_defaults.calibration.task must be one of {list(CALIBRATION_TASKS)}; "
                              f"got {cal_task!r}")
        try:
            CursorEffector(dt_s=graph["bin_ms"] / 1000.0, **eff)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{path}.effector is invalid: {exc}") from exc
        if params["blocks"]:
            params["blocks"] = check_blocks(params["blocks"], decoder_kind=params["decoder_kind"],
                                            seed=params["seed"], prefix=path)
            if any(b["kind"] in TASK_BLOCKS for b in params["blocks"]) \
                    and "participant" not in graph["nodes"][name]["inputs"]:
                raise ConfigError(f"nodes.{name}.inputs.participant must be connected when blocks run tasks "
                                  "(the participant's intent drives open-loop clicks)")

    def setup(self) -> None:
        from cortexlink.runtime.watchdog import Watchdog, WatchdogConfig
        from cortexlink.tasks.cursor import CursorEffector

        if getattr(self, "effector", None) is not None:
            # a restart keeps the schedule, the task and the cursor; the loop resumes at the next bin
            self._halted_pub = None
            return
        self.dt = self.ctx.bin_ms / 1000.0
        self.effector = CursorEffector(dt_s=self.dt, **self.params["effector"])
        self.watchdog = Watchdog(WatchdogConfig.from_dict(self.ctx.graph.get("watchdog")), self._wd_emit, self.name)
        self._check_ns = int(self.watchdog.config.check_interval_ms * 1e6)
        self._next_check = 0
        self.blocks = list(self.params["blocks"])
        self._i = 0
        self.block: _Block | None = None
        self.perfect = self.params["decoder_kind"] == "perfect"
        self.warm = bool(self.blocks) and not self.perfect
        self.finished = False
        self.t_s = 0.0
        self._part: dict[int, dict] = {}
        self._closed_since_fit: list[dict] = []
        #: Every calibration block's kinematics (what a lab records; sent with each ``fit``).
        self.calibration_kinematics: list[dict] = []
        self.results: list[dict] = []
        #: Per finished block: bins, cursor_xy, target_xy, on_target, events (in-process inspection).
        self.traces: list[dict] = []
        #: Every task block's task object by block name (in-process inspection: PGN, metrics).
        self.tasks: dict[str, Any] = {}
        self.latency = LatencyStats(1 << 20)
        self.n_updates = 0
        self.n_halted_bins = 0
        self.n_not_ready = 0
        self.n_wait_bins = 0
        self._await_version: int | None = None
        self._last_version = 0
        self.last_sample = -1
        self._halted_pub: Any = False
        self._stop_reason: str | None = None       # set when the run stops: every later bin is held
        self._decoder_node = self.ctx.producer(self.name, "intent") or "decoder"
        # the age of a decoder output (now minus when its data entered the graph) is checked in real
        # time where every process shares this host's monotonic clock (no node started elsewhere)
        self._ages = self.ctx.realtime and all(s.get("where") != "external"
                                               for s in self.ctx.graph.get("nodes", {}).values())
        self.subs_out_bins = self.has_consumers("bins")
        self._op_setup()
        if self.interactive:
            self.warm = not self.perfect
        begin = False
        if self.perfect and self.blocks:
            # no implant to warm up: the first block begins with the first bin
            begin = self._begin_next(0, 0, 0)
        self._publish_state(0, sample=0, t_enter=0, begin=begin, clicked=False)

    def _wd_emit(self, kind: str, **kw: Any) -> None:
        self.ctx.fault(kind, **kw)

    def stopping(self, reason: str) -> None:
        """The run stops (SR-12): hold the cursor before anything is torn down. A final halted gate
        (zero velocity, clicks suppressed; its faults end with ``run_stopped``) goes out now, and
        every bin still consumed after it is held."""
        if getattr(self, "watchdog", None) is None:
            return
        self._stop_reason = reason
        self._publish_gate(self.last_sample)

    # -- schedule ---------------------------------------------------------------------------
    def _begin_next(self, next_bin: int, sample: int, t_enter: int) -> bool:
        """Send the fit/refit commands up to the next task block and begin it at ``next_bin``.

        With ``clock: realtime`` a block after a fit waits (the participant rests, the cursor
        stays put) until the decoder's output carries the new version: the fit may run in a
        thread for seconds. With ``clock: fast`` the fit is done before the next bin, so the
        block begins at once.
        """
        from cortexlink.tasks.schedule import block_mode, make_task

        n_fits = 0
        while self._i < len(self.blocks):
            b = self.blocks[self._i]
            kind = b["kind"]
            if kind in ("fit", "refit") and self.perfect:
                self._i += 1
                self.results.append({"name": b["name"], "kind": kind, "note": "perfect decoder: nothing to fit"})
                continue
            if kind in ("fit", "refit"):
                self._i += 1
                msg = Control(kind, b["name"], blocks=tuple(self._closed_since_fit) if kind == "refit"
                              else tuple(self.calibration_kinematics))
                self.emit("control", msg, sample=sample, t_enter_ns=t_enter)
                self._closed_since_fit = []
                self.results.append({"name": b["name"], "kind": kind})
                n_fits += 1
                continue
            if n_fits and self.ctx.realtime:
                self._await_version = self._last_version + n_fits
                self.block = None
                return False
            self._i += 1
            task = make_task(b["task"], b["task_params"], seed=self.params["seed"])
            self._start_block(b, task, block_mode(kind, self.params["decoder_kind"]), next_bin, sample, t_enter)
            return True
        self.block = None
        self.finished = True
        return False

    def _start_block(self, spec: dict, task: Any, mode: str, next_bin: int, sample: int, t_enter: int) -> _Block:
        """Begin a task block (from the schedule or an operator command) at ``next_bin``: reset the
        task and the cursor, tell the decoder (``control: begin``) and the recorders (``block_start``)."""
        from cortexlink.tasks.schedule import block_bins

        task.reset()
        self.effector.reset()
        self.block = _Block(spec, task, mode, block_bins(spec, self.dt), self.t_s, next_bin)
        self.tasks[spec["name"]] = task
        self.emit("control", Control("begin", spec["name"], spec["kind"], mode, next_bin),
                  sample=sample, t_enter_ns=t_enter)
        self.emit("events", {"kind": "block_start", "name": spec["name"], "block_kind": spec["kind"], "mode": mode,
                             "task": spec["task"], "bin": next_bin, "n_max": self.block.n_max},
                  sample=sample, t_enter_ns=t_enter)
        return self.block

    def _waiting(self) -> bool:
        return self._await_version is not None

    def _end_block(self, sample: int, t_enter: int, reason: str = "done") -> dict:
        from cortexlink.core.jsonutil import jsonable
        from cortexlink.runtime.nodes._operator import metrics_summary

        blk = self.block
        elapsed = self.t_s - blk.t_start
        metrics = jsonable(blk.task.metrics(elapsed if elapsed > 0 else self.dt))    # stopped before a bin
        info = {"name": blk.name, "kind": blk.kind, "task": blk.spec["task"], "mode": blk.mode,
                "seconds": blk.n * self.dt, "n_bins": blk.n, "metrics": metrics, "n_halted_bins": blk.n_halted,
                "loop_latency_ms": blk.latency.summary(), "reason": reason}
        n_mouse = blk.n_mouse
        self.results.append(info)
        self.emit("control", Control("end", blk.name), sample=sample, t_enter_ns=t_enter)
        self.emit("events", {**info, "kind": "block_end", "block_kind": blk.kind}, sample=sample, t_enter_ns=t_enter)
        self.traces.append({"name": blk.name, "bins": np.asarray(blk.bins, np.int64),
                            "cursor_xy": np.asarray(blk.cursor_xy).reshape(-1, 2),
                            "target_xy": np.asarray(blk.target_xy).reshape(-1, 2),
                            "on_target": np.asarray(blk.on_target, bool), "events": blk.events})
        if blk.kind == "calibration" and blk.n > 0:
            self.n_calibration_blocks += 1
            self.calibration_kinematics.append({
                "name": blk.name, "bins": np.asarray(blk.bins, np.int64), "cursor_xy": np.asarray(blk.cursor_xy),
                "cursor_velocity": np.asarray(blk.cursor_velocity), "target_xy": np.asarray(blk.target_xy),
                "dt_s": self.dt})
        if blk.kind == "closed_loop" and n_mouse:
            info["note"] = "mouse mode was used: not kept for ReFIT"
        elif blk.kind == "closed_loop" and blk.mode == "closed" and blk.n > 0:
            self._closed_since_fit.append({
                "name": blk.name, "bins": np.asarray(blk.bins, np.int64), "cursor_xy": np.asarray(blk.cursor_xy),
                "target_xy": np.asarray(blk.target_xy), "on_target": np.asarray(blk.on_target), "dt_s": self.dt})
        logger.info("block %s: %d bins (%.1f s), metrics %s", blk.name, blk.n, elapsed, metrics)
        self.block = None
        self.last_block = {k: info[k] for k in ("name", "kind", "task", "mode", "n_bins", "seconds", "reason")}
        self.last_block["metrics"] = metrics_summary(metrics)
        if "note" in info:
            self.last_block["note"] = info["note"]
        self.publish_slow(force=True)
        return self.last_block

    # -- outputs ------------------------------------------------------------------------
    def _publish_state(self, next_bin: int, *, sample: int, t_enter: int, begin: bool, clicked: bool) -> None:
        blk = self.block
        xy = self.effector.xy
        v = self.effector.velocity
        state = CursorState(next_bin, self.t_s, (float(xy[0]), float(xy[1])), (float(v[0]), float(v[1])),
                            bool(clicked), bool(self.watchdog.halted or self.estop or self._stop_reason is not None),
                            None if blk is None else blk.name, None if blk is None else blk.mode, bool(begin),
                            None if blk is None else blk.task.current_target(), self.finished,
                            self.op_view() if self.interactive else None)
        self.emit("state", state, sample=sample, t_enter_ns=t_enter)

    def _publish_gate(self, sample: int) -> None:
        stop = self._stop_reason
        halted = self.watchdog.halted or stop is not None
        pub = "stopped" if stop is not None else halted
        if pub == self._halted_pub:
            return
        self._halted_pub = pub
        faults = tuple(dict(v) for v in self.watchdog.active.values())
        if stop is not None:
            faults += ({"kind": "run_stopped", "node": self.name, "message": f"the run stops: {stop}",
                        "sample": sample},)
        self.emit("gate", Gate(halted, (0.0, 0.0) if halted else None, halted, faults), sample=sample, t_enter_ns=0)

    # -- step ---------------------------------------------------------------------------
    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox.get("operator", ()):
            self._operator(m.payload, self.last_sample)
        for m in inbox.get("participant", ()):
            self._part[m.payload.bin] = m.payload
        if now_ns >= self._next_check:
            self._next_check = now_ns + self._check_ns
            self.watchdog.check_health(now_ns, self.ctx.health(), self.last_sample)
            self._publish_gate(self.last_sample)
        for m in inbox.get("intent", ()):
            self._bin(m, now_ns)
        if len(self._part) > 4096:
            for k in sorted(self._part)[:-1024]:
                del self._part[k]

    def _bin(self, m: Message, now_ns: int) -> None:
        g = m.payload.bin
        if self.interactive:
            self._jobs(m.payload)
            blk = self.block
            if blk is None or blk.mode != "closed" or self.mouse:
                # the pipeline runs; its output is not used
                self.watchdog.output_seen(now_ns, m.sample, self._age(m))
        elif m.payload.n_jobs > self._jobs_seen:
            self._scheduled_job_done(m.payload.n_jobs, m.sample)
        if self.estop and self.estop_bin is None:
            self.estop_bin = g                     # the first bin held by the E-STOP
        self._loop_us = None
        self._bin_step(m, now_ns)
        self.last_bin = g
        self.publish_slow()

    def _age(self, m: Message) -> int | None:
        """How long ago the data of output ``m`` entered the graph (None where not known)."""
        return time.monotonic_ns() - m.t_enter_ns if self._ages and m.t_enter_ns else None

    def _scheduled_job_done(self, n_jobs: int, sample: int) -> None:
        """A fit or refit of the schedule finished; one that failed ends the run (the cursor is
        held first): the blocks after it would run on no decoder, or wait for one forever."""
        self._jobs_seen = n_jobs
        job = self.ctx.bus.get_info(f"{self._decoder_node}/job") or {}
        if job.get("ok", True) or job.get("operator"):
            return
        msg = f"the scheduled {job.get('job', 'fit')} of decoder {self._decoder_node} failed: {job.get('error')}"
        self.watchdog.latch("fit_failed", self._decoder_node, msg, sample, error=job.get("error"))
        self._publish_gate(sample)
        self.ctx.fail_run("fit_failed", node=self._decoder_node, message=msg, error=job.get("error"))

    def _bin_step(self, m: Message, now_ns: int) -> None:
        p = m.payload
        g = p.bin
        self.last_sample = m.sample
        self._last_version = max(self._last_version, p.version)
        if self._await_version is not None:
            # between blocks, waiting for the decoder's new fit (realtime): the participant rests
            self.t_s += self.dt
            self.n_wait_bins += 1
            begin = False
            if self._last_version >= self._await_version:
                self._await_version = None
                begin = self._begin_next(g + 1, m.sample, m.t_enter_ns)
                if not begin and not self._waiting() and self.params["stop_when_done"]:
                    self.ctx.request_stop(f"{self.name}: schedule finished")
            self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=begin, clicked=False)
            return
        if self.warm:
            self.t_s += self.dt
            if p.features_valid:
                self.warm = False
                begin = False if self.interactive else self._begin_next(g + 1, m.sample, m.t_enter_ns)
                if not begin and not self._waiting() and self.params["stop_when_done"] and not self.interactive:
                    self.ctx.request_stop(f"{self.name}: schedule finished")
                self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=begin, clicked=False)
            else:
                self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=False, clicked=False)
            return
        blk = self.block
        if blk is None and (self.blocks or self.interactive):
            # schedule finished, or between the operator's blocks: the cursor rests
            if self.interactive:
                self.t_s += self.dt
                self._decoded, self._proba, self._clicked = None, None, False
            self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=False, clicked=False)
            return
        if not p.features_valid and blk is None:
            return                                   # free-running: extractor still calibrating
        target = blk.task.current_target() if blk is not None else None
        part = self._part.pop(g, None)
        c_int = 0.0 if part is None else part.click
        mode = "closed" if blk is None else blk.mode
        mouse = self.mouse and blk is not None
        if mouse:
            blk.n_mouse += 1
            ok = True                                # the operator's pointer drives, not the decoder
        elif mode == "closed":
            if not p.ready:
                ok = False
                self.n_not_ready += 1
            else:
                ok = self.watchdog.check_output(now_ns, np.asarray(p.velocity, dtype=float), p.proba,
                                                node=self._decoder_node, sample=m.sample, age_ns=self._age(m))
        else:
            ok = True
        halted = self.watchdog.halted or not ok or self.estop or self._stop_reason is not None
        v_int = _NAN2 if part is None else part.velocity
        if mouse:
            mv = self.mouse_velocity()
            xy, clicked, vel = cursor_command(self.effector, "closed", decoded_velocity=mv,
                                              decoded_click=self.take_click(), halt=halted)
        else:
            xy, clicked, vel = cursor_command(
                self.effector, mode, target=target, decoded_velocity=p.velocity, decoded_click=bool(p.click),
                intended_velocity=v_int, click_intent=c_int, prev_click_intent=blk.prev_c if blk is not None else 0.0,
                autopilot_speed=self.params["autopilot_speed"], halt=halted)
        if self.interactive:
            dv = np.asarray(p.velocity, dtype=float) if mode == "closed" else None
            self._decoded = [float(dv[0]), float(dv[1])] if dv is not None and np.all(np.isfinite(dv)) else None
            self._proba = finite_or_none(p.proba) if mode == "closed" else None
            self._clicked = bool(clicked)
        # the velocity the bin asked for (non-finite: the effector held it); under the mouse the pointer's
        commanded = mv if mouse else p.velocity if mode == "closed" else v_int if mode == "perfect" else vel
        if halted or not np.all(np.isfinite(commanded)):
            self.n_halted_bins += 1
            if blk is not None:
                blk.n_halted += 1
        t_upd = time.monotonic_ns()
        self.n_updates += 1
        if m.t_enter_ns and m.sample > self.ctx.stats_from_sample:
            lat = t_upd - m.t_enter_ns
            self.latency.add(lat)
            self._loop_us = lat / 1e3
            if blk is not None:
                blk.latency.add(lat)
            if lat > self.ctx.deadline_ns:
                self.n_missed += 1
        self._publish_gate(m.sample)
        self.t_s += self.dt
        begin = False
        if blk is not None:
            ev = blk.task.update(self.t_s, np.asarray(xy, dtype=float), bool(clicked))
            blk.events.extend(ev)
            for e in ev:
                self.emit("events", {"kind": "task", "block": blk.name, "t_s": e.t_s, "event": e.kind,
                                     "data": e.data}, sample=m.sample, t_enter_ns=m.t_enter_ns)
            blk.bins.append(g)
            blk.cursor_xy.append((float(xy[0]), float(xy[1])))
            va = self.effector.velocity
            blk.cursor_velocity.append((float(va[0]), float(va[1])))
            if target is not None:
                txy = (float(target.xy[0]), float(target.xy[1]))
                on = bool(float(np.hypot(*(np.asarray(xy) - np.asarray(target.xy)))) <= target.radius)
            else:
                txy, on = _NAN2, False
            blk.target_xy.append(txy)
            blk.on_target.append(on)
            if self.subs_out_bins:
                dv = p.velocity if mode == "closed" else _NAN2
                proba = p.proba if mode == "closed" else None
                self.emit("bins", BinRow(
                    blk.name, blk.n, g, int(m.sample), self.t_s, (float(xy[0]), float(xy[1])),
                    (float(vel[0]), float(vel[1])), intended_velocity=tuple(v_int),
                    click_intent=c_int if part is not None else math.nan, decoded_velocity=tuple(dv),
                    click_proba=math.nan if proba is None else float(proba), clicks=bool(clicked), target_xy=txy,
                    target_radius=math.nan if target is None else float(target.radius), on_target=on,
                    decode_latency_us=p.decode_us if mode == "closed" else math.nan,
                    loop_latency_us=(t_upd - m.t_enter_ns) / 1e3 if (m.t_enter_ns and mode != "perfect")
                    else math.nan, halted=bool(halted)), sample=m.sample, t_enter_ns=m.t_enter_ns)
            blk.prev_c = c_int
            blk.n += 1
            if blk.done and self.interactive:
                self._end_block(m.sample, m.t_enter_ns)
            elif blk.done:
                self._end_block(m.sample, m.t_enter_ns)
                begin = self._begin_next(g + 1, m.sample, m.t_enter_ns)
                if not begin and not self._waiting() and self.params["stop_when_done"]:
                    self.ctx.request_stop(f"{self.name}: schedule finished")
        self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=begin, clicked=clicked)

    def summary(self) -> dict:
        return {"blocks": self.results, "n_updates": self.n_updates, "n_halted_bins": self.n_halted_bins,
                "n_not_ready": self.n_not_ready, "n_wait_bins": self.n_wait_bins, "loop_latency_ms": self.latency.summary(),
                "faults_raised": self.watchdog.n_raised, "finished": self.finished}
