"""Shared by every importer: the :class:`Recording` base class, the memory-mapped and
multi-file recordings, and the helpers for units, channel maps, truncation and errors.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import struct
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, CortexlinkError, ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.core.validation import check_positive

logger = logging.getLogger("cortexlink.io.importers")  # one logger for every format


# µV per unit of each voltage unit spelling found in the formats read here
_UV_PER_UNIT = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "microvolt": 1.0, "microvolts": 1.0,
                "mv": 1e3, "millivolt": 1e3, "millivolts": 1e3,
                "v": 1e6, "volt": 1e6, "volts": 1e6, "nv": 1e-3, "nanovolt": 1e-3, "nanovolts": 1e-3}

# exceptions a library raises on a file it cannot parse; wrapped into ValidationError
_PARSE_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, struct.error, AssertionError, ArithmeticError)

_BLOCK_BYTES = 4 << 20  # iter_chunks reads the file in blocks of about this size


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

