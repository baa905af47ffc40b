"""The SortingAnalyzer of a sorting and its quality metrics, with SpikeInterface's names.

:func:`analyze` builds a sparse SortingAnalyzer (binary folder, chunked, never the whole
recording in memory) on the preprocessed recording and computes the extensions the metrics,
the NWB file and the report need: random spikes, waveforms, templates, noise levels, spike
amplitudes, unit and spike locations, correlograms, ISI histograms and principal components.
:func:`quality_metrics` then computes :data:`METRICS` (SpikeInterface's standard metrics)
and returns one row per unit, columns named as SpikeInterface names them (``snr``,
``isi_violations_ratio``, ``presence_ratio``, ``amplitude_cutoff``, ``firing_rate``,
``amplitude_median``, ``drift_ptp``, ``silhouette``, ``nn_hit_rate``, ...).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["METRICS", "PCA_METRICS", "analyze", "quality_metrics", "unit_summary", "JOB_KWARGS", "presence_bin_s",
           "PRESENCE_BINS"]

#: The SpikeInterface quality metrics cortexlink computes (PCA-based ones in :data:`PCA_METRICS`).
METRICS: tuple[str, ...] = ("num_spikes", "firing_rate", "presence_ratio", "snr", "isi_violation", "rp_violation",
                            "amplitude_cutoff", "amplitude_median", "amplitude_cv", "drift", "sd_ratio")
PCA_METRICS: tuple[str, ...] = ("nearest_neighbor", "silhouette", "d_prime", "mahalanobis")

JOB_KWARGS: dict[str, Any] = {"n_jobs": 1, "chunk_duration": "1s", "progress_bar": False}
#: ``presence_ratio`` counts the recording in this many bins (SpikeInterface's 60 s bins once the
#: recording is 10 minutes or longer; never under 1 s). Measured with ``cortexlink bench sort``
#: (sim_drift, 384 ch x 30 s, drift period 60 s; spykingcircus2 / tridesclous2): with 20 bins
#: (1.5 s) the default curation kept 9 of 12 / 37 of 41 well-detected SNR >= 5 units, each one
#: dropped for presence_ratio 0.65-0.75: simulated neurons fall silent for seconds (their rates
#: follow the participant's intent and burst), so a 1.5 s bin marks a live unit absent; with 10
#: bins (3 s) 10 of 12 / 41 of 41 kept while 97 % / 91 % of the false-positive units were still
#: rejected (99 % / 95 % with 20 bins).
PRESENCE_BINS = 10


def presence_bin_s(duration_s: float) -> float:
    """The ``presence_ratio`` bin length for a recording of ``duration_s`` (see :data:`PRESENCE_BINS`)."""
    return max(1.0, min(60.0, float(duration_s) / PRESENCE_BINS))


def analyze(sorting: Any, recording: Any, folder: str | Path, *, n_jobs: int = 1, progress: bool = False,
            max_spikes_per_unit: int = 500, seed: int = 0) -> Any:
    """A SortingAnalyzer of ``sorting`` on ``recording`` (already filtered and referenced),
    saved as a binary folder, with the extensions :func:`quality_metrics` and the report need.

    Parameters
    ----------
    sorting, recording : spikeinterface objects
    folder : path
        The analyzer folder (replaced).
    n_jobs, progress : chunked computation: worker processes, progress bars
    max_spikes_per_unit : int
        Spikes per unit drawn for waveforms, templates and principal components.
    seed : int
        For the random spike selection.
    """
    import spikeinterface.core as si

    job = dict(JOB_KWARGS, n_jobs=n_jobs, progress_bar=progress)
    sorting = sorting.remove_empty_units()
    empty = sorting.get_num_units() == 0
    an = si.create_sorting_analyzer(sorting, recording, format="binary_folder", folder=Path(folder),
                                    sparse=not empty, overwrite=True, seed=seed, job_kwargs=job)
    if empty:                   # nothing was found: an analyzer without extensions, metrics empty
        logger.warning("the sorter found no units")
        return an
    steps: list[tuple[str, dict]] = [
        ("random_spikes", {"method": "uniform", "max_spikes_per_unit": max_spikes_per_unit, "seed": seed}),
        ("noise_levels", {}), ("waveforms", {"ms_before": 1.0, "ms_after": 2.0}),
        ("templates", {"operators": ["average", "std"]}), ("spike_amplitudes", {}), ("unit_locations", {}),
        ("spike_locations", {}), ("correlograms", {"window_ms": 50.0, "bin_ms": 1.0}),
        ("isi_histograms", {"window_ms": 50.0, "bin_ms": 1.0}),
    ]
    if sorting.get_num_units() > 0:
        steps.append(("principal_components", {"n_components": 3, "mode": "by_channel_global"}))
    for name, params in steps:
        logger.info("analyzer: %s", name)
        an.compute(name, **params, **(job if name in _CHUNKED else {}))
    return an


_CHUNKED = {"noise_levels", "waveforms", "spike_amplitudes", "spike_locations", "principal_components"}


def quality_metrics(analyzer: Any, *, pca: bool = True, n_jobs: int = 1, progress: bool = False) -> Any:
    """SpikeInterface's quality metrics of every unit (a pandas DataFrame indexed by unit id).

    Metrics SpikeInterface cannot compute for a unit (too few spikes, a single unit for the
    PCA metrics, too short a recording for drift) are NaN, not dropped.
    """
    if analyzer.sorting.get_num_units() == 0:
        import pandas as pd
        cols = ["num_spikes", "firing_rate", "presence_ratio", "snr", "isi_violations_ratio", "isi_violations_count",
                "amplitude_cutoff", "amplitude_median", "drift_ptp", "silhouette", "nn_hit_rate"]
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    names = list(METRICS) + (list(PCA_METRICS) if pca and analyzer.has_extension("principal_components")
                             and analyzer.sorting.get_num_units() > 1 else [])
    dur = analyzer.get_total_duration()
    params = {"drift": {"interval_s": max(1.0, min(60.0, dur / 10.0)), "min_spikes_per_interval": 10},
              "presence_ratio": {"bin_duration_s": presence_bin_s(dur)}}
    ext = analyzer.compute("quality_metrics", metric_names=names, metric_params=params,
                           **(dict(JOB_KWARGS, n_jobs=n_jobs, progress_bar=progress) if pca else {}))
    df = ext.get_data()
    return df.astype(float)


def unit_summary(analyzer: Any) -> dict[str, Any]:
    """Per unit: main channel, position (µm), mean waveform on the main channel (µV) and the
    template on every channel (samples x channels, µV), in ``analyzer.unit_ids`` order."""
    if analyzer.sorting.get_num_units() == 0:
        z = np.zeros((0, 0))
        return {"unit_ids": [], "main_channel_idx": np.zeros(0, int), "main_channel_id": np.zeros(0, str),
                "location_um": np.zeros((0, 2)), "templates_uv": np.zeros((0, 0, 0)), "main_waveform_uv": z,
                "main_waveform_sd_uv": z, "ms_before": 1.0, "fs_hz": float(analyzer.sampling_frequency)}
    tmpl = analyzer.get_extension("templates")
    avg = tmpl.get_data(operator="average")               # units x samples x channels (dense)
    sd = tmpl.get_data(operator="std")
    loc = analyzer.get_extension("unit_locations").get_data()
    main = np.argmax(np.max(np.abs(avg), axis=1), axis=1) if avg.size else np.zeros(0, int)
    ch_ids = np.asarray(analyzer.channel_ids)
    return {"unit_ids": list(analyzer.unit_ids), "main_channel_idx": main, "main_channel_id": ch_ids[main],
            "location_um": np.asarray(loc)[:, :2] if len(loc) else np.zeros((0, 2)), "templates_uv": avg,
            "main_waveform_uv": avg[np.arange(len(main)), :, main] if avg.size else np.zeros((0, 0)),
            "main_waveform_sd_uv": sd[np.arange(len(main)), :, main] if sd.size else np.zeros((0, 0)),
            "ms_before": float(tmpl.params.get("ms_before", 1.0)), "fs_hz": float(analyzer.sampling_frequency)}
