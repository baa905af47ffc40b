"""Session folders to one archive file and back (``cortexlink compress SESSION OUT`` /
``cortexlink decompress OUT SESSION``), every file byte-identical.

A session folder (:mod:`cortexlink.io.session_log`: ``manifest.json``, ``streams/*.clog``,
``decoders/*.npz`` …) is archived as one file: every folder and regular file under it, in
sorted order. An uncompressed int16 array stream (``streams/raw.clog``: stream format 1 or 2, a
header whose JSON says ``kind: "array"`` and dtype int16) is split into its *skeleton* — the file
header, every record's 36-byte header, and any bytes after the last whole record (a torn tail) —
compressed with LZMA, and its records' samples, concatenated, coded with the lossless codec
(:func:`cortexlink.codec.encode_array`, frames of about one second). Putting the records back
together needs only the payload lengths in their headers, so the file comes back byte for byte
whatever its records hold (a record with a bad CRC included). Any other file is stored
LZMA-compressed, or as it is when LZMA does not make it smaller (e.g. a raw stream already coded
by the codec, stream format 3). File modes and times are not kept; symbolic links and special
files are refused.

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
28     4     CRC-32 of bytes 0..27, the path and the payload
32     P     path relative to the session folder, UTF-8, ``/``-separated
32+P   L     payload
====== ===== ==========================================================================

Payload of kind 3: ``uint32`` channel count, ``uint32`` length ``S`` of the LZMA-compressed
skeleton, the skeleton, then the codec stream (frames, each with its own CRC). The skeleton,
decompressed: ``uint32`` file-header length, ``uint32`` record count, the file header, the
record headers, then the trailing bytes.

Decompressing refuses (:class:`~cortexlink.core.errors.ValidationError`) a damaged archive (any
CRC, a truncated entry, a path that would leave the output folder), and writes into a temporary
folder beside the output that is renamed into place only once every file checked out.
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

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.outpath import check_output_dir, check_output_file

from .stream import decode_array, encode_array

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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise ConfigError(f"cannot write {path} ({exc.strerror or exc})") from None


# ----------------------------------------------------------------------------- int16 streams

def _int16_stream_layout(buf: bytes) -> tuple[int, int, list[int]] | None:
    """``(channels, header length, record offsets)`` of an uncompressed int16 array stream file
    (format 1 or 2), or ``None`` when ``buf`` is not one."""
    if len(buf) < _CLOG_HEAD.size:
        return None
    magic, version, jlen = _CLOG_HEAD.unpack_from(buf)
    if magic != b"CLOG" or version not in (1, 2):
        return None
    hlen = _CLOG_HEAD.size + jlen + (4 if version == 2 else 0)
    if hlen > len(buf):
        return None
    try:
        info = json.loads(buf[_CLOG_HEAD.size:_CLOG_HEAD.size + jlen].decode("utf-8"))
        ok = (isinstance(info, dict) and info.get("kind") == "array" and "codec" not in info
              and np.dtype(info.get("dtype")) == np.dtype("<i2") and isinstance(info.get("columns"), list))
    except (UnicodeDecodeError, ValueError, TypeError):
        return None
    if not ok or not 1 <= len(info["columns"]) <= 65535:
        return None
    nch = len(info["columns"])
    offsets, pos = [], hlen
    while pos + _REC_HEAD_BYTES <= len(buf) and buf[pos:pos + 4] == b"REC0":
        (plen,) = struct.unpack_from("<I", buf, pos + 4)
        if plen % (2 * nch) or pos + _REC_HEAD_BYTES + plen > len(buf):
            break
        offsets.append(pos)
        pos += _REC_HEAD_BYTES + plen
    return nch, hlen, offsets


def _pack_int16_stream(buf: bytes, nch: int, hlen: int, offsets: list[int], rate: int, *,
                       resync_frames: int, entropy: str) -> bytes:
    heads, samples = [buf[:hlen]], []
    end = hlen
    for off in offsets:
        (plen,) = struct.unpack_from("<I", buf, off + 4)
        heads.append(buf[off:off + _REC_HEAD_BYTES])
        samples.append(np.frombuffer(buf, "<i2", count=plen // 2, offset=off + _REC_HEAD_BYTES))
        end = off + _REC_HEAD_BYTES + plen
    skeleton = struct.pack("<II", hlen, len(offsets)) + b"".join(heads) + buf[end:]
    packed_skeleton = lzma.compress(skeleton, preset=6)
    data = (np.concatenate(samples) if samples else np.zeros(0, np.int16)).astype(np.int16).reshape(-1, nch)
    frame = max(1, min(rate, _MAX_FRAME_VALUES // nch))
    codes = encode_array(data, chunk_samples=frame, resync_frames=resync_frames, entropy=entropy)
    return struct.pack("<II", nch, len(packed_skeleton)) + packed_skeleton + codes


def _unpack_int16_stream(payload: bytes, name: str) -> bytes:
    try:
        nch, slen = struct.unpack_from("<II", payload)
        skeleton = lzma.decompress(payload[8:8 + slen])
        hlen, n_rec = struct.unpack_from("<II", skeleton)
        data = decode_array(memoryview(payload)[8 + slen:])
    except (struct.error, lzma.LZMAError, ValidationError) as exc:
        raise ValidationError(f"archive entry {name}: damaged samples or skeleton ({exc})") from None
    if data.shape[1] != nch or len(skeleton) < 8 + hlen + n_rec * _REC_HEAD_BYTES:
        raise ValidationError(f"archive entry {name}: skeleton and samples do not match (damaged archive)")
    flat = data.astype("<i2", copy=False).tobytes()
    out, pos, used = [skeleton[8:8 + hlen]], 8 + hlen, 0
    for _ in range(n_rec):
        head = skeleton[pos:pos + _REC_HEAD_BYTES]
        (plen,) = struct.unpack_from("<I", head, 4)
        out += [head, flat[used:used + plen]]
        used += plen
        pos += _REC_HEAD_BYTES
    if used != len(flat):
        raise ValidationError(f"archive entry {name}: {len(flat)} sample bytes for records of {used} "
                              "(damaged archive)")
    out.append(skeleton[pos:])
    return b"".join(out)


# ----------------------------------------------------------------------------- archive

def _entry(kind: int, rel: str, original: bytes | None, payload: bytes) -> bytes:
    path = rel.encode("utf-8")
    size = 0 if original is None else len(original)
    crc_file = 0 if original is None else zlib.crc32(original) & 0xFFFFFFFF
    head = _ENTRY.pack(kind, 0, len(path), size, len(payload), crc_file, 0)
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(path, zlib.crc32(head))) & 0xFFFFFFFF) + path + payload


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


def compress_session(src: Path, dst: Path, *, overwrite: bool = False, resync_frames: int = 32,
                     entropy: str = "range") -> dict:
    """Archive the session folder ``src`` into the file ``dst``; return ``{files, original_bytes,
    compressed_bytes, ratio, coded_streams}`` (files: regular files; original bytes: theirs)."""
    encode_array(np.zeros((1, 1), np.int16), resync_frames=resync_frames, entropy=entropy)  # check options
    src, dst = Path(src), Path(dst)
    if not is_session_folder(src):
        raise ValidationError(f"{src} is not a session folder (manifest.json and streams/)")
    dst = check_output_file(dst, what="output", overwrite=overwrite, ours=is_archive_file,
                            ours_is="a session archive written by cortexlink compress")
    rate = _session_rate(src)
    parts, n_files, original, coded = [], 0, 0, []
    for rel, p in _walk(src):
        if p.is_dir():
            parts.append(_entry(KIND_DIR, rel, None, b""))
            continue
        try:
            buf = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"session folder {src}: {rel} cannot be read ({exc.strerror or exc})") from None
        n_files += 1
        original += len(buf)
        layout = _int16_stream_layout(buf) if p.suffix == ".clog" else None
        if layout is not None:
            payload = _pack_int16_stream(buf, *layout, rate, resync_frames=resync_frames, entropy=entropy)
            parts.append(_entry(KIND_SAMPLES, rel, buf, payload))
            coded.append(rel)
            continue
        packed = lzma.compress(buf, preset=6)
        kind, payload = (KIND_LZMA, packed) if len(packed) < len(buf) else (KIND_STORED, buf)
        parts.append(_entry(kind, rel, buf, payload))
    top = _TOP.pack(ARCHIVE_MAGIC, ARCHIVE_VERSION, b"\0\0\0", len(parts))
    out = top + _CRC.pack(zlib.crc32(top) & 0xFFFFFFFF) + b"".join(parts)
    write_atomic(dst, out)
    return {"files": n_files, "original_bytes": original, "compressed_bytes": len(out),
            "ratio": round(original / len(out), 4) if out else None, "coded_streams": coded}


def _safe_rel(rel: str, name: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or any(part in ("", ".", "..") for part in rel.split("/")) or "\\" in rel:
        raise ValidationError(f"{name}: archive entry path {rel!r} would leave the output folder (damaged or "
                              "foreign archive)")
    return p


def _read_entries(buf: bytes, name: str) -> list[tuple[int, str, bytes | None]]:
    """Every entry as ``(kind, path, file bytes or None for a folder)``, each checked."""
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
        path_b, payload = buf[start:start + plen], buf[start + plen:start + plen + length]
        if zlib.crc32(payload, zlib.crc32(path_b, zlib.crc32(buf[pos:pos + _ENTRY.size]))) & 0xFFFFFFFF != crc:
            raise ValidationError(f"{name}: CRC-32 mismatch in archive entry {i} (the file is corrupt)")
        rel = path_b.decode("utf-8", errors="replace")
        _safe_rel(rel, name)
        if kind == KIND_DIR:
            data = None
        elif kind == KIND_STORED:
            data = payload
        elif kind == KIND_LZMA:
            try:
                data = lzma.decompress(payload)
            except lzma.LZMAError as exc:
                raise ValidationError(f"{name}: archive entry {rel}: damaged ({exc})") from None
        elif kind == KIND_SAMPLES:
            data = _unpack_int16_stream(payload, rel)
        else:
            raise ValidationError(f"{name}: archive entry {rel} has unknown kind {kind} (corrupt or newer archive)")
        if data is not None and (len(data) != size or zlib.crc32(data) & 0xFFFFFFFF != crc_file):
            raise ValidationError(f"{name}: archive entry {rel} does not restore its original bytes (CRC-32 or "
                                  "size mismatch: the archive is corrupt)")
        out.append((kind, rel, data))
        pos = start + plen + length
    if pos != len(buf):
        raise ValidationError(f"{name}: {len(buf) - pos} unexpected bytes after the last archive entry")
    return out


def decompress_session(src: Path, dst: Path) -> dict:
    """Restore the session folder archived in ``src`` into the folder ``dst`` (which must not
    exist, or be empty); return the summary as :func:`compress_session`'s."""
    src, dst = Path(src), Path(dst)
    try:
        buf = src.read_bytes()
    except OSError as exc:
        raise ConfigError(f"input {src}: cannot be read ({exc.strerror or exc})") from None
    check_output_dir(dst, what="output folder", create=False, new=True)
    entries = _read_entries(buf, str(src))
    parent = Path(os.path.abspath(dst)).parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{dst.name}.{os.getpid()}.partial"
    try:
        tmp.mkdir()
        n_files = original = 0
        for kind, rel, data in entries:
            target = tmp.joinpath(*PurePosixPath(rel).parts)
            if data is None:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            n_files += 1
            original += len(data)
        if dst.is_dir():
            dst.rmdir()          # empty (checked above)
        os.replace(tmp, dst)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(f"cannot write the output folder {dst} ({exc.strerror or exc})") from None
    return {"files": n_files, "original_bytes": original, "compressed_bytes": len(buf),
            "ratio": round(original / len(buf), 4) if buf else None}
