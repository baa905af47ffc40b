"""SpikeGLX ``.bin`` + ``.meta`` (``spikeglx``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.types import ChannelMap
from cortexlink.io.importers._base import (
    Recording, _MemmapRecording, _check_rate, _describe_content, _fail, _grid_positions, _head, _looks_like_text,
    _per_channel, _truncation, _unique_ids, _uv_per_unit, _wrap_parse_errors, logger,
)
from cortexlink.io.importers.neo import _check_index, _open_neo


def _spikeglx_check(meta_path: Path) -> dict:
    """Validate one .meta/.bin pair against each other; report truncation."""
    from neo.rawio.spikeglxrawio import extract_stream_info, read_meta_file

    bin_path = meta_path.with_suffix(".bin")
    head = _head(meta_path, 64)
    if not _looks_like_text(head):
        raise _fail(meta_path, f"not a SpikeGLX .meta file: it is {_describe_content(head)}; "
                               "a .meta file is text of key=value lines")
    try:
        meta = read_meta_file(meta_path)
    except UnicodeDecodeError as e:
        raise _fail(meta_path, f"not a SpikeGLX .meta file: not text ({e})") from e
    for key in ("nSavedChans", "snsChanMap", "fileName"):
        if key not in meta:
            raise _fail(meta_path, f"not a SpikeGLX .meta file, or a damaged one: {key} is missing")
    rate_key = next((k for k in ("imSampRate", "niSampRate", "obSampRate") if k in meta), None)
    if rate_key is None:
        raise _fail(meta_path, "sampling rate is missing (imSampRate / niSampRate / obSampRate)")
    _check_rate(meta_path, meta[rate_key], rate_key)
    try:
        n_saved = int(meta["nSavedChans"])
    except ValueError:
        n_saved = 0
    if n_saved < 1:
        raise _fail(meta_path, f"nSavedChans must be an integer >= 1; got {meta['nSavedChans']!r}")
    if len(meta["snsChanMap"]) != n_saved:
        raise _fail(meta_path, f"snsChanMap lists {len(meta['snsChanMap'])} channels but nSavedChans is {n_saved}")
    if not bin_path.is_file():
        raise _fail(meta_path, f"its data file {bin_path.name} is missing")
    with _wrap_parse_errors(meta_path, "SpikeGLX metadata"):
        info = extract_stream_info(meta_path, meta)
    size = bin_path.stat().st_size
    frame = 2 * n_saved
    n_complete, rem = divmod(size, frame)
    declared = meta.get("fileSizeBytes")
    n_expected = None
    problem = None
    if declared is not None:
        try:
            declared = int(declared)
        except ValueError:
            raise _fail(meta_path, f"fileSizeBytes must be an integer; got {declared!r}") from None
        if declared % frame:
            raise _fail(meta_path, f"fileSizeBytes ({declared}) must be a multiple of nSavedChans x 2 = {frame} "
                                   "bytes: the channel count disagrees with the declared size")
        n_expected = declared // frame
        if size > declared:
            raise _fail(bin_path, f"holds {size} bytes but fileSizeBytes in {meta_path.name} says {declared}: "
                                  "the metadata disagrees with the data")
        if size < declared:
            problem = f"{size} of {declared} bytes (fileSizeBytes) present"
    if rem and problem is None:
        problem = f"ends {rem} bytes into a sample"
    return dict(meta_path=meta_path, bin_path=bin_path, meta=meta, info=info, n_complete=n_complete,
                n_expected=n_expected, problem=problem, stream=info["stream_name"],
                gate=info.get("gate_num") or 0, trigger=info.get("trigger_num") or 0)


def _spikeglx_positions(meta_path: Path, n: int) -> tuple[np.ndarray | None, str]:
    try:
        import probeinterface

        with warnings.catch_warnings(record=True) as caught:  # optional geometry: its warnings go to debug
            warnings.simplefilter("always")
            probe = probeinterface.read_spikeglx(meta_path)
        for w in caught:
            logger.debug("%s: probeinterface: %s", meta_path, w.message)
        pos = np.asarray(probe.contact_positions, dtype=np.float64)[:, :2]
    except Exception as e:  # noqa: BLE001 - geometry is optional enrichment; say why it is missing
        return None, f"grid (no probe geometry: {type(e).__name__}: {e})"
    if pos.shape != (n, 2):
        return None, f"grid (probe has {pos.shape[0]} contacts for {n} channels)"
    return pos, "probe (probeinterface.read_spikeglx)"


def _open_spikeglx(path: Path, *, stream: str | None = None, segment: int = 0, gain_uv: Any = None) -> Recording:
    from neo.rawio import SpikeGLXRawIO

    if path.is_file():
        if path.suffix.lower() not in (".bin", ".meta"):
            raise _fail(path, f"a SpikeGLX path must be a .bin or .meta file, or a folder holding them; got a "
                              f"{path.suffix or 'suffix-less'} file ({_describe_content(_head(path))})")
        folder = path.parent
        chosen = _spikeglx_check(path.with_suffix(".meta"))
        if stream is not None and stream != chosen["stream"]:
            raise _fail(path, f"stream must be {chosen['stream']!r} for this file; got {stream!r}")
        stream = chosen["stream"]
    else:
        folder = path
    metas = sorted(folder.rglob("*.meta"))
    if not metas:
        raise _fail(path, "holds no SpikeGLX .meta file (expected e.g. run_g0_t0.imec0.ap.meta beside its .bin)")
    checks = [_spikeglx_check(m) for m in metas]
    names = sorted({c["stream"] for c in checks})
    if stream is None:
        ap = [s for s in names if s.endswith(".ap")]
        stream = ap[0] if ap else names[0]
    if stream not in names:
        raise _fail(path, f"stream must be one of {names}; got {stream!r}")
    mine = sorted((c for c in checks if c["stream"] == stream), key=lambda c: (c["gate"], str(c["trigger"])))
    if path.is_file():  # that very file, whatever else the folder holds
        segment = [c["meta_path"] for c in mine].index(chosen["meta_path"])
    segment = _check_index(path, "segment", segment, len(mine))
    sel = mine[segment]
    meta: dict[str, Any] = {"files": [str(sel["bin_path"]), str(sel["meta_path"])],
                            "probe_part_number": sel["meta"].get("imDatPrb_pn")}
    n_neural = len(sel["info"]["channel_names"]) - (1 if sel["info"]["has_sync_trace"] and "nidq" not in stream else 0)
    positions = _spikeglx_positions(sel["meta_path"], n_neural) if sel["info"]["device_kind"] == "imec" \
        else (None, "grid (not a probe stream)")
    damaged = [c["bin_path"].name for c in checks if c["problem"]]
    if not damaged and (path.is_dir() or len(mine) == 1):
        reader = SpikeGLXRawIO(dirname=str(folder), load_channel_location=False)
        return _open_neo(path, "spikeglx", reader, stream=stream, block=0, segment=segment, metadata=meta,
                         gain_uv=gain_uv, prefer=lambda names_: 0, positions=lambda n, _names: positions)
    # a damaged file in the folder (neo would refuse the folder), or one file of several runs/gates
    # named by path (neo's segment order is its own): map the selected file directly
    info = sel["info"]
    if sel["problem"]:
        _truncation(meta, sel["bin_path"], sel["n_complete"], sel["n_expected"], sel["problem"])
    elif damaged:
        meta["damaged_neighbours"] = damaged
        logger.warning("%s: other SpikeGLX files in the folder are damaged (%s); reading this one directly",
                       sel["bin_path"], damaged)
    names_ = list(info["channel_names"][:n_neural])
    if gain_uv is not None:
        gain = _per_channel(gain_uv, n_neural, path=path, field="gain_uv")
        units = "uV (gain_uv given)"
    else:
        units = info["units"]
        gain = np.asarray(info["channel_gains"][:n_neural], dtype=np.float64) * _uv_per_unit(
            units, path=sel["meta_path"], field="units")
    pos, pos_src = positions
    cmap = ChannelMap(_unique_ids(names_, [f"{stream}#{n}" for n in names_]),
                      _grid_positions(n_neural) if pos is None else pos, gain, 0.0)
    meta.update(stream=stream, streams=names, segment=segment, n_segments=len(mine), original_units=[units],
                positions_source=pos_src, reader="cortexlink memmap (neo metadata)")
    return _MemmapRecording(path, fmt="spikeglx", data_path=sel["bin_path"], offset=0, file_dtype="<i2",
                            frame_channels=len(info["channel_names"]), columns=slice(0, n_neural),
                            channel_map=cmap, fs_hz=float(info["sampling_rate"]), n_samples=sel["n_complete"],
                            metadata=meta)

