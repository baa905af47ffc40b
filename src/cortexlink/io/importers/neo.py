"""A signal stream of a ``neo.rawio`` reader as a :class:`Recording` (blackrock, intan,
openephys and spikeglx read intact files through neo).
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cortexlink.core.types import ChannelMap
from cortexlink.io.importers._base import (
    Recording, _fail, _grid_positions, _per_channel, _reader_warnings, _unique_ids, _uv_per_unit, _wrap_parse_errors,
)


class _NeoRecording(Recording):
    """A signal stream of a ``neo.rawio`` reader (block, segment, stream)."""

    def __init__(self, path: Path | str, *, reader: Any, stream_index: int, block_index: int, seg_index: int,
                 **common: Any) -> None:
        super().__init__(path, **common)
        self._reader = reader
        self._idx = dict(block_index=block_index, seg_index=seg_index, stream_index=stream_index)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self._reader.get_analogsignal_chunk(i_start=start, i_stop=stop, **self._idx)

    def _close(self) -> None:
        r, self._reader = self._reader, None
        if r is not None:
            _close_neo_reader(r)


def _close_neo_reader(r: Any) -> None:
    """Close the files a neo reader keeps open until garbage collection."""
    for attr in ("_memmap_analogsignal_buffers", "_hdf5_analogsignal_buffers"):
        nested = getattr(r, attr, None)
        if isinstance(nested, dict):
            for by_seg in nested.values():
                for by_buf in by_seg.values():
                    for fh in by_buf.values():
                        fh.close()
            delattr(r, attr)
    fids = getattr(r, "_nsx_fids", None)
    if isinstance(fids, dict):
        for fh in fids.values():
            fh.close()
        fids.clear()
    for attr in ("_raw_data", "_sigs_memmap"):
        if hasattr(r, attr):
            setattr(r, attr, None)


def _select_neo_stream(path: Path, reader: Any, stream: str | None,
                       prefer: Callable[[list[str]], int]) -> int:
    streams = reader.header["signal_streams"]
    names = [str(s) for s in streams["name"]]
    ids = [str(s) for s in streams["id"]]
    if not names:
        raise _fail(path, "holds no continuous signal stream")
    if stream is None:
        return prefer(names)
    for i, (nm, sid) in enumerate(zip(names, ids)):
        if stream in (nm, sid):
            return i
    raise _fail(path, f"stream must be one of {names}; got {stream!r}")


def _check_index(path: Path, name: str, value: Any, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < n:
        raise _fail(path, f"{name} must be an integer in [0, {n - 1}] ({n} in the file); got {value!r}")
    return int(value)


def _open_neo(path: Path, fmt: str, reader: Any, *, stream: str | None, block: int, segment: int,
              prefer: Callable[[list[str]], int], metadata: dict, gain_uv: Any = None,
              positions: Callable[[int, list[str]], tuple[np.ndarray | None, str]] | None = None) -> _NeoRecording:
    """Parse ``reader``'s header and wrap one stream of it."""
    try:
        with _wrap_parse_errors(path, fmt), _reader_warnings(metadata, path):
            reader.parse_header()
        stream_index = _select_neo_stream(path, reader, stream, prefer)
        header = reader.header
        sname = str(header["signal_streams"]["name"][stream_index])
        sid = header["signal_streams"]["id"][stream_index]
        block = _check_index(path, "block", block, int(header["nb_block"]))
        segment = _check_index(path, "segment", segment, int(header["nb_segment"][block]))
        chans = header["signal_channels"][header["signal_channels"]["stream_id"] == sid]
        n = len(chans)
        if n == 0:
            raise _fail(path, f"stream {sname!r} has no channels")
        dtypes = {str(d) for d in chans["dtype"]}
        if len(dtypes) != 1:
            raise _fail(path, f"stream {sname!r} mixes sample types {sorted(dtypes)}")
        if gain_uv is not None:
            gain = _per_channel(gain_uv, n, path=path, field="gain_uv")
            offset = np.zeros(n)
            units = ["uV (gain_uv given)"] * n
        else:
            units = [str(u) for u in chans["units"]]
            scale = np.array([_uv_per_unit(u, path=path, field=f"units of channel {str(nm)!r} in stream {sname!r}")
                              for u, nm in zip(units, chans["name"])])
            gain = chans["gain"].astype(np.float64) * scale
            offset = chans["offset"].astype(np.float64) * scale
        ids = _unique_ids(chans["name"], chans["id"])
        pos, pos_src = (None, "grid") if positions is None else positions(n, [str(s) for s in chans["name"]])
        if pos is None:
            pos = _grid_positions(n)
        with _wrap_parse_errors(path, fmt), _reader_warnings(metadata, path):
            n_samples = int(reader.get_signal_size(block, segment, stream_index))
            fs = float(reader.get_signal_sampling_rate(stream_index))
        cmap = ChannelMap(ids, pos, gain, offset)
        metadata.setdefault("streams", [str(s) for s in header["signal_streams"]["name"]])
        metadata.update(stream=sname, block=block, segment=segment, n_blocks=int(header["nb_block"]),
                        n_segments=int(header["nb_segment"][block]), original_units=sorted(set(units)),
                        positions_source=pos_src, reader=f"neo.rawio.{type(reader).__name__}")
        return _NeoRecording(path, fmt=fmt, reader=reader, stream_index=stream_index, block_index=block,
                             seg_index=segment, channel_map=cmap, fs_hz=fs, n_samples=n_samples,
                             dtype=dtypes.pop(), metadata=metadata)
    except BaseException:
        _close_neo_reader(reader)
        raise

