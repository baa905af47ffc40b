"""Sort one recording end to end: what ``cortexlink sort`` runs.

:func:`sort_recording` — input → SpikeInterface recording with its probe
(:func:`~cortexlink.sorting.recording.to_si_recording`) → preprocessing and sorter
(:func:`~cortexlink.sorting.sorters.run_sorter`) → SortingAnalyzer
(:mod:`~cortexlink.sorting.metrics`) → the automatic merge of split units
(:mod:`~cortexlink.sorting.merging`) → quality metrics → curation labels
(:mod:`~cortexlink.sorting.curation`) → the output folder::

    OUT/units.nwb       NWB Units table (spike times, electrodes, waveforms, metrics, labels)
    OUT/sorting/        the sorter's SpikeInterface sorting (numpy folder), before the merge
    OUT/analyzer/       the SpikeInterface SortingAnalyzer of the merged units (binary folder)
    OUT/metrics.csv     one row per unit: metrics, label, reason, position
    OUT/report.html     per-unit and summary plots (PNG files in OUT/report/)
    OUT/summary.json    sorter, parameters, merges, units by label, timings, peak memory

Memory stays bounded: the recording is read in 1 s chunks by every step; a session folder's
raw stream is decoded once to ``OUT/cache/raw.bin`` (removed at the end unless ``keep_cache``).
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError
from cortexlink.sorting.merging import DEFAULT_MERGE, check_merge

logger = logging.getLogger(__name__)

__all__ = ["sort_recording", "SUMMARY_FORMAT", "peak_rss_mb"]

SUMMARY_FORMAT = "cortexlink-sort"
_OURS = ("units.nwb", "sorting", "analyzer", "metrics.csv", "report.html", "report", "summary.json", "cache",
         "sorter", "sorter_stdout.log", "sorter_motion")


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory (MB) of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"self": round(own, 1), "children": round(kids, 1)}


def _prepare_out(out: Path, overwrite: bool) -> Path:
    from cortexlink.core.outpath import check_output_dir

    if overwrite and out.is_dir() and any(out.iterdir()):
        check_output_dir(out, what="--out", create=False)
        summ = out / "summary.json"
        try:
            ours = json.loads(summ.read_text()).get("format") == SUMMARY_FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        extra = sorted(p.name for p in out.iterdir() if p.name not in _OURS)
        if not ours or extra:
            raise ConfigError(f"--out {out} is not empty and is not a folder `cortexlink sort` wrote"
                              f"{' (it holds ' + ', '.join(extra[:5]) + ')' if extra else ''}; --overwrite only "
                              "replaces a previous sort output: choose another folder")
        for name in _OURS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return out
    return check_output_dir(out, what="--out", create=True, new=True)


def sort_recording(source: Any, out: str | Path, *, sorter: str | None = None, params: dict | None = None,
                   rules: Any = None, format: str | None = None, stream: str | None = None,
                   motion: bool = False, n_jobs: int = 1, progress: bool = False, overwrite: bool = False,
                   allow_truncated: bool = False, keep_cache: bool = False, report: bool = True,
                   pca_metrics: bool = True, threads: int | None = 1, species: str | None = None,
                   merge: str | None = DEFAULT_MERGE,
                   matching: Any = "auto", memory_share: float = 1.0) -> dict:
    """Sort ``source`` into ``out`` (see the module docstring); return the summary.

    Parameters
    ----------
    source : path or recording
        A session folder, an NWB file, anything :mod:`cortexlink.io.importers` reads, or a
        SpikeInterface recording.
    out : path
        A new or empty folder (or, with ``overwrite``, one a previous sort wrote).
    sorter : str, optional
        One of :data:`~cortexlink.sorting.sorters.SORTERS`; default the best available.
    params : dict, optional
        The sorter's own parameters.
    rules : CurationRules, optional
        Curation thresholds (default :class:`~cortexlink.sorting.curation.CurationRules`).
    motion : bool
        Correct drift (the sorter's own correction where it has one).
    n_jobs : int
        Worker processes for chunked steps.
    progress : bool
        Progress bars (tqdm / SpikeInterface) on long steps.
    threads : int or None
        BLAS/OpenMP threads per process (None: the libraries' default, which oversubscribes a
        busy machine: see :func:`~cortexlink.sorting.sorters.limit_threads`).
    pca_metrics : bool
        Also compute the PCA metrics (silhouette, nn_hit_rate, d_prime, ...).
    species : str, optional
        The subject's species for the NWB file (a simulated session: "Homo sapiens", as
        ``cortexlink export`` writes it).
    merge : str or None
        SpikeInterface's auto-merge preset for units the sorter split
        (:data:`~cortexlink.sorting.merging.MERGE_PRESETS`; default
        :data:`~cortexlink.sorting.merging.DEFAULT_MERGE`); None or ``"none"``: no merging.
    matching : "auto", "own", dict or str
        The sorter's template-matching settings
        (:func:`~cortexlink.sorting.sorters.resolve_matching`; "auto": cortexlink's, a lower
        amplitude floor and peak threshold for tridesclous2's bursting units).
    memory_share : float
        The share of free memory the sorter may count on (a data set build sorting N sessions at
        once passes 1/N; :func:`~cortexlink.sorting.sorters.cache_params`).

    Returns
    -------
    dict
        The contents of ``summary.json``.
    """
    from cortexlink.sorting.curation import CurationRules
    from cortexlink.sorting.sorters import check_memory_share, default_sorter, library_warnings, resolve_matching

    merge = check_merge(merge)
    rules = rules if rules is not None else CurationRules()
    if not isinstance(rules, CurationRules):
        raise ConfigError(f"rules must be a CurationRules; got {type(rules).__name__}")
    sorter = sorter or default_sorter()
    matching = resolve_matching(sorter, matching)
    memory_share = check_memory_share(memory_share)
    existed = Path(out).exists()
    out = _prepare_out(Path(out), overwrite)
    timings: dict[str, float] = {}
    caught: list[str] = []
    try:
        with library_warnings(caught):
            summary = _run(source, out, sorter, params, rules, format, stream, motion, n_jobs, progress,
                           allow_truncated, report, pca_metrics, threads, species, timings, caught, merge,
                           matching, memory_share)
    except BaseException:
        if not existed and all(p.name in _OURS for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)          # a failed sort leaves no half-written folder
        raise
    summary["library_warnings"] = caught
    if not keep_cache:
        for name in ("cache", "sorter"):
            if (out / name).exists():
                shutil.rmtree(out / name)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _run(source: Any, out: Path, sorter: str, params: dict | None, rules: Any, format: str | None,
         stream: str | None, motion: bool, n_jobs: int, progress: bool, allow_truncated: bool, report: bool,
         pca_metrics: bool, threads: int | None, species: str | None, timings: dict, caught: list,
         merge: str | None, matching: dict, memory_share: float) -> dict:
    import spikeinterface.core as si

    from cortexlink.sorting.curation import label_units
    from cortexlink.sorting.merging import merge_units
    from cortexlink.sorting.metrics import analyze, quality_metrics, unit_summary
    from cortexlink.sorting.nwb import write_units_nwb
    from cortexlink.sorting.recording import describe, to_si_recording
    from cortexlink.sorting.sorters import limit_threads, preprocess_recording, run_sorter

    t = time.perf_counter()
    rec = to_si_recording(source, format=format, stream=stream, cache_dir=out / "cache",
                          allow_truncated=allow_truncated, progress=progress)
    info = describe(rec)
    timings["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sorting = run_sorter(rec, sorter, out / "sorter", params=params, preprocess=True, motion=motion, n_jobs=n_jobs,
                         progress=progress, threads=threads, warnings_sink=caught,
                         matching=matching, memory_share=memory_share)
    timings["sort_s"] = time.perf_counter() - t
    sorting = sorting.save(folder=out / "sorting", format="numpy_folder", overwrite=True)
    t = time.perf_counter()
    pre = preprocess_recording(rec, n_jobs=n_jobs, progress=progress)
    with limit_threads(threads):
        an = analyze(sorting, pre, out / "analyzer", n_jobs=n_jobs, progress=progress)
        merged, groups, new_ids = merge_units(an, merge, out / "cache" / "analyzer_merged", n_jobs=n_jobs,
                                              progress=progress)
        if groups:                          # the merged analyzer takes the place of the sorter's
            del an, merged
            shutil.rmtree(out / "analyzer")
            shutil.move(str(out / "cache" / "analyzer_merged"), str(out / "analyzer"))
            an = si.load_sorting_analyzer(out / "analyzer")
        qm = quality_metrics(an, pca=pca_metrics, n_jobs=n_jobs, progress=progress)
    timings["analyze_s"] = time.perf_counter() - t
    labels = label_units(qm, rules)
    summ = unit_summary(an)
    t = time.perf_counter()
    src_meta = info.get("source") or {}
    t0 = float(src_meta.get("first_sample", 0)) / info["fs_hz"]
    write_units_nwb(out / "units.nwb", sorting=an.sorting, summary=summ, metrics=qm, labels=labels,
                    channel_ids=[str(c) for c in rec.channel_ids], positions_um=rec.get_channel_locations(),
                    fs_hz=info["fs_hz"], t0_s=t0, sorter=sorter, source=str(src_meta.get("path", source)),
                    subject_id=src_meta.get("participant_id"), species=species or src_meta.get("species"))
    table = qm.copy()
    table["label"] = [labels[u][0] for u in table.index]
    table["label_reason"] = [labels[u][1] for u in table.index]
    table["main_channel"] = [str(c) for c in summ["main_channel_id"]]
    table["x_um"] = summ["location_um"][:, 0] if len(table) else []
    table["y_um"] = summ["location_um"][:, 1] if len(table) else []
    table.to_csv(out / "metrics.csv", index_label="unit_id")
    timings["nwb_s"] = time.perf_counter() - t
    counts = {k: sum(1 for v in labels.values() if v[0] == k) for k in ("good", "mua", "noise")}
    summary = {"format": SUMMARY_FORMAT, "source": str(src_meta.get("path", source)), "recording": info,
               "sorter": sorter, "params": params or {}, "matching": matching, "motion": bool(motion), "n_jobs": n_jobs, "threads": threads,
               "merge": {"preset": merge, "groups": [[str(u) for u in g] for g in groups],
                         "new_unit_ids": [str(u) for u in new_ids]},
               "curation_rules": rules.to_dict(), "n_units": len(labels), "n_units_by_label": counts,
               "metrics": list(map(str, qm.columns)), "timings_s": timings, "peak_rss_mb": peak_rss_mb(),
               "outputs": {"nwb": "units.nwb", "sorting": "sorting", "analyzer": "analyzer", "metrics": "metrics.csv"}}
    if report:
        from cortexlink.sorting.report import write_report
        t = time.perf_counter()
        with limit_threads(threads):
            write_report(out, an, table, summary, progress=progress)
        timings["report_s"] = time.perf_counter() - t
        summary["outputs"]["report"] = "report.html"
    timings["total_s"] = sum(v for k, v in timings.items() if k != "total_s")
    summary["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    summary["peak_rss_mb"] = peak_rss_mb()
    return summary
