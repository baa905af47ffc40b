"""``cortexlink bench decode --units``: velocity R² with sorted units against threshold crossings.

Each (channel count, seed) simulates a centre-out session (:class:`cortexlink.sim.reach_intent.
CentreOutIntent`) on the preset :func:`cortexlink.bench.decode_sim.simulated_dataset` uses (96
channels: ``monkey_m1_utah96``, else ``default``). Unit templates are fitted
(:func:`cortexlink.dsp.units.fit_unit_templates`) on the first ``fit_s`` seconds with the
simulator's ground-truth spike times as the sorting (a perfect sorting: what the matcher adds is
measured, not a sorter's errors); the whole session then streams through
:class:`cortexlink.dsp.units.UnitFeatureExtractor`, 20 ms bins. The default Kalman filter is fitted
on the first 80 % of the valid bins and scored on the last 20 % with each feature set:

* ``tx``: threshold crossings of the good channels (what the decoders take today);
* ``su``: the matched units' spike counts;
* ``tx+su``: both;
* ``su_truth``: every simulated unit's true spike count (perfect detection and sorting: the
  ceiling of any sorting).

Each row also scores the matcher against the ground truth on the test part: per unit, precision
(counted spikes that are the unit's true spikes, within ``tol`` of where the snippet of that
spike completes) and recall (true spikes counted), medians over the fitted units.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.dsp._unit_fit import _nearest

__all__ = ["score_units", "print_units", "UNITS_CHANNELS", "UNITS_SEEDS", "UNITS_SECONDS", "UNITS_FIT_S"]

UNITS_CHANNELS = (96, 256)
UNITS_SEEDS = (0, 1)
UNITS_SECONDS = 120.0
UNITS_FIT_S = 30.0
FEATURE_SETS = ("tx", "su", "tx+su", "su_truth")


def _match(ev_u: np.ndarray, ev_t: np.ndarray, gt: Any, uf: Any, t_from: int, t_to: int) -> dict:
    """Per-unit precision and recall of the counted spikes in [t_from, t_to)."""
    T = uf.templates
    tol = max(1, int(round(0.5e-3 * T.fs_hz)))
    prec, rec = [], []
    for k, uid in enumerate(T.unit_ids):
        info = T.info["units"][uid]
        s = np.asarray(gt.unit_spike_samples(int(uid[1:])), np.int64)
        s = s[(s >= t_from) & (s < t_to)] + info["offset_samples"] + T.post - 1
        e = np.sort(ev_t[(ev_u == k) & (ev_t >= t_from) & (ev_t < t_to)])
        if s.size == 0 and e.size == 0:
            continue
        hit = 0
        if s.size and e.size:
            hit = int((np.abs(s - _nearest(e, s)) <= tol).sum())
        if e.size:
            prec.append(min(hit, e.size) / e.size)
        if s.size:
            rec.append(hit / s.size)
    return {"precision_median": float(np.median(prec)) if prec else None,
            "recall_median": float(np.median(rec)) if rec else None,
            "n_units_precision_recall_ge_0_8": int(sum(1 for p, r in zip(prec, rec) if p >= 0.8 and r >= 0.8))
            if len(prec) == len(rec) else None}


def _one(nch: int, seed: int, seconds: float, fit_s: float, preset: str | None, progress: bool) -> list[dict]:
    from cortexlink.bench.decode_sim import SIM96_PRESET, _r2
    from cortexlink.core.types import BinnedFeatures
    from cortexlink.decoders import KalmanFilter
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.dsp.units import UnitFeatureExtractor, fit_unit_templates, spikes_from_ground_truth
    from cortexlink.sim import PRESETS, SimulatedImplant
    from cortexlink.sim.reach_intent import CentreOutIntent

    preset = preset or (SIM96_PRESET if nch == 96 else "default")
    t0 = time.perf_counter()
    imp = SimulatedImplant.from_preset(preset, seed=seed, n_channels=nch,
                                       intent_fn=CentreOutIntent(seed=seed, fs_hz=PRESETS[preset].fs_hz))
    fs = imp.fs_hz
    first = imp.read_seconds(fit_s)
    n_fit = first.data.shape[0]
    spikes, chans = spikes_from_ground_truth(imp.ground_truth(), until_sample=n_fit)
    t1 = time.perf_counter()
    T = fit_unit_templates(FeatureExtractor(imp.channel_map, fs), first.data, spikes, chans, progress=progress)
    fit_s_wall = time.perf_counter() - t1
    uf = UnitFeatureExtractor(FeatureExtractor(imp.channel_map, fs), T, keep_unit_events=True)
    parts = [uf.step(first)]
    n_more = int(math.ceil(seconds - fit_s))
    it = range(n_more)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"units {nch} ch seed {seed}", file=sys.stderr, leave=False)
    for _ in it:
        parts.append(uf.step(imp.read_seconds(1.0)))
    bf = BinnedFeatures.concat(parts)
    gt = imp.ground_truth()
    W = bf.bin_width_samples
    starts = bf.bin_start_samples
    edges = np.append(starts, starts[-1] + W)
    truth = np.stack([np.histogram(gt.unit_spike_samples(u), bins=edges)[0] for u in range(gt.n_units)], 1)
    bad_ids = {imp.channel_map.channel_ids[i] for i in np.flatnonzero(uf.bad_channels_)}
    names = bf.feature_names
    col = {"tx": [i for i, nm in enumerate(names) if nm.endswith("/tx") and nm.split("/", 1)[0] not in bad_ids],
           "su": [i for i, nm in enumerate(names) if nm.endswith("/su")]}
    use = col["tx"] + col["su"]
    rows_ok = np.all(bf.valid[:, use], axis=1) & np.all(np.isfinite(bf.data[:, use]), axis=1)
    idx = np.flatnonzero(rows_ok)
    n_tr = int(round(0.8 * idx.size))
    tr, te = idx[:n_tr], idx[n_tr:]
    vel, _ = gt.intent_at(starts + W // 2)
    sets = {"tx": bf.data[:, col["tx"]], "su": bf.data[:, col["su"]],
            "tx+su": bf.data[:, col["tx"] + col["su"]], "su_truth": truth.astype(np.float32)}
    ev_u, ev_t = uf.unit_events_
    acc = _match(ev_u, ev_t, gt, uf, int(starts[te[0]]), int(starts[te[-1]] + W)) if te.size else {}
    base = {"dataset": f"sim:{preset}/{nch}", "preset": preset, "channels": nch, "seed": seed,
            "n_units_sim": int(gt.n_units), "n_units_fitted": int(T.n_units), "n_train": int(tr.size),
            "n_test": int(te.size), "seconds": float(fit_s + n_more), "fit_s": float(fit_s),
            "fit_wall_s": round(fit_s_wall, 2), **acc}
    rows = []
    for name in FEATURE_SETS:
        X = np.asarray(sets[name], np.float64)
        t2 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            dec = KalmanFilter().fit(X[tr], vel[tr])
        r2 = _r2(vel[te], dec.predict(X[te]))
        rows.append({**base, "features": name, "n_features": int(X.shape[1]), "decoder": "KalmanFilter",
                     "r2_vx": float(r2[0]), "r2_vy": float(r2[1]), "r2_mean": float(r2.mean()),
                     "fit_predict_s": round(time.perf_counter() - t2, 2)})
    if progress:
        by = {r["features"]: r["r2_mean"] for r in rows}
        print(f"  {base['dataset']} seed {seed}: R2 tx {by['tx']:.3f}  su {by['su']:.3f}  tx+su {by['tx+su']:.3f}  "
              f"su_truth {by['su_truth']:.3f}; {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return rows


def score_units(channels: Sequence[int] = UNITS_CHANNELS, seeds: Sequence[int] = UNITS_SEEDS,
                seconds: float = UNITS_SECONDS, fit_s: float = UNITS_FIT_S, preset: str | None = None,
                progress: bool = False) -> dict:
    """Kalman R² with sorted units against crossings (see the module docstring).

    Returns
    -------
    dict
        ``rows`` (one per channel count, seed and feature set: ``features``, ``r2_mean``, ...,
        ``precision_median``, ``recall_median`` of the matcher), ``summary`` (mean ``r2_mean`` per
        channel count and feature set over the seeds, and ``su_minus_tx``), ``settings``.
    """
    chans = [int(c) for c in channels]
    if not chans or any(c < 4 or c > 4096 for c in chans):
        raise ConfigError(f"channels must be counts from 4 to 4096; got {list(channels)!r}")
    if not 20.0 <= float(seconds) <= 3600.0 or not 5.0 <= float(fit_s) <= float(seconds) - 10.0:
        raise ConfigError(f"seconds must be 20..3600 and fit_s 5..seconds-10; got {seconds!r}, {fit_s!r}")
    rows = []
    for nch in chans:
        for seed in seeds:
            rows += _one(nch, int(seed), float(seconds), float(fit_s), preset, progress)
    summary = []
    for nch in chans:
        got = {f: [r["r2_mean"] for r in rows if r["channels"] == nch and r["features"] == f] for f in FEATURE_SETS}
        s = {"channels": nch, **{f"r2_{f}": float(np.mean(v)) if v else None for f, v in got.items()}}
        s["su_minus_tx"] = (s["r2_su"] - s["r2_tx"]) if s["r2_su"] is not None and s["r2_tx"] is not None else None
        summary.append(s)
    return {"settings": {"channels": chans, "seeds": [int(s) for s in seeds], "seconds": float(seconds),
                         "fit_s": float(fit_s), "preset": preset or "monkey_m1_utah96 at 96 channels, else default",
                         "sorting": "simulator ground truth of the first fit_s seconds (perfect sorting)",
                         "decoder": "KalmanFilter (defaults)", "bin_ms": 20.0,
                         "split": "time-ordered: first 80% of valid bins train, last 20% test"},
            "rows": rows, "summary": summary}


def print_units(res: dict, file: Any = None) -> None:
    """A table of the summary: mean R² per channel count and feature set."""
    file = file or sys.stdout
    print("units vs crossings (Kalman R2, mean over seeds):", file=file)
    print(f"  {'channels':>8}  " + "  ".join(f"{f:>9}" for f in FEATURE_SETS) + "  su-tx", file=file)
    for s in res.get("summary", []):
        vals = "  ".join(f"{s.get('r2_' + f):9.3f}" if s.get("r2_" + f) is not None else f"{'-':>9}"
                         for f in FEATURE_SETS)
        d = s.get("su_minus_tx")
        print(f"  {s['channels']:>8}  {vals}  {d:+.3f}" if d is not None else f"  {s['channels']:>8}  {vals}  -",
              file=file)
    for r in res.get("rows", []):
        if r.get("features") == "su":
            p, q = r.get("precision_median"), r.get("recall_median")
            print(f"  {r['dataset']} seed {r['seed']}: {r['n_units_fitted']}/{r['n_units_sim']} units fitted, "
                  f"precision {p if p is None else round(p, 3)}, recall {q if q is None else round(q, 3)}", file=file)
