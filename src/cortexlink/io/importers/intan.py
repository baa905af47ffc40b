"""Intan RHD2000/RHS2000 files (``intan``)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.types import ChannelMap
from cortexlink.io.importers._base import (
    Recording, _check_rate, _describe_content, _fail, _grid_positions, _head, _per_channel, _reader_warnings,
    _truncation, _unique_ids, _uv_per_unit,
)
from cortexlink.io.importers.neo import _open_neo


_RHD_MAGIC, _RHS_MAGIC = 0xC6912702, 0xD69127AC
_INTAN_UNSALVAGEABLE = ("USB board digital input channel", "USB board digital output channel", "Stim channel")


class _IntanBlocksRecording(Recording):
    """One analog stream of a header-attached Intan file, mapped block by block (complete blocks only)."""

    def __init__(self, path: Path | str, *, blocks: np.memmap, fields: list[str], per_block: int, **common: Any):
        super().__init__(path, **common)
        self._blocks: np.memmap | None = blocks
        self._fields = fields
        self._per_block = per_block

    def _read(self, start: int, stop: int) -> np.ndarray:
        k = self._per_block
        b0, b1 = start // k, (stop - 1) // k + 1
        out = np.empty((stop - start, len(self._fields)), dtype=self.dtype)
        s0 = start - b0 * k
        for i, name in enumerate(self._fields):
            out[:, i] = self._blocks[name][b0:b1].reshape(-1)[s0:s0 + stop - start]
        return out

    def _close(self) -> None:
        self._blocks = None


def _open_intan(path: Path, *, stream: str | None = None, gain_uv: Any = None,
                ignore_integrity_checks: bool = False) -> Recording:
    from neo.rawio import IntanRawIO
    from neo.rawio.intanrawio import (read_rhd, read_rhs, stream_id_to_stream_name_rhd,
                                      stream_id_to_stream_name_rhs)

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".rhd", ".rhs"))
        if len(files) != 1:
            raise _fail(path, f"an Intan folder must hold exactly one .rhd/.rhs file (or info.rhd); got "
                              f"{[p.name for p in files]}: pass the file")
        path = files[0]
    suffix = path.suffix.lower()
    if suffix not in (".rhd", ".rhs"):
        raise _fail(path, f"an Intan file must end in .rhd or .rhs; got {path.suffix or 'no suffix'!r} "
                          f"({_describe_content(_head(path))})")
    head = _head(path, 8)
    magic = struct.unpack("<I", head[:4])[0] if len(head) >= 4 else None
    want = _RHD_MAGIC if suffix == ".rhd" else _RHS_MAGIC
    if magic != want:
        raise _fail(path, f"not an Intan {suffix[1:].upper()} file: it is {_describe_content(head)}; the file must "
                          f"start with the magic number {want:#010x}")
    meta: dict[str, Any] = {"files": [path.name]}
    prefer_name = "RHD2000 amplifier channel" if suffix == ".rhd" else "RHS2000 amplifier channel"

    def prefer(names: list[str]) -> int:
        return names.index(prefer_name) if prefer_name in names else 0

    if path.stem in ("info",):  # headerless one-file-per-signal/channel layouts: neo only
        return _open_neo(path, "intan", IntanRawIO(filename=str(path), ignore_integrity_checks=ignore_integrity_checks),
                         stream=stream, block=0, segment=0, prefer=prefer, metadata=meta, gain_uv=gain_uv)
    read_header = read_rhd if suffix == ".rhd" else read_rhs
    try:
        with _reader_warnings(meta, path):
            global_info, chans, mm_dtype, header_size, block_size, _ = read_header(path, "header-attached")
    except (ValueError, IndexError, KeyError, EOFError, UnicodeDecodeError, OSError) as e:
        raise _fail(path, f"the Intan header is truncated or corrupt ({type(e).__name__}: {e})") from e
    _check_rate(path, global_info["sampling_rate"], "sampling_rate in the header")
    block_dtype = np.dtype(mm_dtype)
    size = path.stat().st_size
    n_blocks, rem = divmod(size - header_size, block_dtype.itemsize)
    meta.update(intan_version=f"{global_info['major_version']}.{global_info['minor_version']}",
                block_size=block_size, notch_filter=global_info.get("notch_filter"))
    if n_blocks < 1:
        raise _fail(path, f"holds no complete data block: the header ends at byte {header_size}, a block is "
                          f"{block_dtype.itemsize} bytes and the file is {size} bytes")
    if not rem:
        reader = IntanRawIO(filename=str(path), ignore_integrity_checks=ignore_integrity_checks)
        return _open_neo(path, "intan", reader, stream=stream, block=0, segment=0, prefer=prefer, metadata=meta,
                         gain_uv=gain_uv)
    # ends mid-block: neo refuses the file; map the complete blocks
    id_to_name = stream_id_to_stream_name_rhd if suffix == ".rhd" else stream_id_to_stream_name_rhs
    by_stream: dict[str, list[dict]] = {}
    for ch in chans:
        by_stream.setdefault(id_to_name.get(str(ch["signal_type"]), str(ch["signal_type"])), []).append(ch)
    names = list(by_stream)
    sname = names[prefer(names)] if stream is None else stream
    if sname not in by_stream:
        raise _fail(path, f"stream must be one of {names}; got {stream!r}")
    if sname in _INTAN_UNSALVAGEABLE:
        raise _fail(path, f"ends mid-block and stream {sname!r} (packed digital/stim words) cannot be salvaged; "
                          "the analog streams can")
    sel = by_stream[sname]
    fields = [ch["native_channel_name"] for ch in sel]
    if any(f not in block_dtype.names for f in fields):
        raise _fail(path, f"stream {sname!r} cannot be salvaged from a truncated file")
    sub = block_dtype[fields[0]]
    per_block = int(np.prod(sub.shape)) if sub.shape else 1
    blocks = np.memmap(path, dtype=block_dtype, mode="r", offset=header_size, shape=(n_blocks,))
    ts = np.asarray(blocks["timestamp"]).reshape(-1)
    if not ignore_integrity_checks and np.any(np.diff(ts.astype(np.int64)) != 1):
        raise _fail(path, "timestamps of the complete blocks are not continuous (corrupt data; "
                          "ignore_integrity_checks=True reads them anyway)")
    n = n_blocks * per_block
    _truncation(meta, path, n, None, f"ends {rem} of {block_dtype.itemsize} bytes into data block {n_blocks}")
    units = [str(ch["units"]) for ch in sel]
    if gain_uv is not None:
        gain, offset = _per_channel(gain_uv, len(sel), path=path, field="gain_uv"), np.zeros(len(sel))
    else:
        scale = np.array([_uv_per_unit(u, path=path, field=f"units of stream {sname!r}") for u in units])
        gain = np.array([ch["gain"] for ch in sel], dtype=np.float64) * scale
        offset = np.array([ch["offset"] for ch in sel], dtype=np.float64) * scale
    cmap = ChannelMap(_unique_ids([ch["custom_channel_name"] for ch in sel], fields), _grid_positions(len(sel)),
                      gain, offset)
    meta.update(stream=sname, streams=names, segment=0, n_segments=1, original_units=sorted(set(units)),
                positions_source="grid", reader="cortexlink memmap (neo header)")
    return _IntanBlocksRecording(path, fmt="intan", blocks=blocks, fields=fields, per_block=per_block,
                                 channel_map=cmap, fs_hz=float(sel[0]["sampling_rate"]), n_samples=n,
                                 dtype=sub.base, metadata=meta)

