"""``cortexlink bench dsp``: feature-extraction throughput and detection accuracy, peers side by side.

Every implementation runs in its own fresh, single-threaded Python process on the
same int16 data (so peak RSS and speed are comparable), and its detected events
are scored against the simulator's ground truth with the same code.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

PEERS = ("cortexlink", "scipy_reference", "spikeinterface")
#: measured only when asked (``--peers ... cortexlink_units``): the chain plus sorted-unit template matching
#: (:class:`cortexlink.dsp.units.UnitFeatureExtractor`), templates fitted on the simulator's ground truth
EXTRA_PEERS = ("cortexlink_units",)
CALIBRATION_S = 0.5
TOLERANCE_S = 0.4e-3
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1",
}


def machine_info() -> dict:
    """CPU model, core count and Python version of the machine that ran the benchmark."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def cpu_times() -> dict | None:
    """The machine's cumulative CPU time by kind, in clock ticks, from ``/proc/stat`` (Linux;
    ``None`` elsewhere). Two readings around a benchmark give :func:`steal_share`."""
    try:
        with open("/proc/stat") as f:
            head = f.readline().split()
    except OSError:
        return None
    if not head or head[0] != "cpu":
        return None
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    vals = [int(v) for v in head[1:1 + len(names)]]
    return dict(zip(names, vals))


def steal_share(before: dict | None, after: dict | None) -> float | None:
    """Fraction of the machine's CPU time between two :func:`cpu_times` readings that the
    hypervisor gave to other guests (``steal``): on a shared VM, the clearest sign that a
    latency figure measured the neighbours rather than the code."""
    if not before or not after:
        return None
    total = sum(after[k] - before[k] for k in after if k in before)
    return (after.get("steal", 0) - before.get("steal", 0)) / total if total > 0 else None


def score_detection(ev_samples: np.ndarray, ev_channels: np.ndarray, truth_samples: np.ndarray,
                    truth_channels: np.ndarray, truth_snr: np.ndarray, *, tol_samples: int,
                    exclude_channels: Iterable[int] = (), t_min: int = 0, t_max: int | None = None) -> dict:
    """Recall per SNR group and precision of detected events against ground-truth spikes.

    A true spike counts as detected when an event on its channel lies within
    ``tol_samples``; an event counts as correct when a true spike on its channel
    lies within ``tol_samples``. Spikes and events outside ``[t_min, t_max)`` and on
    ``exclude_channels`` (dead or saturating) are left out.
    """
    ev_samples = np.asarray(ev_samples, np.int64)
    ev_channels = np.asarray(ev_channels, np.int64)
    truth_samples = np.asarray(truth_samples, np.int64)
    truth_channels = np.asarray(truth_channels, np.int64)
    t_max = int(max(ev_samples.max(initial=0), truth_samples.max(initial=0)) + 1) if t_max is None else t_max
    excl = np.asarray(sorted(set(int(c) for c in exclude_channels)), np.int64)
    ev_keep = (ev_samples >= t_min) & (ev_samples < t_max) & ~np.isin(ev_channels, excl)
    tr_keep = (truth_samples >= t_min) & (truth_samples < t_max) & ~np.isin(truth_channels, excl)
    big = np.int64(t_max + 10 * tol_samples + 1)
    ev_key = np.sort(ev_channels[ev_keep] * big + ev_samples[ev_keep])
    tr_key = np.sort(truth_channels[tr_keep] * big + truth_samples[tr_keep])
    snr = np.asarray(truth_snr, float)[tr_keep][np.argsort(truth_channels[tr_keep] * big + truth_samples[tr_keep])]

    def nearest_within(keys: np.ndarray, ref: np.ndarray) -> np.ndarray:
        if ref.size == 0:
            return np.zeros(keys.size, bool)
        i = np.searchsorted(ref, keys)
        lo = ref[np.clip(i - 1, 0, ref.size - 1)]
        hi = ref[np.clip(i, 0, ref.size - 1)]
        return (np.abs(keys - lo) <= tol_samples) | (np.abs(hi - keys) <= tol_samples)

    found = nearest_within(tr_key, ev_key)
    correct = nearest_within(ev_key, tr_key)
    ge5 = snr >= 5
    mid = (snr >= 3) & (snr < 5)
    return {
        "recall_snr_ge_5": float(found[ge5].mean()) if ge5.any() else None,
        "recall_snr_3_5": float(found[mid].mean()) if mid.any() else None,
        "recall_snr_lt_3": float(found[snr < 3].mean()) if (snr < 3).any() else None,
        "precision": float(correct.mean()) if correct.size else None,
        "n_true_spikes": int(tr_key.size),
        "n_events": int(ev_key.size),
    }


def _run_worker(impl: str, data_path: Path, workdir: Path, fs_hz: float, gain_uv: float,
                chunk_ms: float, tag: str, n_threads: int = 1,
                units_path: Path | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    spec = {"impl": impl, "data_path": str(data_path), "fs_hz": fs_hz, "gain_uv": gain_uv,
            "chunk_ms": chunk_ms, "ref_chunk_ms": 100.0, "calibration_s": CALIBRATION_S,
            "events_path": str(workdir / f"{impl}_{tag}_events.npz"), "n_threads": n_threads,
            "units_path": str(units_path) if units_path is not None else None}
    spec_path = workdir / f"{impl}_{tag}.json"
    spec_path.write_text(json.dumps(spec))
    # BLAS and OpenMP stay single-threaded; numba's pool gets exactly the cores measured. Its
    # OpenMP threads wait passively between the two meetings per chunk unless OMP_WAIT_POLICY
    # says otherwise: spinning threads on a machine whose cores other processes also use stall
    # every meeting for a scheduler time slice (16,384 channels on a loaded 2-core VM: 13x slower).
    env = {**os.environ, **SINGLE_THREAD_ENV, "NUMBA_NUM_THREADS": str(n_threads)}
    if n_threads > 1:
        env.setdefault("OMP_WAIT_POLICY", "passive")
    proc = subprocess.run([sys.executable, "-m", "cortexlink.bench._dsp_worker", str(spec_path)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"worker exited with {proc.returncode}: {tail}"}, np.zeros(0, np.int64), np.zeros(0, np.int64)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ev = np.load(spec["events_path"])
    return result, ev["samples"], ev["channels"]


def _check_peers(peers: Sequence[str]) -> list[str]:
    bad = [p for p in peers if p not in PEERS + EXTRA_PEERS]
    if bad:
        raise ConfigError(f"peers must be among {PEERS + EXTRA_PEERS}; got {bad}")
    return list(peers)


def check_cores(cores: Sequence[int | str] | None) -> list[int]:
    """Core counts for ``--cores``: positive integers or ``"all"`` (this machine's cores), sorted,
    with 1 (the baseline of the speed-up) always included."""
    if not cores:
        return []
    n_cpu = os.cpu_count() or 1
    out = set()
    for c in cores:
        if isinstance(c, str) and c.strip().lower() == "all":
            out.add(n_cpu)
            continue
        try:
            k = int(c)
        except (TypeError, ValueError):
            k = 0
        if isinstance(c, bool) or k < 1 or str(c).strip() != str(k):
            raise ConfigError(f"cores must be positive integers or 'all'; got {c!r}")
        out.add(k)
    return sorted(out | {1})


def sweep_cores(n_cpu: int | None = None) -> list[int]:
    """1, 2, 4, ... up to and including every core of the machine."""
    n_cpu = n_cpu or os.cpu_count() or 1
    ks = [1]
    while ks[-1] * 2 < n_cpu:
        ks.append(ks[-1] * 2)
    return sorted(set(ks) | {n_cpu})


def _cores_entry(res: dict, base: dict | None, same: bool | None) -> dict:
    keys = ("realtime_channels", "realtime_channels_steady", "elapsed_s", "steady_elapsed_s", "n_parts",
            "step_ms", "features_sha256")
    e = {k: res[k] for k in keys if k in res}
    if base and "realtime_channels" in res and "realtime_channels" in base:
        e["speedup"] = res["realtime_channels"] / base["realtime_channels"]
        if res.get("realtime_channels_steady") and base.get("realtime_channels_steady"):
            e["speedup_steady"] = res["realtime_channels_steady"] / base["realtime_channels_steady"]
    if same is not None:
        e["identical_to_1_core"] = same
    return e


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False)


def run(channels: Sequence[int] = (1024, 4096), seconds: float = 2.0, chunk_ms: float = 1.0, seed: int = 0,
        peers: Sequence[str] = PEERS, progress: bool = True, cores: Sequence[int | str] | None = None) -> dict:
    """Simulate ``seconds`` of data at each channel count and measure every peer on it.

    With ``cores`` (e.g. ``[1, 2, "all"]``), cortexlink also runs once per core count with the
    channels split over that many threads (``FeatureExtractor(n_threads=k)``); ``result["cores"]``
    holds, per channel count and core count, real-time channels, the speed-up over one core and
    whether features and events are identical to the one-core run.
    """
    from cortexlink.sim import SimulatedImplant

    peers = _check_peers(peers)
    core_counts = check_cores(cores)
    if seconds <= CALIBRATION_S:
        raise ConfigError(f"seconds must be > the {CALIBRATION_S} s calibration window; got {seconds}")
    result: dict = {"benchmark": "dsp", "machine": machine_info(), "seconds": seconds, "chunk_ms": chunk_ms,
                    "seed": seed, "calibration_s": CALIBRATION_S, "tolerance_ms": TOLERANCE_S * 1e3,
                    "implementations": {p: {} for p in peers}, "detection": {}, "detection_by_channels": {},
                    "ratios": {}, "simulator": {}}
    if core_counts:
        result["cores"] = {}
        result["core_counts"] = core_counts
    bar = _progress(len(channels) * (len(peers) + 1 + max(len(core_counts) - 1, 0)), progress, "bench dsp")
    with tempfile.TemporaryDirectory(prefix="cortexlink-bench-") as tmp:
        workdir = Path(tmp)
        for n_ch in channels:
            bar.set_description(f"simulating {n_ch} ch")
            implant = SimulatedImplant(n_channels=int(n_ch), seed=seed)
            fs = implant.config.fs_hz
            t0 = time.perf_counter()
            chunk = implant.read_seconds(seconds)
            sim_s = time.perf_counter() - t0
            result["simulator"][str(n_ch)] = {"realtime_factor": seconds / sim_s}
            data_path = workdir / f"data_{n_ch}.npy"
            np.save(data_path, np.asarray(chunk.data))
            gt = implant.ground_truth()
            units_path = _fit_units(implant, chunk.data, gt, workdir, n_ch, result) if "cortexlink_units" in peers else None
            del chunk
            bar.update(1)
            exclude = list(gt.dead_channels) + list(gt.saturating_channels)
            spike_ch = np.asarray(gt.unit_channel)[gt.spike_units]
            spike_snr = np.asarray(gt.unit_snr)[gt.spike_units]
            for impl in peers:
                bar.set_description(f"{impl} {n_ch} ch")
                res, ev_s, ev_c = _run_worker(impl, data_path, workdir, fs, float(implant.channel_map.gain_uv[0]),
                                              chunk_ms, str(n_ch),
                                              units_path=units_path if impl == "cortexlink_units" else None)
                result["implementations"][impl][str(n_ch)] = res
                if "error" not in res:
                    det = score_detection(ev_s, ev_c, gt.spike_samples, spike_ch, spike_snr,
                                          tol_samples=int(round(TOLERANCE_S * fs)), exclude_channels=exclude,
                                          t_min=int((CALIBRATION_S + 0.01) * fs), t_max=int((seconds - 0.01) * fs))
                    result["detection_by_channels"].setdefault(impl, {})[str(n_ch)] = det
                    result["detection"].setdefault(impl, det)
                bar.update(1)
            if core_counts:
                _run_cores(result, core_counts, n_ch, data_path, workdir, fs, float(implant.channel_map.gain_uv[0]),
                           chunk_ms, bar)
            ours = result["implementations"].get("cortexlink", {}).get(str(n_ch), {})
            ratios = {}
            for peer in peers:
                other = result["implementations"][peer].get(str(n_ch), {})
                if peer != "cortexlink" and "samples_per_s" in ours and "samples_per_s" in other:
                    ratios[f"cortexlink_vs_{peer}"] = ours["samples_per_s"] / other["samples_per_s"]
            result["ratios"][str(n_ch)] = ratios
            os.remove(data_path)
    bar.close()
    return result


def _fit_units(implant: Any, data: np.ndarray, gt: Any, workdir: Path, n_ch: int, result: dict) -> Path:
    """Fit unit templates on the simulated data with its ground-truth spikes (for ``cortexlink_units``)."""
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.dsp.units import fit_unit_templates, spikes_from_ground_truth

    fs = implant.config.fs_hz
    bin_n = max(1, round(20.0 * fs / 1000.0))
    fx = FeatureExtractor(implant.channel_map, fs, bin_ms=bin_n * 1000.0 / fs, calibration_s=CALIBRATION_S)
    spikes, chans = spikes_from_ground_truth(gt)
    t = fit_unit_templates(fx, np.asarray(data), spikes, chans, min_spikes=5)
    result.setdefault("units", {})[str(n_ch)] = {"n_units_sim": int(gt.n_units), "n_units_fitted": t.n_units,
                                                 "n_main_channels": int(np.unique(t.primary).size)}
    return t.save(workdir / f"units_{n_ch}.npz")


def _run_cores(result: dict, core_counts: list[int], n_ch: int, data_path: Path, workdir: Path, fs: float,
               gain_uv: float, chunk_ms: float, bar) -> None:
    """cortexlink at each core count on the same data; the one-core run is the baseline."""
    by_k: dict[str, dict] = {}
    base = result["implementations"].get("cortexlink", {}).get(str(n_ch))
    base_ev = None
    if base is not None and "error" not in base:
        ev = np.load(workdir / f"cortexlink_{n_ch}_events.npz")
        base_ev = (ev["samples"], ev["channels"])
    for k in core_counts:
        if k == 1 and base is not None:
            res = base
            ev_s, ev_c = base_ev if base_ev else (None, None)
        else:
            bar.set_description(f"cortexlink {n_ch} ch on {k} cores")
            res, ev_s, ev_c = _run_worker("cortexlink", data_path, workdir, fs, gain_uv, chunk_ms,
                                          f"{n_ch}_k{k}", n_threads=k)
            bar.update(1)
            if k == 1:
                base, base_ev = res, (ev_s, ev_c)
        if "error" in res:
            by_k[str(k)] = res
            continue
        same = None
        if k != 1 and base is not None and "error" not in base and base_ev is not None:
            same = bool(res.get("features_sha256") == base.get("features_sha256")
                        and np.array_equal(ev_s, base_ev[0]) and np.array_equal(ev_c, base_ev[1]))
        by_k[str(k)] = _cores_entry(res, base, same)
    result["cores"][str(n_ch)] = by_k


def load_wav_folder(folder: Path, max_files: int | None = None) -> tuple[np.ndarray, float, list[str]]:
    """Stack one-electrode WAV files (as in ``n1_broadband``) into samples x channels int16."""
    from scipy.io import wavfile

    folder = Path(folder)
    if not folder.is_dir():
        raise ValidationError(f"data must be a folder of .wav files; {folder} is not a folder")
    files = sorted(folder.glob("*.wav"))[:max_files]
    if not files:
        raise ValidationError(f"data folder {folder} holds no .wav files")
    arrays, rates = [], set()
    for f in files:
        try:
            fs, x = wavfile.read(f)
        except Exception as exc:  # scipy raises ValueError and others for foreign files
            raise ValidationError(f"{f}: not a readable WAV file ({exc})") from exc
        if x.ndim != 1 or x.dtype != np.int16:
            raise ValidationError(f"{f}: expected mono int16 WAV; got dtype {x.dtype}, shape {x.shape}")
        arrays.append(x)
        rates.add(fs)
    if len(rates) != 1:
        raise ValidationError(f"all WAV files in {folder} must share one sample rate; got {sorted(rates)}")
    n = min(a.size for a in arrays)
    return np.stack([a[:n] for a in arrays], axis=1), float(rates.pop()), [f.stem for f in files]


def run_real(folder: Path, chunk_ms: float = 1.0, peers: Sequence[str] = PEERS, progress: bool = True) -> dict:
    """Throughput and crossing rates on real recordings (no ground truth, so no recall)."""
    peers = _check_peers(peers)
    if "cortexlink_units" in peers:
        raise ConfigError("cortexlink_units needs the simulator's ground truth to fit its templates: use it "
                          "without --data")
    data, fs, names = load_wav_folder(folder)
    result: dict = {"benchmark": "dsp-real", "machine": machine_info(), "data": str(folder),
                    "channels": data.shape[1], "fs_hz": fs, "seconds": data.shape[0] / fs, "chunk_ms": chunk_ms,
                    "gain_uv": 1.0, "note": "recordings carry no gain; features are in ADC counts",
                    "implementations": {}, "crossing_rate_hz": {}, "ratios": {}}
    bar = _progress(len(peers), progress, "bench dsp (real data)")
    with tempfile.TemporaryDirectory(prefix="cortexlink-bench-") as tmp:
        workdir = Path(tmp)
        data_path = workdir / "data.npy"
        np.save(data_path, data)
        duration = data.shape[0] / fs - CALIBRATION_S
        for impl in peers:
            bar.set_description(impl)
            res, ev_s, ev_c = _run_worker(impl, data_path, workdir, fs, 1.0, chunk_ms, "real")
            result["implementations"][impl] = res
            if "error" not in res:
                keep = ev_s >= int(CALIBRATION_S * fs)
                rates = np.bincount(ev_c[keep], minlength=data.shape[1]) / duration
                result["crossing_rate_hz"][impl] = {
                    "median": float(np.median(rates)), "p10": float(np.percentile(rates, 10)),
                    "p90": float(np.percentile(rates, 90)), "max": float(rates.max()),
                    "per_channel": {n: float(r) for n, r in zip(names, rates)},
                }
            bar.update(1)
    bar.close()
    ours = result["implementations"].get("cortexlink", {})
    for peer in peers:
        other = result["implementations"].get(peer, {})
        if peer != "cortexlink" and "samples_per_s" in ours and "samples_per_s" in other:
            result["ratios"][f"cortexlink_vs_{peer}"] = ours["samples_per_s"] / other["samples_per_s"]
    return result


def print_summary(result: dict) -> None:
    """Human-readable table of a ``run``/``run_real`` result."""
    print(f"machine: {result['machine']['cpu']} ({result['machine']['cores']} cores), one core per implementation")
    impls = result["implementations"]
    if result["benchmark"] == "dsp":
        print(f"{'implementation':<18}{'channels':>9}{'Msamples/s':>12}{'RT channels':>13}{'steady RT ch':>14}"
              f"{'peak RSS MB':>13}")
        for name, by_ch in impls.items():
            for ch, r in by_ch.items():
                if "error" in r:
                    print(f"{name:<18}{ch:>9}  error: {r['error'][:60]}")
                else:
                    steady = r.get("realtime_channels_steady")
                    steady = f"{steady:>14.0f}" if steady else f"{'-':>14}"
                    print(f"{name:<18}{ch:>9}{r['samples_per_s'] / 1e6:>12.1f}{r['realtime_channels']:>13.0f}"
                          f"{steady}{r['peak_rss_mb']:>13.0f}")
        for ch, ratios in result["ratios"].items():
            for k, v in ratios.items():
                print(f"  {ch} ch: {k} = {v:.1f}x")
        if result.get("cores"):
            print("cortexlink with its channels split over cores (steady: after the calibration window; "
                  "speed-up of steady RT channels over 1 core):")
            print(f"{'channels':>9}{'cores':>7}{'RT channels':>13}{'steady RT ch':>14}{'speed-up':>10}"
                  f"{'p99 step ms':>13}  identical")
            for ch, by_k in result["cores"].items():
                for k, e in by_k.items():
                    if "error" in e:
                        print(f"{ch:>9}{k:>7}  error: {e['error'][:60]}")
                        continue
                    sp = e.get("speedup_steady", 1.0)
                    p99 = (e.get("step_ms") or {}).get("p99")
                    print(f"{ch:>9}{k:>7}{e['realtime_channels']:>13.0f}{e.get('realtime_channels_steady') or 0:>14.0f}"
                          f"{sp:>9.2f}x{p99 if p99 is not None else float('nan'):>13.3f}  "
                          f"{'-' if e.get('identical_to_1_core') is None else e['identical_to_1_core']}")
        print("detection vs ground truth (tolerance %.1f ms):" % result["tolerance_ms"])
        for name, d in result["detection"].items():
            print(f"  {name:<18} recall SNR>=5 {d['recall_snr_ge_5']:.3f}  recall SNR 3-5 {d['recall_snr_3_5']:.3f}"
                  f"  precision {d['precision']:.3f}")
    else:
        print(f"{result['channels']} channels, {result['seconds']:.1f} s at {result['fs_hz']:.0f} Hz from {result['data']}")
        for name, r in impls.items():
            if "error" in r:
                print(f"  {name:<18} error: {r['error'][:60]}")
                continue
            cr = result["crossing_rate_hz"][name]
            print(f"  {name:<18} {r['samples_per_s'] / 1e6:8.1f} Msamples/s  crossing rate median {cr['median']:.1f} Hz"
                  f" (p10 {cr['p10']:.1f}, p90 {cr['p90']:.1f})")
        for k, v in result["ratios"].items():
            print(f"  {k} = {v:.1f}x")
