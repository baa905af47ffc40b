"""``cortexlink bench closed-loop``: Webgrid bits per second per decoder, channel count and seed.

Each (decoder, channel count, seed) is one session run on the runtime graph
(:func:`~cortexlink.runtime.session.run_session`, the engine every closed loop uses):

1. open-loop calibration (the cursor moves to Webgrid targets by itself, the participant intends
   along and clicks when it is there; grid seed ``seed + 1000``); the decoder and the click
   decoder are fitted on it;
2. for ReFIT-Kalman: a closed-loop block (grid seed ``seed + 2000``), then the ReFIT refit;
3. a Webgrid evaluation block (grid seed ``seed``, the same for every decoder), closed loop.

A seed gives every decoder the same implant, participant and calibration data, and each
decoder's evaluation starts at the same time after calibration. The perfect decoder (cursor =
intent, click = click intent) runs the evaluation block without the implant: the ceiling set by
the participant's own control.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["run", "print_summary", "session", "DECODERS", "CHANNELS"]

DECODERS = ("perfect", "wiener", "kalman", "refit_kalman", "gru")
CHANNELS = (96, 256, 1024)


def session(decoder: str, channels: int, seed: int, *, calibration_s: float = 60.0, refit_s: float = 40.0,
            eval_s: float = 60.0, grid: int = 30) -> dict:
    """The session one benchmark cell runs (a dict for :func:`~cortexlink.runtime.session.run_session`)."""
    from cortexlink.bench.decode import SIM96_PRESET

    implant = {"preset": SIM96_PRESET} if channels == 96 else {"preset": "default", "n_channels": channels}
    blocks: list[dict] = []
    if decoder != "perfect":
        blocks += [{"name": "calibration", "kind": "calibration", "task": "webgrid", "seconds": calibration_s,
                    "task_params": {"n": grid, "seed": seed + 1000}},
                   {"name": "fit", "kind": "fit"}]
        if decoder == "refit_kalman":
            blocks += [{"name": "refit-block", "kind": "closed_loop", "task": "webgrid", "seconds": refit_s,
                        "task_params": {"n": grid, "seed": seed + 2000}},
                       {"name": "refit", "kind": "refit"}]
    blocks.append({"name": decoder, "kind": "evaluation", "task": "webgrid", "seconds": eval_s,
                   "task_params": {"n": grid, "seed": seed}})
    return {"name": f"bench-{decoder}-{channels}ch-seed{seed}", "seed": seed, "implant": implant,
            "decoder": {"kind": decoder}, "click_decoder": {"enabled": True}, "blocks": blocks}


def _row(decoder: str, channels: int, seed: int, m: dict, extra: dict | None = None) -> dict:
    row = {"decoder": decoder, "channels": channels, "seed": seed, "bps": float(m["bps"]),
           "ntpm": float(m["ntpm"]), "accuracy": None if m.get("accuracy") is None else float(m["accuracy"]),
           "n_correct": int(m["n_correct"]), "n_incorrect": int(m["n_incorrect"])}
    row.update(extra or {})
    return row


def run(channels: Sequence[int] = CHANNELS, decoders: Sequence[str] = DECODERS, seeds: Sequence[int] = (0, 1, 2),
        *, calibration_s: float = 60.0, refit_s: float = 40.0, eval_s: float = 60.0, grid: int = 30,
        progress: bool = True) -> dict:
    """Run the closed-loop benchmark; return JSON-able results (see the module docstring)."""
    from tqdm.auto import tqdm

    from cortexlink.bench.dsp import machine_info
    from cortexlink.runtime.session import run_session

    unknown = [d for d in decoders if d not in DECODERS]
    if unknown:
        raise ConfigError(f"decoders must be drawn from {list(DECODERS)}; got {unknown}")
    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int) or c < 8:
            raise ConfigError(f"channels must be integers >= 8; got {c!r}")
    if not seeds:
        raise ConfigError("seeds must hold at least one seed")
    result: dict[str, Any] = {
        "benchmark": "closed-loop", "machine": machine_info(),
        "settings": {"channels": list(channels), "decoders": list(decoders), "seeds": list(seeds),
                     "calibration_s": calibration_s, "refit_s": refit_s, "eval_s": eval_s, "grid": grid,
                     "task": f"Webgrid {grid}x{grid}, click to select", "engine": "runtime graph (run_session)",
                     "bitrate": "log2(N-1) * max(correct - incorrect, 0) / t, N = grid*grid"},
        "results": [], "summary": {}}
    cells = [(seed, dec, ch) for seed in seeds for dec in decoders for ch in (channels if dec != "perfect" else
                                                                             channels[:1])]
    t_all = time.perf_counter()
    with tqdm(total=len(cells), desc="bench closed-loop", unit="session", disable=not progress) as bar:
        for seed, dec, ch in cells:
            bar.set_description(f"{dec}, {ch} ch, seed {seed}")
            res = run_session(session(dec, ch, seed, calibration_s=calibration_s, refit_s=refit_s, eval_s=eval_s,
                                      grid=grid), progress=False)
            blocks = {b["name"]: b for b in res["summary"]["blocks"]}
            ev = blocks[dec]
            if dec == "perfect":
                for c in channels:   # the ceiling does not depend on the implant
                    result["results"].append(_row("perfect", c, seed, ev["metrics"]))
            else:
                lat = ev.get("decode_latency_us") or {}
                result["results"].append(_row(dec, ch, seed, ev["metrics"], {
                    "fit_s": blocks["fit"].get("fit_s"), "decode_p99_us": lat.get("p99"),
                    "n_features": res["summary"].get("n_features")}))
            bar.update(1)
    result["wall_s"] = time.perf_counter() - t_all
    for dec in decoders:
        for ch in channels:
            b = [r["bps"] for r in result["results"] if r["decoder"] == dec and r["channels"] == ch]
            if b:
                result["summary"][f"{dec}/{ch}"] = {"bps_mean": float(np.mean(b)), "bps_sd": float(np.std(b, ddof=1)) if len(b) > 1 else 0.0,
                                                    "bps_min": float(np.min(b)), "bps_max": float(np.max(b)), "n_seeds": len(b)}
    return result


def print_summary(result: dict) -> None:
    """Table of bps mean ± sd per decoder and channel count."""
    m = result["machine"]
    s = result["settings"]
    print(f"machine: {m['cpu']} ({m['cores']} cores); {s['task']}; {len(s['seeds'])} seeds; "
          f"{s['eval_s']:.0f} s evaluation blocks")
    chans = s["channels"]
    print(f"{'decoder':<14}" + "".join(f"{str(c) + ' ch':>20}" for c in chans))
    for dec in s["decoders"]:
        cells = []
        for c in chans:
            r = result["summary"].get(f"{dec}/{c}")
            cells.append(f"{r['bps_mean']:>8.2f} ± {r['bps_sd']:<5.2f} bps" if r else f"{'-':>20}")
        print(f"{dec:<14}" + "".join(f"{x:>20}" for x in cells))
    print(f"wall time {result['wall_s']:.0f} s")
