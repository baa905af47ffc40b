"""``trace``: every block's bins collected into a :class:`~cortexlink.tasks.trace.BlockTrace`."""

from __future__ import annotations

import time
from typing import Any

from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.nodes._common import logger

__all__ = ["TraceNode"]

#: Feature bins kept waiting for their cursor row (older ones are dropped: warm-up, rests).
_KEEP_BINS = 512


@register_node
class TraceNode(Node):
    """Collect the cursor's per-bin rows, the decoder features and the task events of each block
    into a :class:`~cortexlink.tasks.trace.BlockTrace` (reports, refits, run folders).

    Inputs: ``bins`` (the cursor's ``bins``), ``events`` (the cursor's ``events``: block start and
    end, task events), optionally ``features`` (the dsp's, with ``raster`` for the crossing
    raster). Nothing is dropped: the edges fail loudly rather than lose a bin.

    Parameters (``params``)
    -----------------------
    features : bool
        Keep each bin's decoder features in the trace (needed to refit from a saved trace).
    progress : bool
        A tqdm progress bar per block on stderr.

    In-process hooks (``NodeContext.objects``): ``"<name>.on_block"``, called as
    ``on_block(info, trace)`` when a block ends (``info`` as the cursor's ``block_end`` event);
    ``"<name>.on_bin"``, called with each row.
    The finished traces are :attr:`traces` (and, JSON-able, in :meth:`summary`).
    """

    kind = "trace"
    CRITICAL = False
    INPUTS = {
        "bins": PortSpec(maxlen=1 << 16, policy="fail", required=True, message="bin_row", doc="the cursor's per-bin rows"),
        "events": PortSpec(maxlen=1 << 14, policy="fail", required=True, message="events", doc="the cursor's events"),
        "features": PortSpec(maxlen=1 << 12, policy="drop_oldest", message="features",
                             doc="the dsp's features (decoder columns, raster)"),
    }
    PARAMS = {"features": Param("bool", True), "progress": Param("bool", False)}

    def setup(self) -> None:
        if getattr(self, "traces", None) is not None:        # a restart keeps what was collected
            return
        self.traces: list = []
        self.infos: list[dict] = []
        #: The dsp's published decoder-feature info (names, bad channels), seen at the first block.
        self.feature_info: dict | None = None
        self._t0: dict[str, float] = {}
        self._open: dict[str, Any] = {}
        self._bars: dict[str, Any] = {}
        self._feats: dict[int, tuple] = {}
        self._dsp = self.ctx.producer(self.name, "features")
        self._on_block = self.ctx.objects.get(f"{self.name}.on_block")
        self._on_bin = self.ctx.objects.get(f"{self.name}.on_bin")

    def _start(self, e: dict) -> None:
        from cortexlink.tasks.trace import TraceBuilder

        n_feat = 0
        n_raster = 0
        if e.get("mode") != "perfect" and self._dsp is not None:
            info = self.ctx.bus.get_info(f"{self._dsp}/features") or {}
            if info and self.feature_info is None:
                self.feature_info = info
            n_feat = len(info.get("names", ())) if self.params["features"] else 0
            n_raster = int((self.ctx.bus.get_info(f"{self._dsp}/stream_features") or {}).get("raster_channels", 0))
        self._open[e["name"]] = TraceBuilder(e["name"], e.get("mode", "closed"), e.get("task", "task"),
                                             self.ctx.bin_ms / 1000.0, int(e.get("n_max", 0)),
                                             n_features=n_feat, n_raster=n_raster)
        self._t0[e["name"]] = time.perf_counter()
        if self.params["progress"]:
            from tqdm.auto import tqdm

            self._bars[e["name"]] = tqdm(total=int(e.get("n_max", 0)), unit="bin", leave=True,
                                         desc=f"{e['name']} ({e.get('task')}, {e.get('mode')})")

    def _end(self, e: dict) -> None:
        b = self._open.pop(e["name"], None)
        bar = self._bars.pop(e["name"], None)
        if bar is not None:
            bar.close()
        if b is None:
            logger.warning("%s: block %s ended without a start", self.name, e["name"])
            return
        trace = b.finish(e.get("metrics") or {})
        self.traces.append(trace)
        self.infos.append({**e, "wall_s": time.perf_counter() - self._t0.pop(e["name"], time.perf_counter())})
        if self._on_block is not None:
            self._on_block(e, trace)

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        from cortexlink.tasks.base import TaskEvent

        for m in inbox.get("features", ()):
            p = m.payload
            self._feats[p.bin] = (p.x, p.raster)
        events = [m.payload for m in inbox.get("events", ())]
        for e in events:
            if e.get("kind") == "block_start":
                self._start(e)
        for m in inbox.get("bins", ()):
            row = m.payload
            b = self._open.get(row.block)
            g = row.bin
            x, raster = self._feats.pop(g, (None, None))
            if b is not None:
                b.add(row, x, raster)
                bar = self._bars.get(row.block)
                if bar is not None:
                    bar.update(1)
            if self._on_bin is not None:
                self._on_bin(row)
            if len(self._feats) > _KEEP_BINS:
                for k in [k for k in self._feats if k < g - _KEEP_BINS // 2]:
                    del self._feats[k]
        for e in events:
            if e.get("kind") == "task":
                b = self._open.get(e.get("block"))
                if b is not None:
                    b.events.append(TaskEvent(float(e["t_s"]), str(e["event"]), dict(e.get("data") or {})))
        for e in events:
            if e.get("kind") == "block_end":
                self._end(e)

    def teardown(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars = {}

    def summary(self) -> dict:
        return {"blocks": [{"name": t.name, "mode": t.mode, "task": t.task, "n_bins": t.n_bins}
                           for t in getattr(self, "traces", ())]}
