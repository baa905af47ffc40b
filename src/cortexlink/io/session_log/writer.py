""":class:`SessionRecorder`: writes a session folder from one writer thread, crash-safe and
without blocking the caller (see the package docstring).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import CortexlinkError, ValidationError
from cortexlink.io._common import _PSEUDONYM_CHARS, check_participant_id, sha256_file
from cortexlink.io.session_log.format import (
    FORMAT_VERSION, InsufficientDiskSpace, REC_HEADER_BYTES, RecorderOverflow, _atomic_write_json, _encode_file_header,
    _encode_record, _json_default,
)
from cortexlink.io.session_log.lock import SessionLock
from cortexlink.io.session_log.provenance import provenance
from cortexlink.io.session_log.rawcodec import DEFAULT_RESYNC_RECORDS, check_raw_codec, codec_header, make_encoder
from cortexlink.io.session_log.repair import _register, finalize

logger = logging.getLogger("cortexlink.io.session_log")

ON_FULL = ("drop", "block", "fail")
_Item = tuple[str, int, int, Any, int]      # a queued record: stream, sample, host ns, payload, rows


def estimate_bytes(n_channels: int, fs_hz: float, seconds: float, *, raw: bool = True,
                   itemsize: int = 2, bin_s: float = 0.02, n_features: int | None = None) -> int:
    """Bytes a recording will need: raw samples plus features and small streams, with 5 % margin."""
    raw_b = n_channels * fs_hz * seconds * itemsize if raw else 0.0
    nf = 2 * n_channels if n_features is None else n_features
    per_bin = nf * 4 + 3 * (REC_HEADER_BYTES + 64)
    feat_b = seconds / bin_s * per_bin
    rec_b = (seconds * 1000.0) * REC_HEADER_BYTES if raw else 0.0   # ~1 record per ms of raw
    return int(1.05 * (raw_b + feat_b + rec_b)) + (1 << 20)


@dataclasses.dataclass
class _Stream:
    name: str
    info: dict[str, Any]
    path: Path
    file: Any = None
    seq: int = 0
    n_records: int = 0
    n_rows: int = 0
    bytes: int = 0
    first_sample: int | None = None
    last_sample: int | None = None
    dropped: int = 0
    dropped_rows: int = 0
    dropped_ranges: list[list[int]] = dataclasses.field(default_factory=list)
    good_offset: int = 0
    encoder: Any = None                  # a compressed stream's codec encoder (writer thread only)


class SessionRecorder:
    """Record a session into a folder, crash-safe and without blocking the caller.

    Parameters
    ----------
    out_dir : path
        The session folder; created; must not already hold a session.
    channel_map : ChannelMap, optional
        The electrode array of the raw stream.
    fs_hz : float, optional
        Sampling rate of the source clock (sample indices of every stream refer to it).
    config : dict, optional
        Resolved configuration of the session (JSON-able).
    seeds : dict, optional
        Every random seed used.
    participant_id : str
        Pseudonymous participant code (letters, digits, ``-``, ``_``; never a name).
    expected_seconds : float, optional
        Planned length; free space is checked against it before anything is written.
    expected_bytes : int, optional
        Planned size, when the source is not known yet (overrides the estimate from
        ``expected_seconds``).
    raw : bool
        Whether raw samples will be recorded (for the free-space estimate).
    max_queue_bytes : int
        The writer queue's byte budget (default 512 MiB).
    on_full : {"drop", "block", "fail"}
        What happens to a new item when the queue is full (see the module docstring).
    block_timeout_s : float
        How long ``on_full="block"`` waits before dropping.
    fsync_interval_s : float
        Upper bound between ``fsync`` calls while data arrives.
    low_disk_bytes : int, optional
        Free space under which a ``low_disk`` alarm event is recorded (default: one minute of
        the expected data rate, at least 256 MiB).
    catalogue : path or False, optional
        SQLite catalogue to register the session in on close (None: the default catalogue
        from ``CORTEXLINK_CATALOGUE`` when that variable is set; False: none).
    raw_codec, raw_codec_resync_records : {"none", "rice", "range", "lms", "lms-fast"}, int
        Raw records as int16 rows (``"none"``, default) or one lossless codec frame each, with a
        resynchronisation point every ``raw_codec_resync_records`` (30) records; encoded on the
        writer thread, decoded transparently by readers (see :mod:`.rawcodec`). int16 raw only.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, channel_map: Any = None, fs_hz: float | None = None,
                 config: dict[str, Any] | None = None, seeds: dict[str, Any] | None = None, participant_id: str = "sim-0001",
                 session_id: str | None = None, expected_seconds: float | None = None, raw: bool = True,
                 max_queue_bytes: int = 512 << 20, on_full: str = "drop", block_timeout_s: float = 0.1,
                 fsync_interval_s: float = 0.25, low_disk_bytes: int | None = None,
                 catalogue: Any = None, expected_bytes: int | None = None, raw_codec: str = "none",
                 raw_codec_resync_records: int = DEFAULT_RESYNC_RECORDS) -> None:
        from cortexlink.core.validation import check_choice, check_positive

        self.raw_codec, self.raw_codec_resync_records = check_raw_codec(raw_codec, raw_codec_resync_records)
        self.on_full = check_choice("on_full", on_full, ON_FULL)
        self.max_queue_bytes = int(check_positive("max_queue_bytes", max_queue_bytes, integer=True))
        self.block_timeout_s = float(check_positive("block_timeout_s", block_timeout_s, allow_zero=True))
        self.fsync_interval_s = float(check_positive("fsync_interval_s", fsync_interval_s))
        check_participant_id(participant_id)
        if fs_hz is not None:
            check_positive("fs_hz", fs_hz)
        self.path = Path(out_dir)
        if (self.path / "manifest.json").exists():
            raise ValidationError(f"{self.path} already holds a session (manifest.json); choose a new folder")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "streams").mkdir(exist_ok=True)
        self.channel_map = channel_map
        self.fs_hz = None if fs_hz is None else float(fs_hz)
        self._catalogue = catalogue
        n_ch = channel_map.n_channels if channel_map is not None else 0
        rate_bps = 0.0
        if self.fs_hz and n_ch:
            rate_bps = estimate_bytes(n_ch, self.fs_hz, 1.0, raw=raw)
        self.low_disk_bytes = int(low_disk_bytes) if low_disk_bytes is not None else int(max(256 << 20, 60 * rate_bps))
        if expected_seconds is not None or expected_bytes is not None:
            if expected_bytes is not None:
                need = int(expected_bytes)
            elif expected_seconds is not None:         # one of the two is given
                need = int(rate_bps * expected_seconds) if rate_bps else estimate_bytes(0, 1.0, expected_seconds, raw=False)
            free = shutil.disk_usage(self.path).free
            if free < need:
                what = (f"{expected_seconds:g} s of {n_ch} channels at {self.fs_hz or 0:g} Hz"
                        if expected_bytes is None else "this session")
                raise InsufficientDiskSpace(f"recording {what} needs about {need / 1e9:.2f} GB; {self.path} has "
                                            f"{free / 1e9:.2f} GB free")
        self.session_id = session_id or f"{participant_id}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.participant_id = participant_id
        self.manifest: dict[str, Any] = {
            "format": "cortexlink-session", "format_version": FORMAT_VERSION, "session_id": self.session_id,
            "participant_id": participant_id, "state": "recording",
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "started_monotonic_ns": time.monotonic_ns(), "fs_hz": self.fs_hz,
            "channel_map": channel_map.to_dict() if channel_map is not None else None,
            "expected_seconds": expected_seconds, "config": config or {}, "seeds": seeds or {},
            "provenance": provenance(), "streams": {},
            "writer": {"max_queue_bytes": self.max_queue_bytes, "on_full": self.on_full,
                       "fsync_interval_s": self.fsync_interval_s, "raw_codec": self.raw_codec},
        }
        self._streams: dict[str, _Stream] = {}
        self._q: deque[_Item] = deque()
        self._q_bytes = 0
        self._cv = threading.Condition()
        self._closing = False
        self._closed = False
        self._failed: str | None = None
        self._low_disk_alarmed = False
        self._max_queue_seen = 0
        self._dropped_total = 0
        # held while recording: `recover` refuses while it is held; the kernel drops it if we die
        self._lock = SessionLock(self.path, "recording").acquire()
        try:
            _atomic_write_json(self.path / "manifest.json", self.manifest)
            self.declare("events", kind="json")
        except BaseException:
            self._lock.release()
            raise
        self._thread = threading.Thread(target=self._writer, name=f"cortexlink-recorder-{self.session_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ streams
    def declare(self, name: str, *, kind: str = "array", dtype: Any = "float32",
                columns: Sequence[str] | None = None, rate_hz: float | None = None, **info: Any) -> None:
        """Declare a stream before writing to it (``write_*`` declare their streams themselves).

        Parameters
        ----------
        kind : {"array", "json"}
        dtype : numpy dtype of an array stream's values.
        columns : names of an array stream's columns (their count fixes the row width).
        rate_hz : clock of the stream's sample indices (default: the recorder's ``fs_hz``).
        """
        if not name or not set(name) <= _PSEUDONYM_CHARS | {"."}:
            raise ValidationError(f"stream name must be letters, digits, '.', '-' or '_'; got {name!r}")
        if name in self._streams:
            raise ValidationError(f"stream {name!r} is already declared")
        if kind not in ("array", "json"):
            raise ValidationError(f"kind must be 'array' or 'json'; got {kind!r}")
        hdr = {"name": name, "kind": kind, "rate_hz": rate_hz if rate_hz is not None else self.fs_hz,
               "session_id": self.session_id, "participant_id": self.participant_id, **info}
        if kind == "array":
            if columns is None:
                raise ValidationError(f"array stream {name!r} needs its column names (columns=...)")
            hdr["dtype"] = np.dtype(dtype).str
            hdr["columns"] = [str(c) for c in columns]
        hdr = json.loads(json.dumps(hdr, default=_json_default))     # as the file and the manifest hold it
        st = _Stream(name=name, info=hdr, path=self.path / "streams" / f"{name}.clog")
        with self._cv:
            self._streams[name] = st
            # the manifest keeps a copy of the header: `recover` rebuilds a damaged header from it
            self.manifest["streams"][name] = {k: v for k, v in hdr.items() if k not in ("columns", "channel_map")} | {
                "n_columns": len(hdr.get("columns", ())), "header": hdr}
        _atomic_write_json(self.path / "manifest.json", self.manifest)

    def set_source(self, channel_map: Any, fs_hz: float, **info: Any) -> None:
        """Name the source (electrode array, sampling rate, and e.g. ``dsp=`` extractor parameters)
        when it was not known at construction; updates the manifest at once."""
        if self.channel_map is not None and channel_map is not None and channel_map != self.channel_map:
            raise ValidationError(f"{self.path}: the source's channel map differs from the one the recording "
                                  "started with")
        if self.fs_hz is not None and abs(float(fs_hz) - self.fs_hz) > 1e-9:
            raise ValidationError(f"{self.path}: fs_hz={fs_hz:g} differs from the recording's {self.fs_hz:g}")
        self.channel_map = channel_map
        self.fs_hz = float(fs_hz)
        with self._cv:
            self.manifest["fs_hz"] = self.fs_hz
            self.manifest["channel_map"] = channel_map.to_dict() if channel_map is not None else None
            self.manifest.update(info)
        _atomic_write_json(self.path / "manifest.json", self.manifest)

    def _put(self, name: str, sample: int, host_ns: int, payload: Any, n_rows: int, force: bool = False) -> bool:
        """Queue one record; returns False when it was dropped. ``force`` bypasses the byte budget
        (events: small, rare and the record of what happened, so never dropped for lack of room)."""
        nbytes = payload.nbytes if isinstance(payload, np.ndarray) else len(payload)
        with self._cv:
            if self._closed or self._closing:
                raise ValidationError(f"recorder for {self.path} is closed; start a new SessionRecorder")
            if force and self._failed is None:
                self._q.append((name, sample, host_ns, payload, n_rows))
                self._q_bytes += nbytes
                self._cv.notify_all()
                return True
            if self._failed is None and self._q_bytes + nbytes > self.max_queue_bytes and self.on_full != "drop":
                if self.on_full == "fail":
                    self._count_drop(name, sample, n_rows)
                    raise RecorderOverflow(f"recorder queue full ({self._q_bytes} bytes queued, budget "
                                           f"{self.max_queue_bytes}); stream {name!r} at sample {sample} dropped")
                deadline = time.monotonic() + self.block_timeout_s
                while self._q_bytes + nbytes > self.max_queue_bytes and self._failed is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
            if self._failed is not None or self._q_bytes + nbytes > self.max_queue_bytes:
                self._count_drop(name, sample, n_rows)
                return False
            self._q.append((name, sample, host_ns, payload, n_rows))
            self._q_bytes += nbytes
            self._max_queue_seen = max(self._max_queue_seen, self._q_bytes)
            self._cv.notify_all()
        return True

    def _count_drop(self, name: str, sample: int, n_rows: int) -> None:
        st = self._streams[name]
        st.dropped += 1
        st.dropped_rows += n_rows
        self._dropped_total += 1
        rng = st.dropped_ranges
        if rng and rng[-1][1] == sample:
            rng[-1][1] = sample + max(n_rows, 1)
        elif len(rng) < 10000:
            rng.append([sample, sample + max(n_rows, 1)])
        if st.dropped == 1 or st.dropped % 1000 == 0:
            logger.warning("recorder %s: %d item(s) of stream %r dropped (%s)", self.path, st.dropped, name,
                           self._failed or "queue full")

    def write_array(self, name: str, sample: int, rows: Any, *, host_time_ns: int = 0, columns: Sequence[str] | None = None,
                    dtype: Any = None, rate_hz: float | None = None, copy: bool = True) -> bool:
        """Append rows (n_rows x n_columns, or one row) to array stream ``name``.

        The stream is declared on first use from ``columns`` (default ``c0..cN``) and ``dtype``.
        Returns False when the item was dropped (queue full or recording stopped).
        """
        a = np.asarray(rows)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise ValidationError(f"rows for stream {name!r} must be 1-D or 2-D; got shape {a.shape}")
        st = self._streams.get(name)
        if st is None:
            cols = list(columns) if columns is not None else [f"c{i}" for i in range(a.shape[1])]
            self.declare(name, kind="array", dtype=dtype if dtype is not None else a.dtype, columns=cols,
                         rate_hz=rate_hz)
            st = self._streams[name]
        dt = np.dtype(st.info["dtype"])
        if a.shape[1] != len(st.info["columns"]):
            raise ValidationError(f"stream {name!r} has {len(st.info['columns'])} columns; got rows of {a.shape[1]}")
        if a.dtype != dt or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=dt)
        elif copy:
            a = a.copy()
        return self._put(name, int(sample), int(host_time_ns), a, a.shape[0])

    def write_raw(self, chunk: Any) -> bool:
        """Append a :class:`~cortexlink.core.types.Chunk` of raw samples to stream ``raw`` (compressed
        on the writer thread with ``raw_codec``, which needs int16 samples: ValidationError else)."""
        if "raw" not in self._streams:
            cols = (list(self.channel_map.channel_ids) if self.channel_map is not None
                    else [f"ch{i:04d}" for i in range(chunk.n_channels)])
            extra = {}
            if self.raw_codec != "none":
                if chunk.data.dtype != np.int16:
                    raise ValidationError(f"raw_codec={self.raw_codec!r} stores int16 samples; the raw chunks are "
                                          f"{chunk.data.dtype} (use raw_codec='none')")
                extra["codec"] = codec_header(self.raw_codec, self.raw_codec_resync_records)
            self.declare("raw", kind="array", dtype=chunk.data.dtype, columns=cols, rate_hz=chunk.fs_hz,
                         units="counts" if chunk.data.dtype.kind in "iu" else "uV",
                         channel_map=self.channel_map.to_dict() if self.channel_map is not None else None, **extra)
        return self.write_array("raw", chunk.start_sample, chunk.data, host_time_ns=chunk.host_time_ns)

    def write_features(self, bf: Any, name: str = "features") -> bool:
        """Append every bin of a :class:`~cortexlink.core.types.BinnedFeatures` (NaN = invalid)."""
        if bf.n_bins == 0:
            return True
        if name not in self._streams:
            self.declare(name, kind="array", dtype="float32", columns=bf.feature_names, rate_hz=bf.fs_hz,
                         bin_width_samples=int(bf.bin_width_samples))
        ok = self.write_array(name, int(bf.bin_start_samples[0]), bf.data)
        for start, n_missing in bf.gaps:
            self.event("gap", sample=start, n_missing=n_missing, stream=name)
        return ok

    def write_row(self, name: str, sample: int, values: Any, *, columns: Sequence[str] | None = None,
                  host_time_ns: int = 0) -> bool:
        """Append one row to a small array stream (cursor, decoder output, ...); a dict gives
        the column names on first use, and its values go to their columns whatever its order."""
        if isinstance(values, dict):       # named values go to their columns (the stream's order once declared)
            st = self._streams.get(name)
            columns = columns if columns is not None else st.info["columns"] if st is not None else list(values)
            values = [values[c] for c in columns]
        return self.write_array(name, sample, np.asarray(values, dtype=np.float64), columns=columns,
                                dtype="float64", host_time_ns=host_time_ns, copy=False)

    def event(self, kind: str, sample: int = -1, **fields: Any) -> bool:
        """Append an event (``kind``, source ``sample``, any JSON-able fields) to stream ``events``.

        Events bypass the queue's byte budget (they are never dropped for lack of room). A
        ``decoder`` event whose ``file`` is in the session folder records that file's SHA-256 (in
        the event and the manifest's ``decoders``), so a damaged decoder is found even after a crash."""
        if kind == "decoder" and isinstance(fields.get("file"), str):
            fields = self._note_decoder(fields)
        body = {"kind": str(kind), "sample": int(sample), "wall_utc": time.time(), **fields}
        payload = json.dumps(body, default=_json_default).encode("utf-8")
        return self._put("events", int(sample), time.monotonic_ns(), payload, 1, force=True)

    def _note_decoder(self, fields: dict[str, Any]) -> dict[str, Any]:
        rel = fields["file"]
        p = self.path / rel
        try:
            if not p.resolve().is_relative_to(self.path.resolve()) or not p.is_file():
                return fields
            meta = {"file": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size}
        except OSError:
            return fields
        with self._cv:
            self.manifest.setdefault("decoders", {})[rel] = meta
            snapshot = json.loads(json.dumps(self.manifest, default=_json_default))
        _atomic_write_json(self.path / "manifest.json", snapshot)
        return {**fields, "sha256": meta["sha256"]}

    def save_decoder(self, decoder: Any, name: str, sample: int) -> Path:
        """Save a decoder as it goes live (for replay) and record a ``decoder`` event."""
        d = self.path / "decoders"
        d.mkdir(exist_ok=True)
        path: Path = decoder.save(d / f"{name}.npz")
        self.event("decoder", sample=sample, name=name, file=f"decoders/{path.name}",
                   decoder_class=type(decoder).__name__)
        return path

    # ------------------------------------------------------------------ writer thread
    def _open(self, st: _Stream) -> None:
        st.file = open(st.path, "ab", buffering=0)
        if st.file.tell() == 0:
            st.file.write(_encode_file_header(st.info))
        st.good_offset = st.file.tell()
        if "codec" in st.info:
            st.encoder = make_encoder(st.info)

    def _writer(self) -> None:
        try:
            self._writer_loop()
        except Exception as exc:  # noqa: BLE001 - the writer must report, never die silently
            logger.exception("recorder %s: writer thread failed", self.path)
            with self._cv:
                self._failed = f"writer error: {exc!r}"
                self.manifest["stopped_reason"] = self._failed
                for name, sample, _h, _p, n_rows in self._q:
                    self._count_drop(name, sample, n_rows)
                self._q.clear()
                self._q_bytes = 0
                self._cv.notify_all()

    def _writer_loop(self) -> None:
        last_sync = time.monotonic()
        last_disk_check = 0.0
        dirty: set[str] = set()
        while True:
            with self._cv:
                while not self._q and not self._closing:
                    self._cv.wait(self.fsync_interval_s)
                    if dirty and time.monotonic() - last_sync >= self.fsync_interval_s:
                        break
                batch = list(self._q)
                self._q.clear()
                self._q_bytes = 0
                closing = self._closing
                self._cv.notify_all()
            if batch and self._failed is None:
                self._write_batch(batch, dirty)
            elif batch:
                for name, sample, _h, _p, n_rows in batch:
                    with self._cv:
                        self._count_drop(name, sample, n_rows)
            now = time.monotonic()
            if dirty and (now - last_sync >= self.fsync_interval_s or closing):
                self._sync(dirty)
                last_sync = now
            if now - last_disk_check > 1.0 and self._failed is None:
                last_disk_check = now
                self._check_disk()
            if closing:
                with self._cv:
                    if not self._q:
                        return

    def _write_batch(self, batch: list[_Item], dirty: set[str]) -> None:
        by_stream: dict[str, list[_Item]] = {}
        for item in batch:
            by_stream.setdefault(item[0], []).append(item)
        for name, all_items in by_stream.items():
            st = self._streams[name]
            for i in range(0, len(all_items), 64):     # 64 records a write: encoding never holds back much
                items, seq0 = all_items[i:i + 64], st.seq
                try:
                    if st.file is None:
                        self._open(st)
                    parts: list[bytes | memoryview] = []
                    sizes: list[int] = []
                    for _n, sample, host_ns, payload, _r in items:
                        buf = (st.encoder.encode(payload) if st.encoder is not None else
                               payload.data.cast("B") if isinstance(payload, np.ndarray) else payload)
                        sizes.append(len(buf))
                        parts.append(_encode_record(st.seq, sample, host_ns, buf))
                        parts.append(buf)
                        st.seq += 1
                    self._write_all(st, parts)
                except OSError as exc:
                    st.seq = seq0
                    self._fail_on_oserror(exc, st, all_items[i:])
                    return
                for (_n, sample, _h, _p, n_rows), nbytes in zip(items, sizes):
                    st.n_records += 1
                    st.n_rows += n_rows
                    st.bytes += nbytes + REC_HEADER_BYTES
                    if st.first_sample is None:
                        st.first_sample = sample
                    st.last_sample = sample
                dirty.add(name)

    def _write_all(self, st: _Stream, parts: list[bytes | memoryview]) -> None:
        f = st.file
        try:
            n = os.writev(f.fileno(), parts) if len(parts) <= 1024 else None
        except OSError:
            self._truncate_to_good(st)
            raise
        total = sum(len(p) for p in parts)
        if n is None:
            for p in parts:
                f.write(p)
            n = total
        if n != total:                          # short write: finish it byte by byte
            done = n
            flat = b"".join(bytes(p) for p in parts)
            try:
                while done < total:
                    done += f.write(flat[done:])
            except OSError:
                self._truncate_to_good(st)
                raise
        st.good_offset += total

    def _truncate_to_good(self, st: _Stream) -> None:
        try:
            st.file.truncate(st.good_offset)
            os.lseek(st.file.fileno(), st.good_offset, os.SEEK_SET)
        except OSError:                          # nothing more can be done here; recover() will cut it
            pass

    def _fail_on_oserror(self, exc: OSError, st: _Stream, items: list[_Item]) -> None:
        reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"write error: {exc}"
        logger.error("recorder %s: %s while writing stream %r; recording stopped, everything before it "
                     "is intact", self.path, reason, st.name)
        with self._cv:
            self._failed = reason
            for _n, sample, _h, _p, n_rows in items:
                self._count_drop(st.name, sample, n_rows)
        self.manifest["stopped_reason"] = reason

    def _sync(self, dirty: set[str]) -> None:
        for name in list(dirty):
            st = self._streams[name]
            if st.file is not None:
                try:
                    os.fsync(st.file.fileno())
                except OSError as exc:
                    logger.warning("recorder %s: fsync of %s failed: %s", self.path, st.path, exc)
        dirty.clear()

    def _check_disk(self) -> None:
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            return
        if free < self.low_disk_bytes and not self._low_disk_alarmed:
            self._low_disk_alarmed = True
            logger.warning("recorder %s: low disk space, %.2f GB free", self.path, free / 1e9)
            self.event("low_disk", free_bytes=int(free), threshold_bytes=self.low_disk_bytes)
        elif free > 1.5 * self.low_disk_bytes:
            self._low_disk_alarmed = False

    # ------------------------------------------------------------------ status / close
    @property
    def stopped_reason(self) -> str | None:
        """Why recording stopped early ("disk full", a write error), or None."""
        return self._failed

    def stats(self) -> dict[str, Any]:
        """Counters per stream: records, rows, bytes, dropped; queue bytes now and at most."""
        with self._cv:
            return {"queue_bytes": self._q_bytes, "max_queue_bytes_seen": self._max_queue_seen,
                    "dropped_total": self._dropped_total, "stopped_reason": self._failed,
                    "streams": {n: {"records": s.n_records, "rows": s.n_rows, "bytes": s.bytes,
                                    "dropped": s.dropped, "dropped_rows": s.dropped_rows}
                                for n, s in self._streams.items()}}

    def close(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Drain the queue, fsync, write checksums and the final manifest; returns it."""
        if self._closed:
            return self.manifest
        for name, st in self._streams.items():
            if st.dropped:
                self.event("dropped", stream=name, items=st.dropped, rows=st.dropped_rows,
                           ranges=st.dropped_ranges[:1000])
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise CortexlinkError(f"recorder {self.path}: writer did not finish within {timeout_s:g} s")
        with self._cv:
            self._closed = True
        for st in self._streams.values():
            if st.file is not None:
                try:
                    os.fsync(st.file.fileno())
                except OSError:
                    pass
                st.file.close()
        extra = {"stopped_reason": self._failed,
                 "dropped": {n: {"items": s.dropped, "rows": s.dropped_rows, "ranges": s.dropped_ranges[:1000]}
                             for n, s in self._streams.items() if s.dropped},
                 "max_queue_bytes_seen": self._max_queue_seen}
        try:
            summary = finalize(self.path, state="stopped" if self._failed else "closed", extra=extra)
        except OSError as exc:
            # e.g. the disk is full: the streams are intact, only the checksums could not be written
            logger.error("recorder %s: could not write the final manifest (%s); the streams are intact - free "
                         "some space and run `cortexlink recover %s`", self.path, exc, self.path)
            summary = {**self.manifest, **extra, "state": "stopped", "finalize_error": str(exc)}
            self.manifest = summary
            return summary
        finally:
            self._lock.release()
        self.manifest = summary
        _register(self.path, self._catalogue)
        return summary

    def __enter__(self) -> "SessionRecorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

