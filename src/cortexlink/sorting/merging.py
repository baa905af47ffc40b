"""Merge units a sorter split in two: SpikeInterface's automatic merge on the SortingAnalyzer.

Drift moves a neuron along the probe; a sorter (even after motion correction) often gives its
spikes before and after the move to two units, each with a part of the spikes. Two such halves
have close positions, similar templates and, merged, no more refractory-period violations than
one neuron: SpikeInterface's ``x_contaminations`` preset tests exactly that (the
cross-contamination of the two spike trains, with unit position and template similarity as
gates), so it is :data:`DEFAULT_MERGE`. Measured with ``cortexlink bench sort`` (the README's
sorting section gives the figures and the command).

:func:`merge_units` computes the merge groups on an analyzer (:func:`cortexlink.sorting.metrics.analyze`)
and, when there are any, returns a new analyzer with them merged (``hard`` mode: templates and the
other extensions recomputed from the merged units' spikes), so the quality metrics, the curation,
the NWB file and the report all see the merged units.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["MERGE_PRESETS", "DEFAULT_MERGE", "check_merge", "merge_groups", "merge_units"]

#: SpikeInterface's auto-merge presets cortexlink offers (``none`` turns merging off).
MERGE_PRESETS: tuple[str, ...] = ("x_contaminations", "temporal_splits", "similarity_correlograms",
                                  "feature_neighbors")
#: The default preset (module docstring).
DEFAULT_MERGE = "x_contaminations"


def check_merge(merge: Any) -> str | None:
    """``merge`` as a preset name, or None for no merging (None or ``"none"``)."""
    if merge is None or merge == "none":
        return None
    if merge not in MERGE_PRESETS:
        raise ConfigError(f"merge must be one of {', '.join(MERGE_PRESETS)} or none; got {merge!r}")
    return str(merge)


def merge_groups(analyzer: Any, preset: str, *, n_jobs: int = 1, progress: bool = False) -> list[list[Any]]:
    """The groups of unit ids SpikeInterface's ``preset`` would merge (empty when none or when the
    analyzer has fewer than two units)."""
    from spikeinterface.curation import compute_merge_unit_groups

    from cortexlink.sorting.metrics import JOB_KWARGS

    preset = check_merge(preset)
    if preset is None or analyzer.sorting.get_num_units() < 2:
        return []
    job = dict(JOB_KWARGS, n_jobs=n_jobs, progress_bar=progress)
    groups = compute_merge_unit_groups(analyzer, preset=preset, **job)
    return [list(g) for g in groups]


def merge_units(analyzer: Any, preset: str | None, folder: str | Path, *, n_jobs: int = 1,
                progress: bool = False) -> tuple[Any, list[list[Any]], list[Any]]:
    """Merge the units ``preset`` finds (see the module docstring).

    Parameters
    ----------
    analyzer : SortingAnalyzer
        With the extensions of :func:`cortexlink.sorting.metrics.analyze`.
    preset : str or None
        One of :data:`MERGE_PRESETS`; None or ``"none"``: nothing is merged.
    folder : path
        Where the merged analyzer is written (binary folder, replaced); untouched when nothing
        is merged.

    Returns
    -------
    (analyzer, groups, new_unit_ids)
        The merged analyzer (``analyzer`` itself when nothing was merged), the merged groups of
        the sorter's unit ids and the id each group got.
    """
    from cortexlink.sorting.metrics import JOB_KWARGS

    groups = merge_groups(analyzer, preset, n_jobs=n_jobs, progress=progress)
    if not groups:
        return analyzer, [], []
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    job = dict(JOB_KWARGS, n_jobs=n_jobs, progress_bar=progress)
    logger.info("merging %d groups of units (%s)", len(groups), preset)
    merged, new_ids = analyzer.merge_units(merge_unit_groups=groups, merging_mode="soft", format="binary_folder",
                                           folder=folder, return_new_unit_ids=True,
                                           raise_error_if_overlap_fails=False, **job)
    return merged, groups, list(new_ids)
