""":func:`export_nwb`: one session folder into one NWB 2 file (layout in the package docstring)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import CortexlinkError, ValidationError
from cortexlink.core.outpath import check_output_file
from cortexlink.io.nwb._common import (
    DEFAULT_COMPRESSION, RAW_SERIES, SIMULATED_SPECIES, _CHUNK_MAX_CHANNELS, _CHUNK_TARGET_BYTES, _ISO_DURATION, _SEX,
    _STREAMS_KNOWN, _TRIAL_COLUMNS, _check_compression, _data_io, _is_simulated, _merge_intervals, _peak_rss_mb,
    _subject_meta, _time_kwargs, written_by_export,
)
from cortexlink.io.nwb._session import _feature_iterator_class, _raw_iterator_class, _session_info
from cortexlink.io.nwb._speech import SPEECH_STREAMS, add_speech, has_speech
from cortexlink.io.nwb._stim import STIM_STREAMS, add_stim, has_stim
from cortexlink.io.nwb._tables import _add_electrodes, _blocks, _event_intervals, _flat_task_fields, _trials

logger = logging.getLogger("cortexlink.io.nwb")


def export_nwb(session_dir: str | os.PathLike, nwb_path: str | os.PathLike, *, raw: bool = True,
               compression: str | None = DEFAULT_COMPRESSION, chunk_seconds: float = 1.0,
               progress: bool = False, overwrite: bool = False, salvage: bool = False) -> dict:
    """Write a session folder as one NWB file, streaming the raw samples.

    Parameters
    ----------
    session_dir : path
        A session folder (``manifest.json`` + ``streams/``), closed, stopped or recovered.
    nwb_path : path
        The NWB file to write (written to ``<stem>.part.nwb`` first, renamed when complete).
    raw : bool
        Export the raw stream (``False``: features, behaviour, trials and events only).
    compression : {"gzip", "lzf", None}
        HDF5 filter of the raw (and feature) data; gzip level 1 with byte shuffle by default
        (readable everywhere); ``"lzf"`` is about 3x faster but h5py-only; None: no filter.
    chunk_seconds : float
        Seconds of raw data per write (the only raw buffer held in memory).
    progress : bool
        Show a tqdm progress bar of the raw samples.
    overwrite : bool
        Replace ``nwb_path`` if it exists and is an NWB file that ``export_nwb`` wrote; any other
        file, a path in a session folder or a system location is refused
        (:func:`cortexlink.core.outpath.check_output_file`).
    salvage : bool
        Skip damaged records (their samples become zeros listed in ``invalid_times``) instead of
        refusing the session; ``cortexlink recover`` does the same on the folder itself. Without
        it the session must verify first (:func:`~cortexlink.io.session_log.require_verified`:
        every file's SHA-256, stream headers and record CRCs), so a damaged or unrecovered session
        is refused before anything is written.

    Returns
    -------
    dict
        ``path``, ``bytes`` (file size), ``seconds``, ``mb_per_s`` (file MB written per second),
        ``raw_mb_per_s`` (raw input MB per second), ``peak_rss_mb`` (this process's high-water
        mark), ``compression``, ``raw`` (samples, channels, chunk shape, holes), ``written`` (the
        NWB objects), ``n_trials``, ``n_invalid_times``, ``warnings``, ``speech`` (a speech session:
        ``n_speech_trials``, ``n_phoneme_rows``, ``n_speech_blocks``, see :mod:`._speech`; else None),
        ``stimulation`` (``n_pulses``, ``n_decisions``, ``n_refused_pulses``, ``n_estops``: :mod:`._stim`; or None).

    Raises
    ------
    ConfigError
        ``nwb_path`` may not be written (see ``overwrite``).
    CorruptSessionError
        Not a session folder, a session that does not verify (not closed or recovered, a checksum
        that does not match), a foreign or damaged stream file (the message names the file).
    SessionBusy
        The session is being recorded.
    ValidationError
        Metadata disagreeing with the data (channel count, ids, rates, units), or bad arguments.
    """
    from cortexlink.core.validation import check_positive
    from cortexlink.io.session_log import InsufficientDiskSpace, SessionReader, require_verified

    t0 = time.perf_counter()
    compression = _check_compression(compression)
    check_positive("chunk_seconds", chunk_seconds)
    session_dir = Path(session_dir)
    out = check_output_file(nwb_path, what="NWB file", overwrite=overwrite, ours=written_by_export,
                            ours_is="an NWB file written by cortexlink export", create_parent=False)
    if not salvage:
        require_verified(session_dir)        # every checksum, before anything is written
    reader = SessionReader(session_dir, salvage=salvage)
    m = reader.manifest
    info = _session_info(reader, raw)
    warn_msgs: list[str] = []
    if m.get("state") not in ("closed", "stopped", "recovered"):
        warn_msgs.append(f"{session_dir}: session state is {m.get('state')!r} (not closed); exporting what the "
                         "streams hold - run `cortexlink recover` first for checksums")
    raw_bytes = reader.stream_bytes("raw") if (raw and info["raw"]) else 0
    out.parent.mkdir(parents=True, exist_ok=True)
    need = int(raw_bytes * (1.0 if compression is None else 0.9)) + (64 << 20)
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise InsufficientDiskSpace(f"exporting {session_dir} needs up to {need / 1e9:.2f} GB; {out.parent} has "
                                    f"{free / 1e9:.2f} GB free")
    part = out.with_name(out.stem + ".part.nwb")   # pynwb warns about names not ending in .nwb
    if part.exists():
        part.unlink()
    try:
        summary = _write(reader, info, part, raw=raw, compression=compression, chunk_seconds=float(chunk_seconds),
                         progress=progress, warn_msgs=warn_msgs)
        os.replace(part, out)
    except BaseException:
        if part.exists():
            part.unlink()
        raise
    elapsed = time.perf_counter() - t0
    size = out.stat().st_size
    summary.update({"path": str(out), "session": str(session_dir), "bytes": size, "seconds": round(elapsed, 3),
                    "mb_per_s": round(size / 1e6 / elapsed, 2) if elapsed > 0 else None,
                    "raw_mb_per_s": round(raw_bytes / 1e6 / elapsed, 2) if elapsed > 0 and raw_bytes else None,
                    "peak_rss_mb": round(_peak_rss_mb(), 1), "compression": compression, "warnings": warn_msgs})
    for w in warn_msgs:
        logger.warning(w)
    return summary


def _write(reader: Any, info: dict, part: Path, *, raw: bool, compression: str | None, chunk_seconds: float,
           progress: bool, warn_msgs: list[str]) -> dict:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries
    from pynwb.file import Subject

    from cortexlink.io.session_log import CorruptSessionError

    m = reader.manifest
    fs, cm = info["fs"], info["channel_map"]
    simulated = _is_simulated(m)
    events = reader.events() if "events" in reader.streams else []
    written: list[str] = []
    prov = m.get("provenance") or {}
    cfg = m.get("config") or {}
    sid = str(m.get("session_id") or reader.path.name)
    try:
        start = _dt.datetime.strptime(str(m["started_utc"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
    except (KeyError, ValueError) as exc:
        raise ValidationError(f"{reader.path / 'manifest.json'}: started_utc must be 'YYYY-mm-ddTHH:MM:SSZ'; "
                              f"got {m.get('started_utc')!r} ({exc})") from None
    block_names = [e.get("name") for e in events if e.get("kind") == "block_start"]
    desc = (f"cortexlink session {sid}" + (" - SIMULATED DATA (cortexlink simulator, no real participant)"
                                           if simulated else "")
            + (f"; session config {cfg.get('name')!r}" if isinstance(cfg, dict) and cfg.get("name") else "")
            + (f"; blocks: {', '.join(map(str, block_names))}" if block_names else "")
            + f"; recorded with cortexlink {prov.get('cortexlink_version', '?')} "
            f"(git {prov.get('git_hash') or 'unknown'}, Python {prov.get('python', '?')}, "
            f"numpy {prov.get('numpy', '?')}); exported by cortexlink.io.nwb")
    prov_public = {k: v for k, v in prov.items() if k not in ("host", "pid")}
    extra: dict = {}                 # optional lab metadata from the manifest or its config (never the subject's)
    for key in ("institution", "lab", "experimenter"):
        v = m.get(key, cfg.get(key) if isinstance(cfg, dict) else None)
        if v:
            extra[key] = [str(x) for x in v] if key == "experimenter" and isinstance(v, (list, tuple)) else (
                [str(v)] if key == "experimenter" else str(v))
    speech = has_speech(reader.streams, events)
    nwbfile = NWBFile(
        session_description=desc, identifier=sid, session_id=sid, session_start_time=start,
        experiment_description=("Closed-loop intracortical brain-computer interface session: attempted speech "
                                "decoded to phonemes and text (cortexlink)" if speech else
                                "Closed-loop intracortical brain-computer interface session: cursor control with "
                                "decoded velocity and click (cortexlink)"),
        keywords=["brain-computer interface", "intracortical", "speech" if speech else "cursor control",
                  "cortexlink"] + (["brain-to-text"] if speech else []) + (["simulation"] if simulated else []),
        source_script="cortexlink export (cortexlink.io.nwb.export_nwb)",
        source_script_file_name="cortexlink/io/nwb/export.py",
        notes=json.dumps({"provenance": prov_public, "seeds": m.get("seeds"), "state": m.get("state")},
                         default=str),
        data_collection=json.dumps({"fs_hz": fs, "dsp": m.get("dsp"), "loop": m.get("loop")}, default=str),
        **extra,
    )
    # subject: de-identified
    meta = _subject_meta(m)
    species = meta.get("species") or (SIMULATED_SPECIES if simulated else None)
    if species is None:
        warn_msgs.append("no species in the manifest (config.participant.species); Subject.species left empty")
    sex = str(meta.get("sex", "U"))
    if sex not in _SEX:
        raise ValidationError(f"{reader.path / 'manifest.json'}: subject sex must be one of {_SEX}; got {sex!r}")
    age = str(meta.get("age", "P0D/"))
    if not all(part == "" or _ISO_DURATION.fullmatch(part) for part in age.split("/")) or age.count("/") > 1 \
            or age in ("", "/"):
        raise ValidationError(f"{reader.path / 'manifest.json'}: subject age must be an ISO 8601 duration such as "
                              f"'P45Y', or a range such as 'P40Y/P50Y' (a de-identified age); got {age!r}")
    nwbfile.subject = Subject(
        subject_id=str(m.get("participant_id", "unknown")), species=species, sex=sex, age=age,
        description=("pseudonymous participant code from the session manifest; no name, date of birth or other "
                     "identifying data are stored" + (
                         f"; simulated participant (no real subject): species set to {SIMULATED_SPECIES} because "
                         "the simulator models a human intracortical BCI user" if simulated else "")
                     + ("; age unknown (range 'P0D/' = any age)" if "age" not in meta else "")))
    written.append("subject")
    region = None
    group = probe_info = None
    if cm is not None:
        group, probe_info = _add_electrodes(nwbfile, m, cm, simulated)
        written.append(f"electrodes ({cm.n_channels})")
        if probe_info.get("used"):
            nwbfile.add_scratch(probe_info["json"], name="probeinterface_probe",
                                description="probeinterface Probe (JSON, probeinterface.Probe.from_dict) built "
                                            "from the electrode positions")
    # ---- raw
    raw_it = None
    raw_summary: dict | None = None
    if raw and info["raw"]:
        rinfo = info["raw"]
        dt = rinfo["dtype"]
        records = reader.records("raw")
        try:
            first = next(records)
        except StopIteration:
            first = None
        if first is None:
            warn_msgs.append(f"{reader.path / 'streams' / 'raw.clog'}: no raw records; no ElectricalSeries written")
        else:
            n_ch = cm.n_channels
            c_chunk = min(n_ch, _CHUNK_MAX_CHANNELS)
            # HDF5 chunks: at most 1 s (and at most chunk_seconds) x 64 channels, about 4 MB or less;
            # each write is a whole number of chunks in time x every channel
            t_chunk = int(max(1, min(round(fs), round(chunk_seconds * fs),
                                     _CHUNK_TARGET_BYTES // (c_chunk * dt.itemsize))))
            k = max(1, int(round(chunk_seconds * fs / t_chunk)))
            pbar = None
            if progress:
                from tqdm import tqdm
                total = (m.get("streams") or {}).get("raw", {}).get("rows")
                pbar = tqdm(total=total, unit="sample", unit_scale=True, desc="raw", leave=False)
            raw_it = _raw_iterator_class()(records, first, n_ch, dt, (t_chunk, c_chunk), k * t_chunk,
                                           reader.path / "streams" / "raw.clog", pbar)
            gain, off = np.asarray(cm.gain_uv), np.asarray(cm.offset_uv)
            kw: dict = {}
            if dt.kind == "f":
                conv, offset = 1e-6, 0.0
                resolution = -1.0
            else:
                if np.all(gain == gain[0]):
                    conv = float(gain[0]) * 1e-6
                else:
                    conv = 1e-6
                    kw["channel_conversion"] = gain.astype(np.float32)
                resolution = float(np.min(np.abs(gain))) * 1e-6
                offset = float(off[0]) * 1e-6
                if not np.all(off == off[0]):
                    offset = 0.0
                    warn_msgs.append("channel offsets differ between channels; the ElectricalSeries offset is 0 and "
                                     "the electrodes table's offset_uv column holds each channel's offset")
            region = nwbfile.create_electrode_table_region(region=list(range(n_ch)), description="every electrode")
            es = ElectricalSeries(
                name=RAW_SERIES, description=(f"broadband samples as recorded ({dt} {rinfo['units']}); volts = data x "
                                              "conversion (x channel_conversion) + offset; samples missing from the "
                                              "recording are zeros, listed in invalid_times"),
                data=_data_io(raw_it, chunks=(t_chunk, c_chunk), compression=compression),
                electrodes=region, starting_time=raw_it.first_sample / fs, rate=fs, conversion=conv, offset=offset,
                resolution=resolution, filtering="none (broadband, as acquired)", **kw)
            nwbfile.add_acquisition(es)
            written.append(f"acquisition/{RAW_SERIES}")
            raw_summary = {"chunk_shape": [t_chunk, c_chunk], "buffer_samples": k * t_chunk,
                           "first_sample": raw_it.first_sample, "n_channels": n_ch, "dtype": str(dt)}
    elif raw and info["raw"] is None:
        warn_msgs.append(f"{reader.path}: the session has no raw stream; no ElectricalSeries written")
    # ---- features
    feat_holes: list[tuple[int, int, str]] = []
    if info["features"]:
        _add_features(nwbfile, reader, info, compression, written, feat_holes)
    # ---- behaviour
    _add_behavior(nwbfile, reader, fs, written)
    # ---- events, trials, blocks
    if events:
        _add_events(nwbfile, events, fs, written)
    last_sample = max([int(e.get("sample", 0)) for e in events] + [0])
    trials = _trials(events)
    if trials:
        for name, d in _TRIAL_COLUMNS.items():
            nwbfile.add_trial_column(name=name, description=d)
        for t in trials:
            nwbfile.add_trial(start_time=t["start_sample"] / fs, stop_time=t["stop_sample"] / fs,
                              block=t["block"], task=t["task"], target=t["target"], target_x=t["target_x"],
                              target_y=t["target_y"], outcome=t["outcome"],
                              outcome_time=(t["outcome_sample"] / fs if t["outcome_sample"] >= 0 else np.nan),
                              success=t["success"], n_incorrect=t["n_incorrect"])
        written.append(f"intervals/trials ({len(trials)})")
    speech_summary = add_speech(nwbfile, reader, events, fs, compression, written) if speech else None
    stim_summary = add_stim(nwbfile, reader, events, fs, compression, written, warn_msgs) if has_stim(reader) else None
    blocks = _blocks(events, last_sample)
    if blocks:
        nwbfile.add_epoch_column(name="block", description="block name in the session")
        nwbfile.add_epoch_column(name="mode", description="'open' (calibration) or 'closed' (decoder in the loop); "
                                 "speech blocks: 'calibration' or 'evaluation'")
        nwbfile.add_epoch_column(name="task", description="task of the block")
        nwbfile.add_epoch_column(name="decoder_file", description="decoder file in the session folder ('' if none)")
        nwbfile.add_epoch_column(name="click_decoder_file", description="click decoder file ('' if none)")
        nwbfile.add_epoch_column(name="completed", description="False when the block has no block_end event")
        mkeys = sorted({k for b in blocks for k in b["metrics"]})
        for k in mkeys:
            nwbfile.add_epoch_column(name=f"metric_{k}", description=f"block metric {k} (NaN when not computed)")
        for b in blocks:
            nwbfile.add_epoch(start_time=b["start_sample"] / fs,
                              stop_time=max(b["stop_sample"], b["start_sample"]) / fs,
                              tags=[b["mode"], b["task"]], block=b["name"], mode=b["mode"], task=b["task"],
                              decoder_file=b["decoder_file"], click_decoder_file=b["click_decoder_file"],
                              completed=b["completed"],
                              **{f"metric_{k}": b["metrics"].get(k, np.nan) for k in mkeys})
        written.append(f"intervals/epochs ({len(blocks)} blocks)")
    # lossless copies for replay
    if events:
        nwbfile.add_scratch("\n".join(json.dumps(e, default=str) for e in events), name="cortexlink_events",
                            description="every event of the session's events stream, one JSON object per line")
    man = {k: v for k, v in m.items()}
    if isinstance(man.get("provenance"), dict):
        man["provenance"] = prov_public
    nwbfile.add_scratch(json.dumps(man, default=str), name="cortexlink_manifest",
                        description="the session folder's manifest.json (host name and pid removed)")
    written.append("scratch (events, manifest)")
    with NWBHDF5IO(str(part), mode="w") as io:
        try:
            io.write(nwbfile)
        except CortexlinkError:
            raise
        except Exception as exc:
            if raw_it is not None and raw_it.error is not None:
                raise raw_it.error from None
            raise CorruptSessionError(f"writing {part} failed: {exc}") from exc
    if raw_it is not None and raw_it._progress is not None:
        raw_it._progress.close()
    # ---- invalid times (known only once the raw stream has been read)
    intervals = [(a, b, "samples missing from the raw stream (written as zeros)") for a, b in
                 (raw_it.holes if raw_it is not None else [])]
    intervals += feat_holes
    intervals += _event_intervals(events, m, info["features"]["bw"] if info["features"] else None)
    merged = _merge_intervals(intervals)
    if merged:
        with NWBHDF5IO(str(part), mode="a") as io:
            f = io.read()
            f.add_invalid_times_column(name="reason", description="why the interval is invalid")
            f.add_invalid_times_column(name="start_sample", description="first invalid sample of the source clock")
            f.add_invalid_times_column(name="stop_sample", description="one past the last invalid sample")
            for a, b, why in merged:
                f.add_invalid_time_interval(start_time=a / fs, stop_time=b / fs, reason=why, start_sample=a,
                                            stop_sample=b)
            io.write(f)
        written.append(f"intervals/invalid_times ({len(merged)})")
    if raw_it is not None:
        n = raw_it.pos - raw_it.first_sample
        raw_summary.update({"n_samples": int(n), "n_records": raw_it.n_records, "n_holes": len(raw_it.holes),
                            "missing_samples": int(sum(b - a for a, b in raw_it.holes)),
                            "duration_s": round(n / fs, 3)})
    return {"written": written, "raw": raw_summary, "n_trials": len(trials), "n_invalid_times": len(merged),
            "speech": speech_summary, "stimulation": stim_summary,
            "invalid_times": [[a, b, w] for a, b, w in merged][:100], "fs_hz": fs, "session_id": sid,
            "probeinterface": probe_info.get("summary") if probe_info else None}


def _add_features(nwbfile: Any, reader: Any, info: dict, compression: str | None,
                  written: list, feat_holes: list) -> None:
    from hdmf.common import DynamicTable, VectorData
    from pynwb import TimeSeries
    from pynwb.ecephys import ElectricalSeries

    fs, cm = info["fs"], info["channel_map"]
    fi = info["features"]
    bw = fi["bw"]
    samples = []                                    # one pass for the bin start samples only
    for r in reader.records("features"):
        samples.append(r.sample + bw * np.arange(r.data.shape[0], dtype=np.int64))
    samples = np.concatenate(samples) if samples else np.zeros(0, np.int64)
    if samples.size == 0:
        return
    d = np.diff(samples)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise ValidationError(f"{reader.path / 'streams' / 'features.clog'}: bin {i + 1} starts at sample "
                              f"{samples[i + 1]}, not after bin {i} (sample {samples[i]}); bins must be in order")
    for i in np.flatnonzero(d > bw):
        feat_holes.append((int(samples[i] + bw), int(samples[i + 1]), "feature bins missing"))
    tkw = _time_kwargs(samples, fs)
    if "timestamps" in tkw:
        tkw = {"timestamps": _data_io(tkw["timestamps"], compression=compression)}
    n_bins = int(samples.size)
    it_cls = _feature_iterator_class()
    mod = nwbfile.create_processing_module(name="ecephys", description="neural features per bin computed online "
                                           "by cortexlink's FeatureExtractor (see data_collection for parameters)")
    idx = {c: i for i, c in enumerate(cm.channel_ids)} if cm is not None else {}
    rows = {"feature_name": [], "kind": [], "series": [], "series_column": []}
    bin_ms = 1000.0 * bw / fs
    for kind, cols in fi["kinds"].items():
        buffer_bins = max(1, min(n_bins, (8 << 20) // (4 * len(cols))))
        data = _data_io(it_cls(reader, cols, n_bins, buffer_bins), compression=compression)
        chans = [fi["channels"][j] for j in cols]
        common = dict(data=data, comments=f"bin width {bw} samples ({bin_ms:g} ms); times are bin starts; NaN = "
                                          "masked bin (calibration window, gap, non-finite input)", **tkw)
        if kind == "sbp" and cm is not None and all(c in idx for c in chans):
            reg = nwbfile.create_electrode_table_region(region=[idx[c] for c in chans],
                                                        description="electrodes of the spike-band power columns")
            name = "SpikeBandPower"
            band = (reader.manifest.get("dsp") or {}).get("band_hz")
            ts = ElectricalSeries(name=name, electrodes=reg, conversion=1e-6,
                                  description="spike-band power: mean absolute value of the band-passed, referenced "
                                              "signal over each bin (data in microvolts, x conversion = volts)",
                                  filtering=(f"band-pass {band[0]:g}-{band[1]:g} Hz, referenced, |x| averaged per bin"
                                             if isinstance(band, (list, tuple)) and len(band) == 2 else
                                             "band-pass (see data_collection), |x| averaged per bin"),
                                  **common)
        elif kind == "tx":
            name = "ThresholdCrossings"
            ts = TimeSeries(name=name, unit="counts", description=(
                "threshold crossings per bin and channel (columns: FeatureColumns rows of this series, in the order "
                "of the electrodes table)"), **common)
        elif kind == "sbp":
            name = "SpikeBandPower"
            ts = TimeSeries(name=name, unit="volts", conversion=1e-6, description="spike-band power (uV)", **common)
        elif kind == "lfp":
            name = "LFPPower"
            ts = TimeSeries(name=name, unit="volts^2", conversion=1e-12,
                            description="LFP-band power: mean square of the band-passed signal (uV^2)", **common)
        else:
            name = f"features_{kind}"
            ts = TimeSeries(name=name, unit="n.a.", description=f"feature kind {kind!r}", **common)
        mod.add(ts)
        written.append(f"processing/ecephys/{name} ({n_bins} bins x {len(cols)})")
        for k, j in enumerate(cols):
            rows["feature_name"].append(fi["names"][j])
            rows["kind"].append(kind)
            rows["series"].append(name)
            rows["series_column"].append(k)
    where = {n: j for j, n in enumerate(fi["names"])}
    order = np.argsort([where[n] for n in rows["feature_name"]], kind="stable")
    cols_desc = {"feature_name": "column name in the session's features stream ('<channel_id>/<kind>')",
                 "kind": "feature kind (tx, sbp, lfp)", "series": "TimeSeries of this module holding the column",
                 "series_column": "column index in that series"}
    table = DynamicTable(name="FeatureColumns", description=(
        f"the session's feature columns in their recorded order (bin width {bw} samples)"),
        columns=[VectorData(name=k, description=cols_desc[k], data=[rows[k][i] for i in order]) for k in cols_desc])
    mod.add(table)


def _add_behavior(nwbfile: Any, reader: Any, fs: float, written: list) -> None:
    from pynwb import TimeSeries
    from pynwb.behavior import Position
    from pynwb.event import EventsTable

    streams = reader.streams
    mod = None

    def module() -> Any:
        nonlocal mod
        if mod is None:
            mod = nwbfile.create_processing_module(
                name="behavior", description="cursor, clicks, decoder outputs and the simulated participant's intent; "
                                             "one row per loop bin, times at the end of each bin")
        return mod

    def col(cols: list[str], name: str, path: Path) -> int:
        if name not in cols:
            raise ValidationError(f"{path}: column {name!r} missing; columns are {cols}")
        return cols.index(name)

    scr = "screen units (x, y in [-1, 1], centre (0, 0), y up)"
    if "cursor" in streams:
        p = reader.path / "streams" / "cursor.clog"
        s, rows = reader.read_array("cursor")
        cols = reader.columns("cursor")
        if s.size:
            tk = _time_kwargs(s, fs)
            pos = Position(name="CursorPosition")
            pos.create_spatial_series(name="cursor_xy", data=rows[:, [col(cols, "x", p), col(cols, "y", p)]],
                                      reference_frame=scr, unit="n.a.",
                                      description="cursor position on the screen after each loop bin", **tk)
            module().add(pos)
            module().add(TimeSeries(name="cursor_velocity", unit="screen units/s",
                                    data=rows[:, [col(cols, "vx", p), col(cols, "vy", p)]],
                                    description="cursor velocity applied on each bin (vx, vy)", **tk))
            written.append(f"processing/behavior/CursorPosition, cursor_velocity ({s.size} bins)")
            if "clicked" in cols:
                c = rows[:, cols.index("clicked")] > 0.5
                clicks = EventsTable(name="clicks", description="clicks fired by the cursor (bins where 'clicked')",
                                     source_description="cortexlink click decoder / effector")
                clicks.add_column(name="x", description="cursor x at the click (screen units)")
                clicks.add_column(name="y", description="cursor y at the click (screen units)")
                clicks.add_column(name="sample", description="source sample index (end of the bin)")
                for i in np.flatnonzero(c):
                    clicks.add_event(timestamp=float(s[i] / fs), x=float(rows[i, cols.index("x")]),
                                     y=float(rows[i, cols.index("y")]), sample=int(s[i]))
                if len(clicks):
                    nwbfile.add_events_table(clicks)
                    written.append(f"events/clicks ({len(clicks)})")
            extra = [c for c in cols if c not in ("x", "y", "vx", "vy", "clicked")]
            for c in extra:
                module().add(TimeSeries(name=f"cursor_{c}", unit="n.a.", data=rows[:, cols.index(c)],
                                        description=f"cursor stream column {c!r}", **tk))
    if "decoder" in streams:
        p = reader.path / "streams" / "decoder.clog"
        s, rows = reader.read_array("decoder")
        cols = reader.columns("decoder")
        if s.size:
            tk = _time_kwargs(s, fs)
            if "vx" in cols and "vy" in cols:
                module().add(TimeSeries(name="decoded_velocity", unit="screen units/s",
                                        data=rows[:, [col(cols, "vx", p), col(cols, "vy", p)]],
                                        description="velocity decoded from the neural features (closed-loop bins)",
                                        **tk))
            if "click_proba" in cols:
                module().add(TimeSeries(name="decoded_click_probability", unit="n.a.",
                                        data=rows[:, cols.index("click_proba")],
                                        description="click probability from the click decoder (0..1)", **tk))
            for c in (c for c in cols if c not in ("vx", "vy", "click_proba")):
                module().add(TimeSeries(name=f"decoder_{c}", unit="n.a.", data=rows[:, cols.index(c)],
                                        description=f"decoder stream column {c!r}", **tk))
            written.append(f"processing/behavior/decoded_* ({s.size} bins)")
    if "intent" in streams:
        p = reader.path / "streams" / "intent.clog"
        s, rows = reader.read_array("intent")
        cols = reader.columns("intent")
        if s.size:
            tk = _time_kwargs(s, fs)
            if "vx" in cols and "vy" in cols:
                module().add(TimeSeries(name="intended_velocity_simulated", unit="screen units/s",
                                        data=rows[:, [col(cols, "vx", p), col(cols, "vy", p)]],
                                        description="SIMULATED participant's intended velocity: ground truth of the "
                                                    "cortexlink simulator, not a measurement", **tk))
            if "click" in cols:
                module().add(TimeSeries(name="intended_click_simulated", unit="n.a.", data=rows[:, cols.index("click")],
                                        description="SIMULATED participant's click intent (0/1), simulator ground "
                                                    "truth", **tk))
            for c in (c for c in cols if c not in ("vx", "vy", "click")):
                module().add(TimeSeries(name=f"intent_{c}", unit="n.a.", data=rows[:, cols.index(c)],
                                        description=f"intent stream column {c!r}", **tk))
            written.append(f"processing/behavior/intended_*_simulated ({s.size} bins)")
    for name in streams:
        if name in _STREAMS_KNOWN or name in SPEECH_STREAMS + STIM_STREAMS:
            continue
        h = reader.stream_info(name)
        if h.get("kind") != "array":
            continue
        s, rows = reader.read_array(name)
        if not s.size:
            continue
        module().add(TimeSeries(name=f"stream_{name}", unit="n.a.", data=rows,
                                description=f"session stream {name!r}, columns {list(h.get('columns') or [])}",
                                **_time_kwargs(s, fs)))
        written.append(f"processing/behavior/stream_{name}")


def _add_events(nwbfile: Any, events: list[dict], fs: float, written: list) -> None:
    from pynwb.event import EventsTable

    task = [e for e in events if e.get("kind") == "task" and int(e.get("sample", -1)) >= 0]
    if not task:
        return
    fields = _flat_task_fields(task)
    t = EventsTable(name="task_events", description="task state-machine events (target_on, select, correct, "
                                                    "incorrect, timeout, move, ...) with their scalar details",
                    source_description="cortexlink task (tasks.*) on the loop bin where it happened")
    t.add_column(name="sample", description="source sample index (end of the loop bin)")
    t.add_column(name="block", description="block name")
    t.add_column(name="task_event", description="event kind")
    t.add_column(name="x", description="xy[0] of the event (target or cursor; NaN if none)")
    t.add_column(name="y", description="xy[1] of the event (NaN if none)")
    for k, typ in fields.items():
        t.add_column(name=f"data_{k}", description=f"event detail {k!r} ({'NaN' if typ == 'f' else 'empty'} if absent)")
    for e in task:
        d = e.get("data") or {}
        xy = d.get("xy") if isinstance(d.get("xy"), (list, tuple)) and len(d.get("xy")) == 2 else (np.nan, np.nan)
        extra = {}
        for k, typ in fields.items():
            v = d.get(k)
            if typ == "f":
                extra[f"data_{k}"] = float(v) if isinstance(v, (int, float)) and not isinstance(v, str) else np.nan
            else:
                extra[f"data_{k}"] = "" if v is None else str(v)
        t.add_event(timestamp=int(e["sample"]) / fs, sample=int(e["sample"]), block=str(e.get("block", "")),
                    task_event=str(e.get("task_event", "")), x=float(xy[0]), y=float(xy[1]), **extra)
    nwbfile.add_events_table(t)
    written.append(f"events/task_events ({len(task)})")

