"""Session folders to one archive file and back (``cortexlink compress SESSION OUT`` /
``cortexlink decompress OUT SESSION``), every file byte-identical.

A session folder (:mod:`cortexlink.io.session_log`: ``manifest.json``, ``streams/*.clog``,
``decoders/*.npz`` …) is archived as one file: every folder and regular file under it, in
sorted order. An uncompressed int16 array stream (``streams/raw.clog``: stream format 1 or 2, a
header whose JSON says ``kind: "array"`` and dtype int16) is split into its *skeleton* — the file
header, every record's 36-byte header, and any bytes after the last whole record (a torn tail) —
compressed with LZMA, and its records' samples, concatenated, coded with the lossless codec
(:class:`cortexlink.codec.Encoder`, frames of about one second). Putting the records back
together needs only the payload lengths in their headers, so the file comes back byte for byte
whatever its records hold (a record with a bad CRC included). Any other file is stored
LZMA-compressed (preset 6; preset 1, as it streams, above 64 MB), or as it is when LZMA does not
make a file of up to 64 MB smaller (e.g. a raw stream already coded by the codec, stream format
3). File modes and times are not kept; symbolic links and special files are refused. Files are
read through a memory map and written as they are coded, so memory use does not grow with the
session's length (about one codec frame, plus the LZMA skeleton: ~36 bytes a record).

Archive layout (little-endian)
------------------------------
====== ===== ==========================================================================
offset bytes field
====== ===== ==========================================================================
0      4     magic ``b"CXLF"``
4      1     archive version (1)
5      3     reserved (0)
8      4     entry count
12     4     CRC-32 (zlib) of bytes 0..11
====== ===== ==========================================================================

then the entries, each a 32-byte header, its path, its payload:

====== ===== ==========================================================================
0      1     kind: 0 folder, 1 file stored, 2 file LZMA (xz), 3 int16 stream (below)
1      1     reserved (0)
2      2     ``P``: path length
4      8     the file's size in bytes (0 for a folder)
12     8     ``L``: payload length
20     4     CRC-32 of the file's bytes (0 for a folder)
24     4     reserved (0)
28     4     CRC-32 of the payload followed by bytes 0..27 and the path
32     P     path relative to the session folder, UTF-8, ``/``-separated
32+P   L     payload
====== ===== ==========================================================================

Payload of kind 3: the codec stream (``C`` bytes of frames, each with its own CRC), the
LZMA-compressed skeleton, then ``uint32`` channel count and ``uint64`` ``C``. The skeleton,
decompressed: the file header, the record headers, the trailing bytes, then ``uint64`` length of
the trailing bytes, ``uint32`` file-header length, ``uint64`` record count.

Decompressing refuses (:class:`~cortexlink.core.errors.ValidationError`) a damaged archive (any
CRC, checked before anything is decoded; a truncated entry; a path that would leave the output
folder), and writes into a temporary folder beside the output that is renamed into place only
once every file checked out (size and CRC-32 of its bytes).
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import stat
import struct
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.outpath import check_output_dir, check_output_file

from ._fileio import AtomicOutput, MappedFile, Sink, blocks, crc_of
from .stream import Decoder, Encoder, iter_frames

__all__ = ["ARCHIVE_MAGIC", "ARCHIVE_VERSION", "is_session_folder", "is_archive_file", "compress_session",
           "decompress_session"]

ARCHIVE_MAGIC = b"CXLF"
ARCHIVE_VERSION = 1
_TOP = struct.Struct("<4sB3sI")
_ENTRY = struct.Struct("<BBHQQII")
_CRC = struct.Struct("<I")
KIND_DIR, KIND_STORED, KIND_LZMA, KIND_SAMPLES = 0, 1, 2, 3
_CLOG_HEAD = struct.Struct("<4sHI")
_REC_HEAD_BYTES = 36
_MAX_FRAME_VALUES = 1 << 24
_BLOCK = 1 << 24  # LZMA output bound per call (the blocks read are _fileio.BLOCK)
#: Files up to this size are LZMA-compressed at preset 6 in memory, and stored when that is not
#: smaller; larger ones are LZMA-compressed as they stream, at preset 1.
_SMALL = 64 << 20


def is_session_folder(path: Path) -> bool:
    """``path`` is a folder with ``manifest.json`` and ``streams/`` (a cortexlink session folder)."""
    return (path / "manifest.json").is_file() and (path / "streams").is_dir()


def is_archive_file(path: Path) -> bool:
    """``path`` starts with the session archive's magic."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == ARCHIVE_MAGIC
    except OSError:
        return False


# ----------------------------------------------------------------------------- int16 streams

def _int16_stream_info(buf: memoryview) -> tuple[int, int] | None:
    """``(channels, header length)`` of an uncompressed int16 array stream file (format 1 or 2),
    or ``None`` when ``buf`` is not one."""
    if len(buf) < _CLOG_HEAD.size:
        return None
    magic, version, jlen = _CLOG_HEAD.unpack_from(buf)
    if magic != b"CLOG" or version not in (1, 2):
        return None
    hlen = _CLOG_HEAD.size + jlen + (4 if version == 2 else 0)
    if hlen > len(buf):
        return None
    try:
        info = json.loads(bytes(buf[_CLOG_HEAD.size:_CLOG_HEAD.size + jlen]).decode("utf-8"))
        ok = (isinstance(info, dict) and info.get("kind") == "array" and "codec" not in info
              and np.dtype(info.get("dtype")) == np.dtype("<i2") and isinstance(info.get("columns"), list))
    except (UnicodeDecodeError, ValueError, TypeError):
        return None
    if not ok or not 1 <= len(info["columns"]) <= 65535:
        return None
    return len(info["columns"]), hlen


def _records(buf: memoryview, nch: int, hlen: int) -> Iterator[tuple[int, int]]:
    """``(offset, payload length)`` of each whole record from ``hlen`` on, up to the first that is
    not one (a torn tail, a damaged header): those bytes are the file's tail."""
    pos = hlen
    while pos + _REC_HEAD_BYTES <= len(buf) and buf[pos:pos + 4] == b"REC0":
        (plen,) = struct.unpack_from("<I", buf, pos + 4)
        if plen % (2 * nch) or pos + _REC_HEAD_BYTES + plen > len(buf):
            return
        yield pos, plen
        pos += _REC_HEAD_BYTES + plen


def _pack_int16_stream(buf: memoryview, nch: int, hlen: int, rate: int, sink: Sink, *, resync_frames: int,
                       entropy: str) -> None:
    """Payload of kind 3: codec frames, the LZMA skeleton, then ``uint32`` channels and ``uint64``
    length of the frames. The skeleton: the file header, the record headers, the tail, then
    ``uint64`` tail length, ``uint32`` header length, ``uint64`` record count."""
    enc = Encoder(nch, resync_frames=resync_frames, entropy=entropy)
    frame_rows = max(1, min(rate, _MAX_FRAME_VALUES // nch))
    skel, skel_parts = lzma.LZMACompressor(preset=6), []
    skel_parts.append(skel.compress(buf[:hlen]))
    pending: list[np.ndarray] = []
    rows = n_rec = 0
    end = hlen

    def flush() -> None:
        nonlocal rows
        block = np.concatenate(pending).reshape(-1, nch)
        pending.clear()
        sink.write(enc.encode(block))
        rows = 0

    for off, plen in _records(buf, nch, hlen):
        skel_parts.append(skel.compress(buf[off:off + _REC_HEAD_BYTES]))
        pending.append(np.frombuffer(buf, "<i2", count=plen // 2, offset=off + _REC_HEAD_BYTES).astype(np.int16))
        rows += plen // (2 * nch)
        n_rec += 1
        end = off + _REC_HEAD_BYTES + plen
        if rows >= frame_rows:
            flush()
    if pending:
        flush()
    coded = sink.n
    tail = buf[end:]
    skel_parts.append(skel.compress(tail))
    skel_parts.append(skel.compress(struct.pack("<QIQ", len(tail), hlen, n_rec)))
    skel_parts.append(skel.flush())
    for p in skel_parts:
        sink.write(p)
    sink.write(struct.pack("<IQ", nch, coded))


def _unpack_int16_stream(payload: memoryview, out: Sink, name: str) -> None:
    bad = f"archive entry {name}: damaged samples or skeleton"
    if len(payload) < 12:
        raise ValidationError(f"{bad} (payload of {len(payload)} bytes)")
    nch, coded = struct.unpack_from("<IQ", payload, len(payload) - 12)
    try:
        skeleton = lzma.decompress(payload[coded:len(payload) - 12]) if coded <= len(payload) - 12 else b""
    except lzma.LZMAError as exc:
        raise ValidationError(f"{bad} ({exc})") from None
    if len(skeleton) < 20:
        raise ValidationError(f"{bad} (skeleton of {len(skeleton)} bytes)")
    tlen, hlen, n_rec = struct.unpack_from("<QIQ", skeleton, len(skeleton) - 20)
    if len(skeleton) != 20 + hlen + n_rec * _REC_HEAD_BYTES + tlen:
        raise ValidationError(f"{bad} (skeleton sizes do not add up)")
    dec = Decoder()
    frames = iter_frames(payload[:coded])
    avail, rpos = b"", 0
    out.write(skeleton[:hlen])
    pos = hlen
    try:
        for _ in range(n_rec):
            head = skeleton[pos:pos + _REC_HEAD_BYTES]
            pos += _REC_HEAD_BYTES
            (plen,) = struct.unpack_from("<I", head, 4)
            while len(avail) - rpos < plen:
                fr = next(frames, None)
                if fr is None:
                    raise ValidationError(f"{bad} (the frames end before the records)")
                block = dec.decode(fr)
                if block.shape[1] != nch:
                    raise ValidationError(f"{bad} ({block.shape[1]} channels, {nch} expected)")
                avail, rpos = avail[rpos:] + block.astype("<i2", copy=False).tobytes(), 0
            out.write(head)
            out.write(avail[rpos:rpos + plen])
            rpos += plen
        if rpos != len(avail) or next(frames, None) is not None:
            raise ValidationError(f"{bad} (samples left after the last record)")
    except ValidationError as exc:
        raise ValidationError(str(exc) if str(exc).startswith(bad) else f"{bad} ({exc})") from None
    out.write(skeleton[pos:pos + tlen])


# ----------------------------------------------------------------------------- archive

def _session_rate(src: Path) -> int:
    try:
        rate = json.loads((src / "manifest.json").read_text("utf-8")).get("fs_hz")
        return int(round(float(rate))) if rate and float(rate) > 0 else 30000
    except (OSError, ValueError, TypeError, AttributeError):
        return 30000


def _walk(src: Path) -> list[tuple[str, Path]]:
    """Every folder and file under ``src`` (relative ``/`` paths, sorted); refuse links and
    special files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            p = base / name
            rel = p.relative_to(src).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                raise ValidationError(f"session folder {src}: {rel} is a symbolic link; compress archives "
                                      "regular files and folders only")
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                raise ValidationError(f"session folder {src}: {rel} is not a regular file or folder")
            out.append((rel, p))
    return sorted(out)


def _write_entry(f: BinaryIO, kind: int, rel: str, size: int, crc_file: int, produce: Callable[[Sink], None]) -> int:
    """Write one entry (header patched once the payload is written); return its payload length."""
    path = rel.encode("utf-8")
    start = f.tell()
    f.write(b"\0" * (_ENTRY.size + 4) + path)
    sink = Sink(f)
    produce(sink)
    head = _ENTRY.pack(kind, 0, len(path), size, sink.n, crc_file, 0)
    crc = zlib.crc32(path, zlib.crc32(head, sink.crc)) & 0xFFFFFFFF
    end = f.tell()
    f.seek(start)
    f.write(head + _CRC.pack(crc))
    f.seek(end)
    return sink.n


def _lzma_stream(buf: memoryview, sink: Sink) -> None:
    c = lzma.LZMACompressor(preset=1)
    for b in blocks(buf):
        sink.write(c.compress(b))
    sink.write(c.flush())


def _add_file(f: BinaryIO, rel: str, buf: memoryview, rate: int, resync_frames: int, entropy: str) -> bool:
    """Write the entry of one file; return whether its samples were coded by the codec."""
    info = _int16_stream_info(buf) if rel.endswith(".clog") else None
    if info is not None:
        _write_entry(f, KIND_SAMPLES, rel, len(buf), crc_of(buf), lambda sink: _pack_int16_stream(
            buf, *info, rate, sink, resync_frames=resync_frames, entropy=entropy))
        return True
    if len(buf) > _SMALL:      # LZMA as it streams, at a faster preset
        _write_entry(f, KIND_LZMA, rel, len(buf), crc_of(buf), lambda sink: _lzma_stream(buf, sink))
        return False
    packed = lzma.compress(buf, preset=6)
    kind, data = (KIND_LZMA, packed) if len(packed) < len(buf) else (KIND_STORED, buf)
    _write_entry(f, kind, rel, len(buf), crc_of(buf), lambda sink: sink.write(data))
    return False


def compress_session(src: Path, dst: Path, *, overwrite: bool = False, resync_frames: int = 32,
                     entropy: str = "range") -> dict:
    """Archive the session folder ``src`` into the file ``dst``; return ``{files, original_bytes,
    compressed_bytes, ratio, coded_streams}`` (files: regular files; original bytes: theirs)."""
    Encoder(1, resync_frames=resync_frames, entropy=entropy)  # options checked before any work
    src, dst = Path(src), Path(dst)
    if not is_session_folder(src):
        raise ValidationError(f"{src} is not a session folder (manifest.json and streams/)")
    dst = check_output_file(dst, what="output", overwrite=overwrite, ours=is_archive_file,
                            ours_is="a session archive written by cortexlink compress")
    rate = _session_rate(src)
    entries = _walk(src)
    n_files, original, coded = 0, 0, []
    with AtomicOutput(dst) as f:
        top = _TOP.pack(ARCHIVE_MAGIC, ARCHIVE_VERSION, b"\0\0\0", len(entries))
        f.write(top + _CRC.pack(zlib.crc32(top) & 0xFFFFFFFF))
        for rel, p in entries:
            if p.is_dir():
                _write_entry(f, KIND_DIR, rel, 0, 0, lambda sink: None)
                continue
            try:
                m = MappedFile(p)
            except OSError as exc:
                raise ConfigError(f"session folder {src}: {rel} cannot be read ({exc.strerror or exc})") from None
            with m:
                n_files += 1
                original += len(m.buf)
                if _add_file(f, rel, m.buf, rate, resync_frames, entropy):
                    coded.append(rel)
    size = dst.stat().st_size
    return {"files": n_files, "original_bytes": original, "compressed_bytes": size,
            "ratio": round(original / size, 4) if size else None, "coded_streams": coded}


def _safe_rel(rel: str, name: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or any(part in ("", ".", "..") for part in rel.split("/")) or "\\" in rel:
        raise ValidationError(f"{name}: archive entry path {rel!r} would leave the output folder (damaged or "
                              "foreign archive)")
    return p


def _read_entries(buf: memoryview, name: str) -> list[tuple[int, str, int, int, int, int]]:
    """Every entry as ``(kind, path, size, file CRC, payload offset, payload length)``, each
    entry's CRC checked (before anything is decoded)."""
    if len(buf) < _TOP.size + 4 or buf[:4] != ARCHIVE_MAGIC:
        raise ValidationError(f"{name} is not a session archive (no {ARCHIVE_MAGIC!r} header)")
    magic, version, _, count = _TOP.unpack_from(buf)
    if version != ARCHIVE_VERSION:
        raise ValidationError(f"{name}: archive version {version} is not supported (this reader: {ARCHIVE_VERSION})")
    if zlib.crc32(buf[:_TOP.size]) & 0xFFFFFFFF != _CRC.unpack_from(buf, _TOP.size)[0]:
        raise ValidationError(f"{name}: CRC-32 mismatch in the archive header (the file is corrupt)")
    pos, out = _TOP.size + 4, []
    for i in range(count):
        if pos + _ENTRY.size + 4 > len(buf):
            raise ValidationError(f"{name}: truncated archive (entry {i} of {count} cut short)")
        kind, _, plen, size, length, crc_file, _ = _ENTRY.unpack_from(buf, pos)
        (crc,) = _CRC.unpack_from(buf, pos + _ENTRY.size)
        start = pos + _ENTRY.size + 4
        if start + plen + length > len(buf):
            raise ValidationError(f"{name}: truncated archive (entry {i} of {count} cut short)")
        path_b = bytes(buf[start:start + plen])
        payload_crc = crc_of(buf, start + plen, start + plen + length)
        if zlib.crc32(path_b, zlib.crc32(buf[pos:pos + _ENTRY.size], payload_crc)) & 0xFFFFFFFF != crc:
            raise ValidationError(f"{name}: CRC-32 mismatch in archive entry {i} (the file is corrupt)")
        rel = path_b.decode("utf-8", errors="replace")
        _safe_rel(rel, name)
        if kind not in (KIND_DIR, KIND_STORED, KIND_LZMA, KIND_SAMPLES):
            raise ValidationError(f"{name}: archive entry {rel} has unknown kind {kind} (corrupt or newer archive)")
        out.append((kind, rel, size, crc_file, start + plen, length))
        pos = start + plen + length
    if pos != len(buf):
        raise ValidationError(f"{name}: {len(buf) - pos} unexpected bytes after the last archive entry")
    return out


def _restore(kind: int, payload: memoryview, sink: Sink, rel: str, name: str) -> None:
    if kind == KIND_STORED:
        for b in blocks(payload):
            sink.write(b)
    elif kind == KIND_LZMA:
        d = lzma.LZMADecompressor()
        try:
            for b in blocks(payload):
                sink.write(d.decompress(b, max_length=_BLOCK))
                while not d.eof and not d.needs_input:
                    sink.write(d.decompress(b"", max_length=_BLOCK))
        except lzma.LZMAError as exc:
            raise ValidationError(f"{name}: archive entry {rel}: damaged ({exc})") from None
        if not d.eof or d.unused_data:
            raise ValidationError(f"{name}: archive entry {rel}: damaged (LZMA stream cut short or followed by "
                                  "other bytes)")
    else:
        _unpack_int16_stream(payload, sink, rel)


def decompress_session(src: Path, dst: Path) -> dict:
    """Restore the session folder archived in ``src`` into the folder ``dst`` (which must not
    exist, or be empty); return the summary as :func:`compress_session`'s."""
    src, dst = Path(src), Path(dst)
    check_output_dir(dst, what="output folder", create=False, new=True)
    try:
        m = MappedFile(src)
    except OSError as exc:
        raise ConfigError(f"input {src}: cannot be read ({exc.strerror or exc})") from None
    parent = Path(os.path.abspath(dst)).parent
    tmp = parent / f".{dst.name}.{os.getpid()}.partial"
    n_files = original = 0
    try:
        entries = _read_entries(m.buf, str(src))
        parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        for kind, rel, size, crc_file, start, length in entries:
            target = tmp.joinpath(*PurePosixPath(rel).parts)
            if kind == KIND_DIR:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                sink = Sink(f)
                _restore(kind, m.buf[start:start + length], sink, rel, str(src))
            if sink.n != size or sink.crc & 0xFFFFFFFF != crc_file:
                raise ValidationError(f"{src}: archive entry {rel} does not restore its original bytes (CRC-32 "
                                      "or size mismatch: the archive is corrupt)")
            n_files += 1
            original += size
        if dst.is_dir():
            dst.rmdir()          # empty (checked above)
        os.replace(tmp, dst)
    except OSError as exc:
        raise ConfigError(f"cannot write the output folder {dst} ({exc.strerror or exc})") from None
    finally:
        m.close()
        shutil.rmtree(tmp, ignore_errors=True)
    size = src.stat().st_size
    return {"files": n_files, "original_bytes": original, "compressed_bytes": size,
            "ratio": round(original / size, 4) if size else None}
