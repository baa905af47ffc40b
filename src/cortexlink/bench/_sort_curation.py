"""The post-processing of ``cortexlink bench sort``, as ``cortexlink sort`` runs it: the automatic
merge of split units (:func:`merge_step`), then the curation check: does cortexlink's default
curation keep the units a sorter got right and reject the ones it made up?

For one sorter's output on a ground-truth recording: SpikeInterface quality metrics through
:mod:`cortexlink.sorting.metrics` (on the same preprocessing the sorter saw), labels from
:func:`cortexlink.sorting.curation.label_units` with the default :class:`CurationRules`, then

* ``kept_share_well_detected_snr_ge_5``: of the true units with SNR >= 5 that the sorter found
  well (accuracy >= 0.8), the share whose matched sorted unit is labelled "good";
* ``rejected_share_false_positive``: of the sorter's false-positive units (SpikeInterface's
  comparison; exhaustive truth only), the share labelled "mua" or "noise".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def merge_step(pair: Any, sorting: Any, folder: Path, preset: str) -> tuple[Any, Any, dict]:
    """The analyzer of ``sorting`` (on the preprocessing the pipeline uses) with the units
    :func:`cortexlink.sorting.merging.merge_units` merges under ``preset`` merged: returns
    ``(analyzer, merged sorting, info)``, ``info`` = ``{preset, groups, new_unit_ids, wall_s}``."""
    from cortexlink.sorting.merging import merge_units
    from cortexlink.sorting.metrics import analyze
    from cortexlink.sorting.sorters import preprocess_recording

    t0 = time.perf_counter()
    an = analyze(sorting, preprocess_recording(pair.recording), folder)
    merged, groups, new_ids = merge_units(an, preset, folder.with_name(folder.name + "_merged"))
    key = lambda u: int(u) if str(u).lstrip("-").isdigit() else str(u)  # noqa: E731
    info = dict(preset=preset, groups=[[key(u) for u in g] for g in groups], new_unit_ids=[key(u) for u in new_ids],
                wall_s=round(time.perf_counter() - t0, 1))
    return merged, merged.sorting, info


def curation_check(pair: Any, sorting: Any, score: dict, folder: Path, analyzer: Any = None) -> dict:
    """See the module docstring (``analyzer``: the one :func:`merge_step` made, else one is built);
    raises ImportError while cortexlink.sorting lacks curation."""
    from cortexlink.sorting.curation import CurationRules, label_units
    from cortexlink.sorting.metrics import analyze, quality_metrics
    from cortexlink.sorting.sorters import preprocess_recording

    t0 = time.perf_counter()
    cmp = score.get("_cmp")
    if cmp is None or len(sorting.unit_ids) == 0:
        return {"available": True, "n_sorted_units": int(len(sorting.unit_ids)), "kept_share_well_detected_snr_ge_5":
                None, "rejected_share_false_positive": None, "note": "no sorted units"}
    an = analyzer if analyzer is not None else analyze(sorting, preprocess_recording(pair.recording), folder)
    metrics = quality_metrics(an, pca=False)
    labels = label_units(metrics, CurationRules())
    good = {u for u, (lab, _) in labels.items() if lab == "good"}
    # true units (ground-truth ids) with SNR >= 5 and accuracy >= 0.8, and their matched sorted units
    well = score["_well_snr_ge_5"]       # the same units the score counts (unrounded accuracy)
    match = cmp.hungarian_match_12
    matched = [match[u] for u in well]
    kept = [m for m in matched if m in good]
    out: dict[str, Any] = dict(
        available=True, rules=CurationRules().to_dict(), n_sorted_units=int(len(sorting.unit_ids)),
        n_good=len(good), n_well_detected_snr_ge_5=len(well), n_kept=len(kept),
        kept_share_well_detected_snr_ge_5=(len(kept) / len(well)) if well else None,
    )
    if pair.exhaustive:
        fp = list(cmp.get_false_positive_units())
        rejected = [u for u in fp if u not in good]
        out.update(n_false_positive=len(fp), n_rejected=len(rejected),
                   rejected_share_false_positive=(len(rejected) / len(fp)) if fp else None)
    else:
        out.update(n_false_positive=None, rejected_share_false_positive=None)
    out["reasons_kept_missed"] = {str(m): labels[m][1] for m in matched if m not in good and m in labels}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out
