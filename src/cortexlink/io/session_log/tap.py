""":class:`RecorderTap`: record a :class:`~cortexlink.tasks.loop.ClosedLoop` through a
:class:`~cortexlink.io.session_log.SessionRecorder`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import numpy as np

from cortexlink.io.session_log.format import STREAM_COLUMNS
from cortexlink.io.session_log.writer import SessionRecorder


class RecorderTap:
    """Record a :class:`~cortexlink.tasks.loop.ClosedLoop`: append it to ``loop.taps``.

    Streams: ``raw`` (every chunk the implant gave, warm-up included), ``features`` (every
    feature bin the extractor made), ``cursor`` (x, y, vx, vy, clicked, halted per loop bin;
    halted is always 0), ``decoder`` (vx, vy, click_proba, click in closed-loop bins; click is
    NaN: the loop does not hand the click decoder's decision to its taps), ``intent`` (the
    simulated participant's intended vx, vy and click), and events: block start/end with
    metrics, task events, decoders as they go live (saved under ``decoders/``). Row streams
    have the columns of :data:`~cortexlink.io.session_log.format.STREAM_COLUMNS`.
    """

    def __init__(self, recorder: SessionRecorder, *, raw: bool = True) -> None:
        self.rec = recorder
        self.raw = raw
        self._decoders_seen: dict[int, tuple[str, str]] = {}
        self._source_set = False

    def _sample(self, loop: Any) -> int:
        imp = getattr(loop, "implant", None)
        if imp is not None and hasattr(imp, "sample_index"):
            return int(imp.sample_index)
        fs = self.rec.fs_hz or 30000.0
        return int(round(loop.t_s * fs))

    def samples(self, loop: Any, chunk: Any, features: Any) -> None:
        if not self._source_set:
            self._source_set = True
            params = {k: v for k, v in loop.fx.get_params().items() if k != "channel_map"}
            self.rec.set_source(loop.implant.channel_map, float(chunk.fs_hz), dsp=params,
                                loop={"dt_s": loop.dt_s, "feature_kinds": list(loop.feature_kinds),
                                      "samples_per_bin": loop.samples_per_bin})
        if self.raw:
            self.rec.write_raw(chunk)
        self.rec.write_features(features)

    def block_started(self, loop: Any, run: Any) -> None:
        s = self._sample(loop)
        files = []
        for dec in (run.decoder, run.click_decoder):
            if dec is None or not hasattr(dec, "save"):
                files.append(None)
                continue
            fp = _fingerprint(dec)
            seen = self._decoders_seen.get(id(dec))
            if seen is None or seen[0] != fp:
                name = f"{type(dec).__name__}-{s}"
                path = self.rec.save_decoder(dec, name, s)
                seen = (fp, f"decoders/{path.name}")
                self._decoders_seen[id(dec)] = seen
            files.append(seen[1])
        cols = None if loop.feature_columns_ is None else [int(c) for c in loop.feature_columns_]
        self.rec.event("block_start", sample=s, name=run.name, mode=run.mode, task=getattr(run.task, "name", "task"),
                       feature_columns=cols, decoder_file=files[0], click_decoder_file=files[1])

    def bin_done(self, loop: Any, run: Any, out: dict) -> None:
        s = self._sample(loop)
        xy, v = out["cursor_xy"], out["velocity"]
        self.rec.write_row("cursor", s, (xy[0], xy[1], v[0], v[1], float(out["clicked"]), 0.0),
                           columns=STREAM_COLUMNS["cursor"])
        iv = run.rec["intended_velocity"][out["n"]]
        self.rec.write_row("intent", s, (iv[0], iv[1], run.rec["click_intent"][out["n"]]),
                           columns=STREAM_COLUMNS["intent"])
        if out["decoded_velocity"] is not None:
            d = out["decoded_velocity"]
            self.rec.write_row("decoder", s, (d[0], d[1], out["click_proba"], math.nan),
                               columns=STREAM_COLUMNS["decoder"])
        for ev in out["events"]:
            self.rec.event("task", sample=s, block=run.name, **_event_fields(ev))

    def block_ended(self, loop: Any, run: Any, trace: Any) -> None:
        self.rec.event("block_end", sample=self._sample(loop), name=run.name, n_bins=trace.n_bins,
                       metrics=trace.metrics)


def _fingerprint(dec: Any) -> str:
    """Changes when a decoder is refitted (its fitted arrays change)."""
    h = hashlib.sha1()
    for k in sorted(vars(dec)):
        if k.endswith("_") and not k.startswith("_"):
            v = getattr(dec, k)
            if isinstance(v, np.ndarray) and v.dtype != object:
                h.update(k.encode())
                h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def _event_fields(ev: Any) -> dict:
    if dataclasses.is_dataclass(ev):
        d = dataclasses.asdict(ev)
    elif isinstance(ev, dict):
        d = dict(ev)
    else:
        d = {"value": repr(ev)}
    if "kind" in d:
        d["task_event"] = d.pop("kind")
    d.pop("sample", None)
    return d

