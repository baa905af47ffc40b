"""WAV files, raw files with a JSON sidecar, folders of WAV files and session folders to
``.clz`` files and back (``cortexlink compress`` / ``cortexlink decompress``).

A ``.clz`` file holds one int16 PCM WAV file (mono or multichannel): a small header, the WAV's
bytes around its samples kept verbatim, then the samples as a stream of :mod:`cortexlink.codec`
frames (by default one frame per second of samples). Decompressing writes back the original file byte for
byte — its header, any other chunk (``LIST``, ``fact``, a pad byte, trailing chunks), and its
samples — for any WAV the standard library's :mod:`wave` reads as 16-bit PCM, not only the
standard 44-byte-header ones.

Or (flag bit 0) it holds a raw int16 file and its sidecar (:mod:`cortexlink.codec.rawfiles`):
``head`` is the sidecar's bytes, ``tail`` the raw file's incomplete last sample's bytes (usually
none); decompressing ``x.clz`` to ``rec.bin`` writes ``rec.bin`` and its sidecar ``rec.json``.

A session folder (``manifest.json`` and ``streams/``) is compressed into one archive file of
another layout (:mod:`cortexlink.codec.folders`) and decompressed into a folder again.

Inputs are read through a memory map and outputs written frame by frame into a temporary file
beside the target, renamed into place once complete (:mod:`cortexlink.codec._fileio`): a file's
size is not bounded by memory, and a failure leaves no partial output.

Container layout (little-endian), 36-byte header, then ``head``, ``tail`` and the frames
-----------------------------------------------------------------------------------------
====== ===== ===========================================================================
offset bytes field
====== ===== ===========================================================================
0      4     magic ``b"CXLZ"``
4      1     container version (1)
5      1     flags: bit 0 a raw file and its sidecar (else a WAV file); bit 1 the WAV's head is
             the canonical 44-byte one, rebuilt from the fields below (``H`` is 0); others 0
6      2     channel count (1..65535)
8      4     sample rate in Hz
12     8     sample count per channel
20     4     samples per codec frame
24     4     ``H``: length of ``head``, the WAV's bytes before its first sample (RIFF and
             ``fmt`` headers, every chunk before ``data``, and ``data``'s own 8-byte header);
             for a raw file, its sidecar's bytes
28     4     ``T``: length of ``tail``, the WAV's bytes after its last sample (pad byte, an
             incomplete last frame's bytes, chunks after ``data``); for a raw file, the bytes
             of an incomplete last sample
32     4     CRC-32 (zlib) of bytes 0..31 followed by ``head`` and ``tail``
36     H     ``head``
36+H   T     ``tail``
36+H+T …     codec frames (see :mod:`cortexlink.codec`: each with its own CRC-32), together
             holding exactly the sample count x channel count samples
====== ===== ===========================================================================

Every refusal is a :class:`~cortexlink.core.errors.ConfigError` (paths: a missing input, an
output that exists without ``overwrite``, see :mod:`cortexlink.core.outpath`) or a
:class:`~cortexlink.core.errors.ValidationError` (data: not a WAV, not 16-bit PCM, a raw file
without a valid sidecar, a damaged ``.clz``).
"""

from __future__ import annotations

import os
import struct
import time
import wave
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.outpath import check_output_dir, check_output_file

from . import folders, rawfiles
from ._fileio import AtomicOutput, MappedFile, Sink, blocks, crc_of, write_atomic
from .stream import Decoder, Encoder, iter_frames

__all__ = ["CLZ_MAGIC", "CLZ_VERSION", "compress_file", "decompress_file", "compress_path",
           "decompress_path", "read_wav", "is_clz_file", "is_wav_file"]

CLZ_MAGIC = b"CXLZ"
CLZ_VERSION = 1
CLZ_FLAG_RAW = 0x01
#: The WAV's head is the canonical 44-byte one (RIFF, a 16-byte PCM ``fmt``, ``data``), rebuilt
#: from the channel count, rate and sample count instead of stored.
CLZ_FLAG_STD_HEAD = 0x02
#: The WAV header is parsed from the file's first MiB (the whole file if its header is longer).
_WAV_PREFIX = 1 << 20
_HEAD = struct.Struct("<4sBBHIQIII")
CLZ_HEADER_SIZE = _HEAD.size + 4
#: Called after each file of a folder: ``progress(done, total, name)``.
Progress = Callable[[int, int, str], None]


def is_clz_file(path: Path) -> bool:
    """``path`` starts with the ``.clz`` magic (a file ``compress`` wrote, so it may be replaced)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == CLZ_MAGIC
    except OSError:
        return False


def is_wav_file(path: Path) -> bool:
    """``path`` starts as a RIFF/WAVE file (what ``decompress`` writes, so it may be replaced)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
        return head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    except OSError:
        return False


def _check_input(path: Path, what: str) -> None:
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist; give an existing file or folder")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a regular file")


def _read_input(path: Path, what: str) -> bytes:
    _check_input(path, what)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None


def _map_input(path: Path, what: str) -> MappedFile:
    _check_input(path, what)
    try:
        return MappedFile(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def _wav_params(part: bytes | memoryview) -> tuple[int, int, int, int, int]:
    import io

    f = io.BytesIO(bytes(part))
    with wave.open(f, "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes(), f.tell()


def _wav_header(raw: bytes | memoryview) -> tuple[int, int, int, int, int]:
    """``(rate, channels, sample width, frames, data offset)`` by :mod:`wave`, reading only the
    bytes before the samples (the first MiB, or the whole file when its header is longer)."""
    try:
        return _wav_params(raw[:_WAV_PREFIX])
    except (wave.Error, EOFError, struct.error):
        if len(raw) <= _WAV_PREFIX:
            raise
    return _wav_params(raw)


def read_wav(raw: bytes | memoryview, name: str = "WAV") -> tuple[int, int, np.ndarray, bytes, bytes | memoryview]:
    """Parse the bytes of a 16-bit PCM WAV file: ``(rate, channels, samples (n x channels int16),
    head, tail)`` where ``head + samples' bytes + tail == raw`` (samples and tail are views of
    ``raw``).

    Raises
    ------
    ValidationError
        Not a WAV file, not 16-bit integer PCM (8-, 24-, 32-bit, float, compressed), or a data
        chunk cut short by the end of the file.
    """
    try:
        rate, nch, width, nframes, start = _wav_header(raw)
    except (wave.Error, EOFError, struct.error) as exc:
        raise ValidationError(f"{name} is not a WAV file cortexlink can read ({exc}); compress takes "
                              "16-bit integer PCM WAV files") from None
    if width != 2:
        raise ValidationError(f"{name} holds {8 * width}-bit samples; compress takes 16-bit integer PCM "
                              "WAV files only (int16)")
    if bytes(raw[start - 8:start - 4]) != b"data":
        raise ValidationError(f"{name}: could not locate its data chunk")
    declared = struct.unpack_from("<I", raw, start - 4)[0]
    if start + declared > len(raw):
        raise ValidationError(f"{name}: its data chunk declares {declared} bytes but the file ends "
                              f"{len(raw) - start} bytes after it starts (a truncated WAV)")
    end = start + nframes * nch * 2
    samples = np.frombuffer(raw, "<i2", count=nframes * nch, offset=start).reshape(nframes, nch)
    return rate, nch, samples.astype(np.int16, copy=False), bytes(raw[:start]), raw[end:]


def std_wav_head(rate: int, nch: int, n: int) -> bytes | None:
    """The canonical 44-byte header of a 16-bit PCM WAV file, or None when its sizes overflow."""
    data = n * nch * 2
    if data + 36 > 0xFFFFFFFF or rate * nch * 2 > 0xFFFFFFFF:
        return None
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, nch, rate,
                       rate * nch * 2, nch * 2, 16, b"data", data)


def _encode(raw: bytes | memoryview, name: str, out: BinaryIO, *, resync_frames: int, entropy: str,
            sidecar: bytes | None = None, frame_s: float = 1.0) -> int:
    """Write a WAV file's bytes (``sidecar`` None), or a raw file's bytes and its sidecar's, as a
    .clz file to ``out``, frame by frame; return the bytes written."""
    if sidecar is None:
        rate, nch, samples, head, tail = read_wav(raw, name)
        flags = 0
        if not len(tail) and bytes(head) == std_wav_head(rate, nch, samples.shape[0]):
            head, flags = b"", CLZ_FLAG_STD_HEAD
    else:
        nch, rate_hz = rawfiles.parse_sidecar(sidecar, f"sidecar of {name}")
        rate = int(round(rate_hz))
        samples, tail = rawfiles.split_raw(raw, nch)
        head, flags = sidecar, CLZ_FLAG_RAW
    frame = max(1, min(int(round(frame_s * rate)), 1 << 22, max(1, (1 << 24) // nch)))
    enc = Encoder(nch, resync_frames=resync_frames, entropy=entropy)
    n = samples.shape[0]
    fixed = _HEAD.pack(CLZ_MAGIC, CLZ_VERSION, flags, nch, rate, n, frame, len(head), len(tail))
    crc = crc_of(memoryview(tail), crc=zlib.crc32(head, zlib.crc32(fixed)))
    sink = Sink(out)
    for part in (fixed, struct.pack("<I", crc), head):
        sink.write(part)
    for b in blocks(memoryview(tail)):
        sink.write(b)
    for i in range(0, n, frame) if n else [0]:
        sink.write(enc.encode(samples[i:i + frame]))
    return sink.n


def _clz_flags(buf: bytes | memoryview, name: str) -> int:
    if len(buf) < CLZ_HEADER_SIZE or bytes(buf[:4]) != CLZ_MAGIC:
        raise ValidationError(f"{name} is not a .clz file (no {CLZ_MAGIC!r} header); decompress takes files "
                              "written by cortexlink compress")
    return buf[5]


def _decode(buf: bytes | memoryview, name: str, out: BinaryIO) -> tuple[int, bytes | None]:
    """Write the file a .clz file holds to ``out`` as its frames decode; return ``(bytes
    written, None)`` for a WAV file, ``(bytes written, sidecar)`` for a raw file."""
    _clz_flags(buf, name)
    magic, version, flags, nch, rate, n, frame, hlen, tlen = _HEAD.unpack_from(buf)
    if version != CLZ_VERSION:
        raise ValidationError(f"{name}: .clz version {version} is not supported (this reader: {CLZ_VERSION})")
    (crc,) = struct.unpack_from("<I", buf, _HEAD.size)
    pos = CLZ_HEADER_SIZE
    if pos + hlen + tlen > len(buf):
        raise ValidationError(f"{name}: truncated .clz file (its header needs {pos + hlen + tlen} bytes)")
    head, tail = bytes(buf[pos:pos + hlen]), memoryview(buf)[pos + hlen:pos + hlen + tlen]
    if crc_of(tail, crc=zlib.crc32(head, zlib.crc32(buf[:_HEAD.size]))) != crc:
        raise ValidationError(f"{name}: CRC-32 mismatch in the .clz header (the file is corrupt)")
    if flags & ~(CLZ_FLAG_RAW | CLZ_FLAG_STD_HEAD) or nch < 1 or (flags & CLZ_FLAG_STD_HEAD and (
            flags & CLZ_FLAG_RAW or hlen or std_wav_head(rate, nch, n) is None)):
        raise ValidationError(f"{name}: .clz header has flags 0x{flags:02x} and {nch} channels (corrupt)")
    raw = bool(flags & CLZ_FLAG_RAW)
    if flags & CLZ_FLAG_STD_HEAD:
        head = std_wav_head(rate, nch, n)
    sink = Sink(out)
    if not raw:
        sink.write(head)
    dec, got, n_frames = Decoder(), 0, 0
    try:
        for fr in iter_frames(memoryview(buf)[pos + hlen + tlen:]):
            part = dec.decode(fr)
            n_frames += 1
            if part.shape[1] != nch or got + part.shape[0] > n:
                got = -1
                break
            got += part.shape[0]
            sink.write(part.astype("<i2", copy=False).tobytes())
    except ValidationError as exc:
        raise ValidationError(f"{name}: {exc}") from None
    if not n_frames or got != n:
        raise ValidationError(f"{name}: the frames do not hold the {n} x {nch} samples its header declares "
                              "(corrupt or truncated .clz file)")
    for b in blocks(tail):
        sink.write(b)
    return sink.n, (head if raw else None)


def _check_frame_s(frame_s: object) -> float:
    if isinstance(frame_s, bool) or not isinstance(frame_s, (int, float)) or not 0.001 <= frame_s <= 60:
        raise ConfigError(f"frame_s must be a number of seconds in [0.001, 60]; got {frame_s!r}")
    return float(frame_s)


def compress_file(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                  resync_frames: int = 32, entropy: str = "range", frame_s: float = 1.0) -> dict:
    """Compress one 16-bit PCM WAV file, or one raw int16 file with its sidecar ``<stem>.json``
    (see :mod:`cortexlink.codec.rawfiles`), into a ``.clz`` file; return ``{files, original_bytes,
    compressed_bytes, ratio}`` (original bytes: the WAV's, or the raw file's and its sidecar's).
    ``resync_frames`` and ``entropy`` go to the :class:`Encoder`; frames hold ``frame_s`` seconds
    (at most 2**24 samples x channels; longer frames: fewer frame headers and table sections, for
    storage). The input is read through a memory map and the output written frame by frame."""
    Encoder(1, resync_frames=resync_frames, entropy=entropy)  # options checked before any work
    frame_s = _check_frame_s(frame_s)
    src, dst = Path(src), Path(dst)
    with _map_input(src, "input") as m:
        raw = m.buf
        sidecar = None
        if not (bytes(raw[:4]) == b"RIFF" and bytes(raw[8:12]) == b"WAVE"):
            side = rawfiles.sidecar_path(src)
            if src.suffix.lower() == rawfiles.SIDECAR_SUFFIX:
                raise ValidationError(f"input {src} is a .json file; give the raw sample file its sidecar "
                                      "describes (or a WAV file)")
            if not side.is_file():
                raise ValidationError(f"input {src} is not a WAV file, and has no sidecar {side} to read it as "
                                      'raw int16 samples; write one such as {"channels": 384, "rate_hz": 30000, '
                                      '"dtype": "int16"}')
            sidecar = _read_input(side, "sidecar")
            rawfiles.parse_sidecar(sidecar, f"sidecar {side}")
        else:
            read_wav(raw, str(src))          # refuse a bad WAV before the output is checked
        dst = check_output_file(dst, what="output", overwrite=overwrite, ours=is_clz_file,
                                ours_is="a .clz file written by cortexlink compress")
        with AtomicOutput(dst) as f:
            written = _encode(raw, str(src), f, resync_frames=resync_frames, entropy=entropy, sidecar=sidecar,
                              frame_s=frame_s)
        original = len(raw) + len(sidecar or b"")
    return _summary(1, original, written)


def _holds_raw(path: Path) -> bool:
    """``path`` is a .clz file holding a raw file and its sidecar."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        return head[:4] == CLZ_MAGIC and bool(head[5] & CLZ_FLAG_RAW)
    except OSError:
        return False


def _is_raw_with_sidecar(path: Path) -> bool:
    try:
        rawfiles.parse_sidecar(rawfiles.sidecar_path(path).read_bytes())
        return path.is_file()
    except (OSError, ValidationError):
        return False


def decompress_file(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Decompress one ``.clz`` file into the WAV file it was made from, or into the raw file
    ``dst`` and its sidecar ``dst`` with the suffix ``.json`` (byte-identical), frame by frame."""
    src, dst = Path(src), Path(dst)
    with _map_input(src, "input") as m:
        buf = m.buf
        if _clz_flags(buf, str(src)) & CLZ_FLAG_RAW:
            side = rawfiles.sidecar_path(dst)
            if dst.suffix.lower() == rawfiles.SIDECAR_SUFFIX:
                raise ConfigError(f"output {dst}: {src} holds a raw file and its sidecar; give the raw file's "
                                  "path (not ending in .json): its sidecar is written beside it")
            dst = check_output_file(dst, what="output", overwrite=overwrite, ours=_is_raw_with_sidecar,
                                    ours_is="a raw file with a sidecar")
            check_output_file(side, what="output sidecar", overwrite=overwrite, ours=lambda p: dst.exists(),
                              ours_is="the sidecar of the raw file being replaced")
            with AtomicOutput(dst) as f:
                written, sidecar = _decode(buf, str(src), f)
            write_atomic(side, sidecar)
            return _summary(1, written + len(sidecar), len(buf))
        dst = check_output_file(dst, what="output", overwrite=overwrite, ours=is_wav_file,
                                ours_is="a WAV file")
        with AtomicOutput(dst) as f:
            written, _ = _decode(buf, str(src), f)
        return _summary(1, written, len(buf))


def _summary(files: int, original: int, compressed: int) -> dict:
    return {"files": files, "original_bytes": original, "compressed_bytes": compressed,
            "ratio": round(original / compressed, 4) if compressed else None}


def _folder(src: Path, dst: Path, suffix: str, new_suffix: str, overwrite: bool, one: Callable,
            progress: Progress | None) -> dict:
    try:
        names = sorted(p for p in src.iterdir() if p.suffix.lower() == suffix and p.is_file())
    except OSError as exc:
        raise ConfigError(f"input folder {src}: cannot be read ({exc.strerror or exc})") from None
    if not names:
        raise ValidationError(f"input folder {src} holds no *{suffix} file")
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"output {dst} exists and is not a folder; the input is a folder, so give a folder")
    if not overwrite and dst.is_dir() and any(dst.iterdir()):
        raise ConfigError(f"output folder {dst} exists and is not empty; choose a new folder (or pass "
                          f"--overwrite to replace the {new_suffix} files in it)")
    dst = check_output_dir(dst, what="output folder", create=False)
    # a .clz holding a raw file (compressed on its own) comes back as <stem>.bin and <stem>.json
    targets = [dst / (p.stem + (".bin" if new_suffix == ".wav" and _holds_raw(p) else new_suffix)) for p in names]
    if len({t.stem for t in targets}) != len(targets):
        raise ConfigError(f"input folder {src}: two files map to the same output name")
    ours = is_clz_file if new_suffix == ".clz" else (lambda q: is_wav_file(q) or _is_raw_with_sidecar(q))
    for t in targets:  # refuse before anything is written
        if t.exists() or t.is_symlink():
            check_output_file(t, what="output", overwrite=overwrite, ours=ours, create_parent=False)
    check_output_dir(dst, what="output folder", create=True)
    total = _summary(0, 0, 0)
    for i, (p, t) in enumerate(zip(names, targets)):
        s = one(p, t)
        total["files"] += 1
        total["original_bytes"] += s["original_bytes"]
        total["compressed_bytes"] += s["compressed_bytes"]
        if progress is not None:
            progress(i + 1, len(names), p.name)
    return _summary(total["files"], total["original_bytes"], total["compressed_bytes"])


def compress_path(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                  resync_frames: int = 32, entropy: str = "range", frame_s: float = 1.0,
                  progress: Progress | None = None) -> dict:
    """Compress a WAV file (or a raw file with its sidecar) to a ``.clz`` file, a session folder
    to one archive file (:mod:`cortexlink.codec.folders`), or every ``*.wav`` of another folder
    (not recursive) to ``.clz`` files of the same stem in the folder ``dst``; return the summary ``{mode, input,
    output, files, original_bytes, compressed_bytes, ratio, seconds}``."""
    t0 = time.perf_counter()
    src = Path(src)
    frame_s = _check_frame_s(frame_s)
    if src.is_dir() and folders.is_session_folder(src):
        s = folders.compress_session(src, Path(dst), overwrite=overwrite, resync_frames=resync_frames,
                                     entropy=entropy)
    elif src.is_dir():
        Encoder(1, resync_frames=resync_frames, entropy=entropy)
        s = _folder(src, Path(dst), ".wav", ".clz", overwrite,
                    lambda p, t: compress_file(p, t, overwrite=overwrite, resync_frames=resync_frames,
                                               entropy=entropy, frame_s=frame_s), progress)
    else:
        s = compress_file(src, dst, overwrite=overwrite, resync_frames=resync_frames, entropy=entropy,
                          frame_s=frame_s)
    return {"mode": "compress", "input": str(src), "output": str(dst), **s,
            "seconds": round(time.perf_counter() - t0, 3)}


def decompress_path(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False,
                    progress: Progress | None = None) -> dict:
    """Decompress a ``.clz`` file to a WAV file (or a raw file and its sidecar), a session archive
    to the folder ``dst`` (new or empty), or every ``*.clz`` of a folder to ``.wav`` files in the
    folder ``dst``; the summary as :func:`compress_path`'s (original bytes: the WAVs')."""
    t0 = time.perf_counter()
    src = Path(src)
    if src.is_file() and folders.is_archive_file(src):
        s = folders.decompress_session(src, Path(dst))
    elif src.is_dir():
        s = _folder(src, Path(dst), ".clz", ".wav", overwrite,
                    lambda p, t: decompress_file(p, t, overwrite=overwrite), progress)
    else:
        s = decompress_file(src, dst, overwrite=overwrite)
    return {"mode": "decompress", "input": str(src), "output": str(dst), **s,
            "seconds": round(time.perf_counter() - t0, 3)}
