"""What the export reads from the session folder, through
:class:`~cortexlink.io.session_log.SessionReader`: the manifest and stream headers checked
against each other, and the raw and feature streams as HDF5 data-chunk iterators (a few
MiB in memory at a time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.core.errors import ValidationError


def _session_info(reader: Any, raw: bool) -> dict:
    """Check that the manifest and the stream headers agree; gather what the export needs.

    Raises :class:`ValidationError` naming the file and the disagreement.
    """
    from cortexlink.io.session_log import CorruptSessionError

    path = reader.path
    mpath = path / "manifest.json"
    m = reader.manifest
    streams = reader.streams
    if not streams:
        raise CorruptSessionError(f"{path / 'streams'}: no stream files (*.clog); nothing to export")
    headers = {}
    for name in streams:
        headers[name] = reader.stream_info(name)   # raises CorruptSessionError naming the file
        p = path / "streams" / f"{name}.clog"
        mst = (m.get("streams") or {}).get(name) or {}
        if m.get("state") in ("closed", "stopped", "recovered") and "bytes" in mst and m.get("files") is not None:
            size = reader.stream_bytes(name)
            if size != mst["bytes"]:
                raise CorruptSessionError(
                    f"{p}: {size} bytes, but {mpath} says {mst['bytes']} (the file was truncated or changed after "
                    f"the session closed); run `cortexlink sessions verify {path}`")
        if headers[name].get("kind") == "array":
            ncol = len(headers[name].get("columns") or ())
            if "n_columns" in mst and int(mst["n_columns"]) != ncol:
                raise ValidationError(f"{p}: the stream has {ncol} columns but {mpath} says {mst['n_columns']}")
    fs = m.get("fs_hz")
    if fs is None:
        rates = {h.get("rate_hz") for h in headers.values() if h.get("rate_hz")}
        if len(rates) != 1:
            raise ValidationError(f"{mpath}: no fs_hz and the streams do not name one common rate ({sorted(rates)})")
        fs = rates.pop()
    fs = float(fs)
    if not np.isfinite(fs) or fs <= 0:
        raise ValidationError(f"{mpath}: fs_hz must be a positive number; got {fs!r}")
    for name, h in headers.items():
        r = h.get("rate_hz")
        if r is not None and abs(float(r) - fs) > 1e-6 * fs:
            raise ValidationError(f"{path / 'streams' / (name + '.clog')}: rate_hz {float(r):g} Hz disagrees with "
                                  f"the manifest's fs_hz {fs:g} Hz ({mpath}); every stream must use the source clock")
    dsp = m.get("dsp") or {}
    if dsp.get("fs_hz") is not None and abs(float(dsp["fs_hz"]) - fs) > 1e-6 * fs:
        raise ValidationError(f"{mpath}: dsp.fs_hz {float(dsp['fs_hz']):g} Hz disagrees with fs_hz {fs:g} Hz")
    cm = reader.channel_map
    info: dict = {"fs": fs, "channel_map": cm, "headers": headers, "raw": None, "features": None}
    if "raw" in headers:
        h = headers["raw"]
        rp = path / "streams" / "raw.clog"
        if h.get("kind") != "array":
            raise ValidationError(f"{rp}: the raw stream must be an array stream; got kind {h.get('kind')!r}")
        cols = list(h.get("columns") or ())
        dt = np.dtype(h["dtype"])
        if cm is None:
            raise ValidationError(f"{mpath}: no channel_map, but the session has a raw stream ({rp}); the electrodes "
                                  "and the scaling to volts are unknown")
        if len(cols) != cm.n_channels:
            raise ValidationError(f"{rp}: {len(cols)} channel columns, but the manifest's channel map ({mpath}) has "
                                  f"{cm.n_channels} channels")
        if tuple(cols) != tuple(cm.channel_ids):
            bad = next(i for i, (a, b) in enumerate(zip(cols, cm.channel_ids)) if a != b)
            raise ValidationError(f"{rp}: column {bad} is channel {cols[bad]!r} but the manifest's channel map "
                                  f"({mpath}) has {cm.channel_ids[bad]!r} there")
        units = h.get("units", "counts" if dt.kind in "iu" else "uV")
        if dt.kind in "iu" and units != "counts":
            raise ValidationError(f"{rp}: integer samples ({dt}) must be in 'counts' (scaled by the channel map's "
                                  f"gain_uv); the header says units={units!r}")
        if dt.kind == "f" and units != "uV":
            raise ValidationError(f"{rp}: floating-point samples ({dt}) must be in 'uV'; the header says "
                                  f"units={units!r}")
        if dt.kind not in "iuf":
            raise ValidationError(f"{rp}: raw samples must be integer counts or float µV; got dtype {dt}")
        info["raw"] = {"dtype": dt, "units": units, "n_channels": len(cols)}
        if not raw:
            info["raw"]["skipped"] = True
    if "features" in headers:
        h = headers["features"]
        fp = path / "streams" / "features.clog"
        names = [str(c) for c in h.get("columns") or ()]
        bw = h.get("bin_width_samples")
        if not isinstance(bw, int) or bw <= 0:
            raise ValidationError(f"{fp}: bin_width_samples must be a positive integer; got {bw!r}")
        ids = set(cm.channel_ids) if cm is not None else None
        kinds: dict[str, list[int]] = {}
        chans: list[str | None] = []
        for j, n in enumerate(names):
            ch, _, kind = n.rpartition("/")
            if not ch:
                ch, kind = None, "other"
            if ch is not None and ids is not None and ch not in ids:
                raise ValidationError(f"{fp}: feature column {n!r} names channel {ch!r}, which is not in the "
                                      f"manifest's channel map ({mpath})")
            kinds.setdefault(kind, []).append(j)
            chans.append(ch)
        info["features"] = {"names": names, "bw": int(bw), "kinds": kinds, "channels": chans}
    return info


# ------------------------------------------------------------------------------------ raw iterator
def _raw_iterator_class() -> type:
    from hdmf.data_utils import AbstractDataChunkIterator, DataChunk

    class RawRecordIterator(AbstractDataChunkIterator):
        """Raw records of a session stream, re-blocked into buffers of whole HDF5 chunks.

        Never holds more than one buffer; samples missing between records are zeros and are
        listed in :attr:`holes` (source sample ranges ``[a, b)``).
        """

        def __init__(self, records: Iterator[Any], first: Any, n_channels: int, dtype: np.dtype,
                     chunk_shape: tuple[int, int], buffer_samples: int, path: Path,
                     progress: Any = None) -> None:
            self._records = records
            self._pending = first            # a record not yet consumed
            self._off = 0                    # row offset inside the pending record
            self.first_sample = int(first.sample)
            self.pos = self.first_sample     # next source sample to place
            self.n_ch = n_channels
            self._dtype = np.dtype(dtype)
            self._chunk = chunk_shape
            self.buffer_samples = int(buffer_samples)
            self.holes: list[tuple[int, int]] = []
            self.n_records = 0
            self.path = path
            self.error: BaseException | None = None
            self._progress = progress
            self._done = False

        def __iter__(self) -> "RawRecordIterator":
            return self

        def _next_record(self) -> Any:
            try:
                return next(self._records)
            except StopIteration:
                return None
            except BaseException as exc:     # keep the reader's error: hdmf may wrap it
                self.error = exc
                raise

        def __next__(self) -> Any:
            if self._done:
                raise StopIteration
            start = self.pos
            buf = None
            filled = 0
            while filled < self.buffer_samples:
                rec = self._pending
                if rec is None:
                    rec = self._next_record()
                    self._off = 0
                    if rec is None:
                        self._done = True
                        break
                    self.n_records += 1
                    if rec.data.shape[1] != self.n_ch:
                        self.error = ValidationError(f"{self.path}: record {rec.seq} has {rec.data.shape[1]} columns; "
                                                     f"expected {self.n_ch}")
                        raise self.error
                    if rec.sample < self.pos:
                        self.error = ValidationError(
                            f"{self.path}: record {rec.seq} starts at sample {rec.sample}, before the end of the "
                            f"previous record (sample {self.pos}); the raw stream's clock goes backwards or "
                            "records overlap")
                        raise self.error
                    if rec.sample > self.pos:
                        self.holes.append((self.pos, int(rec.sample)))
                    self._pending = rec
                if buf is None:
                    buf = np.zeros((self.buffer_samples, self.n_ch), dtype=self._dtype)
                rec_pos = rec.sample + self._off
                if rec_pos > self.pos:       # a hole: leave zeros
                    skip = min(rec_pos - self.pos, self.buffer_samples - filled)
                    filled += skip
                    self.pos += skip
                    continue
                take = min(rec.data.shape[0] - self._off, self.buffer_samples - filled)
                buf[filled:filled + take] = rec.data[self._off:self._off + take]
                filled += take
                self.pos += take
                self._off += take
                if self._off >= rec.data.shape[0]:
                    self._pending = None
            if filled == 0:
                raise StopIteration
            if self._progress is not None:
                self._progress.update(filled)
            a = start - self.first_sample
            return DataChunk(data=buf[:filled], selection=np.s_[a:a + filled, :])

        def recommended_chunk_shape(self) -> tuple[int, int]:
            return self._chunk

        def recommended_data_shape(self) -> tuple[int, int]:
            return (0, self.n_ch)

        @property
        def dtype(self) -> np.dtype:
            return self._dtype

        @property
        def maxshape(self) -> tuple:
            return (None, self.n_ch)

    return RawRecordIterator


def _feature_iterator_class() -> type:
    from hdmf.data_utils import AbstractDataChunkIterator, DataChunk

    class FeatureColumnsIterator(AbstractDataChunkIterator):
        """Some columns of the features stream, bin after bin, a few thousand bins at a time."""

        def __init__(self, reader: Any, cols: list[int], n_bins: int, buffer_bins: int) -> None:
            self._records = reader.records("features")
            self._cols = np.asarray(cols)
            self.n_bins = int(n_bins)
            self._buffer = max(1, int(buffer_bins))
            self._i = 0
            self._left: np.ndarray | None = None

        def __iter__(self) -> "FeatureColumnsIterator":
            return self

        def __next__(self) -> Any:
            parts, n = [], 0
            while n < self._buffer:
                if self._left is None:
                    rec = next(self._records, None)
                    if rec is None:
                        break
                    self._left = rec.data[:, self._cols]
                take = min(self._left.shape[0], self._buffer - n)
                parts.append(self._left[:take])
                n += take
                self._left = self._left[take:] if take < self._left.shape[0] else None
            if n == 0:
                raise StopIteration
            a = self._i
            self._i += n
            if self._i > self.n_bins:
                raise ValidationError("the features stream changed while it was being exported")
            return DataChunk(data=np.concatenate(parts).astype(np.float32, copy=False),
                             selection=np.s_[a:a + n, :])

        def recommended_chunk_shape(self) -> tuple[int, int]:
            return (max(1, min(self.n_bins, self._buffer)), len(self._cols))

        def recommended_data_shape(self) -> tuple[int, int]:
            return (self.n_bins, len(self._cols))

        @property
        def dtype(self) -> np.dtype:
            return np.dtype(np.float32)

        @property
        def maxshape(self) -> tuple[int, int]:
            return (self.n_bins, len(self._cols))

    return FeatureColumnsIterator

