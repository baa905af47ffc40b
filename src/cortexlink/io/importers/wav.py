"""WAV files, or a folder of mono WAVs, one per channel (``wav``)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import ChannelMap
from cortexlink.io.importers._base import (
    Recording, _MemmapRecording, _MultiFileRecording, _check_rate, _describe_content, _fail, _grid_positions,
    _per_channel, _truncation, _unique_ids, logger,
)


_WAV_FORMAT_PCM, _WAV_FORMAT_FLOAT, _WAV_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE


def _parse_wav(path: Path) -> dict:
    """Read the RIFF/WAVE chunk headers of ``path`` (layout from the Microsoft RIFF spec).

    scipy.io.wavfile cannot memory-map part of a ``data`` chunk nor read a file cut short, so
    the chunk headers are read here and the samples memory-mapped.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            what = "a big-endian RIFX file (not supported)" if head[:4] == b"RIFX" else _describe_content(head)
            raise _fail(path, f"not a WAV file: it is {what}; a WAV file starts with 'RIFF....WAVE'")
        fmt = None
        pos = 12
        while True:
            f.seek(pos)
            ch = f.read(8)
            if len(ch) < 8:
                missing = "fmt" if fmt is None else "data"
                raise _fail(path, f"has no complete {missing!r} chunk (file ends at byte {size}): truncated or corrupt")
            cid, csize = ch[:4], struct.unpack("<I", ch[4:])[0]
            if cid == b"fmt ":
                body = f.read(min(csize, 40))
                if len(body) < 16:
                    raise _fail(path, "its 'fmt ' chunk is shorter than 16 bytes: corrupt")
                tag, n_ch, rate, _byte_rate, align, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == _WAV_FORMAT_EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]  # first field of the SubFormat GUID
                fmt = dict(tag=tag, n_channels=n_ch, rate=rate, block_align=align, bits=bits)
            elif cid == b"data":
                if fmt is None:
                    raise _fail(path, "its 'data' chunk comes before any 'fmt ' chunk: corrupt")
                fmt.update(data_offset=pos + 8, data_declared=csize, file_size=size)
                break
            pos += 8 + csize + (csize & 1)
    tag, n_ch, bits, align = fmt["tag"], fmt["n_channels"], fmt["bits"], fmt["block_align"]
    if n_ch < 1:
        raise _fail(path, f"channel count in the 'fmt ' chunk must be >= 1; got {n_ch}")
    _check_rate(path, fmt["rate"], "sample rate in the 'fmt ' chunk")
    dtypes = {(_WAV_FORMAT_PCM, 8): "u1", (_WAV_FORMAT_PCM, 16): "<i2", (_WAV_FORMAT_PCM, 32): "<i4",
              (_WAV_FORMAT_FLOAT, 32): "<f4", (_WAV_FORMAT_FLOAT, 64): "<f8"}
    if (tag, bits) not in dtypes:
        raise _fail(path, f"sample encoding must be 8/16/32-bit PCM or 32/64-bit float; got format tag {tag} "
                          f"with {bits} bits per sample")
    dt = np.dtype(dtypes[(tag, bits)])
    if align != n_ch * dt.itemsize:
        raise _fail(path, f"block_align ({align}) disagrees with channels x bytes per sample "
                          f"({n_ch} x {dt.itemsize} = {n_ch * dt.itemsize})")
    fmt["dtype"] = dt
    available = size - fmt["data_offset"]
    declared = fmt["data_declared"]
    frame = n_ch * dt.itemsize
    if declared in (0, 0xFFFFFFFF) and available > 0:
        fmt.update(n_frames=available // frame, truncated=True, n_expected=None,
                   truncation=f"'data' chunk size never finalised ({declared:#x}); read to the end of the file")
    elif available < declared or declared % frame:
        fmt.update(n_frames=min(available, declared) // frame, truncated=True, n_expected=declared // frame,
                   truncation=(f"'data' chunk declares {declared} bytes, the file holds {available}"
                               if available < declared else f"'data' chunk size {declared} ends mid-sample"))
    else:
        fmt.update(n_frames=declared // frame, truncated=False, n_expected=declared // frame)
    return fmt


def _open_wav(path: Path, *, stream: str | None = None, gain_uv: Any = None) -> Recording:
    if stream is not None:
        raise ConfigError(f"stream is not used by the wav importer; got {stream!r}")
    meta: dict[str, Any] = {}
    if path.is_file():
        w = _parse_wav(path)
        n_ch = w["n_channels"]
        if w["truncated"]:
            _truncation(meta, path, w["n_frames"], w["n_expected"], w["truncation"])
        gain = _per_channel(1.0 if gain_uv is None else gain_uv, n_ch, path=path, field="gain_uv")
        meta.update(files=[path.name], original_units="uV" if gain_uv is not None else "counts (WAV has no scale)",
                    scaled=gain_uv is not None,
                    wav_format_tag=w["tag"], bits_per_sample=w["bits"], positions_source="grid")
        cmap = ChannelMap([f"ch{i:04d}" for i in range(n_ch)], _grid_positions(n_ch), gain)
        return _MemmapRecording(path, fmt="wav", data_path=path, offset=w["data_offset"], file_dtype=w["dtype"],
                                frame_channels=n_ch, channel_map=cmap, fs_hz=float(w["rate"]),
                                n_samples=w["n_frames"], metadata=meta)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".wav")
    if not files:
        raise _fail(path, "holds no .wav file")
    infos = [_parse_wav(p) for p in files]
    for p, w in zip(files, infos):
        if w["n_channels"] != 1:
            raise _fail(p, f"a folder of WAV files must hold one mono file per electrode; this one has "
                           f"{w['n_channels']} channels")
    rates = sorted({w["rate"] for w in infos})
    if len(rates) > 1:
        by_rate = {r: [p.name for p, w in zip(files, infos) if w["rate"] == r][:3] for r in rates}
        raise _fail(path, f"every WAV file must have the same sample rate; got {rates} Hz (e.g. {by_rate})")
    dts = sorted({w["dtype"].str for w in infos})
    if len(dts) > 1:
        raise _fail(path, f"every WAV file must have the same sample type; got {dts}")
    lengths = np.array([w["n_frames"] for w in infos])
    n = int(lengths.min())
    truncated = [p.name for p, w in zip(files, infos) if w["truncated"]]
    if truncated:
        _truncation(meta, path, n, None, f"{len(truncated)} of {len(files)} files truncated: {truncated[:5]}")
        meta["truncated_files"] = truncated
    if lengths.max() != n:
        logger.info("%s: WAV files differ in length (%d to %d samples); using the shortest, %d",
                    path, lengths.min(), lengths.max(), n)
    meta.update(files=[p.name for p in files], length_policy="shortest",
                n_samples_per_file={"min": n, "max": int(lengths.max())},
                n_samples_dropped_max=int(lengths.max() - n),
                original_units="uV" if gain_uv is not None else "counts (WAV has no scale)",
                scaled=gain_uv is not None, positions_source="grid", bits_per_sample=infos[0]["bits"])
    gain = _per_channel(1.0 if gain_uv is None else gain_uv, len(files), path=path, field="gain_uv")
    cmap = ChannelMap(_unique_ids([p.stem for p in files], [p.name for p in files]), _grid_positions(len(files)), gain)
    return _MultiFileRecording(path, fmt="wav", parts=[(p, w["data_offset"], w["dtype"]) for p, w in zip(files, infos)],
                               channel_map=cmap, fs_hz=float(rates[0]), n_samples=n, metadata=meta)

