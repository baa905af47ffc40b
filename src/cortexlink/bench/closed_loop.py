"""``cortexlink bench closed-loop``: Webgrid bits per second per decoder, channel count and seed.

For each channel count and seed, one simulated implant and participant go through:

1. open-loop calibration (the cursor moves to Webgrid targets by itself, the participant intends
   along and clicks when it is there); every decoder and the click decoder are fitted on it;
2. for ReFIT-Kalman: a closed-loop block with the Kalman filter, then the ReFIT refit;
3. one Webgrid evaluation block per decoder (same grid seed for all), closed loop.

The perfect decoder (cursor = intent, click = click intent) runs the same evaluation block
without the implant: the ceiling set by the participant's own control. Blocks run one after
the other on the same implant, so slow drift of the units' baseline rates is part of the test.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["run", "print_summary", "DECODERS", "CHANNELS"]

DECODERS = ("perfect", "wiener", "kalman", "refit_kalman", "gru")
CHANNELS = (96, 256, 1024)


def _implant(n_channels: int, seed: int):
    from cortexlink.bench.decode import SIM96_PRESET
    from cortexlink.sim import SimulatedImplant

    if n_channels == 96:
        return SimulatedImplant.from_preset(SIM96_PRESET, seed=seed)
    return SimulatedImplant(n_channels=n_channels, seed=seed)


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
    from cortexlink.decoders import ClickDecoder
    from cortexlink.sim.participant import SimulatedParticipant
    from cortexlink.tasks.loop import ClosedLoop, refit_set, training_set
    from cortexlink.tasks.session import make_decoder
    from cortexlink.tasks.webgrid import WebgridTask

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
                     "task": f"Webgrid {grid}x{grid}, click to select",
                     "bitrate": "log2(N-1) * max(correct - incorrect, 0) / t, N = grid*grid"},
        "results": [], "summary": {}}
    neural = [d for d in decoders if d != "perfect"]
    n_bins = 0
    for _ in channels:
        per = (calibration_s + (refit_s if "refit_kalman" in neural else 0.0) + eval_s * len(neural)) if neural else 0
        n_bins += int(per / 0.02)
    n_bins *= len(seeds)
    t_all = time.perf_counter()
    with tqdm(total=n_bins, desc="bench closed-loop", unit="bin", disable=not progress) as bar:
        for seed in seeds:
            if "perfect" in decoders:
                loop = ClosedLoop(None, participant=SimulatedParticipant(seed=seed), seed=seed)
                tr = loop.run_block(WebgridTask(n=grid, seed=seed), mode="perfect", seconds=eval_s)
                for ch in channels:   # the ceiling does not depend on the implant
                    result["results"].append(_row("perfect", ch, seed, tr.metrics))
            for ch in channels if neural else ():
                bar.set_description(f"{ch} ch, seed {seed}")
                loop = ClosedLoop(_implant(ch, seed), participant=SimulatedParticipant(seed=seed), seed=seed)
                loop.warm_up()
                cal = loop.run_block(WebgridTask(n=grid, seed=seed + 1000), mode="open", seconds=calibration_s,
                                     progress=bar, name="calibration")
                X, y, c = training_set([cal])
                click = ClickDecoder().fit(X, c)
                fitted: dict[str, Any] = {}
                fit_s: dict[str, float] = {}
                for name in neural:
                    dec = make_decoder(name)
                    t0 = time.perf_counter()
                    dec.fit(X, y, feature_names=loop.feature_names_)
                    fit_s[name] = time.perf_counter() - t0
                    fitted[name] = dec
                if "refit_kalman" in fitted:
                    dec = fitted["refit_kalman"]
                    cl = loop.run_block(WebgridTask(n=grid, seed=seed + 2000), mode="closed", seconds=refit_s,
                                        decoder=dec, click_decoder=click, progress=bar, name="refit-block")
                    dec.refit(*refit_set([cl]))
                for name in neural:
                    tr = loop.run_block(WebgridTask(n=grid, seed=seed), mode="closed", seconds=eval_s,
                                        decoder=fitted[name], click_decoder=click, progress=bar, name=name)
                    lat = tr.decode_latency_us[np.isfinite(tr.decode_latency_us)]
                    result["results"].append(_row(name, ch, seed, tr.metrics, {
                        "fit_s": fit_s[name], "decode_p99_us": float(np.percentile(lat, 99)) if lat.size else None,
                        "n_features": loop.n_features}))
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
