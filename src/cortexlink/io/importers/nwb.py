"""ElectricalSeries of NWB 2 files (``nwb``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import CortexlinkError
from cortexlink.core.types import ChannelMap
from cortexlink.io.importers._base import (
    Recording, _check_rate, _describe_content, _fail, _grid_positions, _head, _per_channel, _reader_warnings,
    _unique_ids, _uv_per_unit,
)


class _NWBRecording(Recording):
    def __init__(self, path: Path | str, *, io: Any, data: Any, **common: Any) -> None:
        super().__init__(path, **common)
        self._io = io
        self._data = data

    def _read(self, start: int, stop: int) -> np.ndarray:
        x = np.asarray(self._data[start:stop])
        return x.reshape(-1, 1) if x.ndim == 1 else x

    def _close(self) -> None:
        io, self._io, self._data = self._io, None, None
        if io is not None:
            io.close()


def _open_nwb(path: Path, *, stream: str | None = None, gain_uv: Any = None) -> Recording:
    if path.is_dir():
        files = sorted(path.glob("*.nwb"))
        if len(files) != 1:
            raise _fail(path, f"an NWB folder must hold exactly one .nwb file; got {[p.name for p in files]}")
        path = files[0]
    head = _head(path, 8)
    if head != b"\x89HDF\r\n\x1a\n":
        import h5py

        if not h5py.is_hdf5(path):  # also finds a superblock after a user block
            raise _fail(path, f"not an NWB (HDF5) file: it is {_describe_content(head)}")
    from pynwb import NWBHDF5IO
    from pynwb.ecephys import ElectricalSeries

    meta: dict[str, Any] = {"files": [path.name]}
    io = None
    try:
        try:
            with _reader_warnings(meta, path):
                io = NWBHDF5IO(str(path), "r")
                nwb = io.read()
        except CortexlinkError:
            raise
        except Exception as e:  # noqa: BLE001 - h5py/hdmf raise many types on damaged files
            msg = str(e)
            hint = ("; the file is truncated (HDF5 cannot be salvaged without its metadata)"
                    if "truncated" in msg else "")
            raise _fail(path, f"could not be read as NWB: {type(e).__name__}: {msg}{hint}") from e
        series = [o for o in nwb.objects.values() if isinstance(o, ElectricalSeries)]
        names = sorted(o.name for o in series)
        if not series:
            raise _fail(path, "holds no ElectricalSeries")
        if stream is None:
            acq = [o for o in series if o.name in nwb.acquisition]
            pick = series if len(series) == 1 else acq
            if len(pick) != 1:
                raise _fail(path, f"holds {len(series)} ElectricalSeries; stream must name one of {names}")
            es = pick[0]
        else:
            match = [o for o in series if o.name == stream]
            if len(match) != 1:
                raise _fail(path, f"stream must name one ElectricalSeries of {names}; got {stream!r}"
                                  + (" (the name is not unique)" if len(match) > 1 else ""))
            es = match[0]
        where = f"{path} (ElectricalSeries {es.name!r})"
        data = es.data
        shape = tuple(data.shape)
        if len(shape) not in (1, 2):
            raise _fail(where, f"data must be (samples,) or (samples, channels); got shape {shape}")
        n_ch = 1 if len(shape) == 1 else shape[1]
        rows = np.asarray(es.electrodes.data[:], dtype=np.int64)
        if len(rows) != n_ch:
            raise _fail(where, f"electrodes lists {len(rows)} electrodes but data has {n_ch} channels")
        if es.rate is not None:
            fs = _check_rate(where, es.rate, "rate")
        else:
            ts = np.asarray(es.timestamps[: min(shape[0], 100001)], dtype=np.float64)
            d = np.diff(ts)
            if d.size == 0 or not np.all(d > 0) or np.ptp(d) > 1e-6 * np.median(d) + 1e-9:
                raise _fail(where, "timestamps must be regular and increasing to give a sampling rate")
            fs = _check_rate(where, 1.0 / float(np.median(d)), "rate (from timestamps)")
            meta["rate_from_timestamps"] = True
        if gain_uv is not None:
            gain, units = _per_channel(gain_uv, n_ch, path=where, field="gain_uv"), "uV (gain_uv given)"
            offset = np.zeros(n_ch)
        else:
            units = es.unit
            attrs = getattr(data, "attrs", None)
            if attrs is not None and "unit" in attrs:  # pynwb reports the schema's fixed value; trust the file
                units = attrs["unit"].decode() if isinstance(attrs["unit"], bytes) else str(attrs["unit"])
            scale = _uv_per_unit(units, path=where, field="unit")
            conv = float(es.conversion)
            if not np.isfinite(conv) or conv == 0:
                raise _fail(where, f"conversion must be a finite non-zero number; got {es.conversion!r}")
            cc = np.ones(n_ch)
            if es.channel_conversion is not None:
                cc = np.asarray(es.channel_conversion[:], dtype=np.float64)
                if cc.shape != (n_ch,):
                    raise _fail(where, f"channel_conversion has {cc.size} values but data has {n_ch} channels")
            gain = conv * cc * scale
            offset = np.full(n_ch, float(getattr(es, "offset", 0.0) or 0.0) * scale)
        table = es.electrodes.table
        cols = set(table.colnames)
        ids = np.asarray(table.id.data[:])[rows]
        if "label" in cols:
            labels = [str(table["label"].data[i]) for i in rows]
        else:
            labels = [f"ch{int(i):04d}" for i in ids]
        if {"rel_x", "rel_y"} <= cols:
            pos = np.stack([np.asarray(table["rel_x"].data[:], dtype=np.float64)[rows],
                            np.asarray(table["rel_y"].data[:], dtype=np.float64)[rows]], axis=1)
            pos_src = "electrodes rel_x/rel_y"
            if not np.all(np.isfinite(pos)):
                pos, pos_src = _grid_positions(n_ch), "grid (rel_x/rel_y not finite)"
        else:
            pos, pos_src = _grid_positions(n_ch), "grid"
        cmap = ChannelMap(_unique_ids(labels, [f"ch{int(i):04d}" for i in ids]), pos, gain, offset)
        meta.update(stream=es.name, streams=names, original_units=[units], positions_source=pos_src,
                    starting_time=es.starting_time, electrode_rows=rows.tolist(), reader="pynwb",
                    description=es.description)
        rec = _NWBRecording(path, fmt="nwb", io=io, data=data, channel_map=cmap, fs_hz=fs, n_samples=shape[0],
                            dtype=data.dtype, metadata=meta)
        io = None
        return rec
    finally:
        if io is not None:
            io.close()

