"""Raw binary samples described by a JSON sidecar (``raw``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.types import ChannelMap
from cortexlink.io.importers._base import (
    Recording, _MemmapRecording, _check_rate, _fail, _grid_positions, _per_channel, _truncation, _uv_per_unit,
)


_RAW_DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64")
_RAW_SUFFIXES = (".raw", ".dat", ".bin", ".int16", ".i16", ".pcm")


def _raw_sidecar_candidates(data: Path) -> list[Path]:
    return [data.with_name(data.name + ".json"), data.with_suffix(".json"), data.parent / "info.json"]


def _find_sidecar(data: Path) -> Path | None:
    for c in _raw_sidecar_candidates(data):
        if c.is_file() and c != data:
            return c
    return None


def _open_raw(path: Path, *, stream: str | None = None, sidecar: Any = None, allow_truncated: bool = False,
              gain_uv: Any = None) -> Recording:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _RAW_SUFFIXES)
        if stream is not None:
            match = [p for p in files if stream in (p.name, p.stem)]
            if not match:
                raise _fail(path, f"stream must name one of the data files {[p.name for p in files]}; got {stream!r}")
            data = match[0]
        elif len(files) == 1:
            data = files[0]
        elif not files:
            raise _fail(path, f"holds no raw data file (suffixes {', '.join(_RAW_SUFFIXES)})")
        else:
            raise _fail(path, f"holds {len(files)} raw data files; stream must name one of "
                              f"{[p.name for p in files]}")
    else:
        data = path
    meta: dict[str, Any] = {"data_file": str(data)}
    if isinstance(sidecar, dict):
        sc, sc_name = dict(sidecar), "sidecar"
    else:
        sc_path = Path(sidecar) if sidecar is not None else _find_sidecar(data)
        if sc_path is None or not sc_path.is_file():
            tried = [str(c) for c in ([Path(sidecar)] if sidecar is not None else _raw_sidecar_candidates(data))]
            raise _fail(data, f"a raw file needs a JSON sidecar (dtype, n_channels, fs_hz); none found at {tried}")
        sc_name = str(sc_path)
        try:
            sc = json.loads(sc_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _fail(sc_path, f"sidecar must be a JSON object; could not parse it: {e}") from e
        meta["sidecar"] = sc_name
    if not isinstance(sc, dict):
        raise _fail(sc_name, f"sidecar must be a JSON object; got {type(sc).__name__}")

    # dtype
    if "dtype" not in sc:
        raise _fail(sc_name, f"dtype is required (one of {', '.join(_RAW_DTYPES)})")
    try:
        dt = np.dtype(sc["dtype"])
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.newbyteorder("=").name not in _RAW_DTYPES:
        raise _fail(sc_name, f"dtype must be one of {', '.join(_RAW_DTYPES)}; got {sc['dtype']!r}")
    # channel count: n_channels and/or shape [-1, n]
    n_ch = sc.get("n_channels")
    if "shape" in sc:
        shape = sc["shape"]
        if not (isinstance(shape, list) and len(shape) == 2 and shape[0] == -1 and isinstance(shape[1], int)):
            raise _fail(sc_name, f"shape must be [-1, n_channels] (samples x channels, interleaved); got {shape!r}")
        if n_ch is not None and n_ch != shape[1]:
            raise _fail(sc_name, f"n_channels ({n_ch!r}) disagrees with shape {shape} ({shape[1]} channels)")
        n_ch = shape[1]
    if n_ch is None:
        raise _fail(sc_name, "n_channels (or shape [-1, n_channels]) is required")
    if isinstance(n_ch, bool) or not isinstance(n_ch, int) or n_ch < 1:
        raise _fail(sc_name, f"n_channels must be an integer >= 1; got {n_ch!r}")
    # rate
    rate_keys = [k for k in ("fs_hz", "sample_rate", "sampling_rate") if k in sc]
    if not rate_keys:
        raise _fail(sc_name, "fs_hz (or sample_rate) is required")
    rates = {k: sc[k] for k in rate_keys}
    fs = _check_rate(sc_name, sc[rate_keys[0]], rate_keys[0])
    for k, v in rates.items():
        if _check_rate(sc_name, v, k) != fs:
            raise _fail(sc_name, f"{k} ({v!r}) disagrees with {rate_keys[0]} ({sc[rate_keys[0]]!r})")
    # scale
    if gain_uv is not None:
        gain, offset, units = _per_channel(gain_uv, n_ch, path=sc_name, field="gain_uv"), np.zeros(n_ch), "uV"
    elif "gain" in sc or "units" in sc:
        if "gain_uv" in sc or "offset_uv" in sc:
            raise _fail(sc_name, "give either gain_uv/offset_uv or gain/offset with units, not both")
        units = sc.get("units", "uV")
        scale = _uv_per_unit(units, path=sc_name, field="units")
        gain = _per_channel(sc.get("gain", 1.0), n_ch, path=sc_name, field="gain") * scale
        offset = _per_channel(sc.get("offset", 0.0), n_ch, path=sc_name, field="offset") * scale
    else:
        units = "uV" if "gain_uv" in sc else "counts (no gain in the sidecar)"
        gain = _per_channel(sc.get("gain_uv", 1.0), n_ch, path=sc_name, field="gain_uv")
        offset = _per_channel(sc.get("offset_uv", 0.0), n_ch, path=sc_name, field="offset_uv")
    if np.any(gain == 0):
        raise _fail(sc_name, "gain must be non-zero for every channel; got 0")
    ids = sc.get("channel_ids") or [f"ch{i:04d}" for i in range(n_ch)]
    if len(ids) != n_ch:
        raise _fail(sc_name, f"channel_ids must list {n_ch} ids (n_channels); got {len(ids)}")
    if "positions_um" in sc:
        pos = np.asarray(sc["positions_um"], dtype=np.float64)
        if pos.shape != (n_ch, 2):
            raise _fail(sc_name, f"positions_um must be {n_ch} [x, y] pairs; got shape {pos.shape}")
        pos_src = "sidecar"
    else:
        pos, pos_src = _grid_positions(n_ch), "grid"
    header = sc.get("header_bytes", 0)
    if isinstance(header, bool) or not isinstance(header, int) or header < 0:
        raise _fail(sc_name, f"header_bytes must be an integer >= 0; got {header!r}")

    size = data.stat().st_size
    frame = n_ch * dt.itemsize
    if size < header:
        raise _fail(data, f"is {size} bytes, shorter than header_bytes={header} in {sc_name}")
    n_samples, rem = divmod(size - header, frame)
    if rem:
        if not allow_truncated:
            raise _fail(data, f"size ({size} bytes{f' after header_bytes={header}' if header else ''}) must be a "
                              f"multiple of n_channels x itemsize = {n_ch} x {dt.itemsize} = {frame} bytes; got "
                              f"{n_samples} samples and {rem} bytes over: n_channels or dtype in {sc_name} disagrees "
                              f"with the data, or the file is truncated (allow_truncated=True salvages the "
                              f"{n_samples} complete samples)")
        _truncation(meta, data, n_samples, None, f"ends {rem} bytes into a sample")
    known = {"dtype", "n_channels", "shape", "fs_hz", "sample_rate", "sampling_rate", "gain_uv", "offset_uv", "gain",
             "offset", "units", "channel_ids", "positions_um", "header_bytes"}
    extra = {k: v for k, v in sc.items() if k not in known}
    meta.update(original_units=units, positions_source=pos_src, header_bytes=header, sidecar_fields=sc,
                scaled=not units.startswith("counts"),
                **({"sidecar_unknown_fields": sorted(extra)} if extra else {}))
    cmap = ChannelMap(ids, pos, gain, offset)
    return _MemmapRecording(path, fmt="raw", data_path=data, offset=header, file_dtype=dt, frame_channels=n_ch,
                            channel_map=cmap, fs_hz=fs, n_samples=n_samples, metadata=meta)

