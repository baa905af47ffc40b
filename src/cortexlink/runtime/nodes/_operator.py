"""The cursor node's operator commands (interactive mode): blocks, fits, E-STOP, mouse mode.

A cursor node with an ``operator`` input (the ``operator.commands`` topic) and no ``blocks``
runs no schedule: the operator begins and ends blocks, asks the decoder to fit, and can stop
the cursor. Every command is applied between bins (the node reads its ``operator`` input
before its ``intent`` input) and answered on ``operator.replies``; a command that is not
possible in the current state is answered with status 409 and the reason.

========================  ===================================================================
``calibrate``             open-loop block (``seconds``; ``task`` centre_out or webgrid, default
                          the session's calibration task); its bins train the decoder
``start``                 a task block (``task``, ``seconds``, ``task_params``): closed loop
                          once fitted, ``perfect`` with the perfect decoder, open loop under
                          the operator's mouse before a fit
``stop``                  end the running block
``fit`` / ``refit``       control message to the decoder (fit on every calibration block;
                          ReFIT from the closed-loop blocks since the last fit)
``estop`` / ``release``   latch / release a halt: from the next bin the cursor is held and no
                          click is accepted (works in every state, also in schedule mode); each
                          is a fault event on ``runtime.faults`` (kind ``estop``, severity
                          ``halt`` / ``clear``, at the sample of the last bin before it): logged
                          and recorded. Not a watchdog fault: nothing but ``release`` clears it
``mouse``                 mouse mode on/off; ``mouse_move`` the pointer; ``mouse_click`` a click
========================  ===================================================================
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.messages import Control

__all__ = ["OperatorMixin", "CURSOR_COMMANDS", "MAX_BLOCK_S", "TASK_NAMES"]

CURSOR_COMMANDS = frozenset({"calibrate", "start", "stop", "fit", "refit", "estop", "release", "mouse",
                             "mouse_move", "mouse_click"})
#: Commands that act in schedule mode too.
_ALWAYS = frozenset({"estop", "release", "mouse", "mouse_move", "mouse_click"})
MAX_BLOCK_S = 600.0
TASK_NAMES = ("centre_out", "webgrid", "chess")
#: Tasks an open-loop calibration block can run (the autopilot moves the cursor to their targets).
CALIBRATION_TASKS = ("centre_out", "webgrid")
_DEFAULT_SECONDS = {"centre_out": 60.0, "webgrid": 60.0, "chess": None}
#: How often (bins) the slower operator view (metrics, task info, counts) is published.
SLOW_EVERY = 10


class CommandRefused(Exception):
    """A command that cannot be applied now (answered with ``status``)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def metrics_summary(m: dict | None) -> dict | None:
    """Task metrics without the long per-target lists (for the operator view)."""
    from cortexlink.core.jsonutil import jsonable

    if m is None:
        return None
    drop = {"per_target", "pgn", "seconds_per_move", "seconds_to_pickup"}
    return jsonable({k: v for k, v in m.items() if k not in drop}, finite=True)


class OperatorMixin:
    """Operator state and commands of :class:`~cortexlink.runtime.nodes.cursor.CursorNode`."""

    def _op_setup(self) -> None:
        self.interactive = not self.blocks and "operator" in self.subs
        self.estop = False
        self.estop_bin: int | None = None
        self.estop_requested_after_bin: int | None = None
        self.mouse = False
        self.pointer: tuple[float, float] | None = None
        self._click_pending = False
        self.job: str | None = None
        self._jobs_seen = 0
        self.last_job: dict | None = None
        self.last_block: dict | None = None
        self.n_calibration_blocks = 0
        self.n_blocks = 0
        self.last_bin = -1
        self._decoded: Any = None
        self._proba: Any = None
        self._clicked = False
        self._slow_n = 0
        self.n_refits = 0
        self._loop_us: float | None = None
        self._estop_journal = self.ctx.journal(self.name) if "operator" in self.subs else None
        if self._estop_journal is not None:
            self._estop_restore()

    def _estop_restore(self) -> None:
        """In a child process (a journal is kept): the E-STOP latch as the operator last set it,
        so that a restart of this process releases nothing (SR-10). The last ``estop`` or
        ``release`` on ``operator.commands`` decides, also one sent while the process was down
        (a restarted process reads only what comes after its start); where the stream no longer
        holds one (it is trimmed), the last one this node applied, from its journal."""
        from cortexlink.runtime.wire import decode_message

        engaged = None
        for kind, values, _ in self._estop_journal.read():
            if kind == "estop":
                engaged = bool(values.get("engaged"))
        sub = self.subs["operator"]
        for fields in self.ctx.bus.journal_read(self.ctx.bus.stream_key(sub.topic)):
            cmd = decode_message(sub.topic, fields).payload
            name = cmd.get("cmd") if isinstance(cmd, dict) else None
            if name in ("estop", "release"):
                engaged = name == "estop"
        if engaged:
            self.estop = True
            self.estop_requested_after_bin = -1
            self._log_warning("EMERGENCY STOP still engaged after a restart of this process: the cursor is held "
                              "until it is released")

    @property
    def fitted(self) -> bool:
        """The decoder has a fitted version (always, for the perfect decoder)."""
        return self.perfect or self._last_version > 0

    # -- commands -----------------------------------------------------------------------------
    def _operator(self, cmd: dict, sample: int) -> None:
        name = cmd.get("cmd") if isinstance(cmd, dict) else None
        if name not in CURSOR_COMMANDS:
            return                                       # another node's command
        try:
            if not self.interactive and name not in _ALWAYS:
                raise CommandRefused(f"{name}: this cursor runs a fixed block schedule; only estop, release and "
                                     "mouse mode are taken")
            result = getattr(self, f"_cmd_{name}")(cmd, sample)
        except CommandRefused as exc:
            self.reply(cmd, error=str(exc), status=exc.status)
            return
        except Exception as exc:  # noqa: BLE001 - a command never fails the node
            self.reply(cmd, error=f"{name} failed: {type(exc).__name__}: {exc}", status=409)
            return
        self.reply(cmd, result)

    def _busy(self, name: str) -> None:
        if self.block is not None:
            raise CommandRefused(f"{name}: a {self.block.kind} block ({self.block.name!r}) is running; stop it first")
        if self.job is not None:
            raise CommandRefused(f"{name}: the {self.job} job is still running")
        if self.warm:
            raise CommandRefused(f"{name}: the implant's noise calibration is still running; try again in a moment")

    def _cmd_estop(self, cmd: dict, sample: int) -> dict:
        received = self.last_bin
        if not self.estop:
            self.estop = True
            self.estop_requested_after_bin = received
            self.estop_bin = None
            self.fault("estop", severity="halt", sample=sample, bin=received,
                       message=f"EMERGENCY STOP engaged by the operator after bin {received}: the cursor is held "
                               "and no click is accepted until it is released")
        if self._estop_journal is not None:
            self._estop_journal.append("estop", engaged=True, bin=received)
        return {"estop": True, "received_after_bin": received}

    def _cmd_release(self, cmd: dict, sample: int) -> dict:
        was = self.estop
        self.estop = False
        if was:
            self.fault("estop", severity="clear", sample=sample, bin=self.last_bin,
                       message=f"emergency stop released by the operator after bin {self.last_bin}")
        if self._estop_journal is not None:
            self._estop_journal.append("estop", engaged=False, bin=self.last_bin)
        return {"estop": False, "was_engaged": was}

    def _cmd_mouse(self, cmd: dict, sample: int) -> dict:
        self.mouse = bool(cmd.get("enabled"))
        if not self.mouse:
            self.pointer = None
            self._click_pending = False
        return {"mouse": self.mouse}

    def _cmd_mouse_move(self, cmd: dict, sample: int) -> dict:
        if not self.mouse:
            raise CommandRefused('mouse_move needs mouse mode; send {"cmd": "mouse", "enabled": true} first')
        self.pointer = (float(cmd["x"]), float(cmd["y"]))
        return {"pointer": list(self.pointer)}

    def _cmd_mouse_click(self, cmd: dict, sample: int) -> dict:
        if not self.mouse:
            raise CommandRefused('mouse_click needs mouse mode; send {"cmd": "mouse", "enabled": true} first')
        self._click_pending = True
        return {"click": True}

    def _cmd_stop(self, cmd: dict, sample: int) -> dict:
        if self.block is None:
            raise CommandRefused("stop: no block is running")
        info = self._end_block(sample, 0, reason="operator")
        return {"stopped": info}

    def _defaults(self, key: str) -> dict:
        return dict(self.params["block_defaults"].get(key) or {})

    def _cmd_calibrate(self, cmd: dict, sample: int) -> dict:
        if self.perfect:
            raise CommandRefused("calibrate: decoder 'perfect' needs no calibration (the session has no implant)")
        self._busy("calibrate")
        d = self._defaults("calibration")
        task_name = cmd.get("task") or d.get("task") or "centre_out"
        if task_name not in CALIBRATION_TASKS:
            raise CommandRefused(f"calibrate.task must be one of {list(CALIBRATION_TASKS)}; got {task_name!r}", 400)
        secs = float(cmd.get("seconds") or min(float(d.get("seconds") or 60.0), MAX_BLOCK_S))
        if cmd.get("task_params") is not None:
            params = dict(cmd["task_params"])
        elif d.get("task", "centre_out") == task_name and d.get("task_params") is not None:
            params = dict(d["task_params"])
        else:
            params = {"click": True} if task_name == "centre_out" else {}
        task = self._make_task(task_name, params, cmd)
        blk = self._begin_op("calibration", task, params, "open", secs, sample)
        return {"block": blk.name, "seconds": secs}

    def _cmd_start(self, cmd: dict, sample: int) -> dict:
        task = cmd.get("task")
        if task not in TASK_NAMES:
            raise CommandRefused(f"start.task must be one of {list(TASK_NAMES)}; got {task!r}", 400)
        d = self._defaults(task)
        params = dict(d.get("task_params") or {})
        params.update(cmd.get("task_params") or {})
        task_obj = self._make_task(task, params, cmd)
        secs = cmd.get("seconds", d.get("seconds", _DEFAULT_SECONDS[task]))
        self._busy("start")
        if self.perfect:
            mode = "perfect"
        elif self.fitted:
            mode = "closed"
        elif self.mouse:
            mode = "open"                  # the operator drives; the autopilot is overridden
        else:
            raise CommandRefused("start: the decoder is not fitted; run 'calibrate' and 'fit' first "
                                 "(or turn on mouse mode to try the task yourself)")
        if secs is None and task != "chess":
            secs = 60.0
        blk = self._begin_op("closed_loop", task_obj, params, mode, None if secs is None else float(secs), sample)
        return {"block": blk.name, "task": task, "mode": mode, "seconds": secs}

    def _cmd_fit(self, cmd: dict, sample: int) -> dict:
        self._busy("fit")
        if self.perfect:
            raise CommandRefused("fit: decoder 'perfect' has nothing to fit")
        if not self.n_calibration_blocks:
            raise CommandRefused("fit: no calibration block yet; run 'calibrate' first")
        self.emit("control", Control("fit", f"fit-{self.n_blocks}", blocks=tuple(self.calibration_kinematics), job=True),
                  sample=sample, t_enter_ns=0)
        self._closed_since_fit = []
        self.job = "fit"
        return {"job": "fit", "n_calibration_blocks": self.n_calibration_blocks}

    def _cmd_refit(self, cmd: dict, sample: int) -> dict:
        self._busy("refit")
        kind = self.params["decoder_kind"]
        if kind != "refit_kalman":
            raise CommandRefused(f"refit: needs decoder kind 'refit_kalman'; this session uses {kind!r}")
        if not self.fitted:
            raise CommandRefused("refit: the decoder is not fitted; run 'calibrate' and 'fit' first")
        if not self._closed_since_fit:
            raise CommandRefused("refit: no closed-loop block since the last fit; run a closed-loop block "
                                 "('start') first")
        n = len(self._closed_since_fit)
        self.emit("control", Control("refit", f"refit-{self.n_blocks}", blocks=tuple(self._closed_since_fit),
                                     job=True), sample=sample, t_enter_ns=0)
        self._closed_since_fit = []
        self.job = "refit"
        return {"job": "refit", "n_closed_loop_blocks": n}

    def _make_task(self, task_name: str, params: dict, cmd: dict) -> Any:
        from cortexlink.tasks.schedule import make_task

        try:
            return make_task(task_name, params, seed=self.params["seed"])
        except (ConfigError, TypeError, ValueError) as exc:
            raise CommandRefused(f"{cmd.get('cmd')}: invalid task_params for {task_name}: {exc}", 400) from None

    def _begin_op(self, kind: str, task: Any, params: dict, mode: str, seconds: float | None, sample: int) -> Any:
        task_name = task.name
        self.n_blocks += 1
        name = f"{self.n_blocks:02d}-{'calibration' if kind == 'calibration' else task_name}"
        spec = {"name": name, "kind": kind, "task": task_name, "seconds": seconds, "max_seconds": MAX_BLOCK_S,
                "task_params": params}
        blk = self._start_block(spec, task, mode, self.last_bin + 1, sample, 0)
        self._slow_n = 0
        return blk

    # -- per bin ------------------------------------------------------------------------------
    def _jobs(self, p: Any) -> None:
        """Notice a finished fit/refit from the decoder's ``n_jobs`` counter (an Intent)."""
        n = p.n_jobs
        if n > self._jobs_seen:
            self._jobs_seen = n
            self.last_job = self.ctx.bus.get_info(f"{self._decoder_node}/job")
            self.job = None
            self._slow_n = 0
            lj = self.last_job or {}
            if lj.get("ok") and lj.get("job") == "refit":
                self.n_refits += 1

    def mouse_velocity(self) -> np.ndarray:
        """Velocity toward the operator's pointer (reached with an ~80 ms time constant, at most 4
        units/s)."""
        p = self.pointer
        if p is None:
            return np.zeros(2)
        v = (np.asarray(p, dtype=float) - np.asarray(self.effector.xy, dtype=float)) / 0.08
        sp = float(np.hypot(*v))
        return v * (4.0 / sp) if sp > 4.0 else v

    def take_click(self) -> bool:
        c, self._click_pending = self._click_pending, False
        return c

    def op_state(self) -> str:
        if self.warm:
            return "starting"
        if self.block is None:
            return "idle"
        return "calibrating" if self.block.kind == "calibration" else "closed_loop"

    def op_view(self) -> dict:
        """The operator's per-bin view (in the ``state`` message of an interactive cursor)."""
        blk = self.block
        out: dict[str, Any] = {
            "state": self.op_state(), "job": self.job, "estop": self.estop, "estop_bin": self.estop_bin,
            "estop_requested_after_bin": self.estop_requested_after_bin, "mouse": self.mouse,
            "fitted": self.fitted, "decoded": self._decoded, "click_proba": self._proba, "clicked": self._clicked,
            "block": None, "lit_cell": None, "chess": None, "target_idx": None, "loop_us": self._loop_us,
            "n_missed": self.n_missed}
        if blk is not None:
            task = blk.task
            out["block"] = {"name": blk.name, "kind": blk.kind, "task": task.name, "mode": blk.mode, "n": blk.n,
                            "n_max": blk.n_max, "elapsed_s": round(float(self.t_s - blk.t_start), 3)}
            if task.name == "webgrid":
                out["lit_cell"] = int(task.lit_cell)
            elif task.name == "centre_out":
                out["target_idx"] = int(task.current_target_idx)
            elif task.name == "chess":
                out["chess"] = {"stage": task.stage}
        return out

    def publish_slow(self, force: bool = False) -> None:
        """Publish the slower operator view as ``<name>/operator`` (every :data:`SLOW_EVERY` bins)."""
        if not self.interactive:
            return
        self._slow_n -= 1
        if self._slow_n > 0 and not force:
            return
        self._slow_n = SLOW_EVERY
        blk = self.block
        data: dict[str, Any] = {
            "decoder": {"kind": self.params["decoder_kind"], "fitted": self.fitted, "version": self._last_version,
                        "n_refits": self.n_refits},
            "counts": {"calibration_blocks": self.n_calibration_blocks,
                       "closed_loop_blocks_since_fit": len(self._closed_since_fit), "blocks": self.n_blocks},
            "last_job": self.last_job, "last_block": self.last_block, "metrics": None, "task_info": None,
            "t_s": self.t_s}
        if blk is not None:
            task = blk.task
            elapsed = max(float(self.t_s - blk.t_start), self.dt)
            if task.name == "chess":
                n_sel = 2 * task.n_moves + task.wrong_selections
                data["metrics"] = {"n_moves": task.n_moves, "wrong_selections": task.wrong_selections,
                                   "moves_per_minute": task.n_moves * 60.0 / elapsed,
                                   "selection_accuracy": (n_sel - task.wrong_selections) / n_sel if n_sel else None,
                                   "elapsed_s": elapsed}
                moves = [str(e.data.get("san", e.data.get("uci", "?"))) for e in blk.events
                         if e.kind in ("move", "opponent_move")]
                data["task_info"] = {"task": "chess", "fen": task.board.fen(), "moves": moves,
                                     "extent": list(task.board_extent), "color": task.participant_color,
                                     "max_moves": task.max_moves}
            else:
                data["metrics"] = metrics_summary(task.metrics(elapsed))
                if task.name == "webgrid":
                    data["task_info"] = {"task": "webgrid", "n": task.n, "workspace": list(task.workspace)}
                elif task.name == "centre_out":
                    data["task_info"] = {"task": "centre_out", "targets": task.target_positions.tolist(),
                                         "target_radius": float(task.target_radius)}
        self.ctx.bus.set_info(f"{self.name}/operator", data)

    def _log_warning(self, fmt: str, *args: Any) -> None:
        from cortexlink.runtime.nodes._common import logger

        logger.warning(fmt, *args)


def finite_or_none(v: Any) -> Any:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
