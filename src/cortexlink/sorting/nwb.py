"""``units.nwb``: the sorted units as an NWB Units table (pynwb).

One row per unit: ``spike_times`` (s, from the recording's first sample, plus the session's
first sample for a session folder), ``electrodes`` (a region of the electrodes table: the
unit's main channel), ``waveform_mean`` / ``waveform_sd`` (volts, on the main channel, at
the recording's rate), every quality metric as a float column named as SpikeInterface names
it, ``label`` and ``label_reason`` (curation), ``main_channel`` and ``x_um``/``y_um`` (the
unit's estimated position). The electrodes table has every sorted channel with ``x``/``y``
and ``rel_x``/``rel_y`` in µm.
"""

from __future__ import annotations

import datetime as _dt
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_units_nwb", "read_units_nwb"]

_DESCRIPTIONS = {
    "num_spikes": "number of spikes", "firing_rate": "mean firing rate (Hz)",
    "presence_ratio": "fraction of time bins with spikes", "snr": "peak amplitude / noise level on the main channel",
    "isi_violations_ratio": "ISI violation ratio (Hill et al. 2011)", "isi_violations_count": "ISI violations",
    "rp_contamination": "refractory period contamination", "rp_violations": "refractory period violations",
    "amplitude_cutoff": "estimated fraction of spikes below the detection threshold",
    "amplitude_median": "median spike amplitude (µV)", "amplitude_cv_median": "amplitude coefficient of variation",
    "amplitude_cv_range": "amplitude CV range", "drift_ptp": "peak-to-peak drift of the unit's depth (µm)",
    "drift_std": "standard deviation of the unit's depth (µm)", "drift_mad": "median absolute deviation of depth (µm)",
    "sd_ratio": "spike amplitude SD / noise SD", "nn_hit_rate": "nearest-neighbour hit rate (PCA)",
    "nn_miss_rate": "nearest-neighbour miss rate (PCA)", "silhouette": "silhouette score (PCA)",
    "d_prime": "LDA d-prime (PCA)", "isolation_distance": "isolation distance (PCA)", "l_ratio": "L-ratio (PCA)",
}


def write_units_nwb(path: str | Path, *, sorting: Any, summary: dict, metrics: Any, labels: dict,
                    channel_ids: list, positions_um: np.ndarray, fs_hz: float, t0_s: float = 0.0,
                    session_description: str = "spike sorting by cortexlink sort", identifier: str | None = None,
                    start_time: _dt.datetime | None = None, sorter: str = "", source: str = "",
                    subject_id: str | None = None, species: str | None = None) -> Path:
    """Write the units of a sorting to a new NWB file at ``path``.

    Parameters
    ----------
    sorting : spikeinterface BaseSorting (one segment)
    summary : dict from :func:`cortexlink.sorting.metrics.unit_summary`
    metrics : DataFrame of quality metrics indexed by unit id
    labels : ``{unit_id: (label, reason)}`` from :func:`cortexlink.sorting.curation.label_units`
    channel_ids, positions_um : the sorted channels and their positions (µm)
    fs_hz : sampling rate
    t0_s : time of the recording's first sample (s) in the source's clock
    subject_id : the participant's pseudonymous code (NWB Subject), "unknown" when not known
    species : the subject's species (e.g. "Homo sapiens"); left empty when not known. Sex "U" and
        age "P0D/" (any age): de-identified, as ``cortexlink export`` writes them.
    """
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.file import Subject
    from pynwb.misc import Units

    start = start_time or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    nwb = NWBFile(session_description=session_description, identifier=identifier or str(uuid.uuid4()),
                  session_start_time=start, source_script="cortexlink sort", source_script_file_name="cortexlink",
                  notes=f"sorter: {sorter}; source: {source}", keywords=["spike sorting", sorter or "sorting"],
                  experiment_description=f"single units sorted from {source} with {sorter}",
                  subject=Subject(subject_id=str(subject_id or "unknown"), species=species, sex="U", age="P0D/",
                                  description="the participant of the source recording (pseudonymous code; "
                                              "sex and age not stored)"))
    dev = nwb.create_device(name="implant", description="recording device (from the source's channel map)")
    grp = nwb.create_electrode_group(name="array", description="all sorted channels", location="unknown", device=dev)
    for col, desc in (("channel_id", "channel id in the source recording"), ("rel_x", "x position (µm)"),
                      ("rel_y", "y position (µm)")):
        nwb.add_electrode_column(name=col, description=desc)
    pos = np.asarray(positions_um, float)
    for cid, (x, y) in zip(channel_ids, pos[:, :2]):
        nwb.add_electrode(x=float(x), y=float(y), z=0.0, location="unknown", group=grp, channel_id=str(cid),
                          rel_x=float(x), rel_y=float(y))
    nwb.units = Units(name="units", description="units sorted by cortexlink sort", waveform_rate=float(fs_hz),
                      waveform_unit="volts", resolution=1.0 / float(fs_hz), electrode_table=nwb.electrodes)
    cols = [c for c in metrics.columns] if len(summary["unit_ids"]) else []   # no units: an empty table
    for c in cols:
        nwb.add_unit_column(name=str(c), description=_DESCRIPTIONS.get(str(c), f"SpikeInterface metric {c}"))
    for name, desc in (("label", "curation label: good, mua or noise"),
                       ("label_reason", "the curation rules that decided the label"),
                       ("sorter_unit_id", "the unit's id in the sorter's output"),
                       ("main_channel", "channel id with the largest template"),
                       ("x_um", "estimated unit x position (µm)"), ("y_um", "estimated unit y position (µm)")):
        if not len(summary["unit_ids"]):
            break
        nwb.add_unit_column(name=name, description=desc)
    tmpl = summary["main_waveform_uv"]
    analyzer_sd = summary.get("main_waveform_sd_uv")
    for i, uid in enumerate(summary["unit_ids"]):
        st = sorting.get_unit_spike_train(uid, segment_index=0) / float(fs_hz) + float(t0_s)
        row = metrics.loc[uid]
        lab, why = labels[uid]
        kw: dict[str, Any] = {str(c): float(row[c]) if not _isnan(row[c]) else float("nan") for c in cols}
        wm = np.asarray(tmpl[i], float) * 1e-6
        wsd = np.asarray(analyzer_sd[i], float) * 1e-6 if analyzer_sd is not None else np.zeros_like(wm)
        nwb.add_unit(spike_times=np.asarray(st, float), electrodes=[int(summary["main_channel_idx"][i])],
                     waveform_mean=wm, waveform_sd=wsd, label=lab, label_reason=why, sorter_unit_id=str(uid),
                     main_channel=str(summary["main_channel_id"][i]),
                     x_um=float(summary["location_um"][i][0]), y_um=float(summary["location_um"][i][1]), **kw)
    path = Path(path)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _isnan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def read_units_nwb(path: str | Path) -> Any:
    """The Units table of ``path`` as a pandas DataFrame (spike times, labels, metrics)."""
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        return nwb.units.to_dataframe() if nwb.units is not None else None
