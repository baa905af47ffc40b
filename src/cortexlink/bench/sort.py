"""``cortexlink bench sort``: every available spike sorter on the same ground-truth recordings in
one run, scored with SpikeInterface's ``compare_sorter_to_ground_truth``.

Data sets (:mod:`cortexlink.bench.sort_truth`): ``sim`` (the ``probe384`` simulator preset:
footprints over neighbouring electrodes, bursts, amplitude variability), ``sim_drift`` (the same
with a rigid drift along the probe), ``n1_hybrid`` and ``locust_hybrid`` (known units injected
into the real N1 broadband and locust tetrode recordings of ``../shared/data``).

Each sorter runs in its own fresh process (:mod:`cortexlink.bench._sort_worker`) so its wall time
and peak RSS are its own. Each sorting is then post-processed as ``cortexlink sort`` does it (the
automatic merge of split units, :mod:`cortexlink.sorting.merging`; the row's ``merge`` keeps the
figures from before it) and scored. Per run: per-unit accuracy / precision / recall, their medians by SNR
band, the units well detected (accuracy >= 0.8, as SpikeForest counts), false-positive units
(where the ground truth is exhaustive: simulated data only), wall time per channel-hour, peak RSS,
and -- where cortexlink.sorting's curation is available -- the share of well-detected SNR >= 5
units its default rules keep and of false-positive units they reject.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.sorting.merging import DEFAULT_MERGE, check_merge
from cortexlink.sorting.sorters import SORTER_DEFAULTS, resolve_matching

__all__ = ["DATASETS", "run", "score_sorting", "result_row", "print_summary"]

logger = logging.getLogger(__name__)

DATASETS = ("sim", "sim_drift", "n1_hybrid", "locust_hybrid")
WELL_DETECTED = 0.8
ROW_KEYS = ("sorter", "dataset", "channels", "seconds", "n_true_units", "n_well_detected",
            "accuracy_median_snr_ge_5", "false_positive_units", "wall_s", "peak_rss_mb")


def _median(x: Any) -> float | None:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else None


def score_sorting(gt_sorting: Any, sorting: Any, unit_snr: np.ndarray, *, exhaustive: bool) -> dict:
    """Score ``sorting`` against ``gt_sorting`` (SpikeInterface's comparison, 0.4 ms tolerance).

    Returns
    -------
    dict
        ``n_true_units``, ``n_sorted_units``, ``n_well_detected`` (accuracy >= 0.8), the same for
        SNR >= 5 (``n_snr_ge_5``, ``n_well_detected_snr_ge_5``, ``well_detected_share_snr_ge_5``),
        ``accuracy_median_snr_ge_5``, ``false_positive_units`` (None unless ``exhaustive``),
        ``by_snr`` (per band: units, well detected, median accuracy / precision / recall),
        ``per_unit`` (unit, snr, accuracy, precision, recall) and the comparison in ``_cmp``.
    """
    import spikeinterface.comparison as sc

    ids = list(gt_sorting.unit_ids)
    if len(sorting.unit_ids) == 0:  # SpikeInterface's comparison cannot take an empty sorting
        cmp = None
        acc = prec = rec = np.zeros(len(ids))
    else:
        cmp = sc.compare_sorter_to_ground_truth(gt_sorting, sorting, exhaustive_gt=exhaustive,
                                                well_detected_score=WELL_DETECTED)
        perf = cmp.get_performance(method="by_unit")
        acc = np.array([float(perf.loc[u, "accuracy"]) for u in ids])
        prec = np.array([float(perf.loc[u, "precision"]) for u in ids])
        rec = np.array([float(perf.loc[u, "recall"]) for u in ids])
    snr = np.asarray(unit_snr, float)
    well = acc >= WELL_DETECTED
    from cortexlink.bench.sort_truth import SNR_BANDS

    by_snr = []
    for lo, hi in SNR_BANDS:
        m = (snr >= lo) & (snr < hi)
        by_snr.append(dict(snr_lo=lo, snr_hi=None if math.isinf(hi) else hi, n_units=int(m.sum()),
                           n_well_detected=int((well & m).sum()), accuracy_median=_median(acc[m]),
                           precision_median=_median(prec[m]), recall_median=_median(rec[m])))
    hi_snr = snr >= 5.0
    n_hi = int(hi_snr.sum())
    out = dict(
        n_true_units=len(ids), n_sorted_units=int(len(sorting.unit_ids)), n_well_detected=int(well.sum()),
        n_snr_ge_5=n_hi, n_well_detected_snr_ge_5=int((well & hi_snr).sum()),
        well_detected_share_snr_ge_5=(float((well & hi_snr).sum() / n_hi) if n_hi else None),
        accuracy_median_snr_ge_5=_median(acc[hi_snr]),
        false_positive_units=(None if not exhaustive else 0 if cmp is None else int(cmp.count_false_positive_units())),
        by_snr=by_snr,
        per_unit=[dict(unit=int(u) if isinstance(u, (int, np.integer)) else str(u), snr=round(float(s), 2),
                       accuracy=round(float(a), 3), precision=round(float(p), 3), recall=round(float(r), 3))
                  for u, s, a, p, r in zip(ids, snr, acc, prec, rec)],
    )
    out["_cmp"] = cmp
    # the well-detected SNR >= 5 true units by the unrounded accuracy (the curation check's set)
    out["_well_snr_ge_5"] = [u for u, w in zip(ids, well & hi_snr) if w]
    return out


def result_row(sorter: str, dataset: str, channels: int | None, seconds: float | None,
               score: dict | None = None, run: dict | None = None) -> dict:
    """One ``results[]`` row: the contract keys (None where a figure is missing: a failed or
    unavailable sorter, a recording without exhaustive truth) plus the details."""
    score = {k: v for k, v in (score or {}).items() if not k.startswith("_")}
    run = dict(run or {})
    row: dict[str, Any] = dict(sorter=sorter, dataset=dataset, channels=channels, seconds=seconds)
    for k in ("n_true_units", "n_well_detected", "accuracy_median_snr_ge_5", "false_positive_units"):
        row[k] = score.get(k)
    row["wall_s"] = run.get("wall_s")
    row["peak_rss_mb"] = run.get("peak_rss_mb")
    ch_h = (channels or 0) * (seconds or 0) / 3600.0
    row["wall_s_per_channel_hour"] = (row["wall_s"] / ch_h) if (row["wall_s"] is not None and ch_h > 0) else None
    for k, v in score.items():
        row.setdefault(k, v)
    for k in ("error", "skipped", "n_units", "peak_rss_children_mb", "reused"):
        if k in run:
            row["n_sorted_units_reported" if k == "n_units" else k] = run[k]
    return row


def _build_pair(name: str, *, channels: int, seconds: float, seed: int, folder: Path, data_dir: Path,
                drift_period_s: float, hybrid_units: int) -> Any:
    from cortexlink.bench import sort_truth as T
    from cortexlink.sim import SimulatedImplant

    if name in ("sim", "sim_drift"):
        over: dict[str, Any] = dict(n_channels=channels, seed=seed)
        if name == "sim_drift":
            over["probe_drift_period_s"] = drift_period_s
        imp = SimulatedImplant.from_preset("probe384_drift" if name == "sim_drift" else "probe384", **over)
        return T.simulated_pair(imp, seconds, folder / name, name=name)
    if name == "n1_hybrid":
        d = data_dir / "n1_broadband"
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is absent")
        return T.hybrid_pair(T.load_n1(d, n_channels=min(channels, 16)), name=name, n_units=hybrid_units, seed=seed)
    if name == "locust_hybrid":
        d = data_dir / "locust_tetrode"
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is absent")
        rec = T.load_locust(d)
        if seconds < rec.get_total_duration():
            rec = rec.frame_slice(0, int(seconds * rec.sampling_frequency))
        return T.hybrid_pair(rec, name=name, n_units=min(hybrid_units, 4), seed=seed, spread=True)
    raise ConfigError(f"datasets must be among {DATASETS}; got {name!r}")


def _save_recording(pair: Any, folder: Path) -> Path:
    """Where the worker can load ``pair.recording`` from: its JSON description when it is lazy
    on a file (the simulator's binary), else a binary copy (the short hybrids)."""
    rec = pair.recording
    if rec.check_serializability("json"):
        path = folder / f"{pair.name}_recording.json"
        rec.dump_to_json(path)
        return path
    path = folder / f"{pair.name}_recording"
    rec.save(folder=path, format="binary", overwrite=True, n_jobs=1, chunk_duration="1s", progress_bar=False)
    return path


def _run_worker(spec: dict, folder: Path, timeout_s: float) -> dict:
    spec_path = folder / f"spec_{spec['sorter']}_{spec['dataset']}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.get("n_jobs", 1)), "MKL_NUM_THREADS": str(spec.get("n_jobs", 1)),
           "OPENBLAS_NUM_THREADS": str(spec.get("n_jobs", 1))}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "cortexlink.bench._sort_worker", str(spec_path)],
                              capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": None}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            out = json.loads(line)
            out["process_s"] = time.perf_counter() - t0
            return out
    return {"error": f"worker exited {proc.returncode} without a result: {proc.stderr.strip()[-500:]}"}


def _run_key(spec: dict, dataset: str, channels: int, seconds: float, seed: int, drift_period_s: float) -> dict:
    """What a sorter run's result depends on (a kept run is reused only when all of it matches)."""
    from importlib.metadata import version

    return dict(sorter=spec["sorter"], dataset=dataset, channels=channels, seconds=float(seconds), seed=seed,
                drift_period_s=float(drift_period_s), motion=spec["motion"], n_jobs=spec["n_jobs"],
                matching=spec.get("matching", {}), defaults=SORTER_DEFAULTS.get(spec["sorter"], {}),
                spikeinterface=version("spikeinterface"))


def _remember(spec: dict, root: Path, out: dict, *args: Any) -> None:
    (root / f"run_{spec['sorter']}_{spec['dataset']}.json").write_text(
        json.dumps(dict(key=_run_key(spec, *args), out=out)))


def _reuse(spec: dict, root: Path, *args: Any) -> dict | None:
    """The worker's result of an identical run kept in the work folder (its sorting still there),
    marked ``reused``; None when there is none (a kept work folder resumes a long run cut short,
    or re-scores and re-curates its sortings without sorting again)."""
    path = root / f"run_{spec['sorter']}_{spec['dataset']}.json"
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if kept.get("key") != _run_key(spec, *args) or not Path(spec["sorting_out"]).exists():
        return None
    logger.info("bench sort: reusing %s on %s from %s", spec["sorter"], spec["dataset"], path)
    return dict(kept["out"], reused=True)


def _post_process(pair: Any, sorting: Any, folder: Path, merge: str | None) -> tuple[dict, Any]:
    """The score of ``sorting`` after the pipeline's automatic merge (``merge``: a preset of
    :mod:`cortexlink.sorting.merging`, or None), with the unmerged figures and the merges under
    ``merge``; and the merged analyzer (None without merging)."""
    raw = score_sorting(pair.gt_sorting, sorting, pair.unit_snr, exhaustive=pair.exhaustive)
    if merge is None:
        return raw, None
    from cortexlink.bench._sort_curation import merge_step

    an, merged, info = merge_step(pair, sorting, folder, merge)
    score = score_sorting(pair.gt_sorting, merged, pair.unit_snr, exhaustive=pair.exhaustive) if info["groups"] else raw
    info.update({f"{k}_unmerged": raw[k] for k in ("n_sorted_units", "n_well_detected", "n_well_detected_snr_ge_5",
                                                    "well_detected_share_snr_ge_5", "false_positive_units")})
    score["merge"] = info
    return score, an


def _curation(pair: Any, sorting: Any, score: dict, folder: Path, analyzer: Any = None) -> dict:
    """Share of well-detected SNR >= 5 units that cortexlink's default curation keeps and of
    false-positive units it rejects (needs cortexlink.sorting.curation)."""
    try:
        from cortexlink.bench._sort_curation import curation_check
    except ImportError as exc:
        return {"available": False, "reason": f"cortexlink.sorting curation is not importable ({exc})"}
    try:
        return curation_check(pair, sorting, score, folder, analyzer)
    except ImportError as exc:
        return {"available": False, "reason": f"cortexlink.sorting curation is not importable ({exc})"}


def _available() -> dict[str, str | None]:
    try:
        from cortexlink.sorting.sorters import available_sorters
    except ImportError:
        import spikeinterface.sorters as ss

        inst = set(ss.installed_sorters())
        return {s: (None if s in inst else "not installed") for s in
                ("kilosort4", "spykingcircus2", "tridesclous2", "mountainsort5")}
    return available_sorters()


def run(*, datasets: Sequence[str] = ("sim", "sim_drift"), sorters: Sequence[str] | None = None,
        channels: int = 384, seconds: float = 60.0, seed: int = 0, motion: bool = True, n_jobs: int = 1,
        drift_period_s: float = 1200.0, hybrid_units: int = 8, timeout_s: float = 3600.0, curation: bool = True,
        data_dir: str | Path = "../shared/data", work_dir: str | Path | None = None, progress: bool = False,
        merge: str | None = DEFAULT_MERGE, matching: Any = "auto") -> dict:
    """Run every sorter on every data set; see the module docstring.

    Parameters
    ----------
    datasets : sequence of str
        Among :data:`DATASETS`.
    sorters : sequence of str, optional
        Default: every sorter that runs here. One that cannot run gets a row with ``skipped``.
    channels, seconds : int, float
        Size of the simulated recordings (the hybrids use 8-16 N1 electrodes / the 4 tetrode wires
        and at most ``seconds`` of the real data).
    motion : bool
        Drift correction on ``sim_drift`` (the sorter's own or SpikeInterface's); off elsewhere.
    drift_period_s : float
        Period of ``sim_drift``'s drift (the preset's 1200 s moves units little in a short run).
    timeout_s : float
        Per sorter run; a run past it is a row with an error.
    merge : str or None
        The automatic merge of split units ``cortexlink sort`` applies (a preset of
        :mod:`cortexlink.sorting.merging`; None or "none": off). The figures are scored after it;
        each row's ``merge`` holds the merged groups and the figures before it.
    matching : "auto", "own", dict or str
        The sorters' template-matching settings, as ``cortexlink sort``'s
        (:func:`~cortexlink.sorting.sorters.resolve_matching`, resolved for each sorter; each row
        says what it ran with under ``matching``).
    """
    import spikeinterface.core as si

    merge = check_merge(merge)

    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise ConfigError(f"datasets must be among {DATASETS}; got {list(datasets)!r}")
    if not (isinstance(channels, int) and 4 <= channels <= 4096):
        raise ConfigError(f"channels must be an integer in [4, 4096]; got {channels!r}")
    if not (isinstance(seconds, (int, float)) and 1.0 <= seconds <= 36000.0):
        raise ConfigError(f"seconds must be in [1, 36000]; got {seconds!r}")
    avail = _available()
    names = list(sorters) if sorters else [s for s, why in avail.items() if why is None]
    unknown = [s for s in names if s not in avail]
    if unknown:
        raise ConfigError(f"sorters must be among {sorted(avail)}; got {unknown}")
    settings = {s: resolve_matching(s, matching, strict=False) for s in names}
    tmp = tempfile.TemporaryDirectory(prefix="cortexlink-bench-sort-") if work_dir is None else None
    root = Path(tmp.name if tmp else work_dir)
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    data_sets: list[dict] = []
    t_start = time.perf_counter()
    try:
        for name in datasets:
            try:
                pair = _build_pair(name, channels=channels, seconds=seconds, seed=seed, folder=root,
                                   data_dir=Path(data_dir), drift_period_s=drift_period_s, hybrid_units=hybrid_units)
            except FileNotFoundError as exc:
                data_sets.append(dict(dataset=name, skipped=str(exc)))
                continue
            data_sets.append(dict(dataset=name, **pair.info))
            rec_path = _save_recording(pair, root)
            ch, sec = pair.recording.get_num_channels(), round(pair.recording.get_total_duration(), 3)
            for sorter in names:
                if avail.get(sorter) is not None:
                    results.append(result_row(sorter, name, ch, sec, run={"skipped": avail[sorter]}))
                    continue
                logger.info("bench sort: %s on %s (%d ch, %.0f s)", sorter, name, ch, sec)
                spec = dict(sorter=sorter, dataset=name, recording=str(rec_path), n_jobs=n_jobs,
                            motion=bool(motion and name == "sim_drift"),
                            matching=settings[sorter],
                            work_folder=str(root / f"work_{sorter}_{name}"),
                            sorting_out=str(root / f"sorting_{sorter}_{name}"))
                out = _reuse(spec, root, name, channels, seconds, seed, drift_period_s)
                if out is None:
                    out = _run_worker(spec, root, timeout_s)
                    if tmp is None and "error" not in out:
                        _remember(spec, root, out, name, channels, seconds, seed, drift_period_s)
                score = None
                if "error" not in out:
                    sorting = si.load(spec["sorting_out"])
                    score, an = _post_process(pair, sorting, root / f"curation_{sorter}_{name}", merge)
                    if curation:
                        score["curation"] = _curation(pair, an.sorting if an is not None else sorting, score,
                                                      root / f"curation_{sorter}_{name}", an)
                results.append(dict(result_row(sorter, name, ch, sec, score, out), matching=spec["matching"]))
                if tmp is None:  # a kept work folder also holds the rows so far (a long run cut short)
                    (root / "partial.json").write_text(json.dumps(dict(datasets=data_sets, results=results)))
    finally:
        if tmp is not None:
            tmp.cleanup()
    from cortexlink.bench.dsp import machine_info

    return dict(benchmark="sort", machine=machine_info(), sorters_available=avail, datasets=data_sets,
                seed=seed, motion=motion, n_jobs=n_jobs, merge=merge,
                matching=matching, total_s=round(time.perf_counter() - t_start, 1),
                results=results, best=_best(results))


def _best(results: list[dict]) -> dict:
    """Per data set, the sorter with the largest share of SNR >= 5 units well detected."""
    best: dict[str, dict] = {}
    for r in results:
        share = r.get("well_detected_share_snr_ge_5")
        if share is None:
            continue
        cur = best.get(r["dataset"])
        if cur is None or share > cur["well_detected_share_snr_ge_5"]:
            best[r["dataset"]] = dict(sorter=r["sorter"], well_detected_share_snr_ge_5=share)
    return best


def print_summary(result: dict) -> None:  # pragma: no cover - console formatting, used by cli only
    """Human-readable table (the CLI prints it when ``--json`` is not given)."""
    import builtins

    p = builtins.print
    p(f"bench sort on {result['machine']['cpu']} ({result['machine']['cores']} cores), {result['total_s']} s")
    for d in result["datasets"]:
        p(f"  {d['dataset']}: " + (d["skipped"] if "skipped" in d else
                                   f"{d['channels']} ch, {d['seconds']:.1f} s, {d['n_units']} true units"))
    p(f"{'sorter':<15}{'dataset':<15}{'units':>6}{'well':>6}{'SNR>=5 well':>13}{'acc med':>9}{'FP':>5}"
      f"{'wall s':>9}{'RSS MB':>8}")
    for r in result["results"]:
        if r.get("skipped") or r.get("error"):
            p(f"{r['sorter']:<15}{r['dataset']:<15}  {r.get('skipped') or r.get('error')}")
            continue
        share = r.get("well_detected_share_snr_ge_5")
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        p(f"{r['sorter']:<15}{r['dataset']:<15}{r['n_true_units']:>6}{r['n_well_detected']:>6}"
          f"{fmt(share, '.0%'):>13}{fmt(r['accuracy_median_snr_ge_5'], '.2f'):>9}"
          f"{fmt(r['false_positive_units'], 'd'):>5}{fmt(r['wall_s'], '.1f'):>9}{fmt(r['peak_rss_mb'], '.0f'):>8}")
