"""The on-disk format of a session folder's stream files (see the package docstring): file and
record headers, the CRC, encoding and decoding, :func:`scan_stream`, :func:`read_file_header`,
:class:`Record`, the errors, the manifest's atomic JSON write, and the column layout of each
recorded row stream (:data:`STREAM_COLUMNS`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cortexlink.core.errors import CortexlinkError, ValidationError
from cortexlink.core.jsonutil import json_default


FORMAT_VERSION = 1
FILE_MAGIC = b"CLOG"
REC_MAGIC = b"REC0"
_FILE_HDR = struct.Struct("<4sHI")          # magic, version, json length
_REC_HDR = struct.Struct("<4sIqqq")         # magic, payload length, seq, sample, host_time_ns
_CRC = struct.Struct("<I")
REC_HEADER_BYTES = _REC_HDR.size + _CRC.size  # 36
MAX_PAYLOAD = 1 << 30

# Column layout of each recorded row stream (one row per loop bin), the same whoever writes it
# (the runtime's recorder node, or any other writer); a writer that lacks a value writes NaN in its place (``halted``: 0.0 where nothing can halt the cursor).
STREAM_COLUMNS: dict[str, tuple[str, ...]] = {
    "cursor": ("x", "y", "vx", "vy", "clicked", "halted"),   # cursor position, velocity, click, halted
    "decoder": ("vx", "vy", "click_proba", "click"),          # decoded velocity, click probability, click
    "intent": ("vx", "vy", "click"),                          # the participant's intended velocity and click
}


class RecorderOverflow(CortexlinkError):
    """The recorder's queue was full and its policy is ``on_full="fail"``."""


class InsufficientDiskSpace(CortexlinkError, OSError):
    """Not enough free space for the planned recording."""


class CorruptSessionError(ValidationError):
    """A session folder or stream file is damaged or is not a cortexlink session."""


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


def _encode_file_header(info: dict) -> bytes:
    js = json.dumps(info, default=_json_default).encode("utf-8")
    return _FILE_HDR.pack(FILE_MAGIC, FORMAT_VERSION, len(js)) + js


def _encode_record(seq: int, sample: int, host_ns: int, payload: bytes | memoryview) -> bytes:
    hdr = _REC_HDR.pack(REC_MAGIC, len(payload), seq, sample, host_ns)
    crc = zlib.crc32(payload, zlib.crc32(hdr))
    return hdr + _CRC.pack(crc)


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

