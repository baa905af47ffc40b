"""``cortexlink bench units-track``: how well :func:`cortexlink.sorting.tracking.track_units`
follows units across days, on a simulated participant whose every neuron is known.

One simulated implant (the ``probe384`` preset at ``channels`` electrodes: footprints over
neighbouring electrodes, bursts, amplitude variability) is recorded on days ``0..days-1``
(``seconds`` each, written with :func:`cortexlink.bench.sort_truth.simulated_pair`); between days
``day_turnover`` of the units are replaced by new neurons (same place, new waveform, amplitude
and rates), every unit's rate drifts, and the probe moves along its axis by a random walk of
step ``day_shift_um``.

Units per day come from

* ``ground_truth`` (the default): the true spike trains (:func:`~cortexlink.bench.sort_truth.gt_to_sorting`)
  with a SortingAnalyzer on the preprocessed recording: tracking alone, without sorting errors;
* a sorter (``sorter=NAME``): :func:`cortexlink.sorting.pipeline.sort_recording`'s output
  (its good and mua units, or ``labels``), read with
  :func:`~cortexlink.sorting.tracking.load_session_units`; each sorted unit stands for the true
  unit SpikeInterface's comparison matches it to with accuracy >= 0.8 (others stand for no
  neuron).

Score: a predicted match is two units (days a < b) carrying the same tracked id; it is correct
when both stand for the same simulated neuron: the same slot ``i`` with
``unit_born_day(day=b)[i] <= a``. A true pair is such a neuron present (as a unit) on both days.
Precision and recall over all day pairs and over consecutive days, and at several confidence
thresholds (tracking rerun with ``min_confidence`` = the threshold); for a sorter also
``precision_of_mapped_units``, the precision among matches of two units that each stand for a
true neuron (a sorted unit that matches none is a neuron the score cannot name). A kept
``work_dir`` is reused: a day already sorted there by the same sorter is not sorted again. ``shift_error_um``: the
median |estimated - true| shift between consecutive days.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError

__all__ = ["run", "simulate_sessions", "score_tracking", "print_summary", "ROW_KEYS", "THRESHOLDS"]

logger = logging.getLogger(__name__)

ROW_KEYS = ("units_source", "days", "channels", "seconds", "day_turnover", "day_shift_um", "n_units_per_day",
            "n_true_pairs", "n_pred_pairs", "precision", "recall", "precision_consecutive", "recall_consecutive",
            "shift_error_um")
#: Confidence thresholds the score is also reported at.
THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
_WELL = 0.8


def _gt_session_units(pair: Any, session: str, participant: str, day: int) -> Any:
    """SessionUnits of the true units (ids = simulator slots) with templates and locations from
    a SortingAnalyzer on the preprocessed recording (the same preprocessing as a sort)."""
    import spikeinterface.core as si

    from cortexlink.sorting.sorters import preprocess_recording
    from cortexlink.sorting.tracking import session_units_from_analyzer

    sorting = pair.gt_sorting.remove_empty_units()
    pre = preprocess_recording(pair.recording)
    job = dict(n_jobs=1, chunk_duration="1s", progress_bar=False)
    an = si.create_sorting_analyzer(sorting, pre, format="memory", sparse=True, seed=0, job_kwargs=job)
    an.compute("random_spikes", method="uniform", max_spikes_per_unit=300, seed=0)
    an.compute("templates", ms_before=1.0, ms_after=2.0, **job)
    an.compute("unit_locations", method="monopolar_triangulation")
    return session_units_from_analyzer(an, session=session, participant=participant, order_key=float(day))


def simulate_sessions(*, days: int = 5, channels: int = 64, seconds: float = 60.0, day_turnover: float = 0.15,
                      day_shift_um: float = 10.0, seed: int = 0, folder: str | Path, sorter: str | None = None,
                      participant: str = "sim-P1", progress: bool = False,
                      implant_overrides: dict | None = None,
                      labels: Sequence[str] = ("good", "mua")) -> tuple[list, list[dict]]:
    """Record the simulated participant on each day (the ``probe384`` preset with
    ``implant_overrides``) and return ``(sessions, truths)``:
    SessionUnits per day and, per day, ``born_day`` (per slot), ``shift_um`` (the day's total),
    ``unit_slot`` (the slot each session unit stands for, -1 for none), ``n_true_units``, and the
    day's ``recording`` and ``gt_sorting`` (SpikeInterface; the recording lazily on ``folder``)."""
    from cortexlink.bench.sort_truth import simulated_pair
    from cortexlink.sim import SimulatedImplant

    folder = Path(folder)
    sessions, truths = [], []
    for d in range(days):
        imp = SimulatedImplant.from_preset("probe384", n_channels=channels, seed=seed, day=d,
                                           day_turnover=day_turnover, day_shift_um=day_shift_um,
                                           **(implant_overrides or {}))
        name = f"day{d:02d}"
        pair = simulated_pair(imp, seconds, folder / name, name=name)
        truth = dict(day=d, born_day=np.asarray(imp.unit_born_day), shift_um=imp.day_shift_total_um,
                     n_true_units=imp.n_units, recording=pair.recording, gt_sorting=pair.gt_sorting)
        if sorter is None:
            su = _gt_session_units(pair, name, participant, d)
            slot = np.array([int(u) for u in su.unit_ids])
        else:
            su, slot, extra = _sorted_session_units(pair, name, participant, d, sorter, folder, progress, labels)
            truth.update(extra)
        truth["unit_slot"] = slot
        sessions.append(su)
        truths.append(truth)
        logger.info("bench units-track: day %d, %d units", d, su.n_units)
    return sessions, truths


def _sorted_session_units(pair: Any, name: str, participant: str, day: int, sorter: str, folder: Path,
                          progress: bool, labels: Sequence[str]) -> tuple[Any, np.ndarray, dict]:
    import spikeinterface.comparison as sc
    import spikeinterface.core as si

    from cortexlink.sorting.pipeline import sort_recording
    from cortexlink.sorting.tracking import load_session_units

    out = folder / f"sorted_{name}"
    t0 = time.perf_counter()
    try:                    # a kept --work-dir: a finished sort of the same (seeded) day is reused
        done = json.loads((out / "summary.json").read_text())
        wall = float(done["timings_s"]["total_s"])
        reused = done.get("sorter") == sorter
    except (OSError, ValueError, KeyError, TypeError):
        reused = False
    if not reused:
        sort_recording(pair.recording, out, sorter=sorter, report=False, pca_metrics=False, progress=progress,
                       overwrite=out.exists())
        wall = time.perf_counter() - t0
    su = load_session_units(out, labels=labels)
    su.session, su.participant, su.order_key = name, participant, float(day)
    sorting = si.load(out / "sorting")
    slot = np.full(su.n_units, -1)
    n_well = 0
    if len(sorting.unit_ids):
        cmp = sc.compare_sorter_to_ground_truth(pair.gt_sorting, sorting, exhaustive_gt=True)
        for gt_id, s_id in cmp.hungarian_match_12.items():     # true unit -> its sorted unit (-1: none)
            if s_id == -1 or str(s_id) not in su.unit_ids:
                continue
            if float(cmp.agreement_scores.loc[gt_id, s_id]) >= _WELL:
                slot[su.unit_ids.index(str(s_id))] = int(gt_id)
                n_well += 1
    return su, slot, dict(sort_wall_s=round(wall, 1), n_sorted_units=int(len(sorting.unit_ids)),
                          n_well_matched_kept=n_well)


def _pairs(table: Any, sessions: list, truths: list[dict], *, consecutive: bool) -> tuple[int, int, int, int]:
    """(true pairs, predicted pairs, correct predicted pairs, predicted pairs of two units that
    each stand for a true neuron) over the day pairs."""
    slot_of = {}
    for s, t in zip(sessions, truths):
        for u, sl in zip(s.unit_ids, t["unit_slot"]):
            slot_of[(s.session, u)] = int(sl)
    days = {s.session: i for i, s in enumerate(sessions)}
    n_true = 0
    for a in range(len(sessions)):
        for b in range(a + 1, len(sessions)):
            if consecutive and b != a + 1:
                continue
            sa = {int(x) for x in truths[a]["unit_slot"] if x >= 0}
            sb = {int(x) for x in truths[b]["unit_slot"] if x >= 0}
            n_true += sum(1 for i in sa & sb if truths[b]["born_day"][i] <= a)
    n_pred = n_ok = n_mapped = 0
    for _, g in table.groupby("tracked_id"):
        members = sorted((days[s], slot_of[(s, str(u))]) for s, u in zip(g["session"], g["unit_id"]))
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                (a, sa), (b, sb) = members[i], members[j]
                if consecutive and b != a + 1:
                    continue
                n_pred += 1
                n_mapped += int(sa >= 0 and sb >= 0)
                n_ok += int(sa >= 0 and sa == sb and truths[b]["born_day"][sa] <= a)
    return n_true, n_pred, n_ok, n_mapped


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def score_tracking(table: Any, sessions: list, truths: list[dict]) -> dict:
    """Precision and recall of the matches in ``table`` (all day pairs and consecutive days) and
    the median shift error; see the module docstring."""
    nt, npred, nok, nmap = _pairs(table, sessions, truths, consecutive=False)
    ct, cpred, cok, _ = _pairs(table, sessions, truths, consecutive=True)
    err = []
    idx = {s.session: i for i, s in enumerate(sessions)}
    for d in table.attrs.get("shifts", []):
        a, b = idx[d["session_a"]], idx[d["session_b"]]
        if b == a + 1:
            err.append(abs(d["shift_um"] - (truths[b]["shift_um"] - truths[a]["shift_um"])))
    return dict(n_true_pairs=nt, n_pred_pairs=npred, n_correct_pairs=nok, precision=_ratio(nok, npred),
                recall=_ratio(nok, nt), precision_of_mapped_units=_ratio(nok, nmap),
                n_true_pairs_consecutive=ct, n_pred_pairs_consecutive=cpred,
                precision_consecutive=_ratio(cok, cpred), recall_consecutive=_ratio(cok, ct),
                shift_error_um=round(float(np.median(err)), 2) if err else None,
                shift_error_max_um=round(float(np.max(err)), 2) if err else None)


def run(*, days: int = 5, channels: int = 64, seconds: float = 60.0, day_turnover: float = 0.15,
        day_shift_um: float = 10.0, seed: int = 0, sorter: str | None = None, min_confidence: float = 0.5,
        max_shift_um: float = 100.0, thresholds: Sequence[float] = THRESHOLDS, work_dir: str | Path | None = None,
        labels: Sequence[str] = ("good", "mua"), progress: bool = False) -> dict:
    """Simulate, track and score (module docstring); one ``results[]`` row for the ground-truth
    units, and one for ``sorter`` when given."""
    from cortexlink.sorting.tracking import track_units

    if not (isinstance(days, int) and 2 <= days <= 60):
        raise ConfigError(f"days must be an integer in [2, 60]; got {days!r}")
    if not (isinstance(channels, int) and 8 <= channels <= 4096):
        raise ConfigError(f"channels must be an integer in [8, 4096]; got {channels!r}")
    if not (isinstance(seconds, (int, float)) and 2.0 <= seconds <= 3600.0):
        raise ConfigError(f"seconds must be in [2, 3600]; got {seconds!r}")
    tmp = tempfile.TemporaryDirectory(prefix="cortexlink-bench-track-") if work_dir is None else None
    root = Path(tmp.name if tmp else work_dir)
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results = []
    try:
        for source in ["ground_truth"] + ([sorter] if sorter else []):
            t0 = time.perf_counter()
            sessions, truths = simulate_sessions(days=days, channels=channels, seconds=seconds,
                                                 day_turnover=day_turnover, day_shift_um=day_shift_um, seed=seed,
                                                 folder=root / source, sorter=None if source == "ground_truth"
                                                 else source, progress=progress, labels=labels)
            t_units = time.perf_counter() - t0
            t0 = time.perf_counter()
            table = track_units(sessions, max_shift_um=max_shift_um, min_confidence=min_confidence)
            t_track = time.perf_counter() - t0
            row: dict[str, Any] = dict(units_source=source, days=days, channels=channels, seconds=seconds,
                                       day_turnover=day_turnover, day_shift_um=day_shift_um,
                                       n_units_per_day=[s.n_units for s in sessions])
            row.update(score_tracking(table, sessions, truths))
            row["min_confidence"] = min_confidence
            if source != "ground_truth":
                row["labels"] = list(labels)
            row["by_threshold"] = []
            for thr in thresholds:
                t = track_units(sessions, max_shift_um=max_shift_um, min_confidence=float(thr))
                sc_ = score_tracking(t, sessions, truths)
                row["by_threshold"].append({k: sc_[k] for k in ("precision", "recall", "precision_consecutive",
                                                                "recall_consecutive", "n_pred_pairs")}
                                           | dict(min_confidence=float(thr)))
            row["true_shift_um"] = [round(t["shift_um"], 2) for t in truths]
            row["n_true_units_per_day"] = [t["n_true_units"] for t in truths]
            row["units_s"] = round(t_units, 1)
            row["track_s"] = round(t_track, 2)
            for k in ("sort_wall_s", "n_sorted_units", "n_well_matched_kept"):
                if k in truths[0]:
                    row[k + "_per_day"] = [t[k] for t in truths]
            results.append(row)
    finally:
        if tmp is not None:
            tmp.cleanup()
    from cortexlink.bench.dsp import machine_info

    return dict(benchmark="units-track", machine=machine_info(), seed=seed, total_s=round(time.perf_counter() - t_start, 1),
                results=results)


def print_summary(result: dict) -> None:  # pragma: no cover - console formatting, used by cli only
    """Human-readable table (the CLI prints it when ``--json`` is not given)."""
    import builtins

    p = builtins.print
    p(f"bench units-track on {result['machine']['cpu']}, {result['total_s']} s")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in result["results"]:
        p(f"{r['units_source']}: {r['days']} days x {r['channels']} ch x {r['seconds']} s, turnover "
          f"{r['day_turnover']}, shift step {r['day_shift_um']} µm; units per day {r['n_units_per_day']}")
        p(f"  all pairs: precision {fmt(r['precision'])} recall {fmt(r['recall'])} "
          f"({r['n_pred_pairs']} predicted, {r['n_true_pairs']} true); consecutive days: precision "
          f"{fmt(r['precision_consecutive'])} recall {fmt(r['recall_consecutive'])}; shift error "
          f"{r['shift_error_um']} µm")
        for t in r["by_threshold"]:
            p(f"    min_confidence {t['min_confidence']:.1f}: precision {fmt(t['precision'])} recall "
              f"{fmt(t['recall'])} (consecutive {fmt(t['precision_consecutive'])} / {fmt(t['recall_consecutive'])})")
