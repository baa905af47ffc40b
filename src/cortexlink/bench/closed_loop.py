"""``cortexlink bench closed-loop``: Webgrid bits per second per decoder, channel count, grid and seed.

Each (decoder, channel count, grid, seed, variant) is one session run on the runtime graph
(:func:`~cortexlink.runtime.session.run_session`, the engine every closed loop uses):

1. open-loop calibration (the cursor moves to Webgrid targets by itself, the participant watches
   it and imagines moving it, and clicks when it sees it in the target; grid seed
   ``seed + 1000``); the decoder and the click decoder are fitted on it with the labels a lab
   records (``labels``, default ``target``: the direction to the target at the cursor's speed,
   with the lag chosen from the data) and a speed gain whose dead zone is set from the rest
   noise measured on held-out calibration bins; the cursor holds still while a click builds up
   (the click decoder's probability >= 0.3);
2. for ReFIT-Kalman: a closed-loop block (grid seed ``seed + 2000``), then the ReFIT refit;
3. a Webgrid evaluation block (grid seed ``seed``, the same for every decoder), closed loop.

A seed gives every decoder the same implant, participant and calibration data, and each
decoder's evaluation starts at the same time after calibration. The perfect decoder (cursor =
intent, click = click intent) runs the evaluation block without the implant: the ceiling set by
the participant's own control.

*Variants* (:data:`VARIANTS`) change one thing in the default configuration: an ablation row
(``no_speed_gain``, ``fitted_dynamics``, ``refit_closed_loop_only``, ``refit_current_cursor``, ``no_click_freeze``, ``dwell_fallback``, ``oracle_labels``, ``cursor_labels``, ``slow_autopilot``,
``observe_as_self``, ``bias_correction`` (Jarosiewicz et al. 2015, 30 s), ``smoothbatch``: the refit
block as four 10 s batches, each refit blended with the model before it, half-life 20 s;
``refit_dynamics``: ReFIT also re-learns the dynamics from the intention) or the
participant's delay, feedback gain or motor noise by +-20 % (``delay+20`` ...). Each row carries
the control metrics of :func:`cortexlink.tasks.loop_metrics.control_metrics` (decoded speed at
rest, drift over the visual delay in cell half-widths, wrong clicks' speed and distance, click
detection).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["run", "print_summary", "session", "DECODERS", "CHANNELS", "VARIANTS", "SENSITIVITY", "PRESET"]

DECODERS = ("perfect", "wiener", "kalman", "refit_kalman", "gru")
CHANNELS = (96, 256, 1024)
_P = ("participant",)

#: One change each to the default session (a path into the session dict and the value); a
#: ``*`` value scales the participant's default field by that factor.
VARIANTS: dict[str, list[tuple[tuple[str, ...], Any]]] = {
    "default": [],
    "no_speed_gain": [(("decoder", "speed_gain"), None)],
    "fitted_dynamics": [(("decoder", "velocity_tau_s"), None)],
    "refit_closed_loop_only": [(("decoder", "refit_with_calibration"), False)],
    "refit_current_cursor": [(("decoder", "refit_intent_lag_s"), None)],
    "oracle_labels": [(("decoder", "labels"), "intent")],
    "cursor_labels": [(("decoder", "labels"), "cursor")],
    "slow_autopilot": [(("loop", "autopilot_speed"), 1.0)],
    "observe_as_self": [(_P + ("observation",), "self")],
    "no_click_freeze": [(("click_decoder", "freeze_proba"), None)],
    "dwell_fallback": [(("effector", "dwell_s"), 0.8)],
    "bias_correction": [(("decoder", "bias_tau_s"), 30.0)],
    "smoothbatch": [(("decoder", "refit_half_life_s"), 20.0)],
    "refit_dynamics": [(("decoder", "params", "refit_dynamics"), True)],
    "delay+20": [(_P + ("visual_delay_s",), ("*", 1.2))],
    "delay-20": [(_P + ("visual_delay_s",), ("*", 0.8))],
    "gain+20": [(_P + ("feedback_gain_per_s",), ("*", 1.2))],
    "gain-20": [(_P + ("feedback_gain_per_s",), ("*", 0.8))],
    "noise+20": [(_P + ("motor_noise",), ("*", 1.2))],
    "noise-20": [(_P + ("motor_noise",), ("*", 0.8))],
}
#: SmoothBatch (``refit_half_life_s`` set): the refit block runs as batches of this many seconds,
#: each followed by a blended refit (Orsborn et al. 2012 used 1-2 min batches over long sessions;
#: here the 40 s of the refit block are four batches).
SMOOTHBATCH_BATCH_S = 10.0
#: The +-20 % variants (``--sensitivity``).
SENSITIVITY = ("delay+20", "delay-20", "gain+20", "gain-20", "noise+20", "noise-20")
#: The implant preset family at every channel count: ``cortex`` (one set of unit statistics, shared
#: information-limiting variability and overdispersed counts; see :data:`cortexlink.sim.PRESETS`).
PRESET = "cortex"


#: Session sections that only matter to a fitted decoder: variants changing them do not apply to
#: the perfect decoder.
_DECODER_SECTIONS = ("decoder", "loop", "click_decoder", "effector")


def _decoder_only(variant: str) -> bool:
    """The variant changes only what a perfect decoder does not have."""
    return any(path[0] in _DECODER_SECTIONS for path, _ in VARIANTS[variant])


def _labels_of(s: dict) -> str:
    if s["decoder"]["kind"] == "perfect":
        return "none"
    return s["decoder"].get("labels", "target")


def session(decoder: str, channels: int, seed: int, *, calibration_s: float = 60.0, refit_s: float = 40.0,
            eval_s: float = 60.0, grid: int = 30, variant: str = "default", preset: str | None = PRESET) -> dict:
    """The session one benchmark cell runs (a dict for :func:`~cortexlink.runtime.session.run_session`).

    ``preset``: the implant preset at every channel count (``n_channels`` set to ``channels``;
    default :data:`PRESET`); None: the former pair, ``monkey_m1_utah96`` at 96 channels and
    ``default`` otherwise.
    """
    from cortexlink.bench.decode import SIM96_PRESET
    from cortexlink.sim.participant import ParticipantConfig

    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {list(VARIANTS)}; got {variant!r}")
    if preset is not None:
        implant = {"preset": preset, "n_channels": channels}
    else:
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
    s = {"name": f"bench-{decoder}-{channels}ch-{grid}x{grid}-seed{seed}", "seed": seed, "implant": implant,
         "decoder": {"kind": decoder}, "click_decoder": {"enabled": True}, "blocks": blocks,
         "participant": {}, "loop": {}}
    defaults = ParticipantConfig()
    for path, value in VARIANTS[variant]:
        if decoder == "perfect" and path[0] in _DECODER_SECTIONS:
            continue                      # nothing fitted: the variant changes nothing
        if isinstance(value, tuple) and value and value[0] == "*":
            value = getattr(defaults, path[-1]) * value[1]
        node = s
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = copy.deepcopy(value)
    if decoder == "refit_kalman" and s["decoder"].get("refit_half_life_s") is not None:
        i = next(k for k, b in enumerate(blocks) if b["name"] == "refit-block")
        n = max(1, int(round(refit_s / SMOOTHBATCH_BATCH_S)))
        batches = []
        for k in range(n):
            batches += [{"name": f"refit-block-{k + 1}", "kind": "closed_loop", "task": "webgrid",
                         "seconds": refit_s / n, "task_params": {"n": grid, "seed": seed + 2000 + k}},
                        {"name": f"refit-{k + 1}", "kind": "refit"}]
        blocks[i:i + 2] = batches
    return s


def _row(s: dict, decoder: str, channels: int, grid: int, seed: int, variant: str, m: dict, ev: dict,
         extra: dict | None = None) -> dict:
    row = {"decoder": decoder, "channels": channels, "grid": grid, "labels": _labels_of(s), "variant": variant,
           "seed": seed, "bps": float(m["bps"]), "ntpm": float(m["ntpm"]),
           "accuracy": None if m.get("accuracy") is None else float(m["accuracy"]),
           "n_correct": int(m["n_correct"]), "n_incorrect": int(m["n_incorrect"]), "control": ev.get("control")}
    row.update(extra or {})
    return row


def _check(channels: Sequence[int], decoders: Sequence[str], seeds: Sequence[int], grids: Sequence[int],
           variants: Sequence[str]) -> None:
    unknown = [d for d in decoders if d not in DECODERS]
    if unknown:
        raise ConfigError(f"decoders must be drawn from {list(DECODERS)}; got {unknown}")
    for c in channels:
        if isinstance(c, bool) or not isinstance(c, int) or c < 8:
            raise ConfigError(f"channels must be integers >= 8; got {c!r}")
    for g in grids:
        if isinstance(g, bool) or not isinstance(g, int) or not 2 <= g <= 100:
            raise ConfigError(f"grids must be integers in [2, 100]; got {g!r}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"variants must be drawn from {list(VARIANTS)}; got {bad}")
    if not seeds:
        raise ConfigError("seeds must hold at least one seed")
    if not grids or not variants:
        raise ConfigError("grids and variants must each hold at least one value")


def run(channels: Sequence[int] = CHANNELS, decoders: Sequence[str] = DECODERS, seeds: Sequence[int] = (0, 1, 2),
        *, calibration_s: float = 60.0, refit_s: float = 40.0, eval_s: float = 60.0, grid: int = 30,
        grids: Sequence[int] | None = None, variants: Sequence[str] = ("default",), preset: str | None = PRESET,
        progress: bool = True) -> dict:
    """Run the closed-loop benchmark; return JSON-able results (see the module docstring).

    ``grids`` (default ``[grid]``) are the Webgrid sizes; ``variants`` the configurations
    (:data:`VARIANTS`); ``preset`` the implant preset family (see :func:`session`).
    """
    from tqdm.auto import tqdm

    from cortexlink.bench.dsp import machine_info
    from cortexlink.runtime.session import run_session

    grids = [grid] if grids is None else list(grids)
    _check(channels, decoders, seeds, grids, variants)
    result: dict[str, Any] = {
        "benchmark": "closed-loop", "machine": machine_info(),
        "settings": {"channels": list(channels), "decoders": list(decoders), "seeds": list(seeds),
                     "calibration_s": calibration_s, "refit_s": refit_s, "eval_s": eval_s, "grids": grids,
                     "variants": list(variants), "preset": preset,
                     "task": "Webgrid NxN, click to select", "engine": "runtime graph (run_session)",
                     "bitrate": "log2(N-1) * max(correct - incorrect, 0) / t, N = grid*grid"},
        "results": [], "summary": {}}
    cells = [(seed, dec, ch, g, v) for seed in seeds for v in variants for g in grids for dec in decoders
             for ch in (channels if dec != "perfect" else channels[:1])
             if not (dec == "perfect" and _decoder_only(v))]
    t_all = time.perf_counter()
    with tqdm(total=len(cells), desc="bench closed-loop", unit="session", disable=not progress) as bar:
        for seed, dec, ch, g, v in cells:
            bar.set_description(f"{dec}, {ch} ch, {g}x{g}, {v}, seed {seed}")
            s = session(dec, ch, seed, calibration_s=calibration_s, refit_s=refit_s, eval_s=eval_s, grid=g,
                        variant=v, preset=preset)
            res = run_session(s, progress=False)
            blocks = {b["name"]: b for b in res["summary"]["blocks"]}
            ev = blocks[dec]
            if dec == "perfect":
                for c in channels:   # the ceiling does not depend on the implant
                    result["results"].append(_row(s, "perfect", c, g, seed, v, ev["metrics"], ev))
            else:
                lat = ev.get("decode_latency_us") or {}
                fit = blocks["fit"]
                result["results"].append(_row(s, dec, ch, g, seed, v, ev["metrics"], ev, {
                    "fit_s": fit.get("fit_s"), "label_lag_bins": fit.get("label_lag_bins"),
                    "velocity_tau_bins": fit.get("velocity_tau_bins"),
                    "speed_gain": fit.get("speed_gain"), "decode_p99_us": lat.get("p99"),
                    "n_features": res["summary"].get("n_features")}))
            bar.update(1)
    result["wall_s"] = time.perf_counter() - t_all
    result["summary"] = summarise(result["results"])
    return result


def summarise(rows: Sequence[dict]) -> dict:
    """Mean, sd, min and max of bps (and mean accuracy) per decoder/channels/grid/variant."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['decoder']}/{r['channels']}/{r['grid']}/{r['variant']}", []).append(r)
    out = {}
    for key, rs in groups.items():
        b = np.array([r["bps"] for r in rs], float)
        acc = [r["accuracy"] for r in rs if r.get("accuracy") is not None]
        out[key] = {"bps_mean": float(b.mean()), "bps_sd": float(b.std(ddof=1)) if b.size > 1 else 0.0,
                    "bps_min": float(b.min()), "bps_max": float(b.max()), "n_seeds": int(b.size),
                    "accuracy_mean": float(np.mean(acc)) if acc else None, "labels": rs[0]["labels"]}
    return out


def print_summary(result: dict) -> None:
    """Table of bps mean ± sd per decoder and channel count, one per grid and variant."""
    m = result["machine"]
    s = result["settings"]
    print(f"machine: {m['cpu']} ({m['cores']} cores); {len(s['seeds'])} seeds; {s['eval_s']:.0f} s evaluation blocks; "
          f"preset {s.get('preset') or 'legacy (monkey_m1_utah96 at 96 ch, default otherwise)'}")
    chans = s["channels"]
    for g in s.get("grids", [s.get("grid", 30)]):
        for v in s.get("variants", ["default"]):
            print(f"Webgrid {g}x{g}, {v}:")
            print(f"{'decoder':<14}" + "".join(f"{str(c) + ' ch':>22}" for c in chans))
            for dec in s["decoders"]:
                cells = []
                for c in chans:
                    r = result["summary"].get(f"{dec}/{c}/{g}/{v}")
                    cells.append(f"{r['bps_mean']:>6.2f} ± {r['bps_sd']:<4.2f} bps" if r else "-")
                print(f"{dec:<14}" + "".join(f"{x:>22}" for x in cells))
    print(f"wall time {result['wall_s']:.0f} s")
