"""The speech task node's operator commands: the emergency stop of the brain-to-text loop.

A ``speech_task`` node with an ``operator`` input (the ``operator.commands`` topic) takes the
operator's E-STOP, like the cursor does (:mod:`cortexlink.runtime.nodes._operator`); the web UI
never serves a speech graph without it (:func:`cortexlink.web.graphs.check_operator_graph`).

========================  ===================================================================
``estop``                 latch a halt from the next bin on: the trial in progress is ended
                          and discarded (its features train nothing, its decode is no
                          result), the participant is shown rest cues, no new trial begins
                          (the block schedule is frozen where it stood) and no decoded text
                          is passed on (final texts that arrive are counted and dropped)
``release``               the schedule goes on from where it stood (the aborted sentence is
                          not attempted again)
others of the cursor      refused with 409: a speech session runs its block schedule
========================  ===================================================================

An aborted trial is closed for the decoders with a ``trial_begin`` of the same trial as a
calibration trial with no phonemes, then a ``trial_end``: the phoneme decoder keeps nothing
(no labels), keeps no greedy read-out for the phoneme error rate, and the word decoder finishes
its beam into a final text that the task ignores (the trial is in no block's results). The
``events`` output gets ``speech_trial_aborted`` (trial, sentence, bin, reason) and
``operator_estop`` / ``operator_release``.

What the operator page shows of the task (:mod:`cortexlink.runtime.nodes._uiview`) is published
as ``<name>/operator`` when it changes: E-STOP state, the task's state, the last decoded sentence
with its reference, the last finished block and its metrics.
"""

from __future__ import annotations

from typing import Any

from cortexlink.core.speech_messages import SpeechControl, SpeechCue

__all__ = ["SpeechOperatorMixin", "SPEECH_OPERATOR_COMMANDS"]

#: Commands the speech task answers (the recorder and dsp answer their own).
SPEECH_OPERATOR_COMMANDS = frozenset({"estop", "release"})
#: Commands of the cursor UI that a speech session refuses (so the UI gets a reason, not a timeout).
_REFUSED = frozenset({"calibrate", "start", "stop", "fit", "refit", "mouse", "mouse_move", "mouse_click"})


class SpeechOperatorMixin:
    """Operator state and commands of :class:`~cortexlink.runtime.nodes.speech.SpeechTaskNode`."""

    def _op_setup(self) -> None:
        if getattr(self, "_op_ready", False):           # a restart keeps the latch
            return
        self._op_ready = True
        self.estop = False
        self.estop_bin: int | None = None
        self.estop_requested_after_bin: int | None = None
        self.last_bin = -1
        self._op_sample = 0
        self.n_aborted = 0
        self.n_text_suppressed = 0
        self.last_final: dict | None = None
        self.last_block: dict | None = None
        self._op_key: Any = None
        self._op_version = 0

    # -- commands -----------------------------------------------------------------------------
    def _op_commands(self, inbox: dict) -> None:
        for m in inbox.get("operator", ()):
            cmd = m.payload
            name = cmd.get("cmd") if isinstance(cmd, dict) else None
            if name in SPEECH_OPERATOR_COMMANDS:
                try:
                    result = self._op_estop() if name == "estop" else self._op_release()
                except Exception as exc:  # noqa: BLE001 - a command never fails the node
                    self.reply(cmd, error=f"{name} failed: {type(exc).__name__}: {exc}", status=409)
                    continue
                self.reply(cmd, result)
            elif name in _REFUSED:
                self.reply(cmd, error=f"{name}: a speech session runs its block schedule (calibration, fit, "
                                      "evaluation); only estop and release are taken", status=409)

    def _op_estop(self) -> dict:
        received = self.last_bin
        if not self.estop:
            self.estop = True
            self.estop_requested_after_bin = received
            self.estop_bin = None
            self._op_log("EMERGENCY STOP engaged after bin %d", received)
            self._op_publish(force=True)
        return {"estop": True, "received_after_bin": received}

    def _op_release(self) -> dict:
        was = self.estop
        self.estop = False
        if was:
            self._op_log("emergency stop released after bin %d", self.last_bin)
            self.emit("events", {"kind": "operator_release", "bin": self.last_bin + 1}, sample=self._op_sample,
                      t_enter_ns=0)
            self._op_publish(force=True)
        return {"estop": False, "was_engaged": was}

    # -- per bin ------------------------------------------------------------------------------
    def _op_hold(self, t: Any, b: int, sample: int, t_enter: int) -> bool:
        """Called first for each bin's text; True when the E-STOP holds the task (the bin is done:
        a rest cue was sent)."""
        self.last_bin = b
        self._op_sample = sample
        if not self.estop:
            return False
        if self.estop_bin is None:                        # the first bin under the halt
            self.estop_bin = b + 1
            self.emit("events", {"kind": "operator_estop", "bin": b + 1,
                                 "requested_after_bin": self.estop_requested_after_bin},
                      sample=sample, t_enter_ns=t_enter)
            self._op_abort(b, sample, t_enter)
        if t.final:
            self.n_text_suppressed += 1                   # nothing decoded is passed on under a halt
        blk = getattr(self, "block", None)
        self.emit("cue", SpeechCue(b + 1, block=None if blk is None else blk.name), sample=sample, t_enter_ns=t_enter)
        self._op_publish()
        return True

    def _op_abort(self, b: int, sample: int, t_enter: int) -> None:
        """End and discard the trial in progress (see the module docstring)."""
        blk = getattr(self, "block", None)
        cur = None if blk is None else blk.current
        if cur is None:
            return
        for c in (SpeechControl("trial_begin", cur.trial, cur.sentence, blk.name, True, (), b),
                  SpeechControl("trial_end", cur.trial, cur.sentence, blk.name, True, (), b)):
            self.emit("control", c, sample=sample, t_enter_ns=t_enter)
        self.emit("events", {"kind": "speech_trial_aborted", "trial": cur.trial, "sentence": cur.sentence,
                             "bin": b, "reason": "estop"}, sample=sample, t_enter_ns=t_enter)
        self.n_aborted += 1
        self._done_trials.discard(cur.trial)
        # the block goes on with its next sentence after the release, after a rest of one inter-trial interval
        blk.abort()

    def _op_final(self, r: Any) -> None:
        """A decoded sentence the task recorded (shown beside its reference)."""
        self.last_final = {"trial": int(r.trial), "sentence": r.sentence, "text": r.text, "text_no_lm": r.text_no_lm,
                           "block": r.block}
        self._op_publish(force=True)

    def _op_block_end(self, info: dict) -> None:
        from cortexlink.runtime.nodes._operator import metrics_summary

        self.last_block = {"name": info["name"], "kind": info["kind"], "n_trials": info["n_trials"],
                           "seconds": info["seconds"], "metrics": metrics_summary(info.get("metrics"))}
        self._op_publish(force=True)

    def op_state(self) -> str:
        """``starting`` (warm-up), ``fitting``, ``calibration`` / ``evaluation`` (a block runs),
        ``idle`` (between blocks) or ``finished``."""
        if self._warm_left > 0:
            return "starting"
        if self.fitting:
            return "fitting"
        if self.block is not None:
            return "calibration" if self.block.train else "evaluation"
        return "finished" if self.finished else "idle"

    def _op_publish(self, force: bool = False) -> None:
        """``<name>/operator`` for the UI, when something it shows changed."""
        blk = self.block
        key = (self.estop, self.estop_bin, self.op_state(), None if blk is None else blk.name,
               None if blk is None else len(blk.results), self.n_aborted, self.n_text_suppressed)
        if key == self._op_key and not force:
            return
        self._op_key = key
        self._op_version += 1
        self.ctx.bus.set_info(f"{self.name}/operator", {
            "version": self._op_version, "estop": self.estop, "estop_bin": self.estop_bin,
            "estop_requested_after_bin": self.estop_requested_after_bin, "state": self.op_state(),
            "block": None if blk is None else {"name": blk.name, "kind": "calibration" if blk.train else "evaluation",
                                               "n": len(blk.results), "n_max": len(blk.sentences)},
            "n_trials": len(self.trials), "n_aborted": self.n_aborted, "n_text_suppressed": self.n_text_suppressed,
            "last_final": self.last_final, "last_block": self.last_block,
            "n_blocks": sum(1 for x in self.blocks if x["kind"] != "fit"), "blocks_done": sum(1 for r in self.results if r.get("kind") != "fit")})

    def _op_log(self, fmt: str, *args: Any) -> None:
        from cortexlink.runtime.nodes._common import logger

        logger.warning(fmt, *args)
