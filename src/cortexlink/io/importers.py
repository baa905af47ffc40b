"""Lab-format importers: open a recording file or folder and stream it as :class:`Chunk` objects.

Usage
-----
>>> from cortexlink.io.importers import open_recording
>>> with open_recording("session/run_g0_t0.imec0.ap.bin") as rec:      # format detected
...     print(rec.format, rec.fs_hz, rec.n_samples, rec.n_channels, rec.dtype)
...     x = rec.read(0, 30000)                     # (samples, channels), raw int16 counts
...     uv = rec.channel_map.to_uv(x)              # µV through the file's own gains
...     for chunk in rec.iter_chunks(30):          # Chunk.start_sample = index in the file
...         ...                                    # (never loads the whole file)
>>> open_recording("n1_broadband/", "wav")                         # folder of mono WAVs
>>> open_recording("locust_trial_01.raw")                          # + info.json sidecar
>>> open_recording("sub-01.nwb", stream="ElectricalSeriesAP")      # pick an ElectricalSeries

Formats (``FORMATS``) and what each reads
-----------------------------------------
``blackrock``
    NSx files (``.ns1``-``.ns6``). NEURALCD/BRSMPGRP (spec 2.2, 2.3, 3.0) through
    ``neo.rawio.BlackrockRawIO``; every data packet is a segment (``segment=``). NEURALSG
    (spec 2.1) is mapped directly (neo drops its last sample and cannot scale it without the
    ``.nev``): its gain comes from ``gain_uv=``, else 1 (counts) with a warning.
    ``stream``: ``"ns5"``, ``"nsx5"`` or ``"5"``; default the highest rate present.
``intan``
    ``.rhd``/``.rhs`` through ``neo.rawio.IntanRawIO``. ``stream``: a neo stream name such as
    ``"RHD2000 amplifier channel"`` (the default). Amplifier data are uint16 offset binary
    (0.195 µV per count, offset -6389.76 µV).
``openephys``
    Binary format (``structure.oebin`` + ``continuous.dat``) through
    ``neo.rawio.OpenEphysBinaryRawIO``; legacy ``.continuous`` folders through
    ``neo.rawio.OpenEphysRawIO``. ``stream``: a neo stream name (folder name of the
    continuous stream, prefixed ``"Record Node N#"``); ``block=`` experiment, ``segment=``
    recording.
``spikeglx``
    ``.bin`` + ``.meta`` through ``neo.rawio.SpikeGLXRawIO``. ``stream``: ``"imec0.ap"``
    (default: the first AP stream), ``"imec0.lf"``, ``"nidq"``; the SY0 sync channel is left
    out of the neural streams (as neo does). Positions from the probe (probeinterface).
``nwb``
    An ``ElectricalSeries`` read lazily with pynwb/h5py; ``stream`` names it (default: the only
    one, or the only one in ``acquisition``). Gains from ``conversion``,
    ``channel_conversion``, ``offset`` and ``unit``; positions from ``rel_x``/``rel_y``.
``wav``
    One WAV file (PCM 8/16/32-bit or float; channels interleaved), or a folder of mono WAV
    files, one per electrode (channel ids = file stems, sorted). Files of different lengths are
    cut to the shortest (``metadata["length_policy"]``); different rates or sample types are
    refused. WAV carries no physical scale: ``gain_uv=`` (default 1, counts).
``raw``
    Interleaved samples (samples x channels) with a JSON sidecar found as ``<file>.json``,
    ``<stem>.json`` or ``info.json`` in the same folder (or passed as ``sidecar=``, a path or a
    dict). Minimal sidecar schema::

        {"dtype": "int16",        # numpy dtype name ("int16", "<i2", "float32", ...)
         "n_channels": 4,         # or "shape": [-1, 4] (samples x channels)
         "fs_hz": 15000.0,        # or "sample_rate" / "sampling_rate"
         "gain_uv": 0.195,        # optional: µV per count, scalar or one per channel (default 1)
         "offset_uv": 0.0,        # optional: µV, scalar or per channel (default 0)
         "header_bytes": 0,       # optional: bytes to skip at the start of the file
         "channel_ids": [...], "positions_um": [[x, y], ...]}   # optional

    ``"gain"``/``"offset"`` with ``"units"`` (``"uV"``, ``"mV"``, ``"V"``, ``"nV"``) may replace
    ``gain_uv``/``offset_uv``. A folder with several data files needs ``stream=`` (a file name).

Bad input
---------
Every problem is a :class:`~cortexlink.core.errors.ValidationError` whose message names the
file and what is wrong ("X must be ...; got ...").

* Foreign or corrupt files (a PNG renamed ``.ns5``, a text file, a broken header): refused;
  the message says what the file looks like instead (PNG, HDF5, text, ...).
* Metadata that disagrees with the data (channel count, rate, units, declared sizes, dtype):
  refused, naming the field and both values. Refused too: rates <= 0, unknown units, a raw
  file whose size is not a multiple of ``n_channels x itemsize`` (unless
  ``allow_truncated=True``), NSx ``bytes_in_headers`` that does not match ``channel_count``,
  an Open Ephys ``num_channels`` that does not match its channel list, a SpikeGLX ``.bin``
  longer than ``fileSizeBytes``, an NWB series whose electrodes or ``channel_conversion``
  do not match its data columns.
* Truncated files (a recording cut off mid-record), per format:

  - ``spikeglx``, ``openephys`` (binary), ``wav``: every complete sample is salvaged
    (``.bin`` shorter than ``fileSizeBytes`` or ending mid-sample; ``continuous.dat`` ending
    mid-sample or shorter than its ``sample_numbers.npy``; a WAV ``data`` chunk cut short or
    never finalised). The samples are mapped directly, since neo refuses such files.
  - ``intan`` (header-attached): every complete data block is salvaged (the amplifier, aux,
    supply and ADC streams; digital and stim streams are refused).
  - ``blackrock``: every complete sample of every data packet up to the damage is salvaged
    (a packet cut short, a packet header declaring 0 samples because the file was never
    closed, a corrupt packet header); packets before the damage stay readable as their own
    segments. NEURALSG files cut mid-sample keep their complete samples. Damaged PTP files
    (spec 3.0 with nanosecond timestamps, one packet per sample) are refused.
  - ``raw``: no declared length, so a size that is not a whole number of samples is refused
    unless ``allow_truncated=True``, which salvages the complete samples.
  - ``nwb``: HDF5 keeps its metadata throughout the file, so a truncated file is refused.
  - legacy Open Ephys ``.continuous``: neo keeps the complete 1024-sample records.

  A salvaged recording logs a warning and sets ``metadata["truncated"] = True``,
  ``metadata["n_samples_salvaged"]``, ``metadata["n_samples_expected"]`` (None when the file
  does not say) and ``metadata["truncation"]`` (what was found). Intact files have
  ``metadata["truncated"] = False``.

Intact files of the neo-backed formats are read through neo. Neo refuses a damaged file (and,
for SpikeGLX and Open Ephys, the whole folder around it), so the pre-flight checks here, which
read the vendors' documented headers, decide: a damaged file is memory-mapped directly, with
the same channel names, gains and stream/segment numbering neo would give
(``metadata["reader"]`` says which path was taken; ``metadata["damaged_neighbours"]`` lists
damaged files next to an intact selected one).

Channel maps: ``gain_uv``/``offset_uv`` always convert to µV when the file has a scale;
WAV, raw without a gain and NSx 2.1 have none, so their gain is 1 (counts) and
``metadata["scaled"]`` is False. Positions come from the probe (SpikeGLX imec AP streams,
through probeinterface) or the electrode table (NWB ``rel_x``/``rel_y``), else a 50 µm grid;
``metadata["positions_source"]`` says which.

Warnings raised by neo/pynwb while a file is opened are not lost and not printed: they are
logged (logger ``cortexlink.io.importers``) and kept in ``metadata["reader_warnings"]``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import numbers
import re
import struct
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, CortexlinkError, ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.core.validation import check_positive

logger = logging.getLogger(__name__)

FORMATS = ("blackrock", "intan", "openephys", "spikeglx", "nwb", "wav", "raw")

__all__ = ["FORMATS", "Recording", "open_recording", "detect_format"]

# µV per unit of each voltage unit spelling found in the formats read here
_UV_PER_UNIT = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "microvolt": 1.0, "microvolts": 1.0,
                "mv": 1e3, "millivolt": 1e3, "millivolts": 1e3,
                "v": 1e6, "volt": 1e6, "volts": 1e6, "nv": 1e-3, "nanovolt": 1e-3, "nanovolts": 1e-3}

# exceptions a library raises on a file it cannot parse; wrapped into ValidationError
_PARSE_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, struct.error, AssertionError, ArithmeticError)

_BLOCK_BYTES = 4 << 20  # iter_chunks reads the file in blocks of about this size


# =============================================================================================
# helpers


def _fail(path: Path | str, msg: str) -> ValidationError:
    return ValidationError(f"{path}: {msg}")


def _uv_per_unit(unit: Any, *, path: Path | str, field: str) -> float:
    """µV per ``unit``; a ValidationError naming ``field`` for anything that is not a voltage."""
    u = str(unit).strip()
    scale = _UV_PER_UNIT.get(u.lower())
    if scale is None:
        raise _fail(path, f"{field} must be a voltage unit (uV, mV, V or nV); got {u!r}")
    return scale


def _describe_content(head: bytes) -> str:
    """What the first bytes of a file look like, for error messages about foreign files."""
    if not head:
        return "an empty file"
    sigs = [
        (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
        (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip file"),
        (b"\x89HDF\r\n\x1a\n", "an HDF5 file"), (b"RIFF", "a RIFF (WAV) file"),
        (b"NEURALCD", "a Blackrock NSx file"), (b"BRSMPGRP", "a Blackrock NSx file"),
        (b"NEURALSG", "a Blackrock NSx 2.1 file"), (b"NEURALEV", "a Blackrock NEV file"),
        (b"BREVENTS", "a Blackrock NEV file"), (b"\x93NUMPY", "a NumPy .npy file"),
        (b"MATLAB", "a MATLAB .mat file"), (b"\x02\x27\x91\xc6", "an Intan RHD file"),
        (b"\xac\x27\x91\xd6", "an Intan RHS file"),
    ]
    for sig, what in sigs:
        if head.startswith(sig):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return f"text (starts with {text[:24]!r})"
    return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a multi-byte character cut at the end
            return False
        text = head[:e.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _head(path: Path, n: int = 32) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _jsonable(x: Any) -> Any:
    """Recursively convert numpy scalars/arrays, paths and bytes so that json.dumps works."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace").rstrip("\x00")
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def _grid_positions(n: int) -> np.ndarray:
    return np.asarray(ChannelMap.grid(n).positions_um)


def _unique_ids(names: Sequence[Any], fallback: Sequence[Any]) -> list[str]:
    names = [str(n) for n in names]
    if len(set(names)) == len(names) and all(names):
        return names
    fb = [str(f) for f in fallback]
    if len(set(fb)) == len(fb) and all(fb):
        return fb
    return [f"ch{i:04d}" for i in range(len(names))]


def _per_channel(value: Any, n: int, *, path: Path | str, field: str) -> np.ndarray:
    """A scalar or length-``n`` sequence of finite numbers as a float array of length ``n``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(path, f"{field} must be a number or a list of {n} numbers; got {value!r}") from None
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise _fail(path, f"{field} must be a number or a list of {n} numbers (one per channel); "
                          f"got {arr.size} values")
    if not np.all(np.isfinite(arr)):
        raise _fail(path, f"{field} must hold only finite numbers; got {value!r}")
    return arr


def _check_rate(path: Path | str, value: Any, field: str) -> float:
    if isinstance(value, np.generic):
        value = value.item()
    try:
        fs = float(value)
    except (TypeError, ValueError):
        raise _fail(path, f"{field} must be a number > 0; got {value!r}") from None
    if not np.isfinite(fs) or fs <= 0:
        raise _fail(path, f"{field} must be a finite number > 0; got {value!r}")
    return fs


def _truncation(metadata: dict, path: Path | str, n_salvaged: int, n_expected: int | None, what: str) -> None:
    """Record a salvage in ``metadata`` and log it."""
    metadata.update(truncated=True, n_samples_salvaged=int(n_salvaged),
                    n_samples_expected=None if n_expected is None else int(n_expected), truncation=what)
    exp = "an unknown number" if n_expected is None else str(int(n_expected))
    logger.warning("%s is truncated (%s); salvaged %d complete samples of %s expected",
                   path, what, n_salvaged, exp)


@contextlib.contextmanager
def _reader_warnings(metadata: dict, path: Path | str) -> Iterator[None]:
    """Catch the warnings a third-party reader raises, log them and keep them in metadata.

    Readers (neo, pynwb/hdmf) warn about things such as missing optional fields; a library
    must neither print them nor let them escape as exceptions under ``-W error``, and must not
    drop them silently either.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                msg = f"{w.category.__name__}: {w.message}"
                if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
                    logger.debug("%s: reader warning: %s", path, msg)
                else:
                    logger.warning("%s: reader warning: %s", path, msg)
                metadata.setdefault("reader_warnings", []).append(msg)


@contextlib.contextmanager
def _wrap_parse_errors(path: Path | str, what: str) -> Iterator[None]:
    """Turn a library's parse error into a ValidationError naming the file."""
    try:
        yield
    except CortexlinkError:
        raise
    except _PARSE_ERRORS as e:
        raise _fail(path, f"could not be read as {what}: {type(e).__name__}: {e}") from e


# =============================================================================================
# Recording base class


class Recording:
    """A recording opened by :func:`open_recording`; read it in pieces or as a Chunk stream.

    Attributes
    ----------
    path : Path
        The path given to :func:`open_recording` (file or folder).
    format : str
        One of :data:`FORMATS`.
    channel_map : ChannelMap
        Channel ids, positions (from the probe/geometry when the file has it, else a grid),
        ``gain_uv``/``offset_uv`` converting the raw samples to µV.
    fs_hz : float
        Sampling rate.
    n_samples : int
        Samples per channel available (after any salvage of a truncated file).
    n_channels : int
    dtype : numpy.dtype
        Raw sample type returned by :meth:`read` (native byte order).
    metadata : dict
        JSON-able description: source format and files, original units, stream, segment,
        ``truncated`` and, after a salvage, ``n_samples_salvaged``, ``n_samples_expected``,
        ``truncation``.
    """

    format: str = ""

    def __init__(self, path: Path | str, *, fmt: str, channel_map: ChannelMap, fs_hz: float,
                 n_samples: int, dtype: Any, metadata: dict) -> None:
        self.path = Path(path)
        self.format = fmt
        fs = _check_rate(self.path, fs_hz, "sampling rate")
        n = int(n_samples)
        if n < 1:
            raise _fail(self.path, "holds no complete sample; at least 1 sample is needed")
        self.channel_map = channel_map
        self.fs_hz = fs
        self.n_samples = n
        self.dtype = np.dtype(dtype).newbyteorder("=")
        meta = {"format": fmt, "path": str(self.path), "fs_hz": fs, "n_samples": n,
                "n_channels": channel_map.n_channels, "dtype": self.dtype.name, "units": "uV",
                "scaled": True, "truncated": False}
        meta.update(metadata)
        self.metadata = _jsonable(meta)
        self._closed = False

    # -- properties -------------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        return self.channel_map.n_channels

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs_hz

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reading ----------------------------------------------------------------------------
    def _check_range(self, start: Any, stop: Any) -> tuple[int, int]:
        n = self.n_samples
        if stop is None:
            stop = n
        for name, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ConfigError(f"{name} must be an integer sample index; got {v!r}")
        start, stop = int(start), int(stop)
        if not 0 <= start <= n:
            raise ConfigError(f"start must be in [0, {n}] (n_samples); got {start}")
        if not start <= stop <= n:
            raise ConfigError(f"stop must be in [start={start}, {n}] (n_samples); got {stop}")
        return start, stop

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``start:stop`` of every channel.

        Parameters
        ----------
        start, stop : int
            Sample indices, ``0 <= start <= stop <= n_samples``; ``stop=None`` means the end.

        Returns
        -------
        ndarray (stop - start, n_channels) of ``dtype``
            Raw samples (int16 counts where the file stores int16), a fresh C-ordered array.
        """
        start, stop = self._check_range(start, stop)
        if self._closed:
            raise ValidationError(f"{self.path}: the recording is closed; open it again to read")
        if stop == start:
            return np.empty((0, self.n_channels), dtype=self.dtype)
        out = np.array(self._read(start, stop), dtype=self.dtype, order="C")
        if out.shape != (stop - start, self.n_channels):  # a backend bug, not a user error
            raise RuntimeError(f"{self.path}: read {out.shape}, expected {(stop - start, self.n_channels)}")
        return out

    def iter_chunks(self, chunk_samples: int = 30, *, start: int = 0, stop: int | None = None,
                    progress: bool = False) -> Iterator[Chunk]:
        """Stream samples ``start:stop`` as :class:`Chunk` objects of ``chunk_samples`` samples.

        The file is read in blocks of a few MB, never whole. ``Chunk.start_sample`` is the index
        of the chunk's first sample in the recording; ``seq`` counts from 0; the last chunk may
        be shorter. ``progress=True`` shows a tqdm bar (on stderr).
        """
        chunk = check_positive("chunk_samples", chunk_samples, integer=True)
        start, stop = self._check_range(start, stop)
        if self._closed:
            raise ValidationError(f"{self.path}: the recording is closed; open it again to read")
        return self._iter_chunks(chunk, start, stop, progress)

    def _iter_chunks(self, chunk: int, start: int, stop: int, progress: bool) -> Iterator[Chunk]:
        bytes_per_sample = max(1, self.n_channels * self.dtype.itemsize)
        block = max(chunk, (_BLOCK_BYTES // bytes_per_sample) // chunk * chunk)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=stop - start, unit="sample", desc=self.path.name, leave=False)
        seq = 0
        try:
            for b0 in range(start, stop, block):
                b1 = min(b0 + block, stop)
                buf = self.read(b0, b1)
                for s in range(0, b1 - b0, chunk):
                    yield Chunk(buf[s:s + chunk], self.fs_hz, b0 + s, time.monotonic_ns(), seq)
                    seq += 1
                if bar is not None:
                    bar.update(b1 - b0)
        finally:
            if bar is not None:
                bar.close()

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release file handles; reading afterwards raises. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(format={self.format!r}, path={str(self.path)!r}, "
                f"n_channels={self.n_channels}, n_samples={self.n_samples}, fs_hz={self.fs_hz:g})")

    # -- backend hooks ----------------------------------------------------------------------
    def _read(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        pass


class _MemmapRecording(Recording):
    """Samples stored as one (samples x frame_channels) array at a byte offset of a file."""

    def __init__(self, path: Path | str, *, data_path: Path, offset: int, file_dtype: Any, frame_channels: int,
                 columns: Any = None, **common: Any) -> None:
        super().__init__(path, dtype=np.dtype(file_dtype), **common)
        self._mm: np.memmap | None = np.memmap(data_path, dtype=np.dtype(file_dtype), mode="r", offset=int(offset),
                                               shape=(self.n_samples, int(frame_channels)))
        self._columns = columns

    def _read(self, start: int, stop: int) -> np.ndarray:
        a = self._mm[start:stop]
        return a if self._columns is None else a[:, self._columns]

    def _close(self) -> None:
        self._mm = None


class _MultiFileRecording(Recording):
    """One single-channel memmap per channel (a folder of mono WAV files)."""

    def __init__(self, path: Path | str, *, parts: list[tuple[Path, int, Any]], **common: Any) -> None:
        super().__init__(path, dtype=np.dtype(parts[0][2]), **common)
        self._mms: list[np.memmap] | None = [
            np.memmap(p, dtype=np.dtype(dt), mode="r", offset=int(off), shape=(self.n_samples,))
            for p, off, dt in parts]

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, len(self._mms)), dtype=self.dtype)
        for i, mm in enumerate(self._mms):
            out[:, i] = mm[start:stop]
        return out

    def _close(self) -> None:
        self._mms = None


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


# =============================================================================================
# raw int16 + JSON sidecar


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


# =============================================================================================
# WAV


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


# =============================================================================================
# SpikeGLX


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


# =============================================================================================
# Open Ephys


def _oe_units(unit: str, name: str) -> str:
    # the binary format leaves units empty for µV neural channels and V ADC channels (GUI docs)
    return unit if unit else ("V" if "ADC" in name else "uV")


def _openephys_entries(root: Path) -> list[dict]:
    """Every continuous stream of every structure.oebin under ``root``, validated."""
    out = []
    for oebin in sorted(root.rglob("structure.oebin")):
        head = _head(oebin, 64)
        try:
            doc = json.loads(oebin.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _fail(oebin, f"not an Open Ephys structure.oebin (JSON): it is {_describe_content(head)}; "
                               f"{type(e).__name__}: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("continuous"), list):
            raise _fail(oebin, "not an Open Ephys structure.oebin: no 'continuous' list")
        rec_dir = oebin.parent
        node = rec_dir.parents[1].name if len(rec_dir.parents) > 1 else ""
        node = node if node.startswith("Record") else ""
        m_exp = re.search(r"(\d+)$", rec_dir.parent.name)
        m_rec = re.search(r"(\d+)$", rec_dir.name)
        for k, c in enumerate(doc["continuous"]):
            where = f"{oebin} (continuous[{k}])"
            for key in ("folder_name", "sample_rate", "num_channels", "channels"):
                if key not in c:
                    raise _fail(where, f"{key} is missing")
            fs = _check_rate(where, c["sample_rate"], "sample_rate")
            chans = c["channels"]
            if c["num_channels"] != len(chans):
                raise _fail(where, f"num_channels ({c['num_channels']}) disagrees with the {len(chans)} entries "
                                   "of channels")
            for ch in chans:
                _uv_per_unit(_oe_units(ch.get("units", ""), ch.get("channel_name", "")), path=where,
                             field=f"units of channel {ch.get('channel_name')!r}")
                bv = ch.get("bit_volts")
                if not isinstance(bv, (int, float)) or not np.isfinite(bv) or bv == 0:
                    raise _fail(where, f"bit_volts of channel {ch.get('channel_name')!r} must be a non-zero "
                                       f"number; got {bv!r}")
            folder = c["folder_name"].strip("/").split("/")[0]
            sdir = rec_dir / "continuous" / c["folder_name"].strip("/")
            dat = sdir / "continuous.dat"
            if not sdir.is_dir():
                continue  # neo skips (with a warning) streams whose folder is missing
            if not dat.is_file():
                raise _fail(sdir, "continuous.dat is missing")
            n_ch = len(chans)
            size = dat.stat().st_size
            n_complete, rem = divmod(size, 2 * n_ch)
            problem, n_expected = None, None
            ts_file = sdir / "sample_numbers.npy"
            ts_file = ts_file if ts_file.is_file() else sdir / "timestamps.npy"
            try:
                n_ts = len(np.load(ts_file, mmap_mode="r"))
            except (OSError, ValueError, EOFError) as e:
                n_ts = None
                problem = f"{ts_file.name} unreadable ({type(e).__name__}: {e})"
            if n_ts is not None and n_ts > n_complete:
                problem, n_expected = f"{n_complete} samples in continuous.dat, {n_ts} in {ts_file.name}", n_ts
            if rem:
                problem = (problem + "; " if problem else "") + f"continuous.dat ends {rem} bytes into a sample"
            if n_ts is not None and n_ts < n_complete and not rem:
                logger.warning("%s: %s lists %d samples, continuous.dat holds %d", sdir, ts_file.name, n_ts,
                               n_complete)
            out.append(dict(oebin=oebin, rec_dir=rec_dir, node=node, stream=(node + "#" if node else "") + folder,
                            exp=int(m_exp.group(1)) if m_exp else 1, rec=int(m_rec.group(1)) if m_rec else 1,
                            fs=fs, channels=chans, dat=dat, n_complete=n_complete, n_expected=n_expected,
                            problem=problem))
    return out


def _oe_prefer(names: list[str]) -> int:
    for i, n in enumerate(names):
        if not n.endswith("_ADC") and "SYNC" not in n:
            return i
    return 0


def _open_openephys(path: Path, *, stream: str | None = None, block: int = 0, segment: int = 0,
                    gain_uv: Any = None) -> Recording:
    from neo.rawio import OpenEphysBinaryRawIO

    root = path
    if path.is_file():
        if path.suffix.lower() == ".continuous":
            return _open_openephys_legacy(path.parent, stream=stream, segment=segment, gain_uv=gain_uv)
        if path.name == "structure.oebin":
            root = path.parent
        elif path.name == "continuous.dat" and len(path.parents) > 2:
            root = path.parents[2]
        else:
            raise _fail(path, "an Open Ephys path must be a folder, a structure.oebin, a continuous.dat or a "
                              f".continuous file; got {_describe_content(_head(path))}")
    if not any(root.rglob("structure.oebin")):
        if any(root.glob("*.continuous")):
            return _open_openephys_legacy(root, stream=stream, segment=segment, gain_uv=gain_uv)
        raise _fail(path, "holds no Open Ephys recording (no structure.oebin below it, no .continuous files)")
    entries = _openephys_entries(root)
    if not entries:
        raise _fail(path, "holds no continuous stream (structure.oebin lists none, or their folders are missing)")
    meta: dict[str, Any] = {"oebin_files": sorted({str(e["oebin"]) for e in entries})}
    if path.is_file() and path.name == "continuous.dat" and stream is None:
        stream = next((e["stream"] for e in entries if e["dat"] == path), None)
    if not any(e["problem"] for e in entries):
        reader = OpenEphysBinaryRawIO(dirname=str(root))
        return _open_neo(path, "openephys", reader, stream=stream, block=block, segment=segment, metadata=meta,
                         gain_uv=gain_uv, prefer=_oe_prefer)
    # something under root is damaged (neo would refuse it all): map the selected stream directly
    names = sorted({e["stream"] for e in entries})
    want = stream if stream is not None else names[_oe_prefer(names)]
    adc = want.endswith("_ADC")
    base = want[:-4] if adc else want
    if base not in names:
        raise _fail(path, f"stream must be one of {names}; got {stream!r}")
    exps = sorted({e["exp"] for e in entries})
    block = _check_index(path, "block", block, len(exps))
    recs = sorted({e["rec"] for e in entries if e["exp"] == exps[block]})
    segment = _check_index(path, "segment", segment, len(recs))
    sel = next((e for e in entries if e["stream"] == base and e["exp"] == exps[block] and e["rec"] == recs[segment]),
               None)
    if sel is None:
        raise _fail(path, f"stream {base!r} is missing from block {block}, segment {segment}")
    if sel["problem"]:
        _truncation(meta, sel["dat"], sel["n_complete"], sel["n_expected"], sel["problem"])
    else:
        meta["damaged_neighbours"] = [str(e["dat"]) for e in entries if e["problem"]]
        logger.warning("%s: other Open Ephys streams are damaged (%s); reading this one directly", sel["dat"],
                       meta["damaged_neighbours"])
    cols = [i for i, ch in enumerate(sel["channels"])
            if ("ADC" in ch["channel_name"]) == adc and "SYNC" not in ch["channel_name"]]
    if not cols:
        raise _fail(path, f"stream {want!r} has no channels")
    chans = [sel["channels"][i] for i in cols]
    units = [_oe_units(ch.get("units", ""), ch["channel_name"]) for ch in chans]
    if gain_uv is not None:
        gain = _per_channel(gain_uv, len(cols), path=path, field="gain_uv")
    else:
        gain = np.array([ch["bit_volts"] * _uv_per_unit(u, path=sel["oebin"], field="units")
                         for ch, u in zip(chans, units)])
    cmap = ChannelMap(_unique_ids([ch["channel_name"] for ch in chans], [f"ch{i:04d}" for i in cols]),
                      _grid_positions(len(cols)), gain, 0.0)
    meta.update(stream=want, streams=names, block=block, segment=segment, n_blocks=len(exps), n_segments=len(recs),
                original_units=sorted(set(units)), positions_source="grid", files=[str(sel["dat"])],
                reader="cortexlink memmap")
    columns = slice(cols[0], cols[-1] + 1) if cols == list(range(cols[0], cols[-1] + 1)) else np.array(cols)
    return _MemmapRecording(path, fmt="openephys", data_path=sel["dat"], offset=0, file_dtype="<i2",
                            frame_channels=len(sel["channels"]), columns=columns, channel_map=cmap,
                            fs_hz=sel["fs"], n_samples=sel["n_complete"], metadata=meta)


_OE_LEGACY_HEADER = 1024
_OE_LEGACY_RECORD = 8 + 2 + 2 + 2 * 1024 + 10  # timestamp, n samples, recording number, samples, marker


def _open_openephys_legacy(folder: Path, *, stream: str | None, segment: int, gain_uv: Any) -> Recording:
    from neo.rawio import OpenEphysRawIO

    files = sorted(folder.glob("*.continuous"))
    meta: dict[str, Any] = {"variant": "legacy .continuous", "files": [f.name for f in files]}
    partial = []
    for f in files:
        head = _head(f, 1024)
        if b"Open Ephys Data Format" not in head:
            raise _fail(f, f"not an Open Ephys .continuous file: it is {_describe_content(head[:32])}; the "
                           "1024-byte text header must name 'Open Ephys Data Format'")
        body = f.stat().st_size - _OE_LEGACY_HEADER
        if body < _OE_LEGACY_RECORD:
            raise _fail(f, f"holds no complete 1024-sample record ({max(body, 0)} bytes after the header)")
        if body % _OE_LEGACY_RECORD:
            partial.append(f.name)
    reader = OpenEphysRawIO(dirname=str(folder))
    rec = _open_neo(folder, "openephys", reader, stream=stream, block=0, segment=segment, metadata=meta,
                    gain_uv=gain_uv, prefer=_oe_prefer)
    if partial:
        _truncation(rec.metadata, folder, rec.n_samples, None,
                    f"{len(partial)} file(s) end mid-record, complete records kept: {partial[:5]}")
    return rec


# =============================================================================================
# Intan


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


# =============================================================================================
# Blackrock


_NSX_BASIC = struct.Struct("<8sBBI16s256sII8HI")  # NEURALCD basic header, 314 bytes
_NSX_EXT = np.dtype([("type", "S2"), ("electrode_id", "<u2"), ("label", "S16"), ("connector", "u1"), ("pin", "u1"),
                     ("min_digital", "<i2"), ("max_digital", "<i2"), ("min_analog", "<i2"), ("max_analog", "<i2"),
                     ("units", "S16"), ("hi_corner", "<u4"), ("hi_order", "<u4"), ("hi_type", "<u2"),
                     ("lo_corner", "<u4"), ("lo_order", "<u4"), ("lo_type", "<u2")])  # 66 bytes


def _nsx_preflight(path: Path) -> dict:
    """Parse an NSx header and walk its data packets; report the damage instead of raising on it.

    Layout (Blackrock NEV/NSx file specification): NEURALCD basic header of 314 bytes with
    ``bytes_in_headers``, ``period`` (rate = 30 kHz / period) and ``channel_count``; one
    66-byte "CC" extended header per channel; then packets of 0x01, a timestamp (uint32, or
    uint64 from spec 3.0), uint32 ``n_points`` and ``n_points x channel_count`` int16.
    NEURALSG (2.1): 8-byte id, 16-byte label, uint32 period, uint32 channel_count, a uint32
    electrode id per channel, then interleaved int16 without packets.
    """
    size = path.stat().st_size
    head = _head(path, _NSX_BASIC.size)
    file_id = head[:8]
    if file_id == b"NEURALSG":
        if len(head) < 32:
            raise _fail(path, f"the NSx 2.1 header is truncated ({size} bytes)")
        period, n_ch = struct.unpack("<II", head[24:32])
        if n_ch < 1:
            raise _fail(path, f"channel_count must be >= 1; got {n_ch}")
        if period < 1:
            raise _fail(path, f"period (rate = 30000 Hz / period) must be >= 1; got {period}")
        hdr = 32 + 4 * n_ch
        if size < hdr:
            raise _fail(path, f"the NSx 2.1 header is truncated ({size} bytes, {hdr} needed for {n_ch} channels)")
        ids = np.fromfile(path, dtype="<u4", count=n_ch, offset=32)
        n, rem = divmod(size - hdr, 2 * n_ch)
        return dict(spec="2.1", period=period, n_ch=n_ch, ids=ids.tolist(), ext=None, ptp=False,
                    blocks=[(hdr, n, n, 0)], problem=f"ends {rem} bytes into a sample" if rem else None)
    if file_id not in (b"NEURALCD", b"BRSMPGRP"):
        raise _fail(path, f"not a Blackrock NSx file: it is {_describe_content(head)}; an NSx file starts with "
                          "'NEURALCD', 'BRSMPGRP' or 'NEURALSG'")
    if len(head) < _NSX_BASIC.size:
        raise _fail(path, f"the NSx basic header is truncated ({size} of {_NSX_BASIC.size} bytes)")
    f = _NSX_BASIC.unpack(head)
    major, minor, bih, period, ts_res, n_ch = f[1], f[2], f[3], f[6], f[7], f[16]
    spec = f"{major}.{minor}"
    if major not in (2, 3):
        raise _fail(path, f"file spec must be 2.2, 2.3 or 3.0; got {spec}")
    if n_ch < 1:
        raise _fail(path, f"channel_count must be >= 1; got {n_ch}")
    if period < 1:
        raise _fail(path, f"period (rate = 30000 Hz / period) must be >= 1; got {period}")
    if bih != _NSX_BASIC.size + _NSX_EXT.itemsize * n_ch:
        raise _fail(path, f"bytes_in_headers ({bih}) disagrees with channel_count ({n_ch}): expected "
                          f"{_NSX_BASIC.size} + 66 x {n_ch} = {_NSX_BASIC.size + _NSX_EXT.itemsize * n_ch}")
    if size < bih:
        raise _fail(path, f"the NSx headers are truncated ({size} of {bih} bytes)")
    ext = np.fromfile(path, dtype=_NSX_EXT, count=n_ch, offset=_NSX_BASIC.size)
    bad = np.flatnonzero(ext["type"] != b"CC")
    if bad.size:
        raise _fail(path, f"extended header {int(bad[0])} must start with 'CC'; got {bytes(ext['type'][bad[0]])!r}")
    if np.any(ext["max_digital"] == ext["min_digital"]):
        raise _fail(path, "min_digital and max_digital must differ on every channel (they define the scale); "
                          f"electrode {int(ext['electrode_id'][np.argmax(ext['max_digital'] == ext['min_digital'])])} "
                          "has equal values")
    for u, e in zip(ext["units"], ext["electrode_id"]):
        _uv_per_unit(bytes(u).decode("latin-1").rstrip("\x00"), path=path, field=f"units of electrode {int(e)}")
    ptp = major >= 3 and ts_res == 1_000_000_000
    frame = 2 * n_ch
    if ptp:  # one packet per sample: reserved u8, u64 timestamp, u32 n_points, samples
        packet = 1 + 8 + 4 + frame
        n, rem = divmod(size - bih, packet)
        return dict(spec=spec, period=period, n_ch=n_ch, ext=ext, ptp=True, blocks=[(bih, n, n, 0)],
                    problem=f"ends {rem} bytes into a PTP packet" if rem else None)
    hlen = 1 + (8 if major >= 3 else 4) + 4
    blocks, problem, offset = [], None, bih
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            ph = fh.read(hlen)
            if len(ph) < hlen:
                problem = f"ends inside the header of data packet {len(blocks)} (byte {offset})"
                break
            if ph[0] != 1:
                problem = (f"data packet {len(blocks)} at byte {offset} starts with {ph[0]:#04x}, "
                           "expected 0x01 (corrupt)")
                break
            ts = struct.unpack("<Q" if major >= 3 else "<I", ph[1:-4])[0]
            npts = struct.unpack("<I", ph[-4:])[0]
            data_off = offset + hlen
            avail = (size - data_off) // frame
            if npts == 0 and data_off < size and not _nsx_packet_follows(fh, data_off, size, hlen, frame):
                blocks.append((data_off, None, avail, ts))
                problem = f"data packet {len(blocks) - 1} declares 0 samples (file never closed); read to the end"
                break
            if npts > avail:
                blocks.append((data_off, npts, avail, ts))
                problem = f"data packet {len(blocks) - 1} declares {npts} samples, {avail} are complete"
                break
            blocks.append((data_off, npts, npts, ts))
            offset = data_off + npts * frame
    return dict(spec=spec, period=period, n_ch=n_ch, ext=ext, ptp=False, blocks=blocks, problem=problem)


def _nsx_packet_follows(fh: Any, offset: int, size: int, hlen: int, frame: int) -> bool:
    """Whether a plausible packet header (0x01 and a size that fits the file) sits at ``offset``."""
    fh.seek(offset)
    ph = fh.read(hlen)
    if len(ph) < hlen or ph[0] != 1:
        return False
    return offset + hlen + struct.unpack("<I", ph[-4:])[0] * frame <= size


def _open_blackrock(path: Path, *, stream: str | None = None, segment: int = 0, gain_uv: Any = None) -> Recording:
    from neo.rawio import BlackrockRawIO

    nsx_re = re.compile(r"\.ns([1-6])$", re.IGNORECASE)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if nsx_re.search(p.name))
        bases = sorted({p.with_suffix("").name for p in files})
        if len(bases) != 1:
            raise _fail(path, f"a Blackrock folder must hold the .nsX files of one recording; got {bases or 'none'}: "
                              "pass one file")
        base = path / bases[0]
    elif path.suffix.lower() == ".nev" or nsx_re.search(path.name):
        base = path.with_suffix("")
    else:
        raise _fail(path, "a Blackrock path must be a .ns1-.ns6 (or .nev) file or a folder holding them; got "
                          f"{_describe_content(_head(path))}")
    available = {int(m.group(1)): p for p in base.parent.glob(base.name + ".*")
                 if (m := nsx_re.search(p.name)) and p.with_suffix("").name == base.name}
    if not available:
        raise _fail(path, f"no .ns1-.ns6 file named {base.name}.nsX beside it (a .nev alone holds no continuous data)")
    if nsx_re.search(path.name) and path.is_file():
        nb = int(nsx_re.search(path.name).group(1))
        if stream is not None and stream not in (f"ns{nb}", f"nsx{nb}", str(nb)):
            raise _fail(path, f"stream must be 'ns{nb}' for this file; got {stream!r}")
    elif stream is not None:
        m = re.fullmatch(r"(?:nsx?)?([1-6])", stream.lower())
        if not m or int(m.group(1)) not in available:
            raise _fail(path, f"stream must be one of {[f'ns{k}' for k in sorted(available)]}; got {stream!r}")
        nb = int(m.group(1))
    else:  # the highest rate; ties go to the higher file number (ns6 is unfiltered)
        nb = max(available, key=lambda k: (-_nsx_preflight(available[k])["period"], k))
    nsx = available[nb]
    pre = _nsx_preflight(nsx)
    fs = 30000.0 / pre["period"]
    meta: dict[str, Any] = {"files": [nsx.name], "nsx": nb, "file_spec": pre["spec"], "ptp": pre["ptp"],
                            "streams": [f"nsx{k}" for k in sorted(available)]}
    if pre["spec"] != "2.1" and pre["problem"] is None:
        reader = BlackrockRawIO(filename=str(base), nsx_to_load=nb, load_nev=False)
        return _open_neo(path, "blackrock", reader, stream=None, block=0, segment=segment, metadata=meta,
                         gain_uv=gain_uv, prefer=lambda names: 0)
    if pre["ptp"]:
        raise _fail(nsx, f"{pre['problem']}; truncated PTP (spec 3.0, one packet per sample) files are not salvaged")
    # NEURALSG, or a damaged NEURALCD: map the complete samples of the selected packet
    segs = [b for b in pre["blocks"] if b[2] >= (1 if pre["spec"] == "2.1" else 2)]  # neo drops < 2-sample packets
    if not segs:
        raise _fail(nsx, f"holds no complete sample ({pre['problem'] or 'no data'})")
    segment = _check_index(path, "segment", segment, len(segs))
    data_off, declared, n, ts = segs[segment]
    if pre["problem"]:
        if segment == len(segs) - 1:  # the damage is at or right after this packet
            _truncation(meta, nsx, n, declared if declared != n else None, pre["problem"])
        else:
            meta.update(damage=pre["problem"])
            logger.warning("%s: %s; segment %d before it is intact", nsx, pre["problem"], segment)
    n_ch = pre["n_ch"]
    if pre["spec"] == "2.1":
        ids = [f"chan{e}" if e < 129 else f"ainp{e - 128}" for e in pre["ids"]]
        if gain_uv is None:
            logger.warning("%s: NSx 2.1 files carry no scale (it is in the .nev); gain_uv=1 (counts)", nsx)
            gain, units = np.ones(n_ch), "counts (NSx 2.1 has no scale; pass gain_uv=)"
            meta["scaled"] = False
        else:
            gain, units = _per_channel(gain_uv, n_ch, path=path, field="gain_uv"), "uV (gain_uv given)"
        offset = np.zeros(n_ch)
    else:
        ext = pre["ext"]
        ids = _unique_ids([bytes(x).decode("latin-1").rstrip("\x00") for x in ext["label"]],
                          [str(e) for e in ext["electrode_id"]])
        dig = ext["max_digital"].astype(np.float64) - ext["min_digital"]
        ana = ext["max_analog"].astype(np.float64) - ext["min_analog"]
        if np.any(dig == 0):
            raise _fail(nsx, "min_digital and max_digital must differ on every channel (they define the scale)")
        unit_names = [bytes(u).decode("latin-1").rstrip("\x00") for u in ext["units"]]
        if gain_uv is not None:
            gain, units = _per_channel(gain_uv, n_ch, path=path, field="gain_uv"), "uV (gain_uv given)"
            offset = np.zeros(n_ch)
        else:
            scale = np.array([_uv_per_unit(u, path=nsx, field=f"units of electrode {int(e)}")
                              for u, e in zip(unit_names, ext["electrode_id"])])
            gain = ana / dig * scale
            offset = (ext["min_analog"] - ext["min_digital"] * ana / dig) * scale
            units = sorted(set(unit_names))
    meta.update(stream=f"nsx{nb}", segment=segment, n_segments=len(segs), original_units=units,
                positions_source="grid", reader="cortexlink memmap", timestamp=int(ts))
    cmap = ChannelMap(ids, _grid_positions(n_ch), gain, offset)
    return _MemmapRecording(path, fmt="blackrock", data_path=nsx, offset=data_off, file_dtype="<i2",
                            frame_channels=n_ch, channel_map=cmap, fs_hz=fs, n_samples=n, metadata=meta)


# =============================================================================================
# NWB


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


# =============================================================================================
# detection and entry point


_SUFFIX_FORMAT = {**{f".ns{k}": "blackrock" for k in range(1, 7)}, ".nev": "blackrock", ".rhd": "intan",
                  ".rhs": "intan", ".oebin": "openephys", ".continuous": "openephys", ".nwb": "nwb", ".wav": "wav",
                  ".meta": "spikeglx"}


def detect_format(path: str | Path) -> str:
    """The format of ``path`` from its suffix or, for a folder, the files in it.

    Raises
    ------
    ValidationError
        When no format matches; the message names the path and the formats tried.
    """
    p = Path(path)
    if not p.exists():
        raise ValidationError(f"{p}: path must exist; got a missing path")
    if p.is_file():
        suf = p.suffix.lower()
        if suf in _SUFFIX_FORMAT:
            return _SUFFIX_FORMAT[suf]
        if p.name == "continuous.dat" and len(p.parents) > 2 and (p.parents[2] / "structure.oebin").is_file():
            return "openephys"
        if suf == ".bin" and p.with_suffix(".meta").is_file():
            return "spikeglx"
        if _find_sidecar(p) is not None:
            return "raw"
        what = _describe_content(_head(p))
    else:
        children = [c for c in p.iterdir()]
        sufs = {c.suffix.lower() for c in children if c.is_file()}
        if (p / "structure.oebin").is_file() or any(p.rglob("structure.oebin")):
            return "openephys"
        if ".continuous" in sufs:
            return "openephys"
        if any(m.with_suffix(".bin").is_file() for m in p.rglob("*.meta")):
            return "spikeglx"
        for suf in (".ns6", ".ns5", ".ns4", ".ns3", ".ns2", ".ns1", ".rhd", ".rhs", ".nwb", ".wav"):
            if suf in sufs:
                return _SUFFIX_FORMAT[suf]
        if any(c.suffix.lower() in _RAW_SUFFIXES and _find_sidecar(c) for c in children if c.is_file()):
            return "raw"
        what = f"a folder of {len(children)} entries"
    raise ValidationError(f"{p}: could not detect the format ({what}); tried {', '.join(FORMATS)} by file suffix "
                          "and folder contents; pass format= explicitly")


_OPENERS: dict[str, Callable[..., Recording]] = {
    "blackrock": _open_blackrock, "intan": _open_intan, "openephys": _open_openephys, "spikeglx": _open_spikeglx,
    "nwb": _open_nwb, "wav": _open_wav, "raw": _open_raw,
}


def open_recording(path: str | Path, format: str | None = None, *, stream: str | None = None,
                   **kw: Any) -> Recording:
    """Open a recording file or folder in one of :data:`FORMATS`.

    Parameters
    ----------
    path : str or Path
        File or folder (see the module docstring for what each format accepts).
    format : str, optional
        One of :data:`FORMATS`; detected from the path when omitted.
    stream : str, optional
        Which signal stream: a neo stream name (spikeglx, openephys, intan), ``"ns5"``
        (blackrock), an ElectricalSeries name (nwb), a data file name (raw folder).
    **kw
        Format options: ``segment`` (blackrock, openephys, spikeglx), ``block`` (openephys),
        ``gain_uv`` (all; overrides or supplies the scale), ``sidecar`` and
        ``allow_truncated`` (raw), ``ignore_integrity_checks`` (intan).

    Returns
    -------
    Recording
        Use as a context manager, or call ``close()``.

    Raises
    ------
    ValidationError
        Unknown, foreign, corrupt or self-contradicting input; the message names the file and
        what is wrong. Truncated files are salvaged where the format allows (module docstring).
    ConfigError
        An unknown ``format`` name or a bad option value.
    """
    p = Path(path).expanduser()
    if format is None:
        fmt = detect_format(p)
    else:
        fmt = str(format).lower()
        if fmt not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}; got {format!r}")
        if not p.exists():
            raise ValidationError(f"{p}: path must exist; got a missing path")
    opener = _OPENERS[fmt]
    try:
        inspect.signature(opener).bind(p, stream=stream, **kw)
    except TypeError:
        opts = [n for n in inspect.signature(opener).parameters if n not in ("path", "stream")]
        raise ConfigError(f"options for format {fmt!r} must be among {opts}; got {sorted(kw)}") from None
    with _wrap_parse_errors(p, fmt):
        rec = opener(p, stream=stream, **kw)
    logger.debug("opened %r", rec)
    return rec
