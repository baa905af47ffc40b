""":class:`SessionReader`: read a session folder written by :class:`~cortexlink.io.session_log.SessionRecorder`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.io.session_log.format import CorruptSessionError, Record, read_file_header, scan_stream
from cortexlink.io.session_log.manifest import read_manifest

logger = logging.getLogger("cortexlink.io.session_log")


class SessionReader:
    """Read a session folder written by :class:`SessionRecorder`.

    Parameters
    ----------
    path : path
        The session folder.
    salvage : bool
        Skip damaged records (with a warning) instead of raising :class:`CorruptSessionError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, salvage: bool = False) -> None:
        self.path = Path(path)
        self.salvage = salvage
        self.manifest = read_manifest(self.path)      # fields checked: errors name the field
        self.fs_hz = self.manifest.get("fs_hz")
        cm = self.manifest.get("channel_map")
        from cortexlink.core.types import ChannelMap
        self.channel_map = ChannelMap.from_dict(cm) if cm else None
        self._info: dict[str, dict[str, Any]] = {}

    @property
    def state(self) -> str:
        return str(self.manifest.get("state", "unknown"))

    @property
    def streams(self) -> list[str]:
        """Names of the streams with a file in the folder."""
        return sorted(p.stem for p in (self.path / "streams").glob("*.clog"))

    def stream_info(self, name: str) -> dict[str, Any]:
        """The header of stream ``name`` (kind, dtype, columns, rate_hz, ...)."""
        if name not in self._info:
            p = self._stream_path(name)
            self._info[name] = read_file_header(p)[0]
        return self._info[name]

    def stream_bytes(self, name: str) -> int:
        """Size in bytes of stream ``name``'s file."""
        return self._stream_path(name).stat().st_size

    def _stream_path(self, name: str) -> Path:
        p = self.path / "streams" / f"{name}.clog"
        if not p.is_file():
            raise ValidationError(f"{self.path}: no stream {name!r}; streams: {self.streams}")
        return p

    def records(self, name: str, *, want: Any = None) -> Iterator[Record]:
        """Intact records of stream ``name`` in file order. ``want(sample, n_rows)``: in a
        compressed stream, only the records it accepts (and those they depend on) are decoded; the
        others' ``data`` only has the right shape."""
        p = self._stream_path(name)
        for kind, item in scan_stream(p, salvage=self.salvage, decode=True if want is None else want):
            if kind == "record":
                yield item
            else:
                logger.warning("%s: skipped %d damaged bytes at %d (%s)", p, item["length"], item["offset"],
                               item["reason"])

    def read_array(self, name: str, start_sample: int | None = None, stop_sample: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """``(samples, rows)`` of an array stream: the source sample index of each row and the rows.

        For streams with several rows per record (raw), a row's sample index is its record's
        plus its position; for binned streams (features) it is the bin's start sample.
        """
        info = self.stream_info(name)
        if info["kind"] != "array":
            raise ValidationError(f"stream {name!r} is a {info['kind']} stream; use events()/records()")
        step = int(info.get("bin_width_samples", 1))
        samples, rows = [], []
        lo = -(1 << 62) if start_sample is None else start_sample
        hi = 1 << 62 if stop_sample is None else stop_sample

        def overlaps(sample: int, n_rows: int) -> bool:     # any of its rows in [lo, hi)
            return n_rows > 0 and sample < hi and sample + step * (n_rows - 1) >= lo
        ranged = start_sample is not None or stop_sample is not None
        for r in self.records(name, want=overlaps if ranged else None):
            s = r.sample + step * np.arange(r.data.shape[0], dtype=np.int64)
            if start_sample is not None or stop_sample is not None:
                keep = np.ones(s.size, bool)
                if start_sample is not None:
                    keep &= s >= start_sample
                if stop_sample is not None:
                    keep &= s < stop_sample
                s, d = s[keep], r.data[keep]
            else:
                d = r.data
            samples.append(s)
            rows.append(d)
        ncol = len(info["columns"])
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, ncol), np.dtype(info["dtype"]))
        return np.concatenate(samples), np.concatenate(rows)

    def columns(self, name: str) -> list[str]:
        return list(self.stream_info(name)["columns"])

    def check_raw(self, name: str = "raw") -> dict[str, Any]:
        """Check that the raw stream agrees with the manifest (channel count, rate, units); raise
        :class:`CorruptSessionError` naming the disagreement otherwise. Returns the stream header."""
        info = self.stream_info(name)
        where = self.path / "streams" / f"{name}.clog"
        if info.get("kind") != "array":
            raise CorruptSessionError(f"{where}: raw stream must be an array stream; header says {info.get('kind')!r}")
        ncol = len(info.get("columns", ()))
        if self.channel_map is not None and ncol != self.channel_map.n_channels:
            raise CorruptSessionError(f"{where}: {ncol} columns, but the manifest's channel map has "
                                      f"{self.channel_map.n_channels} channels; refusing to guess which is right")
        if self.channel_map is not None and list(info["columns"]) != list(self.channel_map.channel_ids):
            raise CorruptSessionError(f"{where}: column names differ from the manifest's channel ids")
        rate = info.get("rate_hz")
        if rate is not None and self.fs_hz is not None and abs(float(rate) - float(self.fs_hz)) > 1e-6:
            raise CorruptSessionError(f"{where}: sampled at {rate} Hz, but the manifest says fs_hz={self.fs_hz}")
        if rate is None and self.fs_hz is None:
            raise CorruptSessionError(f"{where}: no sampling rate in the stream header or the manifest")
        units = info.get("units", "counts")
        if units not in ("counts", "uV"):
            raise CorruptSessionError(f"{where}: units {units!r} not understood (expected 'counts' or 'uV')")
        return info

    def iter_chunks(self, name: str = "raw") -> Iterator[Any]:
        """The raw stream as :class:`~cortexlink.core.types.Chunk` objects, in the recorded chunking
        (after :meth:`check_raw`)."""
        from cortexlink.core.types import Chunk
        info = self.check_raw(name)
        rate = info.get("rate_hz") or self.fs_hz
        assert rate is not None       # check_raw refuses a stream without a rate  # nosec B101
        fs = float(rate)
        for r in self.records(name):
            yield Chunk(r.data, fs, r.sample, r.host_time_ns, r.seq)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every event (optionally only those of ``kind``) in recorded order."""
        out: list[dict[str, Any]] = []
        if "events" not in self.streams:
            return out
        for r in self.records("events"):
            if kind is None or r.data.get("kind") == kind:
                out.append(r.data)
        return out

