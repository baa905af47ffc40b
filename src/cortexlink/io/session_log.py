"""Crash-safe, append-only session log: everything a session saw and did, in one folder.

A session folder holds::

    manifest.json            what was recorded: provenance (package version, git hash, python,
                             host), seeds, resolved configuration, channel map, sampling rate,
                             the pseudonymous participant id, the streams and, once closed or
                             recovered, per-stream counts, dropped items and SHA-256 checksums
    streams/<name>.clog      one append-only file per stream (raw, features, cursor, decoder,
                             intent, events, ...)
    decoders/*.npz           decoders as they were when they went live (for replay)

Stream file format (little-endian), designed so that a crash can only damage the tail:

* file header: ``b"CLOG"``, ``uint16`` format version, ``uint32`` header length, then that many
  bytes of UTF-8 JSON (stream name, ``kind`` = ``"array"`` or ``"json"``, ``dtype``,
  ``columns``, ``rate_hz`` of the sample clock, ...);
* then records, each a 36-byte header ``b"REC0"``, ``uint32`` payload length, ``int64`` seq,
  ``int64`` sample (source sample index of the first row), ``int64`` host monotonic time (ns),
  ``uint32`` CRC-32 of the 32 preceding header bytes and the payload; then the payload: the
  rows of an array stream as raw bytes (C order, ``n_rows x n_columns``) or one UTF-8 JSON
  object.

Writing never blocks the caller: :class:`SessionRecorder` puts items on a bounded queue (a byte
budget) drained by one writer thread, which appends, flushes each batch to the operating system
at once and ``fsync``\\ s at least every ``fsync_interval_s``. When the queue is full the
``on_full`` policy applies (``"drop"``: the new item is dropped; ``"block"``: wait up to
``block_timeout_s`` then drop; ``"fail"``: raise :class:`RecorderOverflow`); every dropped item
is counted per stream and written to the manifest and the events stream with its sample range.

A process killed at any moment (even ``SIGKILL``) leaves every record that reached the writer's
``write`` call intact; at worst a torn last record, which :func:`recover` cuts off. Free space
is checked against the expected size before recording; a low-disk alarm event is raised while
recording; a full disk stops the recording cleanly with everything written before it intact.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import platform
import shutil
import struct
import subprocess
import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cortexlink.core.errors import CortexlinkError, ValidationError
from cortexlink.core.jsonutil import json_default

logger = logging.getLogger(__name__)

__all__ = ["SessionRecorder", "SessionReader", "RecorderTap", "Record", "recover", "verify",
           "RecorderOverflow", "InsufficientDiskSpace", "CorruptSessionError", "estimate_bytes",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
FILE_MAGIC = b"CLOG"
REC_MAGIC = b"REC0"
_FILE_HDR = struct.Struct("<4sHI")          # magic, version, json length
_REC_HDR = struct.Struct("<4sIqqq")         # magic, payload length, seq, sample, host_time_ns
_CRC = struct.Struct("<I")
REC_HEADER_BYTES = _REC_HDR.size + _CRC.size  # 36
MAX_PAYLOAD = 1 << 30
ON_FULL = ("drop", "block", "fail")
_PSEUDONYM_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class RecorderOverflow(CortexlinkError):
    """The recorder's queue was full and its policy is ``on_full="fail"``."""


class InsufficientDiskSpace(CortexlinkError, OSError):
    """Not enough free space for the planned recording."""


class CorruptSessionError(ValidationError):
    """A session folder or stream file is damaged or is not a cortexlink session."""


# ---------------------------------------------------------------------------------- helpers
def _git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    h = out.stdout.strip()
    return h if out.returncode == 0 and len(h) == 40 else None


def provenance() -> dict:
    """Package version, git hash, Python, platform and host of the recording process."""
    from cortexlink import __version__
    return {"cortexlink_version": __version__, "git_hash": _git_hash(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(), "host": platform.node(),
            "pid": os.getpid()}


def check_participant_id(pid: str) -> str:
    """A pseudonymous participant id: 1–32 letters, digits, '-' or '_' (no names, no spaces)."""
    if not isinstance(pid, str) or not 1 <= len(pid) <= 32 or not set(pid) <= _PSEUDONYM_CHARS:
        raise ValidationError("participant_id must be a pseudonymous code of 1-32 letters, digits, '-' or '_' "
                              f"(never a name); got {pid!r}")
    return pid


def estimate_bytes(n_channels: int, fs_hz: float, seconds: float, *, raw: bool = True,
                   itemsize: int = 2, bin_s: float = 0.02, n_features: int | None = None) -> int:
    """Bytes a recording will need: raw samples plus features and small streams, with 5 % margin."""
    raw_b = n_channels * fs_hz * seconds * itemsize if raw else 0.0
    nf = 2 * n_channels if n_features is None else n_features
    per_bin = nf * 4 + 3 * (REC_HEADER_BYTES + 64)
    feat_b = seconds / bin_s * per_bin
    rec_b = (seconds * 1000.0) * REC_HEADER_BYTES if raw else 0.0   # ~1 record per ms of raw
    return int(1.05 * (raw_b + feat_b + rec_b)) + (1 << 20)


def _atomic_write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _json_default(o: Any) -> Any:
    try:
        return json_default(o)
    except TypeError:        # a log must never fail on a value: keep its repr
        return repr(o)


def sha256_file(path: Path, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _encode_file_header(info: dict) -> bytes:
    js = json.dumps(info, default=_json_default).encode("utf-8")
    return _FILE_HDR.pack(FILE_MAGIC, FORMAT_VERSION, len(js)) + js


def _encode_record(seq: int, sample: int, host_ns: int, payload: bytes | memoryview) -> bytes:
    hdr = _REC_HDR.pack(REC_MAGIC, len(payload), seq, sample, host_ns)
    crc = zlib.crc32(payload, zlib.crc32(hdr))
    return hdr + _CRC.pack(crc)


# ---------------------------------------------------------------------------------- writer
@dataclasses.dataclass
class _Stream:
    name: str
    info: dict
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
    dropped_ranges: list = dataclasses.field(default_factory=list)
    good_offset: int = 0


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
    """

    def __init__(self, out_dir: str | os.PathLike, *, channel_map: Any = None, fs_hz: float | None = None,
                 config: dict | None = None, seeds: dict | None = None, participant_id: str = "sim-0001",
                 session_id: str | None = None, expected_seconds: float | None = None, raw: bool = True,
                 max_queue_bytes: int = 512 << 20, on_full: str = "drop", block_timeout_s: float = 0.1,
                 fsync_interval_s: float = 0.25, low_disk_bytes: int | None = None,
                 catalogue: Any = None, expected_bytes: int | None = None) -> None:
        from cortexlink.core.validation import check_choice, check_positive

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
            else:
                need = int(rate_bps * expected_seconds) if rate_bps else estimate_bytes(0, 1.0, expected_seconds, raw=False)
            free = shutil.disk_usage(self.path).free
            if free < need:
                what = (f"{expected_seconds:g} s of {n_ch} channels at {self.fs_hz or 0:g} Hz"
                        if expected_bytes is None else "this session")
                raise InsufficientDiskSpace(f"recording {what} needs about {need / 1e9:.2f} GB; {self.path} has "
                                            f"{free / 1e9:.2f} GB free")
        self.session_id = session_id or f"{participant_id}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self.manifest: dict = {
            "format": "cortexlink-session", "format_version": FORMAT_VERSION, "session_id": self.session_id,
            "participant_id": participant_id, "state": "recording",
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "started_monotonic_ns": time.monotonic_ns(), "fs_hz": self.fs_hz,
            "channel_map": channel_map.to_dict() if channel_map is not None else None,
            "expected_seconds": expected_seconds, "config": config or {}, "seeds": seeds or {},
            "provenance": provenance(), "streams": {},
            "writer": {"max_queue_bytes": self.max_queue_bytes, "on_full": self.on_full,
                       "fsync_interval_s": self.fsync_interval_s},
        }
        _atomic_write_json(self.path / "manifest.json", self.manifest)
        self._streams: dict[str, _Stream] = {}
        self._q: deque = deque()
        self._q_bytes = 0
        self._cv = threading.Condition()
        self._closing = False
        self._closed = False
        self._failed: str | None = None
        self._low_disk_alarmed = False
        self._max_queue_seen = 0
        self._dropped_total = 0
        self.declare("events", kind="json")
        self._thread = threading.Thread(target=self._writer, name=f"cortexlink-recorder-{self.session_id}",
                                        daemon=True)
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
               "session_id": self.session_id, **info}
        if kind == "array":
            if columns is None:
                raise ValidationError(f"array stream {name!r} needs its column names (columns=...)")
            hdr["dtype"] = np.dtype(dtype).str
            hdr["columns"] = [str(c) for c in columns]
        st = _Stream(name=name, info=hdr, path=self.path / "streams" / f"{name}.clog")
        with self._cv:
            self._streams[name] = st
            self.manifest["streams"][name] = {k: v for k, v in hdr.items() if k != "columns"} | {
                "n_columns": len(hdr.get("columns", ()))}
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
        """Append a :class:`~cortexlink.core.types.Chunk` of raw samples to stream ``raw``."""
        if "raw" not in self._streams:
            cols = (list(self.channel_map.channel_ids) if self.channel_map is not None
                    else [f"ch{i:04d}" for i in range(chunk.n_channels)])
            self.declare("raw", kind="array", dtype=chunk.data.dtype, columns=cols, rate_hz=chunk.fs_hz,
                         units="counts" if chunk.data.dtype.kind in "iu" else "uV")
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
        the column names on first use."""
        if isinstance(values, dict):
            if columns is None:
                columns = list(values)
            values = [values[c] for c in columns]
        return self.write_array(name, sample, np.asarray(values, dtype=np.float64), columns=columns,
                                dtype="float64", host_time_ns=host_time_ns, copy=False)

    def event(self, kind: str, sample: int = -1, **fields: Any) -> bool:
        """Append an event (``kind``, source ``sample``, any JSON-able fields) to stream ``events``.

        Events bypass the queue's byte budget (they are never dropped for lack of room)."""
        body = {"kind": str(kind), "sample": int(sample), "wall_utc": time.time(), **fields}
        payload = json.dumps(body, default=_json_default).encode("utf-8")
        return self._put("events", int(sample), time.monotonic_ns(), payload, 1, force=True)

    def save_decoder(self, decoder: Any, name: str, sample: int) -> Path:
        """Save a decoder as it goes live (for replay) and record a ``decoder`` event."""
        d = self.path / "decoders"
        d.mkdir(exist_ok=True)
        path = decoder.save(d / f"{name}.npz")
        self.event("decoder", sample=sample, name=name, file=f"decoders/{path.name}",
                   decoder_class=type(decoder).__name__)
        return path

    # ------------------------------------------------------------------ writer thread
    def _open(self, st: _Stream) -> None:
        st.file = open(st.path, "ab", buffering=0)
        if st.file.tell() == 0:
            st.file.write(_encode_file_header(st.info))
        st.good_offset = st.file.tell()

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
        dirty: set = set()
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

    def _write_batch(self, batch: list, dirty: set) -> None:
        by_stream: dict[str, list] = {}
        for item in batch:
            by_stream.setdefault(item[0], []).append(item)
        for name, items in by_stream.items():
            st = self._streams[name]
            seq0 = st.seq
            try:
                if st.file is None:
                    self._open(st)
                parts: list = []
                for _n, sample, host_ns, payload, _r in items:
                    buf = payload.data.cast("B") if isinstance(payload, np.ndarray) else payload
                    parts.append(_encode_record(st.seq, sample, host_ns, buf))
                    parts.append(buf)
                    st.seq += 1
                self._write_all(st, parts)
            except OSError as exc:
                st.seq = seq0
                self._fail_on_oserror(exc, st, items)
                return
            for _n, sample, _h, payload, n_rows in items:
                st.n_records += 1
                st.n_rows += n_rows
                st.bytes += (payload.nbytes if isinstance(payload, np.ndarray) else len(payload)) + REC_HEADER_BYTES
                if st.first_sample is None:
                    st.first_sample = sample
                st.last_sample = sample
            dirty.add(name)

    def _write_all(self, st: _Stream, parts: list) -> None:
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

    def _fail_on_oserror(self, exc: OSError, st: _Stream, items: list) -> None:
        reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"write error: {exc}"
        logger.error("recorder %s: %s while writing stream %r; recording stopped, everything before it "
                     "is intact", self.path, reason, st.name)
        with self._cv:
            self._failed = reason
            for _n, sample, _h, _p, n_rows in items:
                self._count_drop(st.name, sample, n_rows)
        self.manifest["stopped_reason"] = reason

    def _sync(self, dirty: set) -> None:
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

    def stats(self) -> dict:
        """Counters per stream: records, rows, bytes, dropped; queue bytes now and at most."""
        with self._cv:
            return {"queue_bytes": self._q_bytes, "max_queue_bytes_seen": self._max_queue_seen,
                    "dropped_total": self._dropped_total, "stopped_reason": self._failed,
                    "streams": {n: {"records": s.n_records, "rows": s.n_rows, "bytes": s.bytes,
                                    "dropped": s.dropped, "dropped_rows": s.dropped_rows}
                                for n, s in self._streams.items()}}

    def close(self, timeout_s: float = 60.0) -> dict:
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
        self.manifest = summary
        _register(self.path, self._catalogue)
        return summary

    def __enter__(self) -> "SessionRecorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _register(path: Path, catalogue: Any) -> None:
    if catalogue is False:
        return
    if catalogue is None:
        catalogue = os.environ.get("CORTEXLINK_CATALOGUE")
        if not catalogue:
            return
    from cortexlink.io.catalogue import Catalogue
    with Catalogue(catalogue) as cat:
        cat.register(path)


# ---------------------------------------------------------------------------------- reading
@dataclasses.dataclass(frozen=True)
class Record:
    """One record of a stream: ``seq``, ``sample`` (first row), ``host_time_ns``, ``data``
    (ndarray rows or a dict), ``offset`` in the file."""

    seq: int
    sample: int
    host_time_ns: int
    data: Any
    offset: int


def read_file_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a stream file and the offset of its first record."""
    with open(path, "rb") as f:
        head = f.read(_FILE_HDR.size)
        if len(head) < _FILE_HDR.size:
            raise CorruptSessionError(f"{path}: file is {len(head)} bytes, shorter than a stream header; "
                                      "truncated before anything was recorded")
        magic, version, n = _FILE_HDR.unpack(head)
        if magic != FILE_MAGIC:
            raise CorruptSessionError(f"{path}: not a cortexlink stream file (magic {magic!r}, expected {FILE_MAGIC!r})")
        if version > FORMAT_VERSION:
            raise CorruptSessionError(f"{path}: stream format version {version} is newer than this cortexlink "
                                      f"reads ({FORMAT_VERSION}); upgrade cortexlink")
        body = f.read(n)
        if len(body) < n:
            raise CorruptSessionError(f"{path}: stream header truncated ({len(body)} of {n} bytes)")
        try:
            info = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptSessionError(f"{path}: stream header is not valid JSON ({exc})") from None
    return info, _FILE_HDR.size + n


def _decode(info: dict, payload: bytes) -> Any:
    if info["kind"] == "json":
        return json.loads(payload.decode("utf-8"))
    dt = np.dtype(info["dtype"])
    ncol = len(info["columns"])
    row_bytes = dt.itemsize * ncol
    if len(payload) % row_bytes:
        raise ValueError(f"payload of {len(payload)} bytes is not a whole number of {ncol}-column rows")
    return np.frombuffer(payload, dtype=dt).reshape(-1, ncol)


def scan_stream(path: Path, *, salvage: bool = False) -> Iterator[tuple[str, Any]]:
    """Walk a stream file record by record.

    Yields ``("record", Record)`` for each intact record and, where the file is damaged,
    ``("damage", {"offset", "length", "reason"})``. Without ``salvage`` the first damage raises
    :class:`CorruptSessionError` naming the file, the offset and what is wrong; with it, the scan
    resynchronises on the next intact record (so every intact part is kept).
    """
    info, off = read_file_header(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(off)
        pos = off
        while pos < size:
            f.seek(pos)
            hdr = f.read(REC_HEADER_BYTES)
            reason = None
            if len(hdr) < REC_HEADER_BYTES:
                reason = f"torn record header ({len(hdr)} of {REC_HEADER_BYTES} bytes) at the end"
            else:
                magic, n, seq, sample, host_ns = _REC_HDR.unpack_from(hdr)
                (crc,) = _CRC.unpack_from(hdr, _REC_HDR.size)
                if magic != REC_MAGIC:
                    reason = f"bad record marker {magic!r}"
                elif n > MAX_PAYLOAD:
                    reason = f"implausible record length {n}"
                else:
                    payload = f.read(n)
                    if len(payload) < n:
                        reason = f"torn record ({len(payload)} of {n} payload bytes) at the end"
                    elif zlib.crc32(payload, zlib.crc32(hdr[:_REC_HDR.size])) != crc:
                        reason = "checksum mismatch"
                    else:
                        try:
                            data = _decode(info, payload)
                        except (ValueError, UnicodeDecodeError) as exc:
                            reason = f"payload does not decode ({exc})"
                        else:
                            yield "record", Record(seq, sample, host_ns, data, pos)
                            pos += REC_HEADER_BYTES + n
                            continue
            if not salvage:
                raise CorruptSessionError(f"{path}: damaged at byte {pos}: {reason}; run `cortexlink recover "
                                          f"{path.parent.parent}` to salvage every intact record")
            nxt = _find_next(f, pos + 1, size)
            yield "damage", {"offset": pos, "length": (nxt if nxt is not None else size) - pos, "reason": reason}
            if nxt is None:
                return
            pos = nxt


def _find_next(f: Any, start: int, size: int, block: int = 1 << 20) -> int | None:
    """Offset of the next record marker whose header checks out, or None."""
    pos = start
    while pos < size:
        f.seek(pos)
        buf = f.read(block + 3)
        i = buf.find(REC_MAGIC)
        while i >= 0:
            cand = pos + i
            f.seek(cand)
            hdr = f.read(REC_HEADER_BYTES)
            if len(hdr) == REC_HEADER_BYTES:
                _m, n, _s, _sa, _h = _REC_HDR.unpack_from(hdr)
                (crc,) = _CRC.unpack_from(hdr, _REC_HDR.size)
                if n <= MAX_PAYLOAD and cand + REC_HEADER_BYTES + n <= size:
                    payload = f.read(n)
                    if zlib.crc32(payload, zlib.crc32(hdr[:_REC_HDR.size])) == crc:
                        return cand
            i = buf.find(REC_MAGIC, i + 1)
        pos += block
    return None


class SessionReader:
    """Read a session folder written by :class:`SessionRecorder`.

    Parameters
    ----------
    path : path
        The session folder.
    salvage : bool
        Skip damaged records (with a warning) instead of raising :class:`CorruptSessionError`.
    """

    def __init__(self, path: str | os.PathLike, *, salvage: bool = False) -> None:
        self.path = Path(path)
        self.salvage = salvage
        mpath = self.path / "manifest.json"
        if not self.path.is_dir():
            raise CorruptSessionError(f"{self.path}: not a folder; a cortexlink session is a folder with manifest.json")
        if not mpath.is_file():
            raise CorruptSessionError(f"{self.path}: no manifest.json; not a cortexlink session folder")
        try:
            self.manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptSessionError(f"{mpath}: not valid JSON ({exc}); run `cortexlink recover {self.path}`") from None
        if self.manifest.get("format") != "cortexlink-session":
            raise CorruptSessionError(f"{mpath}: not a cortexlink session manifest (format "
                                      f"{self.manifest.get('format')!r})")
        self.fs_hz = self.manifest.get("fs_hz")
        cm = self.manifest.get("channel_map")
        from cortexlink.core.types import ChannelMap
        self.channel_map = ChannelMap.from_dict(cm) if cm else None
        self._info: dict[str, dict] = {}

    @property
    def state(self) -> str:
        return self.manifest.get("state", "unknown")

    @property
    def streams(self) -> list[str]:
        """Names of the streams with a file in the folder."""
        return sorted(p.stem for p in (self.path / "streams").glob("*.clog"))

    def stream_info(self, name: str) -> dict:
        """The header of stream ``name`` (kind, dtype, columns, rate_hz, ...)."""
        if name not in self._info:
            p = self._stream_path(name)
            self._info[name] = read_file_header(p)[0]
        return self._info[name]

    def _stream_path(self, name: str) -> Path:
        p = self.path / "streams" / f"{name}.clog"
        if not p.is_file():
            raise ValidationError(f"{self.path}: no stream {name!r}; streams: {self.streams}")
        return p

    def records(self, name: str) -> Iterator[Record]:
        """Intact records of stream ``name`` in file order."""
        p = self._stream_path(name)
        for kind, item in scan_stream(p, salvage=self.salvage):
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
        for r in self.records(name):
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

    def check_raw(self, name: str = "raw") -> dict:
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
        fs = float(info.get("rate_hz") or self.fs_hz)
        for r in self.records(name):
            yield Chunk(r.data, fs, r.sample, r.host_time_ns, r.seq)

    def events(self, kind: str | None = None) -> list[dict]:
        """Every event (optionally only those of ``kind``) in recorded order."""
        out = []
        if "events" not in self.streams:
            return out
        for r in self.records("events"):
            if kind is None or r.data.get("kind") == kind:
                out.append(r.data)
        return out


# ---------------------------------------------------------------------------------- finalize / recover / verify
def _stream_summary(path: Path) -> dict:
    info, _ = read_file_header(path)
    n_rec = n_rows = 0
    first = last = None
    damage = []
    for kind, item in scan_stream(path, salvage=True):
        if kind == "record":
            n_rec += 1
            rows = item.data.shape[0] if isinstance(item.data, np.ndarray) else 1
            n_rows += rows
            if first is None:
                first = item.sample
            last = item.sample
        else:
            damage.append(item)
    return {"kind": info["kind"], "records": n_rec, "rows": n_rows, "first_sample": first, "last_sample": last,
            "bytes": path.stat().st_size, "sha256": sha256_file(path), "damage": damage,
            "dtype": info.get("dtype"), "n_columns": len(info.get("columns", ())), "rate_hz": info.get("rate_hz")}


def finalize(path: str | os.PathLike, *, state: str, extra: dict | None = None) -> dict:
    """Scan every stream, write per-stream counts and SHA-256 checksums into the manifest."""
    path = Path(path)
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    streams = {}
    for p in sorted((path / "streams").glob("*.clog")):
        s = _stream_summary(p)
        prev = manifest.get("streams", {}).get(p.stem, {})
        streams[p.stem] = {**prev, **{k: v for k, v in s.items() if k != "damage"}}
    files = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name != "manifest.json" and not p.name.endswith(".tmp") and "corrupt" not in p.parts:
            files[str(p.relative_to(path))] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    manifest.update({"state": state, "streams": streams, "files": files,
                     "closed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if extra:
        manifest.update({k: v for k, v in extra.items() if v is not None})
    _atomic_write_json(mpath, manifest)
    return manifest


def recover(path: str | os.PathLike, *, catalogue: Any = None) -> dict:
    """Make a session folder consistent after a crash.

    Every stream file is scanned; a torn tail is cut off and damaged records in the middle are
    moved aside (to ``corrupt/``) while every intact record is kept, in order. Then checksums
    and counts are written to the manifest (state ``"recovered"``). A folder that was closed
    cleanly is left as it is (its checksums are verified instead).

    Returns
    -------
    dict
        ``{"state", "streams": {name: {"records", "rows", "cut_bytes", "damaged_regions"}}, "manifest"}``
    """
    path = Path(path)
    mpath = path / "manifest.json"
    if not path.is_dir():
        raise CorruptSessionError(f"{path}: not a folder")
    if not mpath.exists():
        tmp = mpath.with_name("manifest.json.tmp")
        if tmp.exists():
            os.replace(tmp, mpath)
        else:
            raise CorruptSessionError(f"{path}: no manifest.json; not a cortexlink session folder (nothing to recover)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptSessionError(f"{mpath}: not valid JSON ({exc}); the manifest is written atomically, so this "
                                  "file was damaged after the fact") from None
    if manifest.get("state") in ("closed", "stopped", "recovered") and not verify(path)["problems"]:
        return {"state": manifest["state"], "streams": {}, "manifest": manifest, "changed": False}
    report: dict = {}
    for p in sorted((path / "streams").glob("*.clog")):
        try:
            read_file_header(p)
        except CorruptSessionError as exc:
            dest = path / "corrupt"
            dest.mkdir(exist_ok=True)
            os.replace(p, dest / p.name)
            report[p.stem] = {"records": 0, "rows": 0, "cut_bytes": 0, "damaged_regions": 1,
                              "moved_aside": str(exc)}
            continue
        report[p.stem] = _repair_stream(p, path)
    manifest = finalize(path, state="recovered", extra={"recovered_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                       "recovery": report})
    _register(path, catalogue)
    return {"state": "recovered", "streams": report, "manifest": manifest, "changed": True}


def _repair_stream(p: Path, session: Path) -> dict:
    info, first_off = read_file_header(p)
    good: list[tuple[int, int]] = []      # (offset, length) of intact records
    damage: list[dict] = []
    rows = 0
    for kind, item in scan_stream(p, salvage=True):
        if kind == "record":
            rec_len = REC_HEADER_BYTES + (item.data.nbytes if isinstance(item.data, np.ndarray)
                                          else len(json.dumps(item.data)))
            good.append((item.offset, rec_len))
            rows += item.data.shape[0] if isinstance(item.data, np.ndarray) else 1
        else:
            damage.append(item)
    size = p.stat().st_size
    if not damage:
        return {"records": len(good), "rows": rows, "cut_bytes": 0, "damaged_regions": 0}
    tail_only = len(damage) == 1 and damage[0]["offset"] + damage[0]["length"] >= size
    dest = session / "corrupt"
    dest.mkdir(exist_ok=True)
    with open(p, "rb") as f:
        for d in damage:
            f.seek(d["offset"])
            (dest / f"{p.stem}.{d['offset']}.bin").write_bytes(f.read(min(d["length"], 64 << 20)))
    if tail_only:
        with open(p, "r+b") as f:
            f.truncate(damage[0]["offset"])
            os.fsync(f.fileno())
    else:
        tmp = p.with_suffix(".clog.repair")
        with open(p, "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read(first_off))
            for off, _n in good:
                src.seek(off)
                hdr = src.read(REC_HEADER_BYTES)
                n = _REC_HDR.unpack_from(hdr)[1]
                dst.write(hdr)
                dst.write(src.read(n))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, p)
    cut = sum(min(d["length"], size - d["offset"]) for d in damage)
    logger.warning("%s: removed %d damaged region(s), %d bytes (kept in %s); %d intact records kept",
                   p, len(damage), cut, dest, len(good))
    return {"records": len(good), "rows": rows, "cut_bytes": cut, "damaged_regions": len(damage)}


def verify(path: str | os.PathLike) -> dict:
    """Re-check a session: every file's SHA-256 against the manifest and every record's CRC.

    Returns ``{"ok": bool, "problems": [str, ...], "files": n}``; problems name the file.
    """
    path = Path(path)
    mpath = path / "manifest.json"
    problems: list[str] = []
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return {"ok": False, "problems": [f"{mpath}: unreadable ({exc})"], "files": 0}
    files = manifest.get("files")
    if files is None:
        problems.append(f"{mpath}: no checksums (state {manifest.get('state')!r}); the session was not closed "
                        "- run `cortexlink recover`")
        files = {}
    for rel, meta in files.items():
        p = path / rel
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        if p.stat().st_size != meta["bytes"]:
            problems.append(f"{p}: size {p.stat().st_size} bytes, manifest says {meta['bytes']}")
            continue
        if sha256_file(p) != meta["sha256"]:
            problems.append(f"{p}: SHA-256 does not match the manifest")
    for p in sorted((path / "streams").glob("*.clog")):
        rel = str(p.relative_to(path))
        if files and rel not in files:
            problems.append(f"{p}: not listed in the manifest")
        try:
            for kind, item in scan_stream(p, salvage=True):
                if kind == "damage":
                    problems.append(f"{p}: damaged at byte {item['offset']} ({item['reason']})")
        except CorruptSessionError as exc:
            problems.append(str(exc))
    return {"ok": not problems, "problems": problems, "files": len(files)}


# ---------------------------------------------------------------------------------- closed-loop tap
class RecorderTap:
    """Record a :class:`~cortexlink.tasks.loop.ClosedLoop`: append it to ``loop.taps``.

    Streams: ``raw`` (every chunk the implant gave, warm-up included), ``features`` (every
    feature bin the extractor made), ``cursor`` (x, y, vx, vy, clicked per loop bin),
    ``decoder`` (vx, vy, click_proba in closed-loop bins), ``intent`` (the simulated
    participant's intended vx, vy and click), and events: block start/end with metrics, task
    events, decoders as they go live (saved under ``decoders/``).
    """

    def __init__(self, recorder: SessionRecorder, *, raw: bool = True) -> None:
        self.rec = recorder
        self.raw = raw
        self._decoders_seen: dict[int, tuple[str, str]] = {}
        self._source_set = False

    def _sample(self, loop: Any) -> int:
        imp = getattr(loop, "implant", None)
        if imp is not None and hasattr(imp, "sample_index"):
            return int(imp.sample_index)
        fs = self.rec.fs_hz or 30000.0
        return int(round(loop.t_s * fs))

    def samples(self, loop: Any, chunk: Any, features: Any) -> None:
        if not self._source_set:
            self._source_set = True
            params = {k: v for k, v in loop.fx.get_params().items() if k != "channel_map"}
            self.rec.set_source(loop.implant.channel_map, float(chunk.fs_hz), dsp=params,
                                loop={"dt_s": loop.dt_s, "feature_kinds": list(loop.feature_kinds),
                                      "samples_per_bin": loop.samples_per_bin})
        if self.raw:
            self.rec.write_raw(chunk)
        self.rec.write_features(features)

    def block_started(self, loop: Any, run: Any) -> None:
        s = self._sample(loop)
        files = []
        for dec in (run.decoder, run.click_decoder):
            if dec is None or not hasattr(dec, "save"):
                files.append(None)
                continue
            fp = _fingerprint(dec)
            seen = self._decoders_seen.get(id(dec))
            if seen is None or seen[0] != fp:
                name = f"{type(dec).__name__}-{s}"
                path = self.rec.save_decoder(dec, name, s)
                seen = (fp, f"decoders/{path.name}")
                self._decoders_seen[id(dec)] = seen
            files.append(seen[1])
        cols = None if loop.feature_columns_ is None else [int(c) for c in loop.feature_columns_]
        self.rec.event("block_start", sample=s, name=run.name, mode=run.mode, task=getattr(run.task, "name", "task"),
                       feature_columns=cols, decoder_file=files[0], click_decoder_file=files[1])

    def bin_done(self, loop: Any, run: Any, out: dict) -> None:
        s = self._sample(loop)
        xy, v = out["cursor_xy"], out["velocity"]
        self.rec.write_row("cursor", s, (xy[0], xy[1], v[0], v[1], float(out["clicked"])),
                           columns=("x", "y", "vx", "vy", "clicked"))
        iv = run.rec["intended_velocity"][out["n"]]
        self.rec.write_row("intent", s, (iv[0], iv[1], run.rec["click_intent"][out["n"]]),
                           columns=("vx", "vy", "click"))
        if out["decoded_velocity"] is not None:
            d = out["decoded_velocity"]
            self.rec.write_row("decoder", s, (d[0], d[1], out["click_proba"]), columns=("vx", "vy", "click_proba"))
        for ev in out["events"]:
            self.rec.event("task", sample=s, block=run.name, **_event_fields(ev))

    def block_ended(self, loop: Any, run: Any, trace: Any) -> None:
        self.rec.event("block_end", sample=self._sample(loop), name=run.name, n_bins=trace.n_bins,
                       metrics=trace.metrics)


def _fingerprint(dec: Any) -> str:
    """Changes when a decoder is refitted (its fitted arrays change)."""
    h = hashlib.sha1()
    for k in sorted(vars(dec)):
        if k.endswith("_") and not k.startswith("_"):
            v = getattr(dec, k)
            if isinstance(v, np.ndarray) and v.dtype != object:
                h.update(k.encode())
                h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def _event_fields(ev: Any) -> dict:
    if dataclasses.is_dataclass(ev):
        d = dataclasses.asdict(ev)
    elif isinstance(ev, dict):
        d = dict(ev)
    else:
        d = {"value": repr(ev)}
    if "kind" in d:
        d["task_event"] = d.pop("kind")
    d.pop("sample", None)
    return d
