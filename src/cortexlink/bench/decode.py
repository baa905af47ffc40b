"""``cortexlink bench decode``: decoder accuracy, fit time and step latency, peers side by side.

Every cortexlink decoder runs on

* the real monkey M1 centre-out recordings (``monkey_m1_center_out``): Chewie on its
  authors' split (train = their ``Yte/Xte``, test = their ``Ytr/Xtr``); Mihi's test split
  was spike-sorted separately (174 vs 187 units), so Mihi is scored on a time-ordered
  80/20 split of its training file;
* simulated data from :class:`cortexlink.sim.SimulatedImplant` through
  :class:`cortexlink.dsp.FeatureExtractor` (20 ms bins) at 96 channels (Utah-array preset,
  threshold crossings + spike-band power) and 1024 channels (spike-band power), first 80%
  of bins for training; the target is the simulator's ground-truth velocity intent.

For each decoder and dataset it reports R² (and Pearson r) of vx and vy on the test
bins, the fit time, and the latency of ``step`` (p50/p99/max over ``n_steps`` calls,
single-threaded: BLAS and torch limited to one thread). The ``neural-decoding`` package's
``WienerFilterRegression`` (on the same lag-stacked design) and
``KalmanFilterRegression`` run on the same splits; if it cannot be imported,
scikit-learn's ``Ridge`` stands in and the reason is recorded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cortexlink.bench.decode_sim import SIM96_PRESET, _bar, simulated_dataset
from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["run_decode_bench", "simulated_dataset", "monkey_datasets", "step_latency_us", "DATASETS"]

DATASETS = ("chewie", "mihi", "sim96", "sim1024")
SIM_SECONDS = {96: 300.0, 1024: 120.0}
WIENER_LAGS = 5          # WienerFilter's default; the peer gets the same lag-stacked design


# ----------------------------------------------------------------------------- data

def _default_monkey_folder() -> Path | None:
    candidates = []
    env = os.environ.get("CORTEXLINK_SHARED_DATA")
    if env:
        candidates.append(Path(env) / "monkey_m1_center_out")
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo.parent / "shared" / "data" / "monkey_m1_center_out",
                   Path.cwd().parent / "shared" / "data" / "monkey_m1_center_out"]
    return next((c for c in candidates if c.is_dir()), None)


def monkey_datasets(folder: Path) -> dict[str, dict]:
    """Train/test splits of the monkey M1 sessions (see module doc for Mihi)."""
    from cortexlink.decoders.datasets import load_monkey_m1

    out = {}
    for name, s in load_monkey_m1(folder).items():
        if s.same_units:
            Xtr, ytr, Xte, yte = s.X_train, s.y_train, s.X_test, s.y_test
            split = "authors' split (train = their Yte/Xte, test = their Ytr/Xtr)"
        else:
            Xtr, ytr, Xte, yte = s.blocked_split(0.2)
            split = (f"time-ordered 80/20 split of the training file (their test split has "
                     f"{s.X_test.shape[1]} units vs {s.X_train.shape[1]})")
        out[name] = {"X_train": Xtr, "y_train": ytr, "X_test": Xte, "y_test": yte, "split": split,
                     "n_features": Xtr.shape[1], "feature_names": s.feature_names_train,
                     "source": s.source, "click_train": None, "click_test": None}
    return out


# ----------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _single_thread():
    """BLAS and torch on one thread for the duration (fair, repeatable timings)."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    prev = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    if torch is not None and prev is not None:
        torch.set_num_threads(prev)


def step_latency_us(dec: Any, X: np.ndarray, n_steps: int) -> dict:
    """p50/p99/max of ``dec.step(x)`` over ``n_steps`` calls cycling through ``X`` (µs)."""
    dec.reset_state()
    rows = np.ascontiguousarray(X, dtype=np.float64)
    n = rows.shape[0]
    lat = np.empty(n_steps, dtype=np.int64)
    clock = time.perf_counter_ns
    for _ in range(min(200, n_steps)):           # warm caches and allocator
        dec.step(rows[_ % n])
    dec.reset_state()
    for i in range(n_steps):
        x = rows[i % n]
        t0 = clock()
        dec.step(x)
        lat[i] = clock() - t0
    us = lat / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "max_us": float(us.max()), "mean_us": float(us.mean()), "n_steps": int(n_steps)}


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from cortexlink.decoders.metrics import pearson_r, r2_score

    r2 = r2_score(y_true, y_pred)
    r = pearson_r(y_true, y_pred)
    return {"r2_vx": float(r2[0]), "r2_vy": float(r2[1]), "r2_mean": float(np.mean(r2)),
            "r_vx": float(r[0]), "r_vy": float(r[1])}


def _lagged(X: np.ndarray, L: int, pad: np.ndarray) -> np.ndarray:
    """[x_t, x_{t-1}, ..., x_{t-L+1}] with rows before the first equal to ``pad``."""
    Xp = np.concatenate([np.broadcast_to(pad, (L - 1, X.shape[1])), X])
    n = X.shape[0]
    return np.concatenate([Xp[L - 1 - k:L - 1 - k + n] for k in range(L)], axis=1)


def _import_neural_decoding() -> tuple[Any, str | None]:
    """The neural-decoding package's decoders module, or (None, reason)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import Neural_Decoding.decoders as nd  # the package prints warnings at import
        from importlib.metadata import version

        return nd, None if nd else "import returned nothing", version("Neural_Decoding") if nd else None
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, the bench goes on
        return None, f"{type(exc).__name__}: {exc}", None


# ----------------------------------------------------------------------------- runners

def _run_ours(name: str, make: Callable[[], Any], ds: dict, n_steps: int) -> dict:
    Xtr, ytr, Xte, yte = ds["X_train"], ds["y_train"], ds["X_test"], ds["y_test"]
    dec = make()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        dec.fit(Xtr, ytr, feature_names=ds.get("feature_names"))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = dec.predict(Xte)
    predict_s = time.perf_counter() - t0
    res = {"decoder": name, "params": {k: v for k, v in dec.get_params().items() if _jsonable_scalar(v)},
           **_scores(yte, pred), "fit_s": fit_s, "predict_per_bin_us": predict_s / len(Xte) * 1e6,
           "step": step_latency_us(dec, Xte, n_steps)}
    if hasattr(dec, "n_epochs_"):
        res["n_epochs"] = int(dec.n_epochs_)
        res["best_epoch"] = int(dec.best_epoch_)
    if hasattr(dec, "alpha_"):
        res["alpha"] = float(dec.alpha_)
    return res


def _jsonable_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _run_click(ds: dict, n_steps: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from cortexlink.decoders import ClickDecoder

    ytr = (ds["click_train"] > 0.5).astype(int)
    yte = (ds["click_test"] > 0.5).astype(int)
    if ytr.min() == ytr.max() or yte.min() == yte.max():
        return {"decoder": "ClickDecoder", "skipped": "no click intent in the train or test bins"}
    dec = ClickDecoder()
    t0 = time.perf_counter()
    dec.fit(ds["X_train"], ytr)
    fit_s = time.perf_counter() - t0
    proba = dec.predict_proba(ds["X_test"])[:, 1]
    events = dec.predict_events(ds["X_test"])
    onsets = np.flatnonzero(np.diff(np.concatenate([[0], yte])) == 1)
    ends = np.array([o + int(np.argmin(np.concatenate([yte[o:], [0]]))) for o in onsets], dtype=int)
    # an event belongs to an intent when it falls between the intent's onset and 5 bins after its end
    owner = np.full(len(events), -1)
    for i, (o, e) in enumerate(zip(onsets, ends)):
        owner[(events >= o) & (events <= e + 5) & (owner < 0)] = i
    hits = np.unique(owner[owner >= 0])
    first = [int(events[owner == i].min() - onsets[i]) for i in hits]
    return {"decoder": "ClickDecoder", "fit_s": fit_s,
            "auc": float(roc_auc_score(yte, proba)), "n_intents": int(len(onsets)),
            "n_events": int(len(events)), "n_intents_detected": int(len(hits)),
            "n_duplicate_events": int(np.sum(owner >= 0) - len(hits)),
            "n_false_events": int(np.sum(owner < 0)),
            "recall": float(len(hits) / len(onsets)) if len(onsets) else None,
            "precision_one_event_per_intent": float(len(hits) / len(events)) if len(events) else None,
            "onset_latency_bins_median": float(np.median(first)) if first else None,
            "step": step_latency_us(dec, ds["X_test"], n_steps)}


def _run_peers(ds: dict, nd: Any, nd_reason: str | None, nd_version: str | None) -> list[dict]:
    Xtr, ytr, Xte, yte = ds["X_train"], ds["y_train"], ds["X_test"], ds["y_test"]
    L = WIENER_LAGS
    mean = Xtr.mean(axis=0)
    out = []
    if nd is None:
        from sklearn.linear_model import Ridge

        D_tr, D_te = _lagged(Xtr, L, mean), _lagged(Xte, L, mean)
        m = Ridge(alpha=1.0)
        t0 = time.perf_counter()
        m.fit(D_tr, ytr)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = m.predict(D_te)
        out.append({"decoder": "sklearn.Ridge (stand-in for neural-decoding)", "reason": nd_reason,
                    "n_lags": L, **_scores(yte, pred), "fit_s": fit_s,
                    "predict_per_bin_us": (time.perf_counter() - t0) / len(Xte) * 1e6})
        return out
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Wiener: plain least squares on the same lag-stacked design as ours
        D_tr, D_te = _lagged(Xtr, L, mean), _lagged(Xte, L, mean)
        m = nd.WienerFilterRegression()
        t0 = time.perf_counter()
        m.fit(D_tr, ytr)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = m.predict(D_te)
        batch_us = (time.perf_counter() - t0) / len(Xte) * 1e6
        t0 = time.perf_counter()
        k = min(len(D_te), 2000)
        for i in range(k):
            m.predict(D_te[i:i + 1])
        single_us = (time.perf_counter() - t0) / k * 1e6
        out.append({"decoder": f"neural-decoding {nd_version} WienerFilterRegression", "n_lags": L,
                    **_scores(yte, pred), "fit_s": fit_s, "predict_per_bin_us": batch_us,
                    "predict_one_bin_us": single_us})
        # Kalman (their predict needs the true first state of the test set)
        entry: dict[str, Any] = {"decoder": f"neural-decoding {nd_version} KalmanFilterRegression",
                                 "note": "their predict is initialised with the true first test state"}
        for attempt, cols in (("all features", slice(None)),
                              ("constant features removed", Xtr.std(axis=0) > 0)):
            try:
                m = nd.KalmanFilterRegression(C=1)
                t0 = time.perf_counter()
                m.fit(Xtr[:, cols], ytr)
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                pred = np.asarray(m.predict(Xte[:, cols], yte))
                per_bin = (time.perf_counter() - t0) / len(Xte) * 1e6
                if not np.all(np.isfinite(pred)):
                    raise FloatingPointError("non-finite predictions")
                entry.update({"features": attempt, **_scores(yte, pred), "fit_s": fit_s,
                              "predict_per_bin_us": per_bin})
                break
            except Exception as exc:  # noqa: BLE001 - recorded
                entry.setdefault("errors", []).append(f"{attempt}: {type(exc).__name__}: {exc}")
        out.append(entry)
    return out


def _gru_fit_target(progress: bool) -> dict:
    """Fit time of GRUDecoder() on 30,000 bins x 1024 features (10 min of 20 ms bins)."""
    from scipy.signal import lfilter

    from cortexlink.decoders import GRUDecoder
    from cortexlink.decoders.metrics import r2_score

    rng = np.random.default_rng(0)
    n, f = 30000, 1024
    v = lfilter([1.0], [1.0, -0.95], rng.standard_normal((n + 3000, 2)), axis=0) * 0.3
    rates = np.exp(0.5 + v @ rng.standard_normal((2, f)) * 0.5)
    X = rng.poisson(np.minimum(rates, 50.0)).astype(np.float64)
    dec = GRUDecoder()
    t0 = time.perf_counter()
    dec.fit(X[:n], v[:n])
    fit_s = time.perf_counter() - t0
    r2 = r2_score(v[n:], dec.predict(X[n:]))
    return {"what": "GRUDecoder() fit on 30,000 bins x 1024 features (synthetic Poisson counts, "
                    "log-linear velocity tuning), torch and BLAS on 1 thread",
            "fit_s": fit_s, "n_epochs": int(dec.n_epochs_), "best_epoch": int(dec.best_epoch_),
            "r2_mean_heldout": float(np.mean(r2)), "target_s": 120.0, "met": bool(fit_s <= 120.0)}


def run_decode_bench(datasets: Sequence[str] | None = None, n_steps: int = 10000, progress: bool = True, *,
                     data: str | os.PathLike | None = None, sim_seconds: dict[int, float] | None = None,
                     seed: int = 0, gru_fit_target: bool = True, sim_presets: Sequence[str] | None = None,
                     sim_channels: Sequence[int] | None = None, sim_seeds: Sequence[int] | None = None,
                     sim_preset_seconds: float | None = None, sim_decoders: Sequence[str] | None = None) -> dict:
    """Run every decoder on every dataset, with the neural-decoding peers; return JSON-able figures.

    Parameters
    ----------
    datasets : sequence of {"chewie", "mihi", "sim96", "sim1024"}, optional
        Default: all (the monkey sessions only when their folder is found).
    n_steps : int
        ``step`` calls timed per decoder and dataset (>= 10,000 recommended).
    progress : bool
        Show tqdm progress bars on stderr.
    data : path-like, optional
        The ``monkey_m1_center_out`` folder; default ``$CORTEXLINK_SHARED_DATA`` or
        ``../shared/data/monkey_m1_center_out`` next to the repository.
    sim_seconds : dict int -> float, optional
        Seconds simulated per channel count (default ``{96: 300, 1024: 120}``).
    seed : int
        Simulator seed.
    gru_fit_target : bool
        Also time ``GRUDecoder()`` on 30,000 bins x 1024 features.
    sim_presets : sequence of str, optional
        Also score these simulator presets at each of ``sim_channels`` (default 96, 256, 1024) and
        ``sim_seeds`` (default 0-3) on a centre-out intent, ``sim_preset_seconds`` (default 120)
        each, with ``sim_decoders`` (default KalmanFilter): ``result["sim_presets"]``
        (:func:`cortexlink.bench.decode_sim.score_sim_presets`).

    Returns
    -------
    dict
        ``machine``, ``settings``, ``datasets`` (each with its decoders' and peers'
        results), ``targets`` (the figures the issue asks for, with ``met`` flags).
    """
    from cortexlink.bench.dsp import machine_info
    from cortexlink.decoders import GRUDecoder, KalmanFilter, WienerFilter

    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ConfigError(f"n_steps must be a positive integer; got {n_steps!r}")
    names = list(DATASETS if datasets is None else datasets)
    unknown = [d for d in names if d not in DATASETS]
    if unknown:
        raise ConfigError(f"datasets must be drawn from {DATASETS}; got {unknown}")
    sim_seconds = {**SIM_SECONDS, **(sim_seconds or {})}
    if sim_presets is not None:
        from cortexlink.bench import decode_sim

        sp = (sim_presets, sim_channels or decode_sim.SIM_CHANNELS, sim_seeds or decode_sim.SIM_SEEDS,
              decode_sim.SIM_PRESET_SECONDS if sim_preset_seconds is None else sim_preset_seconds,
              sim_decoders or decode_sim.SIM_DECODERS)
        decode_sim._check(*sp)              # refuse bad input before anything runs
    folder = Path(data) if data is not None else _default_monkey_folder()
    nd, nd_reason, nd_version = _import_neural_decoding()
    import torch  # noqa: F401 - loaded before timing so _single_thread can pin it

    result: dict[str, Any] = {
        "benchmark": "decode", "machine": machine_info(),
        "settings": {"n_steps": n_steps, "threads": 1, "wiener_n_lags": WIENER_LAGS,
                     "sim_seconds": {str(k): v for k, v in sim_seconds.items()}, "seed": seed,
                     "monkey_folder": None if folder is None else str(folder)},
        "peer": {"package": "neural-decoding", "version": nd_version, "available": nd is not None,
                 "reason": nd_reason},
        "datasets": {}, "skipped": {},
    }
    decoders: list[tuple[str, Callable[[], Any]]] = [
        ("WienerFilter", WienerFilter), ("KalmanFilter", KalmanFilter), ("GRUDecoder", GRUDecoder)]
    monkey = {}
    if any(d in ("chewie", "mihi") for d in names):
        if folder is None or not Path(folder).is_dir():
            for d in ("chewie", "mihi"):
                if d in names:
                    result["skipped"][d] = f"monkey_m1_center_out folder not found ({folder})"
        else:
            monkey = monkey_datasets(Path(folder))
    wall0 = time.perf_counter()
    with _single_thread():
        for dname in names:
            if dname in result["skipped"]:
                continue
            t_ds = time.perf_counter()
            if dname in ("chewie", "mihi"):
                if dname not in monkey:
                    result["skipped"][dname] = f"{dname}_demo.mat not in {folder}"
                    continue
                ds = monkey[dname]
            else:
                nch = int(dname[3:])
                ds = simulated_dataset(nch, sim_seconds.get(nch, 60.0), seed, progress=progress)
            entry = {k: v for k, v in ds.items() if k in ("split", "n_features", "source", "kinds", "bin_ms",
                                                           "seconds", "n_bad_channels", "seed")}
            entry.update({"n_train": int(len(ds["X_train"])), "n_test": int(len(ds["X_test"])),
                          "decoders": [], "peers": []})
            for dec_name, make in _bar(decoders, progress, f"decoders on {dname}"):
                logger.info("bench decode: %s on %s", dec_name, dname)
                entry["decoders"].append(_run_ours(dec_name, make, ds, n_steps))
            entry["decoders"].append({"decoder": "ReFITKalmanFilter",
                                      "note": "identical to KalmanFilter until refit() with closed-loop "
                                              "data, which these open-loop recordings do not have"})
            if ds.get("click_train") is not None:
                entry["decoders"].append(_run_click(ds, n_steps))
            entry["peers"] = _run_peers(ds, nd, nd_reason, nd_version)
            entry["wall_s"] = time.perf_counter() - t_ds
            result["datasets"][dname] = entry
        if sim_presets is not None:
            result["sim_presets"] = decode_sim.score_sim_presets(*sp, progress=progress)
        if gru_fit_target:
            logger.info("bench decode: GRU fit-time target")
            result["gru_fit_30000x1024"] = _gru_fit_target(progress)
    result["wall_s"] = time.perf_counter() - wall0
    result["targets"] = _targets(result)
    return result


def _find(entry: dict, name: str, key: str = "decoders") -> dict | None:
    return next((d for d in entry.get(key, []) if d.get("decoder", "").startswith(name)
                 or name in d.get("decoder", "")), None)


def _targets(result: dict) -> dict:
    t: dict[str, Any] = {}
    ds = result["datasets"]
    if "sim1024" in ds:
        k = _find(ds["sim1024"], "KalmanFilter")
        g = _find(ds["sim1024"], "GRUDecoder")
        if k and "step" in k:
            t["kalman_steady_state_step_p99_us_1024_features"] = {
                "value": k["step"]["p99_us"], "target": 50.0, "met": k["step"]["p99_us"] <= 50.0}
        if g and "step" in g:
            t["gru_h256_step_p99_us_1024_features"] = {
                "value": g["step"]["p99_us"], "target": 1000.0, "met": g["step"]["p99_us"] <= 1000.0}
    if "gru_fit_30000x1024" in result:
        r = result["gru_fit_30000x1024"]
        t["gru_fit_s_30000x1024"] = {"value": r["fit_s"], "target": 120.0, "met": r["met"]}
    for name in ("chewie", "mihi"):
        if name in ds:
            g, k = _find(ds[name], "GRUDecoder"), _find(ds[name], "KalmanFilter")
            t[f"gru_beats_kalman_r2_{name}"] = {"gru_r2_mean": g["r2_mean"], "kalman_r2_mean": k["r2_mean"],
                                                "met": g["r2_mean"] > k["r2_mean"]}
    real = [_find(ds[n], "KalmanFilter") for n in ("chewie", "mihi") if n in ds]
    if "sim96" in ds and real:
        ref = float(np.mean([k["r2_mean"] for k in real]))
        sim = _find(ds["sim96"], "KalmanFilter")["r2_mean"]
        t["sim96_kalman_r2_vs_monkey"] = {
            "sim96_r2_mean": sim, "monkey_r2_mean": ref, "preset": SIM96_PRESET,
            "monkey_sessions": [n for n in ("chewie", "mihi") if n in ds],
            "tolerance": 0.1, "met": abs(sim - ref) <= 0.1}
    vs = {}
    for name, entry in ds.items():
        for ours, peer in (("WienerFilter", "WienerFilterRegression"), ("KalmanFilter", "KalmanFilterRegression")):
            o, p = _find(entry, ours), _find(entry, peer, "peers")
            if o is None or p is None or "r2_mean" not in p:
                if p is not None and "errors" in p and "r2_mean" not in p:
                    vs[f"{name}/{ours}"] = {"ours_r2_mean": o["r2_mean"] if o else None, "peer_failed": p["errors"]}
                continue
            vs[f"{name}/{ours}"] = {
                "ours_r2_mean": o["r2_mean"], "peer_r2_mean": p["r2_mean"],
                "r2_match_or_beat": o["r2_mean"] >= p["r2_mean"] - 0.005,
                "ours_step_p50_us": o["step"]["p50_us"], "ours_predict_per_bin_us": o["predict_per_bin_us"],
                "peer_predict_per_bin_us": p["predict_per_bin_us"],
                "peer_predict_one_bin_us": p.get("predict_one_bin_us"),
                "faster_per_bin": o["step"]["p50_us"] < p.get("predict_one_bin_us", p["predict_per_bin_us"])}
    t["ours_vs_neural_decoding"] = vs
    return t


def print_summary(result: dict, file: Any = None) -> None:
    """Human-readable tables of a :func:`run_decode_bench` result."""
    out = file if file is not None else sys.stdout
    m = result["machine"]
    print(f"machine: {m['cpu']} ({m['cores']} cores); one thread per decoder; "
          f"step latency over {result['settings']['n_steps']} calls", file=out)
    for dname, entry in result["datasets"].items():
        print(f"\n{dname}: {entry.get('n_features')} features, {entry['n_train']} train / {entry['n_test']} test bins"
              f" ({entry.get('split', '')})", file=out)
        print(f"  {'decoder':<34}{'R2 vx':>7}{'R2 vy':>7}{'fit s':>8}{'step p50 us':>13}{'p99 us':>9}"
              f"{'max us':>9}", file=out)
        for d in entry["decoders"] + entry["peers"]:
            name = d.get("decoder", "?")
            if "r2_vx" not in d:
                why = d.get("note") or d.get("errors") or d.get("reason") or ""
                if name == "ClickDecoder" and "n_intents" in d:
                    st = d.get("step", {})
                    why = (f"clicks: {d['n_intents_detected']}/{d['n_intents']} intents, "
                           f"{d['n_false_events']} false, {d['n_duplicate_events']} duplicate, AUC "
                           f"{d['auc']:.3f}; step p99 {st.get('p99_us', float('nan')):.1f} us")
                print(f"  {name:<34}{str(why)[:80]}", file=out)
                continue
            st = d.get("step")
            lat = (f"{st['p50_us']:>13.1f}{st['p99_us']:>9.1f}{st['max_us']:>9.0f}" if st
                   else f"   predict {d.get('predict_per_bin_us', float('nan')):.1f} us/bin (batch)")
            print(f"  {name[:34]:<34}{d['r2_vx']:>7.3f}{d['r2_vy']:>7.3f}{d['fit_s']:>8.2f}{lat}", file=out)
    for name, why in result.get("skipped", {}).items():
        print(f"\n{name}: skipped ({why})", file=out)
    if "sim_presets" in result:
        from cortexlink.bench.decode_sim import print_sim_presets

        print_sim_presets(result["sim_presets"], file=out)
    print("\ntargets:", file=out)
    for k, v in result["targets"].items():
        if k == "ours_vs_neural_decoding":
            for pair, r in v.items():
                if "peer_r2_mean" in r:
                    print(f"  {pair:<32} R2 ours {r['ours_r2_mean']:.3f} vs neural-decoding {r['peer_r2_mean']:.3f}"
                          f"  match/beat={r['r2_match_or_beat']}  faster per bin={r['faster_per_bin']}", file=out)
            continue
        shown = {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()}
        print(f"  {k}: {shown}", file=out)
