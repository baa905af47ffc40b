"""``recorder``: streams to a session folder without blocking."""

from __future__ import annotations

import math
from pathlib import Path

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.nodes._common import _NAN2

__all__ = ["RecorderNode"]


@register_node
class RecorderNode(Node):
    """Record streams with a :class:`~cortexlink.io.session_log.SessionRecorder` (its own writer
    thread and bounded queue: ``step`` only enqueues, it never waits on disk).

    Parameters (``params``)
    -----------------------
    out_dir : str or None
        Session folder; default ``<run out dir>/<node name>`` (``--out``).
    participant_id : str
    raw : bool
        Record raw chunks (when ``raw`` is connected).
    on_full : {"drop", "block", "fail"}
        The recorder queue's policy (drops are counted in its manifest).

    Inputs (all optional): ``raw`` (chunks), ``features``, ``intent`` (decoder), ``cursor``
    (cursor state), ``events``, ``faults`` (``runtime.faults``, connected by default).
    """

    kind = "recorder"
    CRITICAL = False
    INPUTS = {
        "raw": PortSpec(maxlen=4096, policy="drop_oldest"),
        "features": PortSpec(maxlen=1024, policy="drop_oldest"),
        "intent": PortSpec(maxlen=1024, policy="drop_oldest"),
        "cursor": PortSpec(maxlen=1024, policy="drop_oldest"),
        "events": PortSpec(maxlen=1024, policy="drop_oldest"),
        "faults": PortSpec(maxlen=1024, policy="drop_oldest"),
    }
    PARAMS = {
        "out_dir": Param("str", None, nullable=True),
        "participant_id": Param("str", "sim-0001"),
        "raw": Param("bool", True),
        "on_full": Param("str", "drop", choices=("drop", "block", "fail")),
    }

    def setup(self) -> None:
        from cortexlink.core.types import ChannelMap
        from cortexlink.io.session_log import SessionRecorder

        p = self.params
        if p["out_dir"]:
            base = Path(p["out_dir"])
        elif self.ctx.out_dir is not None:
            base = Path(self.ctx.out_dir) / self.name
        else:
            raise ConfigError(f"nodes.{self.name}.params.out_dir is required when the run has no output folder "
                              "(give out_dir or --out)")
        out = base if self.n_restarts == 0 and self.n_failures == 0 else base.with_name(
            f"{base.name}-restart{self.n_failures}")
        cmap, fs = None, None
        prod = self.ctx.producer(self.name, "raw")
        if prod is not None:
            info = self.ctx.wait_info(f"{prod}/stream")
            cmap, fs = ChannelMap.from_dict(info["channel_map"]), info["fs_hz"]
        graph = {k: v for k, v in self.ctx.graph.items() if not k.startswith("_")}
        self.rec = SessionRecorder(out, channel_map=cmap, fs_hz=fs, config={"graph": graph},
                                   participant_id=p["participant_id"], raw=p["raw"] and prod is not None,
                                   on_full=p["on_full"], catalogue=False)
        self.path = str(out)
        self._feature_cols: list[str] | None = None
        self.n_written = 0

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        rec = self.rec
        for m in inbox.get("raw", ()):
            if self.params["raw"]:
                rec.write_raw(m.payload)
                self.n_written += 1
        for m in inbox.get("features", ()):
            x = m.payload.get("x")
            if x is None:
                continue
            if self._feature_cols is None:
                prod = self.ctx.producer(self.name, "features")
                info = self.ctx.bus.get_info(f"{prod}/features") if prod else None
                self._feature_cols = list(info["names"]) if info else [f"f{i}" for i in range(len(x))]
            rec.write_array("features", int(m.payload["bin_start"]), x, columns=self._feature_cols,
                            host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("intent", ()):
            p = m.payload
            v = p.get("v", _NAN2)
            proba = p.get("proba")
            rec.write_row("decoder", m.sample, (v[0], v[1], math.nan if proba is None else float(proba),
                                                float(bool(p.get("click")))),
                          columns=("vx", "vy", "click_proba", "click"), host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("cursor", ()):
            s = m.payload
            rec.write_row("cursor", m.sample, (s["xy"][0], s["xy"][1], s["velocity"][0], s["velocity"][1],
                                               float(s["clicked"]), float(s["halted"])),
                          columns=("x", "y", "vx", "vy", "clicked", "halted"), host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("events", ()):
            e = dict(m.payload)
            e.pop("sample", None)
            rec.event(str(e.pop("kind", "event")), sample=m.sample, **e)
            self.n_written += 1
        for m in inbox.get("faults", ()):
            e = dict(m.payload)
            e.pop("sample", None)
            rec.event("fault", sample=m.sample, **{("fault_kind" if k == "kind" else k): v for k, v in e.items()})
            self.n_written += 1

    def teardown(self) -> None:
        rec = getattr(self, "rec", None)
        if rec is not None:
            self.rec = None
            rec.close()

    def summary(self) -> dict:
        return {"path": getattr(self, "path", None), "n_written": getattr(self, "n_written", 0)}
