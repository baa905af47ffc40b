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
from cortexlink.core.phonemes import CLASS_NAMES
from cortexlink.core.pulses import PULSE_FIELDS
from cortexlink.io.session_log.rawcodec import CODEC_STREAM_VERSION, PayloadDecoder, codec_problem


FORMAT_VERSION = 2
#: Stream format versions this code reads: 1 (header without a checksum), 2 (header followed by
#: the CRC-32 of the magic, version, length and JSON) and 3 (as 2; the records hold frames of the
#: lossless codec, named by the header's ``codec`` field: see :mod:`.rawcodec`).
READABLE_VERSIONS = (1, 2, CODEC_STREAM_VERSION)
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
    "phonemes": CLASS_NAMES,                                   # speech: log-probabilities of blank, 39 phonemes, SIL
    "stim_pulses": PULSE_FIELDS,                               # one delivered stimulation pulse per record
    "stim_status": ("estop", "n_plans", "n_pulses", "n_approved", "n_refused", "n_clamped"),  # interlock totals
}


class RecorderOverflow(CortexlinkError):
    """The recorder's queue was full and its policy is ``on_full="fail"``."""


class InsufficientDiskSpace(CortexlinkError, OSError):
    """Not enough free space for the planned recording."""


class CorruptSessionError(ValidationError):
    """A session folder or stream file is damaged or is not a cortexlink session."""


class DamagedHeaderError(CorruptSessionError):
    """A stream file's header is damaged (checksum, JSON or fields), while the records after it may
    be intact: ``cortexlink recover`` rebuilds the header from the manifest's copy."""


class SessionBusy(CortexlinkError, RuntimeError):
    """A live process holds the session folder's lock (it is being recorded)."""


def _atomic_write_json(path: Path, obj: dict[str, Any]) -> None:
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


def _encode_file_header(info: dict[str, Any]) -> bytes:
    js = json.dumps(info, default=_json_default).encode("utf-8")
    version = CODEC_STREAM_VERSION if "codec" in info else FORMAT_VERSION
    head = _FILE_HDR.pack(FILE_MAGIC, version, len(js)) + js
    return head + _CRC.pack(zlib.crc32(head))


def _encode_record(seq: int, sample: int, host_ns: int, payload: bytes | memoryview) -> bytes:
    hdr = _REC_HDR.pack(REC_MAGIC, len(payload), seq, sample, host_ns)
    crc = zlib.crc32(payload, zlib.crc32(hdr))
    return hdr + _CRC.pack(crc)


@dataclasses.dataclass(frozen=True)
class Record:
    """One record of a stream: ``seq``, ``sample`` (first row), ``host_time_ns``, ``data``
    (ndarray rows or a dict), ``offset`` in the file, ``payload_bytes`` (its length there; -1
    where unknown)."""

    seq: int
    sample: int
    host_time_ns: int
    data: Any
    offset: int
    payload_bytes: int = -1


def _session_of(path: Path) -> Path:
    return path.parent.parent


def check_header_info(info: Any, where: Path) -> dict[str, Any]:
    """Check a stream header's fields (``kind``, ``dtype``, ``columns``, ``rate_hz``,
    ``bin_width_samples``); raise :class:`DamagedHeaderError` naming the field otherwise."""
    def bad(field: str, what: str, got: Any) -> DamagedHeaderError:
        return DamagedHeaderError(f"{where}: stream header field {field!r} must be {what}; got {got!r:.80}; run "
                                  f"`cortexlink recover {_session_of(where)}` to rebuild it from the manifest")

    if not isinstance(info, dict):
        raise bad("(header)", "a JSON object", info)
    kind = info.get("kind")
    if kind not in ("array", "json"):
        raise bad("kind", "'array' or 'json'", kind)
    if kind == "array":
        dt = info.get("dtype")
        try:
            ok = isinstance(dt, str) and np.dtype(dt).kind in "biuf" and np.dtype(dt).itemsize > 0
        except TypeError:
            ok = False
        if not ok:
            raise bad("dtype", "a numeric numpy dtype such as '<i2' or '<f4'", dt)
        cols = info.get("columns")
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise bad("columns", "a non-empty list of column names", cols)
    if "codec" in info and (problem := codec_problem(info)) is not None:
        raise bad(*problem)
    rate = info.get("rate_hz")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0
                             or rate == float("inf")):
        raise bad("rate_hz", "a positive number or null", rate)
    bw = info.get("bin_width_samples")
    if bw is not None and (isinstance(bw, bool) or not isinstance(bw, int) or bw < 1):
        raise bad("bin_width_samples", "a positive whole number", bw)
    return info


@dataclasses.dataclass(frozen=True)
class HeaderCheck:
    """What :func:`inspect_header` found: ``info`` and ``first_offset`` (None where unknown),
    ``version``, ``problem`` (None when the header is intact) and ``foreign`` (the file does not
    even start with the stream magic)."""

    info: dict[str, Any] | None
    first_offset: int | None
    version: int | None
    problem: str | None
    foreign: bool = False


def inspect_header(path: Path) -> HeaderCheck:
    """Read and check a stream file's header without raising for damage (see :class:`HeaderCheck`)."""
    with open(path, "rb") as f:
        head = f.read(_FILE_HDR.size)
        if len(head) < _FILE_HDR.size:
            return HeaderCheck(None, None, None, f"file is {len(head)} bytes, shorter than a stream header; "
                               "truncated before anything was recorded")
        magic, version, n = _FILE_HDR.unpack(head)
        if magic != FILE_MAGIC:
            return HeaderCheck(None, None, None, f"not a cortexlink stream file (magic {magic!r}, expected "
                               f"{FILE_MAGIC!r})", foreign=True)
        if version not in READABLE_VERSIONS:
            if max(READABLE_VERSIONS) < version < 256 and not _is_v2_with_version_damaged(f, head, n):
                return HeaderCheck(None, None, version, f"stream format version {version} is newer than this "
                                   f"cortexlink reads ({max(READABLE_VERSIONS)}); upgrade cortexlink")
            return HeaderCheck(None, None, version, f"stream header damaged (format version field {version})")
        if n > MAX_PAYLOAD:
            return HeaderCheck(None, None, version, f"stream header damaged (implausible header length {n})")
        body = f.read(n)
        if len(body) < n:
            return HeaderCheck(None, None, version, f"stream header truncated ({len(body)} of {n} bytes)")
        first = _FILE_HDR.size + n
        if version >= 2:
            tail = f.read(_CRC.size)
            first += _CRC.size
            if len(tail) < _CRC.size:
                return HeaderCheck(None, None, version, "stream header truncated (its checksum is missing)")
            if _CRC.unpack(tail)[0] != zlib.crc32(head + body):
                return HeaderCheck(None, first, version, "stream header damaged (checksum mismatch)")
    try:
        info = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return HeaderCheck(None, first, version, f"stream header is not valid JSON ({exc})")
    try:
        check_header_info(info, path)
        if (version == CODEC_STREAM_VERSION) != ("codec" in info):   # format 3 iff compressed records
            return HeaderCheck(None, first, version, f"stream header damaged (format {version} "
                               f"{'without' if version == CODEC_STREAM_VERSION else 'with'} a codec field)")
    except DamagedHeaderError as exc:
        return HeaderCheck(None, first, version, str(exc).split(": ", 1)[1].split("; run `")[0])
    return HeaderCheck(info, first, version, None)


def _is_v2_with_version_damaged(f: Any, head: bytes, n: int) -> bool:
    """Whether a header of an unknown version checks out as a format-2 (or 3) header once its
    version field is read as 2 (or 3), or is cut short by the end of the file: then it is
    damaged, not newer."""
    if n > MAX_PAYLOAD:
        return False
    body = f.read(n + _CRC.size)
    if len(body) < n + _CRC.size:
        return True
    return any(_CRC.unpack_from(body, n)[0] == zlib.crc32(_FILE_HDR.pack(FILE_MAGIC, v, n) + body[:n])
               for v in (2, CODEC_STREAM_VERSION))


def read_file_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a stream file and the offset of its first record.

    Raises :class:`CorruptSessionError` (:class:`DamagedHeaderError` when the file is a stream
    file whose header is damaged) naming the file and what to do.
    """
    h = inspect_header(path)
    if h.problem is None:
        assert h.info is not None and h.first_offset is not None   # both are set when problem is None  # nosec B101
        return h.info, h.first_offset
    if h.foreign or "newer than" in h.problem or h.problem.startswith("file is"):
        raise CorruptSessionError(f"{path}: {h.problem}")
    raise DamagedHeaderError(f"{path}: {h.problem}; the records after it may be intact - run `cortexlink recover "
                             f"{_session_of(path)}` to rebuild the header from the manifest")


def _decode(info: dict[str, Any], payload: bytes, codec: PayloadDecoder | None = None, decode: Any = True,
            sample: int = 0) -> Any:
    if info["kind"] == "json":
        return json.loads(payload.decode("utf-8"))
    if codec is not None:
        if decode is True:
            return codec.decode(payload)
        if decode is False:
            return codec.skim(payload)
        return codec.feed(payload, lambda n: decode(sample, n))
    dt = np.dtype(info["dtype"])
    ncol = len(info["columns"])
    row_bytes = dt.itemsize * ncol
    if len(payload) % row_bytes:
        raise ValueError(f"payload of {len(payload)} bytes is not a whole number of {ncol}-column rows")
    return np.frombuffer(payload, dtype=dt).reshape(-1, ncol)


def scan_stream(path: Path, *, salvage: bool = False, decode: Any = True) -> Iterator[tuple[str, Any]]:
    """Walk a stream file record by record.

    Yields ``("record", Record)`` for each intact record and, where the file is damaged,
    ``("damage", {"offset", "length", "reason"})``. Without ``salvage`` the first damage raises
    :class:`CorruptSessionError` naming the file, the offset and what is wrong; with it, the scan
    resynchronises on the next intact record (so every intact part is kept). In a compressed
    stream (header field ``codec``) the records that depend on a damaged one (up to the next
    resynchronisation point) belong to its damaged region. ``decode=False`` (counting, checksums):
    a compressed record's frame is checked (CRC, header, the chain of frame indices) but not
    decoded, and its ``data`` only has the right shape (zero-strided zeros); a callable
    ``decode(sample, n_rows)`` says which records to decode (those it refuses: as with False).
    """
    info, off = read_file_header(path)
    codec = PayloadDecoder(info) if "codec" in info else None
    size = path.stat().st_size
    pending: dict[str, Any] | None = None                  # the last damaged region, while it may grow
    with open(path, "rb") as f:
        f.seek(off)
        pos = off
        while pos < size:
            f.seek(pos)
            hdr = f.read(REC_HEADER_BYTES)
            reason = None
            n = 0
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
                            data = _decode(info, payload, codec, decode, sample)
                        except (ValueError, UnicodeDecodeError) as exc:
                            reason = f"payload does not decode ({exc})"
                        else:
                            if pending is not None:
                                yield "damage", pending
                                pending = None
                            yield "record", Record(seq, sample, host_ns, data, pos, n)
                            pos += REC_HEADER_BYTES + n
                            continue
            if not salvage:
                raise CorruptSessionError(f"{path}: damaged at byte {pos}: {reason}; run `cortexlink recover "
                                          f"{path.parent.parent}` to salvage every intact record")
            if codec is not None and codec.dependent and pending is not None \
                    and pending["offset"] + pending["length"] == pos:
                # an intact record that depends on the damaged one before it: the same region
                k = pending.get("dependent_records", 0) + 1
                pending.update(length=pending["length"] + REC_HEADER_BYTES + n, dependent_records=k,
                               reason=f"{pending['reason'].split('; and ')[0]}; and {k} intact record(s) after it "
                               "that depend on it (compressed, before the next resynchronisation point)")
                pos += REC_HEADER_BYTES + n
                continue
            if pending is not None:
                yield "damage", pending
            nxt = _find_next(f, pos + 1, size)
            pending = {"offset": pos, "length": (nxt if nxt is not None else size) - pos, "reason": reason}
            if nxt is None:
                break
            pos = nxt
    if pending is not None:
        yield "damage", pending


def _find_next(f: Any, start: int, size: int, block: int = 1 << 20) -> int | None:
    """Offset of the next record marker whose header checks out, or None."""
    pos = start
    while pos < size:
        f.seek(pos)
        buf: bytes = f.read(block + 3)
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

