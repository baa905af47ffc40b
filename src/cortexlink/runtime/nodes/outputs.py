"""Outputs: ``ui_feed``, ``lsl_outlet``, ``sink``."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.stats import LatencyStats

__all__ = ["UiFeedNode", "LSLOutletNode", "SinkNode"]


@register_node
class UiFeedNode(Node):
    """Latest values for an operator UI, published at most ``max_hz`` times per second.

    Its inputs hold one message each (``maxlen: 1``, ``drop_oldest``): a slow UI only ever sees
    the newest value and can never hold up the graph (superseded messages are counted in the
    edge's ``n_dropped``). The snapshot is :meth:`snapshot` in-process and the shared value
    ``<name>/snapshot`` on the bus (``bus.get_info``) for a UI in another process.

    Parameters (``params``)
    -----------------------
    max_hz : float
        Most snapshots per second.
    operator : bool
        Build what the operator web UI shows (:mod:`cortexlink.runtime.nodes._uiview`): the
        snapshot gets ``seq`` and ``fast`` (cursor, block, target, raster rows, E-STOP state, ...)
        and the parts ``<name>/slow`` (rates, latency, metrics, jobs, recording, faults, ``slow_hz``
        times a second) and ``<name>/meta`` (electrode layout, noise, session). Needs ``cursor``
        from an interactive cursor's ``state`` and ``activity`` from a dsp's ``features`` (every
        bin; with the dsp's ``full_rows`` for the rate map). A speech session's view needs
        ``speech_cue`` from a ``speech_task``'s ``cue`` instead of ``cursor`` (and ``speech_text``
        from the word decoder's ``text``): its ``fast`` part then has ``speech`` (prompt, cue
        phase, partial text, last decoded sentence beside its reference, last block's metrics).
        With ``stim`` (a stimulator's delivered pulses) or ``stim_status`` (a ``stim_interlock``'s
        status) connected, the snapshot (its ``fast`` part for the operator view) gets ``stim``:
        the newest delivered pulses and the interlock's state (:mod:`._stimview`); else None.
    slow_hz, latency_window_s : float
        Rate of the slow part; the loop latency percentiles are over this many recent seconds.
    session : str or None
        The name shown (default: the graph's name).
    """

    kind = "ui_feed"
    CRITICAL = False
    TICKS = True
    INPUTS = {**{p: PortSpec(maxlen=1, policy="drop_oldest", message=k)
                 for p, k in (("cursor", "cursor_state"), ("intent", "decoded_intent"), ("gate", "gate"),
                              ("events", "events"), ("features", "features"))},
              "activity": PortSpec(maxlen=256, policy="drop_oldest", message="features",
                                   doc="dsp features of every bin (operator view)"),
              "faults": PortSpec(maxlen=256, policy="drop_oldest", message="fault", doc="fault events (operator view)"),
              "speech_cue": PortSpec(maxlen=256, policy="drop_oldest", message="speech_cue",
                                     doc="a speech task's cue (operator view of a speech session)"),
              "speech_text": PortSpec(maxlen=256, policy="drop_oldest", message="speech_text",
                                      doc="the word decoder's text (operator view of a speech session)"),
              "stim": PortSpec(maxlen=4096, policy="drop_oldest", message="stim_pulses",
                               doc="the pulses the stimulator delivered (stimulation panel)"),
              "stim_status": PortSpec(maxlen=256, policy="drop_oldest", message="stim_status",
                                      doc="the stimulation interlock's status (stimulation panel)")}
    PARAMS = {"max_hz": Param("float", 30.0, gt=0.0),
              "operator": Param("bool", False),
              "slow_hz": Param("float", 5.0, gt=0.0),
              "latency_window_s": Param("float", 5.0, gt=0.0),
              "session": Param("str", None, nullable=True)}
    LOSSY = True

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        if not params["operator"]:
            return
        ins = graph["nodes"][name]["inputs"]
        speech = "speech_cue" in ins and "cursor" not in ins
        for port, kind in (("speech_cue" if speech else "cursor", "speech_task" if speech else "cursor"),
                           ("speech_text", "word_decoder"), ("activity", "dsp")):
            src = ins.get(port)
            if src is None and (port == "activity" or (port == "speech_text" and not speech)):
                continue                                # no implant (perfect decoder); no speech
            prod = None if src is None else graph["nodes"].get(src["from"].split(".", 1)[0])
            if prod is None or prod["kind"] != kind:
                raise ConfigError(f"nodes.{name}.inputs.{port} must come from a {kind} node when "
                                  f"params.operator is true; got {None if src is None else src['from']!r}")

    def setup(self) -> None:
        self._latest: dict[str, Any] = {}
        self._snap: dict = {}
        self._period = int(1e9 / self.params["max_hz"])
        self._next = 0
        self.n_snapshots = 0
        self.view = None
        self.stim = None
        if "stim" in self.subs or "stim_status" in self.subs:
            from cortexlink.runtime.nodes._stimview import StimView

            self.stim = StimView()
        if self.params["operator"]:
            from cortexlink.runtime.nodes._uiview import OperatorView

            self.view = OperatorView(self)
            self.ctx.bus.set_info(f"{self.name}/meta", self.view.meta)

    @staticmethod
    def _plain(p: Any) -> Any:
        if hasattr(p, "to_dict"):
            p = p.to_dict()
        if isinstance(p, dict):
            return {k: (v.tolist() if isinstance(v, np.ndarray) and v.size <= 64 else
                        (None if isinstance(v, np.ndarray) else v)) for k, v in p.items()}
        return None

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        view = self.view
        for port, msgs in inbox.items():
            if not msgs:
                continue
            if port == "activity":
                if view is not None:
                    for m in msgs:
                        view.activity(m.payload)
                continue
            if port in ("stim", "stim_status"):
                if self.stim is not None:
                    for m in msgs:
                        (self.stim.delivered if port == "stim" else self.stim.interlock)(m.payload)
                continue
            if port == "faults":
                if view is not None:
                    for m in msgs:
                        view.fault(m.payload)
                continue
            if port == "cursor" and view is not None:
                for m in msgs:
                    view.cursor_state(m.payload)
                if view.state is None or view.state.op is None:
                    continue
            if port in ("speech_cue", "speech_text") and view is not None:
                for m in msgs:
                    view.speech(port, m.payload)
            self._latest[port] = (msgs[-1].sample, self._plain(msgs[-1].payload))
        if now_ns < self._next or not (self._latest or self.stim is not None):
            return
        self._next = now_ns + self._period
        health = self.ctx.health()
        snap = {"t_ns": now_ns, **{k: {"sample": s, **(v or {})} for k, (s, v) in self._latest.items()},
                "nodes": {n: {"state": h.get("state"), "n_out": h.get("n_out")} for n, h in health.items()}}
        if view is not None:
            bus = self.ctx.bus
            if view.slow_due(now_ns):
                if view.meta_changed():
                    bus.set_info(f"{self.name}/meta", view.meta)
                bus.set_info(f"{self.name}/slow", view.slow(health))
            for k in ("cursor", "speech_cue", "speech_text"):
                snap.pop(k, None)
            snap.update(seq=view.seq + 1, fast=view.fast(now_ns, health), slow_version=view.slow_version,
                        meta_version=view.meta_version)
            snap["fast"]["stim"] = None if self.stim is None else self.stim.view()
        elif self.stim is not None:
            snap["stim"] = self.stim.view()
        self._snap = snap
        self.ctx.bus.set_info(f"{self.name}/snapshot", snap)
        self.n_snapshots += 1

    def snapshot(self) -> dict:
        """The newest snapshot (a dict; replaced, never mutated, so safe to read from another thread)."""
        return self._snap

    def summary(self) -> dict:
        return {"n_snapshots": self.n_snapshots}


@register_node
class LSLOutletNode(Node):
    """Publish features or decoded intent as an LSL stream (:class:`~cortexlink.io.lsl.LSLOutlet`).

    Parameters (``params``)
    -----------------------
    stream : {"intent", "features"}
        ``intent``: channels vx, vy, click (probability) from a decoder's ``intent``;
        ``features``: the dsp's decoder features (names from the dsp).
    name : str or None
        LSL stream name (default ``cortexlink-intent`` / ``cortexlink-features``).
    """

    kind = "lsl_outlet"
    CRITICAL = False
    INPUTS = {"data": PortSpec(maxlen=256, policy="drop_oldest", required=True,
                               message=("decoded_intent", "features"))}
    PARAMS = {"stream": Param("str", "intent", choices=("intent", "features")),
              "name": Param("str", None, nullable=True)}

    def setup(self) -> None:
        from cortexlink.io.lsl import LSLOutlet

        p = self.params
        bin_s = self.ctx.bin_ms / 1000.0
        kw = {} if p["name"] is None else {"name": p["name"]}
        if p["stream"] == "intent":
            self.outlet = LSLOutlet.intent_outlet(bin_s, **kw)
        else:
            prod = self.ctx.producer(self.name, "data")
            info = self.ctx.wait_info(f"{prod}/features", timeout_s=120.0)
            self.outlet = LSLOutlet.features_outlet(info["names"], bin_s, **kw)
        self.n_pushed = 0

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox["data"]:
            p = m.payload
            if self.params["stream"] == "intent":
                proba = p.proba
                row = np.array([p.velocity[0], p.velocity[1], math.nan if proba is None else proba], np.float32)
            else:
                if p.x is None:
                    continue
                row = np.asarray(p.x, np.float32)
            self.outlet.push(row)
            self.n_pushed += 1

    def teardown(self) -> None:
        out = getattr(self, "outlet", None)
        if out is not None:
            out.close()

    def summary(self) -> dict:
        return {"n_pushed": getattr(self, "n_pushed", 0)}


@register_node
class SinkNode(Node):
    """Counts what arrives and its end-to-end latency (tests, benchmarks, drills)."""

    kind = "sink"
    CRITICAL = False
    INPUTS = {"data": PortSpec(maxlen=1024, policy="drop_oldest", required=True)}
    PARAMS = {"keep": Param("int", 0, lo=0, doc="keep the last N messages (for inspection)")}

    def setup(self) -> None:
        import collections

        self.n = 0
        self.latency = LatencyStats(1 << 18)
        self.kept: Any = collections.deque(maxlen=max(self.params["keep"], 1))

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        t = time.monotonic_ns()
        for m in inbox["data"]:
            self.n += 1
            if m.t_enter_ns and m.sample >= self.ctx.stats_from_sample:
                self.latency.add(t - m.t_enter_ns)
            if self.params["keep"]:
                self.kept.append(m)

    def summary(self) -> dict:
        return {"n": self.n, "latency_ms": self.latency.summary()}
