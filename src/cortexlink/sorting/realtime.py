"""Sorted units for the real-time chain, from a sorting: ``cortexlink units fit`` (issue 15 §5).

:func:`spikes_from_units_nwb` reads the units of a ``cortexlink sort`` output; :func:`fit_from_recording`
fits :class:`~cortexlink.dsp.units.UnitTemplates` on the sorted recording itself (a session folder,
read with the extractor settings it was recorded with, or any importer format), so that a
:class:`~cortexlink.dsp.units.UnitFeatureExtractor` (the ``dsp`` node's ``units``, a session's
``loop.units``) counts those units live.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.types import ChannelMap

__all__ = ["spikes_from_units_nwb", "fit_from_recording"]

logger = logging.getLogger(__name__)


def spikes_from_units_nwb(path: str | Path, channel_map: ChannelMap, fs_hz: float, *,
                          labels: Iterable[str] | None = ("good",), t0_s: float = 0.0
                          ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Spike samples and main channels of the units of a ``cortexlink sort`` ``units.nwb``.

    Parameters
    ----------
    path : str or Path
        The ``units.nwb`` of ``cortexlink sort``.
    channel_map : ChannelMap
        The recording's channels (the units' ``main_channel`` ids are looked up in it).
    fs_hz : float
        The recording's rate.
    labels : iterable of str or None
        Curation labels to keep (default ``("good",)``; None: every unit).
    t0_s : float
        Time of the recording's first sample in the file's clock (a session folder's first
        sample / fs).

    Returns
    -------
    (spikes, channels)
        ``{unit_id: sample indices}`` and ``{unit_id: channel index}``, for :func:`fit_unit_templates`.
    """
    from cortexlink.sorting.nwb import read_units_nwb

    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"units file {path} does not exist")
    try:
        df = read_units_nwb(path)
    except Exception as exc:  # noqa: BLE001 - pynwb/h5py raise many kinds for a damaged file
        raise ValidationError(f"{path} is not a readable NWB file with a Units table: {exc}") from None
    if df is None or "main_channel" not in df.columns:
        raise ValidationError(f"{path} has no Units table with a main_channel column (not written by "
                              "cortexlink sort?)")
    keep = set(labels) if labels is not None else None
    index = {cid: i for i, cid in enumerate(channel_map.channel_ids)}
    spikes: dict[str, np.ndarray] = {}
    chans: dict[str, int] = {}
    for i, row in df.iterrows():
        if keep is not None and "label" in df.columns and str(row["label"]) not in keep:
            continue
        ch = str(row["main_channel"])
        if ch not in index:
            raise ValidationError(f"{path}: unit {i} is on channel {ch!r}, which the channel map does not have")
        uid = str(row["sorter_unit_id"]) if "sorter_unit_id" in df.columns else str(i)
        spikes[uid] = np.round((np.asarray(row["spike_times"], float) - t0_s) * fs_hz).astype(np.int64)
        chans[uid] = index[ch]
    return spikes, chans


def _units_file(sorting: str | Path) -> Path:
    p = Path(sorting)
    if p.is_dir():
        p = p / "units.nwb"
    if not p.is_file():
        raise ValidationError(f"{sorting}: no units.nwb (give a `cortexlink sort` output folder or its units.nwb)")
    return p


def fit_from_recording(source: str | Path, sorting: str | Path, *, labels: Iterable[str] | None = ("good",),
                       seconds: float | None = 120.0, format: str | None = None, progress: bool = False,
                       **fit_kw: Any) -> Any:
    """Fit unit templates on the first ``seconds`` of a sorted recording.

    Parameters
    ----------
    source : path
        The recording that was sorted: a session folder (its raw stream, with the extractor
        settings of its manifest) or a file or folder :func:`cortexlink.io.importers.open_recording`
        reads.
    sorting : path
        ``cortexlink sort``'s output folder or its ``units.nwb``.
    labels : iterable of str or None
        Curation labels of the units to fit (default ``("good",)``; None: all).
    seconds : float or None
        Seconds read from the start (None: all of it; the data are held in memory).
    **fit_kw
        Passed to :func:`cortexlink.dsp.units.fit_unit_templates`.
    """
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.dsp.units import fit_unit_templates

    source = Path(source)
    units = _units_file(sorting)
    dsp: dict[str, Any] = {}
    if source.is_dir() and (source / "manifest.json").is_file():
        from cortexlink.io.session_log import SessionReader

        reader = SessionReader(source, salvage=True)
        if "raw" not in reader.streams:
            raise ValidationError(f"{source}: the session has no raw stream (recorded without raw)")
        cmap, fs = reader.channel_map, float(reader.fs_hz)
        dsp = {k: v for k, v in dict(reader.manifest.get("dsp") or {}).items()
               if k in ("band_hz", "filter_order", "reference", "threshold_rms", "dead_time_ms", "trough_window_ms",
                        "calibration_s")}
        chunks = reader.iter_chunks("raw")
    else:
        from cortexlink.io.importers import open_recording

        rec = open_recording(source, format)
        cmap, fs = rec.channel_map, float(rec.fs_hz)
        chunks = rec.iter_chunks(max(1, int(round(0.1 * fs))))
    want = None if seconds is None else int(round(seconds * fs))
    parts, first = [], None
    got = 0
    for c in chunks:
        if first is None:
            first = int(c.start_sample)
        elif int(c.start_sample) != first + got:         # samples missing: the spike times after it would shift
            logger.warning("%s: samples missing at sample %d; fitting on the %d samples before it", source,
                           first + got, got)
            break
        parts.append(np.asarray(c.data))
        got += c.n_samples
        if want is not None and got >= want:
            break
    if not parts:
        raise ValidationError(f"{source}: no samples to fit on")
    data = np.concatenate(parts)[: want if want is not None else None]
    if data.dtype not in (np.int16, np.float32):
        data = cmap.to_uv(data).astype(np.float32)
        cmap = ChannelMap(cmap.channel_ids, cmap.positions_um, 1.0, 0.0, cmap.bad)
    spikes, chans = spikes_from_units_nwb(units, cmap, fs, labels=labels, t0_s=(first or 0) / fs)
    if not spikes:
        raise ValidationError(f"{units}: no unit with the labels {sorted(labels) if labels else 'any'}")
    fx = FeatureExtractor(cmap, fs, **dsp)
    return fit_unit_templates(fx, data, spikes, chans, progress=progress, **fit_kw)
