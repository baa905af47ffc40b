"""``cortexlink bench stim``: the safety interlock under attack, its cost, recording through
stimulation, and what the auditory encoder conveys.

Four parts, each measured in the same run:

``interlock``
    The fuzz campaign (:func:`cortexlink.stim.fuzz.fuzz_interlock`): random and malicious plans
    through interlock → driver → simulated stimulator, every delivered pulse re-checked by the
    independent exact verifier; ``unsafe_pulses_emitted`` must be 0.
``interlock_cost``
    Microseconds per plan on ordinary workloads (CIS auditory plans, touch plans), and the
    independent verifier on the same pulses beside it (a peer measured in the same run).
``artifacts``
    :func:`cortexlink.bench.stim_artifacts.measure_artifacts`: false threshold crossings per
    second without stimulation, with it and no removal, and with each removal mode; spikes lost.
``auditory``
    STOI of the CIS resynthesis by channel count and rate on spoken sentences (espeak-ng);
    skipped with the reason when espeak-ng is absent.
``closed_loop_touch`` (with ``--closed-loop``)
    Closed-loop centre-out with touch feedback through the whole stack (session on the runtime
    graph, 64 channels, Wiener): no stimulation; touch in every block (the decoder calibrated
    with it); touch only in the closed-loop block; asynchronous touch trains.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

__all__ = ["run", "print_summary", "interlock_cost", "closed_loop_touch"]

_SENTENCES = ("The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
              "It's easy to tell the depth of a well.")


def interlock_cost(seconds: float = 20.0, *, bin_s: float = 0.02) -> dict:
    """Microseconds per plan and per pulse for ordinary plans (20 ms windows), with the
    independent verifier's cost on the same approved stream as the peer."""
    from cortexlink.stim.auditory import CISConfig, CISEncoder
    from cortexlink.stim.interlock import SafetyInterlock
    from cortexlink.stim.limits import SafetyLimits
    from cortexlink.stim.touch import SimulatedHand, TouchEncoder
    from cortexlink.stim.verify import find_unsafe

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    n_bins = int(round(seconds / bin_s))
    fs = 16000.0
    audio = rng.standard_normal(int(seconds * fs)) * np.sin(np.linspace(0, 40 * np.pi, int(seconds * fs))) ** 2
    workloads = {
        "auditory_cis_12ch_300pps": (SafetyLimits.default(32), "cis"),
        "touch_5_fingers_10_electrodes": (SafetyLimits.default(32), "touch"),
    }
    for name, (limits, kind) in workloads.items():
        lock = SafetyInterlock(limits)
        if kind == "cis":
            enc = CISEncoder(CISConfig(n_channels=12, rate_hz=300.0, fs_hz=fs))
            n = int(round(bin_s * fs))
            plans = [enc.step(audio[b * n:(b + 1) * n], b * bin_s) for b in range(n_bins)]
        else:
            enc = TouchEncoder()
            hand = SimulatedHand()
            period = max(hand.duration_s, 1.0)
            plans = [enc.step(hand.forces((b * bin_s) % period), b * bin_s, bin_s) for b in range(n_bins)]
        approved = []
        t = time.perf_counter()
        for b, plan in enumerate(plans):
            approved.append(lock.review(plan, b * bin_s).approved.pulses)
        review = time.perf_counter() - t
        stream = np.concatenate(approved)
        t = time.perf_counter()
        unsafe = find_unsafe(stream, limits)
        verify = time.perf_counter() - t
        n_pulses = sum(len(p) for p in plans)
        out[name] = {"plans": len(plans), "pulses": n_pulses, "approved": int(len(stream)),
                     "refused": int(lock.totals["refused"]), "unsafe": len(unsafe),
                     "us_per_plan": review / len(plans) * 1e6,
                     "us_per_pulse": review / max(n_pulses, 1) * 1e6,
                     "cpu_fraction_of_real_time": review / (n_bins * bin_s),
                     "verifier_us_per_pulse": verify / max(len(stream), 1) * 1e6,
                     "interlock_vs_verifier_speed": (verify / max(len(stream), 1)) / (review / max(n_pulses, 1))}
    return out


_TOUCH_SESSION = {
    "name": "bench-touch", "implant": {"preset": "default", "n_channels": 64},
    "decoder": {"kind": "wiener"}, "click_decoder": {"enabled": False},
    "blocks": [{"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": 20},
               {"name": "fit", "kind": "fit"},
               {"name": "closed-loop", "kind": "closed_loop", "task": "centre_out", "seconds": 30}],
}
_TOUCH = {"config": {"sensor_electrodes": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]}}
TOUCH_VARIANTS = {
    "none": None,
    "touch_every_block": {"touch": _TOUCH},
    "touch_closed_loop_only": {"touch": _TOUCH, "blocks": ["closed-loop"]},
    "touch_asynchronous": {"touch": {"config": {**_TOUCH["config"], "sync_hz": None, "freq_max_hz": 200.0}}},
}


def closed_loop_touch(seeds: Sequence[int] = (0, 1, 2), progress: Any = None) -> list[dict]:
    """Closed-loop centre-out success and time to target per touch-feedback variant and seed."""
    import copy

    from cortexlink.runtime.session import run_session

    rows = []
    for seed in seeds:
        for name, stim in TOUCH_VARIANTS.items():
            cfg = copy.deepcopy(_TOUCH_SESSION)
            cfg["seed"] = int(seed)
            if stim is not None:
                cfg["stimulation"] = copy.deepcopy(stim)
            row: dict[str, Any] = {"variant": name, "seed": int(seed)}
            try:
                summ = run_session(cfg, progress=False)["summary"]
                blk = next(b for b in summ["blocks"] if b["name"] == "closed-loop")
                m = blk.get("metrics") or {}
                st = (summ.get("stimulation") or {})
                row.update(success_rate=m.get("success_rate"), n_trials=m.get("n_trials"),
                           mean_time_to_target_s=m.get("mean_time_to_target_s"),
                           pulses_delivered=(st.get("stimulator") or {}).get("pulses_delivered"),
                           blanked_samples=(st.get("artifacts") or {}).get("blanked_samples"))
            except Exception as exc:                      # a failed run is a row, not a lost table
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            if progress is not None:
                progress.update(1)
    return rows


def _auditory(channels: Sequence[int], rates: Sequence[float], progress: Any) -> dict:
    from cortexlink.stim.audio import find_espeak, speak
    from cortexlink.stim.vocoder import cis_intelligibility_table

    if find_espeak() is None:
        return {"skipped": "espeak-ng not found (apt-get install espeak-ng): no spoken test audio"}
    fs = 16000.0
    rows: dict[tuple[int, float], list[dict]] = {}
    for sentence in _SENTENCES:
        audio = speak(sentence, fs)
        for r in cis_intelligibility_table(audio, fs, channels, rates):
            rows.setdefault((r["n_channels"], r["rate_hz"]), []).append(r)
        if progress is not None:
            progress.update(1)
    table = [{"n_channels": c, "rate_hz": r, "width_us": v[0]["width_us"], "pulses_per_s": v[0]["pulses_per_s"],
              "stoi": float(np.mean([x["stoi"] for x in v])), "stoi_per_sentence": [x["stoi"] for x in v]}
             for (c, r), v in rows.items()]
    return {"sentences": list(_SENTENCES), "fs_hz": fs, "carrier": "noise", "table": table}


def run(*, n_plans: int = 100_000, seed: int = 0, artifact_channels: int = 64, artifact_seconds: float = 10.0,
        channels: Sequence[int] = (4, 8, 12, 16, 22), rates: Sequence[float] = (300, 900),
        auditory: bool = True, closed_loop: bool = False, seeds: Sequence[int] = (0, 1, 2),
        progress: bool = True) -> dict:
    """Run every part; returns ``{"benchmark": "stim", "machine", "interlock", "interlock_cost",
    "artifacts", "auditory"}``."""
    from cortexlink.bench.dsp import machine_info
    from cortexlink.bench.stim_artifacts import measure_artifacts
    from cortexlink.stim.fuzz import fuzz_interlock

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(n_plans), desc="interlock fuzz", unit="plan")
    last = [0]

    def tick(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - last[0])
            last[0] = done

    t = time.perf_counter()
    fuzz = fuzz_interlock(n_plans, seed=seed, progress=tick)
    fuzz["seconds"] = time.perf_counter() - t
    if bar is not None:
        bar.close()
    cost = interlock_cost()
    art = measure_artifacts(n_channels=artifact_channels, duration_s=artifact_seconds, seed=seed)
    aud: dict[str, Any] = {"skipped": "not requested (--no-auditory)"}
    if auditory:
        pbar = None
        if progress:
            from tqdm import tqdm

            pbar = tqdm(total=len(_SENTENCES), desc="CIS intelligibility", unit="sentence")
        aud = _auditory(channels, rates, pbar)
        if pbar is not None:
            pbar.close()
    out = {"benchmark": "stim", "machine": machine_info(), "interlock": fuzz, "interlock_cost": cost,
           "artifacts": art, "auditory": aud}
    if closed_loop:
        cbar = None
        if progress:
            from tqdm import tqdm

            cbar = tqdm(total=len(seeds) * len(TOUCH_VARIANTS), desc="closed loop with touch", unit="session")
        out["closed_loop_touch"] = closed_loop_touch(seeds, cbar)
        if cbar is not None:
            cbar.close()
    return out


def print_summary(r: dict) -> None:
    """Human-readable summary (the CLI prints it without --json)."""
    f = r.get("interlock") or {}
    print(f"interlock fuzz: {f.get('plans_tried', 0):,} plans, {f.get('pulses_checked', 0):,} pulses checked, "
          f"{f.get('pulses_approved', 0):,} approved ({f.get('pulses_clamped', 0):,} clamped), "
          f"{f.get('pulses_refused', 0):,} refused — unsafe pulses emitted: {f.get('unsafe_pulses_emitted', 'n/a')}")
    for name, c in (r.get("interlock_cost") or {}).items():
        print(f"  cost, {name}: {c.get('us_per_plan', float('nan')):.0f} µs/plan, "
              f"{c.get('us_per_pulse', float('nan')):.2f} µs/pulse "
              f"({100 * c.get('cpu_fraction_of_real_time', float('nan')):.2f} % of one core)")
    a = r.get("artifacts") or {}
    base = (a.get("baseline") or {}).get("false_crossings_per_s")
    if base is not None:
        print(f"recording through stimulation ({a.get('n_channels')} ch, {a.get('rate_hz')} Hz on "
              f"{len(a.get('electrodes') or [])} electrodes): false crossings/s without stimulation {base:.2f}")
    for mode, m in (a.get("modes") or {}).items():
        print(f"  {mode:>15}: {m.get('false_crossings_per_s', float('nan')):7.2f} false/s, "
              f"spikes lost {100 * m.get('true_spikes_lost_fraction', float('nan')):.1f} %")
    for row in r.get("closed_loop_touch") or []:
        print(f"  closed loop, {row.get('variant')}, seed {row.get('seed')}: success {row.get('success_rate', 'n/a')}, "
              f"{row.get('n_trials', 'n/a')} trials, mean time to target {row.get('mean_time_to_target_s', 'n/a')} s"
              + (f" — {row['error']}" if row.get("error") else ""))
    au = r.get("auditory") or {}
    if "table" in au:
        for row in au["table"]:
            print(f"  CIS {row['n_channels']:2d} ch @ {row['rate_hz']:g} pps: STOI {row['stoi']:.3f}")
    elif au.get("skipped"):
        print(f"auditory: skipped ({au['skipped']})")
