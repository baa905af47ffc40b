"""What the operator page shows, built by a ``ui_feed`` node with ``operator: true``.

Three parts, published on the bus as shared values (``bus.set_info``) so that a UI in this
process or another one reads them the same way:

``<name>/snapshot``
    Up to ``max_hz`` times a second: ``seq``, ``fast`` (cursor, target, block, lit cell, chess
    stage, decoded velocity, click probability, E-STOP and mouse state, the last raster rows as
    ``{"bin0", "n_rows", "n_ch", "b64"}``), ``slow_version``, ``meta_version`` and the node
    states.
``<name>/slow``
    ``slow_hz`` times a second, when it changed: per-channel crossing rate, loop latency
    statistics, task metrics and view, decoder and block counts, last job and block, recording
    status, fault events.
``<name>/meta``
    When the noise calibration changes: session, electrode layout, noise RMS, bad channels, block
    defaults.

The cursor publishes its operator view in its ``state`` messages and under ``<cursor>/operator``
(:mod:`cortexlink.runtime.nodes._operator`); the dsp its feature names and noise figures; the
recorder its status. In a speech session (no cursor: the feed reads the speech task's cue and
the word decoder's text) the speech task publishes ``<task>/operator``
(:mod:`cortexlink.runtime.nodes._speech_operator`) and ``fast`` gets ``speech``
(:meth:`OperatorView.speech_view`). This module only gathers them: nothing here is on the real-time path of
another node (``ui_feed`` reads its inputs with ``drop_oldest`` edges).
"""

from __future__ import annotations

import base64
import collections
import math
from typing import Any

import numpy as np

from cortexlink.core.messages import CursorState, FeatureBin

__all__ = ["OperatorView", "grid_layout", "RASTER_CHANNELS"]

RASTER_CHANNELS = 128
_RESTING = CursorState(0, 0.0, (0.0, 0.0))          # before the cursor's first state
TASK_NAMES = ("centre_out", "webgrid", "chess")
MAX_BLOCK_S = 600.0


def grid_layout(pos: Any) -> dict:
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


def _finite(values: Any, nd: int) -> list:
    a = np.round(np.asarray(values, dtype=np.float64), nd)
    return [v if math.isfinite(v) else None for v in a.tolist()]


class OperatorView:
    """Builds the operator page's parts from a ``ui_feed`` node's inputs (see the module docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        ctx = node.ctx
        g = ctx.graph
        self.name = node.name
        self.dt_s = ctx.bin_ms / 1000.0
        self.cursor = ctx.producer(node.name, "cursor")
        self.task = ctx.producer(node.name, "speech_cue")       # a speech session: the speech task
        self.dsp = ctx.producer(node.name, "activity")
        raw = g["nodes"][self.dsp]["inputs"].get("raw") if self.dsp else None
        self.source = None if raw is None else raw["from"].split(".", 1)[0]
        self.recorder = next((n for n, s in g["nodes"].items() if s["kind"] == "recorder"
                              and "operator" in (s.get("inputs") or {})), None)
        cp = g["nodes"][self.cursor]["params"] if self.cursor else {}
        self.decoder_kind = cp.get("decoder_kind", "phoneme_ctc" if self.task else "?")
        self._speech = _SpeechState() if self.task else None
        self.block_defaults = cp.get("block_defaults", {})
        self.session = node.params["session"] or g.get("name", "graph")
        self.slow_every_ns = int(1e9 / node.params["slow_hz"])
        self._next_slow = 0
        self.seq = 0
        self.slow_version = 0
        self.meta_version = 0
        self._noise_version = -1
        self._tx: np.ndarray | None = None
        self._raster_idx: np.ndarray | None = None
        self.n_ch = 0
        self.rate = np.zeros(0)
        self.raster: collections.deque = collections.deque(maxlen=8)
        n_win = max(1, int(round(node.params["latency_window_s"] / self.dt_s)))
        self.loop_us = np.full(n_win, np.nan)
        self._i = 0
        self.faults: collections.deque = collections.deque(maxlen=50)
        self.n_faults = 0
        self.state: CursorState | None = None
        self.meta = self._meta()

    # -- inputs -----------------------------------------------------------------------------
    def _columns(self) -> None:
        info = self.node.ctx.bus.get_info(f"{self.dsp}/stream_features") if self.dsp else None
        if not info:
            return
        names = info["names"]
        self._tx = np.asarray([i for i, nm in enumerate(names) if nm.endswith("/tx")], np.intp)
        self.n_ch = int(self._tx.size)
        self._raster_idx = self._tx[:RASTER_CHANNELS]
        self.rate = np.zeros(self.n_ch)

    def activity(self, payload: FeatureBin) -> None:
        """One bin of the dsp's features (``row``: every feature; or ``raster`` only)."""
        if self._tx is None:
            self._columns()
            if self._tx is None:
                return
        row = payload.row
        if row is not None:
            tx = np.asarray(row)[self._tx]
            ok = np.isfinite(tx)
            if ok.any():
                self.rate[ok] += min(1.0, self.dt_s) * (tx[ok] / self.dt_s - self.rate[ok])    # ~1 s time constant
            r = np.asarray(row)[self._raster_idx]
            r = np.where(np.isfinite(r), np.minimum(r, 255), 0).astype(np.uint8)
        elif payload.raster is not None:
            r = np.asarray(payload.raster, np.uint8)
        else:
            return
        self.raster.append((payload.bin, r.tobytes()))

    def cursor_state(self, payload: CursorState) -> None:
        self.state = payload
        op = payload.op or {}
        lat = op.get("loop_us")
        if lat is not None:
            self.loop_us[self._i % self.loop_us.size] = lat
            self._i += 1

    def fault(self, ev: dict) -> None:
        if ev.get("severity") in ("halt", "warning"):
            self.n_faults += 1
            st = self.state
            self.faults.append({"bin": None if st is None else st.bin, "t_s": None if st is None else st.t_s,
                                "where": f"{ev.get('node')} ({ev.get('kind')})", "message": str(ev.get("message"))[:500]})

    # -- parts ------------------------------------------------------------------------------
    def speech(self, port: str, payload: Any) -> None:
        """One ``speech_cue`` or ``speech_text`` message (a speech session)."""
        if self._speech is not None:
            (self._speech.cue if port == "speech_cue" else self._speech.text)(payload)

    def speech_view(self) -> tuple[dict, dict]:
        """``(op, speech)``: the speech task's operator state and the page's speech panel."""
        sp = self._speech
        op = self.node.ctx.bus.get_info(f"{self.task}/operator") or {}
        return op, sp.view(op)

    def fast(self, now_ns: int, health: dict) -> dict:
        st = self.state or _RESTING
        op = st.op or {}
        speech = None
        if self._speech is not None:
            top, speech = self.speech_view()
            b = self._speech.bin
            st = CursorState(b, round(b * self.dt_s, 4), (0.0, 0.0))
            op = {"state": top.get("state", "starting"), "estop": bool(top.get("estop")), "halted": bool(top.get("estop")),
                  "estop_bin": top.get("estop_bin"), "estop_requested_after_bin": top.get("estop_requested_after_bin")}
        blk = op.get("block")
        self.seq += 1
        f: dict[str, Any] = {
            "seq": self.seq, "bin": st.bin, "t_s": round(st.t_s, 4),
            "state": op.get("state", "starting"), "job": op.get("job"), "estop": bool(op.get("estop")),
            "halted": st.halted or bool(op.get("halted")), "estop_bin": op.get("estop_bin"),
            "estop_requested_after_bin": op.get("estop_requested_after_bin"), "mouse": bool(op.get("mouse")),
            "recording": bool(self._recording.get("active")) if hasattr(self, "_recording") else False,
            "cursor": list(st.xy), "velocity": list(st.velocity) if blk else None,
            "decoded": op.get("decoded"), "click_proba": op.get("click_proba"), "clicked": bool(op.get("clicked")),
            "block": blk, "target": None, "lit_cell": op.get("lit_cell"), "chess": op.get("chess"),
            "target_idx": op.get("target_idx"), "raster": None, "speech": speech}
        t = st.target
        if blk and t is not None:
            f["target"] = {"xy": [float(t.xy[0]), float(t.xy[1])], "r": float(t.radius)}
        if self.raster:
            rows = list(self.raster)
            f["raster"] = {"bin0": rows[0][0], "n_rows": len(rows), "n_ch": len(rows[0][1]),
                           "b64": base64.b64encode(b"".join(r[1] for r in rows)).decode("ascii")}
        return f

    def slow_due(self, now_ns: int) -> bool:
        if now_ns < self._next_slow:
            return False
        self._next_slow = now_ns + self.slow_every_ns
        return True

    def slow(self, health: dict) -> dict:
        bus = self.node.ctx.bus
        op = (bus.get_info(f"{self.cursor}/operator") or {}) if self.cursor else {}
        if self._speech is not None:
            op = self._speech.slow(bus.get_info(f"{self.task}/operator") or {})
        self._recording = (bus.get_info(f"{self.recorder}/status") or {"active": False, "last": None}) \
            if self.recorder else {"active": False, "last": None, "unavailable": True}
        a = self.loop_us[np.isfinite(self.loop_us)]
        st = self.state or _RESTING
        self.slow_version += 1
        return {
            "version": self.slow_version, "rate_hz": _finite(self.rate, 1),
            "latency": {"loop_us": ({"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
                                     "max": float(a.max()), "n": int(a.size)} if a.size else None),
                        "busy_us": None, "late_us": None,
                        "deadline_misses": int((st.op or {}).get("n_missed") or 0),
                        "window_s": self.loop_us.size * self.dt_s},
            "metrics": op.get("metrics"), "task_info": op.get("task_info"),
            "decoder": {**(op.get("decoder") or {"kind": self.decoder_kind, "fitted": False, "n_refits": 0}),
                        "n_features": None},
            "counts": op.get("counts") or {"calibration_blocks": 0, "closed_loop_blocks_since_fit": 0, "blocks": 0},
            "last_job": op.get("last_job"), "last_block": op.get("last_block"), "recording": self._recording,
            "faults": list(self.faults)[-10:], "n_faults": self.n_faults, "t_s": st.t_s,
            "nodes": {n: h.get("state") for n, h in health.items()}}

    def meta_changed(self) -> bool:
        if not self.dsp:
            return False
        noise = self.node.ctx.bus.get_info(f"{self.dsp}/noise")
        if noise is not None and noise.get("version") != self._noise_version:
            self.meta = self._meta(noise)
            return True
        return False

    def _meta(self, noise: dict | None = None) -> dict:
        bus = self.node.ctx.bus
        self.meta_version += 1
        cal_s = float((self.block_defaults.get("calibration") or {}).get("seconds") or 60.0)
        data: dict[str, Any] = {
            "version": self.meta_version, "session": self.session, "dt_s": self.dt_s, "decoder": self.decoder_kind,
            "tasks": ["speech"] if self.task else list(TASK_NAMES), "speech": bool(self.task), "n_channels": 0, "raster_channels": 0, "calibration_s": min(cal_s, MAX_BLOCK_S),
            "block_defaults": {t: {"seconds": (self.block_defaults.get(t) or {}).get("seconds", None if t == "chess"
                                                                                      else 60.0)} for t in TASK_NAMES},
            "max_block_s": MAX_BLOCK_S, "grid": None, "noise_rms_uv": [], "bad": []}
        stream = bus.get_info(f"{self.source}/stream") if self.source else None
        if stream is not None:
            from cortexlink.core.types import ChannelMap

            cmap = ChannelMap.from_dict(stream["channel_map"])
            data["n_channels"] = cmap.n_channels
            data["raster_channels"] = min(cmap.n_channels, RASTER_CHANNELS)
            data["grid"] = grid_layout(cmap.positions_um)
            data["fs_hz"] = float(stream["fs_hz"])
        if noise is not None:
            self._noise_version = noise.get("version")
            data["noise_rms_uv"] = noise["noise_rms_uv"]
            data["bad"] = noise["bad"]
        return data


class _SpeechState:
    """What the page shows of a speech session, from the task's cues and the word decoder's text."""

    def __init__(self) -> None:
        self.bin = 0
        self.cue_d: dict = {"phase": "rest", "trial": -1, "sentence": "", "block": None}
        self.partial: tuple[int, str] = (-1, "")
        self.ready = False
        self.n_final = 0

    def cue(self, c: Any) -> None:
        self.bin = int(getattr(c, "bin", self.bin))
        trial = int(getattr(c, "trial", -1))
        if getattr(c, "begin", False) or (trial >= 0 and trial != self.partial[0]):
            self.partial = (trial, "")                  # a new prompt: its text starts empty
        self.cue_d = {"phase": str(getattr(c, "phase", "rest")), "trial": trial,
                      "sentence": str(getattr(c, "sentence", "") or ""), "block": getattr(c, "block", None)}

    def text(self, t: Any) -> None:
        self.ready = bool(getattr(t, "ready", False))
        trial, txt = int(getattr(t, "trial", -1)), str(getattr(t, "text", "") or "")
        if getattr(t, "final", False):
            self.n_final += 1
        elif trial >= 0 and txt:                        # bins with no new rows carry "" (no news)
            self.partial = (trial, txt)

    def view(self, op: dict) -> dict:
        c = self.cue_d
        halted = bool(op.get("estop"))
        blk = op.get("block") or {}
        return {"block": c["block"], "block_kind": blk.get("kind"), "trial_in_block": blk.get("n"),
                "block_trials": blk.get("n_max"), "phase": c["phase"], "trial": c["trial"], "sentence": c["sentence"],
                "text": "" if halted else self.partial[1], "text_trial": self.partial[0], "halted": halted,
                "state": op.get("state", "starting"), "decoder_ready": self.ready, "final": op.get("last_final"),
                "metrics": op.get("last_block"), "n_aborted": int(op.get("n_aborted") or 0),
                "n_trials": int(op.get("n_trials") or 0)}

    def slow(self, op: dict) -> dict:
        lb = op.get("last_block")
        return {"decoder": {"kind": "phoneme_ctc", "fitted": self.ready, "version": None, "n_refits": 0},
                "counts": {"calibration_blocks": 0, "closed_loop_blocks_since_fit": 0,
                           "blocks": int(op.get("blocks_done") or 0)},
                "last_block": lb, "metrics": None if lb is None else lb.get("metrics"),
                "task_info": {"task": "speech", "n_trials": op.get("n_trials"), "n_blocks": op.get("n_blocks"),
                              "n_aborted": op.get("n_aborted"), "n_text_suppressed": op.get("n_text_suppressed")}}
