"""Stimulation nodes: encoders, and the interlock that every plan passes before the stimulator.

The loop (a session's ``stimulation:`` section compiles to it)::

    cursor ──state──► touch_encoder ──plan──┐
    cursor ──state──► audio_encoder ──plan──┤
                                            ▼
    cursor ──state (halted = E-STOP/watchdog)──► stim_interlock ──command (frame bytes)──► implant
                                                     │                        (the simulated stimulator:
                                                     └──status──► ui, recorder  renders pulses, sends
                                                                                 what it delivered ──► dsp, recorder)

``stim_interlock`` holds the :class:`~cortexlink.stim.interlock.SafetyInterlock` and the host
:class:`~cortexlink.stim.driver.StimulatorDriver`, in one node, so that nothing reaches the
driver without the interlock's signature; it sends command frames (the versioned format of
:mod:`cortexlink.stim.command`) to the device. A halted cursor (the E-STOP or the watchdog) E-STOPs
the interlock and sends a STOP frame in the same bin; releasing it is audited. The end of the run
(its teardown) sends a STOP frame too. Encoders plan one bin at a time (the window of the bin about
to be recorded), so a stalled encoder or a dead node means no stimulation: the device never repeats
a frame and drops everything when frames stop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.pulses import pulses_from_dict, pulses_to_dict
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node

__all__ = ["TouchEncoderNode", "AudioEncoderNode", "StimInterlockNode", "plan_message", "plan_from_message"]


def plan_message(plan: Any) -> dict:
    """A :class:`~cortexlink.stim.model.StimPlan` as a bus payload (plain arrays and numbers)."""
    return {"source": plan.source, "seq": int(plan.seq), "t_start_s": float(plan.t_start_s),
            "t_end_s": float(plan.t_end_s), **pulses_to_dict(plan.pulses)}


def plan_from_message(payload: dict) -> Any:
    """Inverse of :func:`plan_message`."""
    from cortexlink.stim.model import StimPlan

    return StimPlan(pulses_from_dict(payload), payload["t_start_s"], payload["t_end_s"],
                    str(payload.get("source", "?")), int(payload.get("seq", 0)))


def _config(cls: Any, name: str, params: dict) -> Any:
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"nodes.{name}.params.config: {exc}") from None


@register_node
class TouchEncoderNode(Node):
    """Touch feedback: the cursor inside its target is a contact force on the simulated hand's
    fingertips, encoded biomimetically (:class:`~cortexlink.stim.touch.TouchEncoder`) for the
    next bin.

    Parameters (``params``)
    -----------------------
    config : dict
        :class:`~cortexlink.stim.touch.TouchConfig` fields (electrodes per finger, amplitude and
        frequency ranges, transients).
    force_max_n : float
        Force at the target's centre (it falls to 0 at the target's edge).
    blocks : list of str or None
        Blocks in which touch feedback is on (None: all blocks).
    """

    kind = "touch_encoder"
    CRITICAL = False          # a failed encoder means no stimulation, not a halted cursor
    INPUTS = {"cursor": PortSpec(maxlen=256, policy="drop_oldest", required=True, message="cursor_state",
                                 doc="the cursor and its target, once per bin")}
    OUTPUTS = {"plan": "stim_plan"}
    PARAMS = {"config": Param("dict", {}), "force_max_n": Param("float", 5.0, gt=0.0),
              "blocks": Param("list", None, nullable=True)}

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.stim.touch import TouchConfig

        _config(TouchConfig, name, params["config"])

    def setup(self) -> None:
        from cortexlink.stim.touch import TouchConfig, TouchEncoder

        if getattr(self, "encoder", None) is None:
            self.encoder = TouchEncoder(_config(TouchConfig, self.name, self.params["config"]))
        self.bin_s = self.ctx.bin_ms / 1000.0
        self.n_contact_bins = 0

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        from cortexlink.stim.touch import cursor_contact_forces

        blocks = self.params["blocks"]
        n = self.encoder.config.n_sensors
        for m in inbox.get("cursor", ()):
            s = m.payload
            # A halted cursor is the interlock's business (E-STOP): the encoder just encodes.
            on = s.target is not None and (blocks is None or s.block in blocks)
            if on:
                xy = getattr(s.target, "xy", None) or getattr(s.target, "center", None)
                radius = float(getattr(s.target, "radius", 0.0) or 0.0)
                force = (cursor_contact_forces(s.xy, [xy], radius, self.params["force_max_n"])
                         if xy is not None and radius > 0 else np.zeros(1))
                forces = np.full(n, float(np.max(force)))
            else:
                forces = np.zeros(n)
            self.n_contact_bins += int(forces.max() > 0)
            plan = self.encoder.step(forces, s.bin * self.bin_s, self.bin_s)
            self.emit("plan", plan_message(plan), sample=m.sample, t_enter_ns=m.t_enter_ns)


@register_node
class AudioEncoderNode(Node):
    """Artificial hearing: a WAV file (or spoken text) played through the CIS encoder
    (:class:`~cortexlink.stim.auditory.CISEncoder`), one bin of audio per bin of the loop.

    Parameters (``params``)
    -----------------------
    wav : str or None
        Audio file (any rate; resampled to the encoder's). Without it, ``text`` is spoken with
        espeak-ng.
    text : str
        What to say when no ``wav`` is given.
    config : dict
        :class:`~cortexlink.stim.auditory.CISConfig` fields.
    loop : bool
        Start the audio again at its end (otherwise silence after it).
    start_s : float
        Session time at which the audio starts.
    blocks : list of str or None
        Blocks in which it plays (None: every block); elsewhere — and always during the warm-up,
        when the dsp calibrates its noise, and between blocks — the encoder hears silence.
    """

    kind = "audio_encoder"
    CRITICAL = False
    INPUTS = {"cursor": PortSpec(maxlen=256, policy="drop_oldest", required=True, message="cursor_state",
                                 doc="one message per bin: the clock (its bin is the next one), the block")}
    OUTPUTS = {"plan": "stim_plan"}
    PARAMS = {"wav": Param("str", None, nullable=True), "text": Param("str", "The birch canoe slid on the smooth planks."),
              "config": Param("dict", {}), "loop": Param("bool", True), "start_s": Param("float", 0.0, lo=0.0),
              "blocks": Param("list", None, nullable=True)}

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.stim.auditory import CISConfig

        _config(CISConfig, name, params["config"])

    def setup(self) -> None:
        from cortexlink.stim.audio import read_wav, speak
        from cortexlink.stim.auditory import CISConfig, CISEncoder

        if getattr(self, "encoder", None) is not None:
            return
        cfg = _config(CISConfig, self.name, self.params["config"])
        self.encoder = CISEncoder(cfg)
        if self.params["wav"]:
            self.audio, _ = read_wav(self.params["wav"], cfg.fs_hz)
        else:
            self.audio = speak(self.params["text"], cfg.fs_hz)
        self.audio = np.asarray(self.audio, np.float64)
        self.bin_s = self.ctx.bin_ms / 1000.0
        self.fs = cfg.fs_hz
        self._pos = 0

    def _block(self, n: int) -> np.ndarray:
        out = np.zeros(n)
        filled = 0
        while filled < n and len(self.audio):
            if self._pos >= len(self.audio):
                if not self.params["loop"]:
                    break
                self._pos = 0
            take = min(n - filled, len(self.audio) - self._pos)
            out[filled:filled + take] = self.audio[self._pos:self._pos + take]
            self._pos += take
            filled += take
        return out

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        blocks = self.params["blocks"]
        for m in inbox.get("cursor", ()):
            s = m.payload
            b = int(s.bin)                                  # the bin about to be recorded
            t0 = b * self.bin_s
            n0 = int(round(t0 * self.fs))
            n = int(round((t0 + self.bin_s) * self.fs)) - n0
            # never during the warm-up (the dsp calibrates its noise then) or between blocks
            on = s.block is not None and (blocks is None or s.block in blocks)
            if t0 < self.params["start_s"] or not on:
                block = np.zeros(n)
            else:
                block = self._block(n)
            plan = self.encoder.step(block, n0 / self.fs)
            self.emit("plan", plan_message(plan), sample=m.sample, t_enter_ns=m.t_enter_ns)


@register_node
class StimInterlockNode(Node):
    """The safety interlock and the stimulator's host driver (see the module docstring).

    Parameters (``params``)
    -----------------------
    limits : dict or None
        The limits file's content (:class:`~cortexlink.stim.limits.SafetyLimits`).
    limits_file : str or None
        A limits file (YAML) instead.
    n_electrodes : int
        Without ``limits`` or ``limits_file``: default limits for electrodes ``0..n-1``.
    policy : str or None
        Override the file's policy (``refuse`` or ``clamp``).

    Writes every decision to ``stim_audit.jsonl`` in the run folder (when the run has one) and
    publishes a ``status`` message per bin (E-STOP, totals, refusals by reason, the last refused
    pulses).
    """

    kind = "stim_interlock"
    INPUTS = {
        "touch": PortSpec(maxlen=256, policy="drop_oldest", message="stim_plan", doc="plans of the touch encoder"),
        "audio": PortSpec(maxlen=256, policy="drop_oldest", message="stim_plan", doc="plans of the auditory encoder"),
        "plans": PortSpec(maxlen=256, policy="drop_oldest", message="stim_plan", doc="plans of any other encoder"),
        "cursor": PortSpec(maxlen=256, policy="drop_oldest", message="cursor_state",
                           doc="the cursor: its bin is the clock; halted (E-STOP or watchdog) stops stimulation"),
    }
    OUTPUTS = {"command": "stim_command", "status": "stim_status"}
    PARAMS = {"limits": Param("dict", None, nullable=True), "limits_file": Param("str", None, nullable=True),
              "n_electrodes": Param("int", 64, lo=1), "policy": Param("str", None, nullable=True,
                                                                     choices=("refuse", "clamp"))}

    @classmethod
    def build_limits(cls, params: dict) -> Any:
        from cortexlink.stim.limits import SafetyLimits

        if params["limits"] is not None and params["limits_file"] is not None:
            raise ConfigError("give limits or limits_file, not both")
        if params["limits_file"] is not None:
            lim = SafetyLimits.from_file(params["limits_file"])
        elif params["limits"] is not None:
            lim = SafetyLimits.from_dict(params["limits"])
        else:
            lim = SafetyLimits.default(params["n_electrodes"])
        return lim.with_policy(params["policy"]) if params["policy"] else lim

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        try:
            cls.build_limits(params)
        except ConfigError as exc:
            raise ConfigError(f"nodes.{name}.params: {exc}") from None

    def setup(self) -> None:
        from cortexlink.stim.audit import AuditLog
        from cortexlink.stim.driver import StimulatorDriver
        from cortexlink.stim.interlock import SafetyInterlock

        if getattr(self, "interlock", None) is not None:      # a restart keeps the interlock's history
            return
        self.limits = self.build_limits(self.params)
        out = getattr(self.ctx, "out_dir", None)
        self.audit = AuditLog(None if out is None else f"{out}/stim_audit.jsonl")
        self.interlock = SafetyInterlock(self.limits, audit=self.audit)
        self._frames: list[bytes] = []
        self.driver = StimulatorDriver(self.interlock, self._frames.append)
        self.bin_s = self.ctx.bin_ms / 1000.0
        self.now_s = 0.0
        self._stamp = (0, 0)
        self.last_refused: list[dict] = []
        self.halts: list[tuple[float, str]] = []        # (session time, "estop" | "reset")

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        # In message order (a batch can hold several bins): each plan is judged at the session
        # time of the cursor state it answers, the E-STOP applied from the bin it arrived in.
        order = {"cursor": 0, "touch": 1, "audio": 2, "plans": 3}
        msgs = sorted(((m.sample, order[port], i, port, m) for port in order for i, m in enumerate(inbox.get(port, ()))),
                      key=lambda x: x[:3])
        for _, _, _, port, m in msgs:
            if port == "cursor":
                s = m.payload
                self._stamp = (m.sample, m.t_enter_ns)
                self.now_s = max(self.now_s, s.bin * self.bin_s)
                if s.halted and self.interlock.stopped is None:
                    self.interlock.estop("cursor halted (E-STOP or watchdog)", now_s=self.now_s)
                    self.driver.stop(self.now_s)
                    self.halts.append((self.now_s, "estop"))
                elif not s.halted and self.interlock.stopped is not None:
                    self.interlock.reset("runtime: the cursor's halt was released", now_s=self.now_s)
                    self.halts.append((self.now_s, "reset"))
                continue
            plan = plan_from_message(m.payload)
            d = self.interlock.review(plan, self.now_s)
            if len(d.refused):
                rows = [{"electrode": int(r["electrode"]), "time_s": float(r["time_s"]),
                         "reason": str(r["reason"])} for r in d.refused[-20:]]
                self.last_refused = (self.last_refused + rows)[-50:]
            if d.n_approved:
                self.driver.deliver(d.approved)
        if inbox.get("cursor"):
            if not self._frames:
                self.driver.keepalive(self.now_s)
            sample, t_enter = self._stamp
            for f in self._frames:
                self.emit("command", {"frame": np.frombuffer(f, np.uint8).copy(), "now_s": self.now_s},
                          sample=sample, t_enter_ns=t_enter)
            self._frames.clear()
            self.emit("status", self.status(), sample=sample, t_enter_ns=t_enter)

    def status(self) -> dict:
        """What the operator sees: E-STOP, policy, totals, refusals by reason, last refused pulses."""
        return {"now_s": self.now_s, "estop": self.interlock.stopped, "policy": self.limits.policy,
                "limits_sha256": self.limits.sha256, **{f"n_{k}": v for k, v in self.interlock.totals.items()},
                "reasons": dict(self.audit.reasons), "last_refused": list(self.last_refused[-10:])}

    def teardown(self) -> None:
        """The run ends (SR-12): a STOP frame goes to the stimulator (it halts and drops whatever
        is pending), then the audit log is closed."""
        driver = getattr(self, "driver", None)
        if driver is not None:
            self._frames.clear()
            driver.stop(self.now_s)
            sample, t_enter = self._stamp
            for f in self._frames:
                self.emit("command", {"frame": np.frombuffer(f, np.uint8).copy(), "now_s": self.now_s},
                          sample=sample, t_enter_ns=t_enter)
            self._frames.clear()
        audit = getattr(self, "audit", None)
        if audit is not None:
            audit.close()

    def summary(self) -> dict:
        """For the run summary and the session manifest."""
        return {"limits": self.limits.summary(), **self.interlock.totals, "reasons": dict(self.audit.reasons),
                "estop": self.interlock.stopped,
                "audit_file": None if self.audit.path is None else str(self.audit.path)}
