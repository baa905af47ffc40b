"""The closed-loop part of ``cortexlink bench codec --near-lossless --closed-loop``: Webgrid bits
per second of the simulated participant when the implant's raw chunks cross a near-lossless link.

Each bound runs the demo's session (calibration, closed-loop centre-out, refit, Webgrid; no chess)
on ``channels`` channels with ``loop.link = {codec, max_error_uv}``: the graph's ``raw_link`` node
codes every chunk, decodes it and hands the decoded samples to the dsp, so calibration, fitting
and the evaluation all see only what crossed the link. The same seed for every bound: the
participant and the implant are the same; only the link differs. One run per bound, so a
difference of a few tenths of a bit per second between bounds is within run-to-run spread
(Webgrid's bps counts correct minus incorrect selections in ``webgrid_s`` seconds).
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Sequence

LOOP_ERRORS_UV = (0.0, 2.0, 5.0, 10.0, 20.0)
LOOP_CHANNELS = 512
LOOP_WEBGRID_S = 60.0


def loop_curve(errors_uv: Sequence[float] = LOOP_ERRORS_UV, *, channels: int = LOOP_CHANNELS,
               webgrid_s: float = LOOP_WEBGRID_S, codec: str = "rice", seed: int = 0,
               session: dict | None = None, progress: bool = False) -> dict:
    """One closed-loop session per bound; rows of bits per sample, the largest error seen and the
    Webgrid figures. ``session``: another session dict to run instead of the demo's (its last
    Webgrid block is the one reported; ``channels`` and ``webgrid_s`` are then not applied)."""
    from cortexlink.runtime.session import DEFAULT_SESSION, run_session

    if session is not None:
        base = copy.deepcopy(session)
        channels = int(base.get("implant", {}).get("n_channels", channels))
        webgrid_s = float(next((b.get("seconds", 0.0) for b in reversed(base["blocks"])
                                if b.get("task") == "webgrid"), 0.0))
    else:
        base = copy.deepcopy(DEFAULT_SESSION)
        base["seed"] = seed
        base["implant"]["n_channels"] = channels
        base["blocks"] = [b for b in base["blocks"] if b.get("task") != "chess"]
        base["blocks"][-1]["seconds"] = float(webgrid_s)
    rows = []
    for err in errors_uv:
        s = copy.deepcopy(base)
        s["loop"] = {**s.get("loop", {}), "link": {"codec": codec, "max_error_uv": float(err)}}
        if progress:
            print(f"  closed loop, {channels} ch, bound {err:g} µV ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        res = run_session(s, progress=False)
        summary = res["summary"]
        link = summary.get("link") or {}
        web = next((b for b in reversed(summary["blocks"]) if b.get("task") == "webgrid"), {})
        m = web.get("metrics") or {}
        rows.append({"max_error_uv": float(err), "bits_per_sample": link.get("bits_per_sample"),
                     "max_abs_error_counts": link.get("max_error_counts"),
                     "webgrid_bps": m.get("bps"), "webgrid_accuracy": m.get("accuracy"),
                     "webgrid_ntpm": m.get("ntpm"), "wall_s": round(time.perf_counter() - t0, 1)})
    return {"dataset": f"closed_loop_sim_{channels}ch", "channels": channels, "codec": codec,
            "webgrid_s": float(webgrid_s), "seed": seed, "rows": rows}
