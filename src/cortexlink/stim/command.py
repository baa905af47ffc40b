"""The stimulator command format, version 1: what a driver sends a device for one approved plan.

One frame, little-endian throughout::

    offset  size  field
    0       4     magic b"CXST"
    4       2     version (uint16) = 1
    6       2     flags (uint16): bit 0 = STOP (halt now, drop everything pending; no pulses follow)
    8       4     frame sequence number (uint32), counting from 0 per driver
    12      4     pulse count N (uint32)
    16      8     plan window start (int64, ns on the session clock)
    24      8     plan window end (int64, ns)
    32      32·N  pulses, each:
                    int64  onset of phase 1 (ns on the session clock)
                    uint16 electrode id
                    uint8  polarity: 1 = cathodic first, 0 = anodic first
                    uint8  reserved (0)
                    uint32 phase-1 amplitude (nA)
                    uint32 phase-1 width (ns)
                    uint32 interphase gap (ns)
                    uint32 phase-2 amplitude (nA)
                    uint32 phase-2 width (ns)
    32+32N  4     CRC-32 (zlib) of every byte before it

Amplitudes and widths are rounded *down* to whole nA and ns, so encoding never adds charge;
onsets round to the nearest ns. A device must reject a frame whose magic, version, length or CRC
is wrong, and deliver nothing outside the frame's window.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.pulses import PULSE_DTYPE

__all__ = ["MAGIC", "VERSION", "FLAG_STOP", "encode_frame", "decode_frame", "stop_frame", "Frame"]

MAGIC = b"CXST"
VERSION = 1
FLAG_STOP = 1
_HEAD = struct.Struct("<4sHHIIqq")
_WIRE = np.dtype([("t_ns", "<i8"), ("electrode", "<u2"), ("cathodic_first", "u1"), ("reserved", "u1"),
                  ("amp1_na", "<u4"), ("width1_ns", "<u4"), ("gap_ns", "<u4"), ("amp2_na", "<u4"),
                  ("width2_ns", "<u4")])
if _WIRE.itemsize != 32:            # the device reads 32-byte pulse records
    raise RuntimeError(f"stimulator wire record is {_WIRE.itemsize} bytes, not 32")
_U32 = float(np.iinfo(np.uint32).max)
_MAX_S = 9e9   # int64 nanoseconds reach ±9.22e9 s


class Frame:
    """A decoded frame: ``seq``, ``flags``, window (s) and the pulses (:data:`PULSE_DTYPE`)."""

    __slots__ = ("seq", "flags", "t_start_s", "t_end_s", "pulses")

    def __init__(self, seq: int, flags: int, t_start_s: float, t_end_s: float, pulses: np.ndarray) -> None:
        self.seq, self.flags, self.t_start_s, self.t_end_s, self.pulses = seq, flags, t_start_s, t_end_s, pulses

    @property
    def is_stop(self) -> bool:
        return bool(self.flags & FLAG_STOP)


def _field(values: np.ndarray, scale: float, name: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.floor(np.asarray(values, float) * scale)
    if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v > _U32):
        raise ValidationError(f"command frame: {name} out of the format's range (0..{_U32:.0f} after scaling)")
    return v.astype(np.uint32)


def encode_frame(pulses: np.ndarray, t_start_s: float, t_end_s: float, seq: int, *, flags: int = 0) -> bytes:
    """Encode pulses (:data:`PULSE_DTYPE`) and their window as one version-1 frame.

    Raises
    ------
    ValidationError
        For a value the format cannot carry (negative or non-finite, electrode id over 65535).
    """
    p = np.asarray(pulses)
    if p.dtype != PULSE_DTYPE:
        raise ValidationError(f"command frame: pulses must have dtype PULSE_DTYPE; got {p.dtype}")
    if not (abs(t_start_s) < _MAX_S and abs(t_end_s) < _MAX_S):
        raise ValidationError(f"command frame: window must be finite and within ±{_MAX_S:.0e} s")
    if not np.all(np.abs(p["time_s"]) < _MAX_S):
        raise ValidationError(f"command frame: pulse onsets must be finite and within ±{_MAX_S:.0e} s")
    if np.any(p["electrode"] < 0) or np.any(p["electrode"] > 65535):
        raise ValidationError("command frame: electrode ids must be in 0..65535")
    w = np.zeros(len(p), _WIRE)
    with np.errstate(over="ignore", invalid="ignore"):
        w["t_ns"] = np.round(p["time_s"] * 1e9).astype(np.int64)
    w["electrode"] = p["electrode"]
    w["cathodic_first"] = p["cathodic_first"]
    w["amp1_na"] = _field(p["amplitude_ua"], 1e3, "amplitude_ua")
    w["width1_ns"] = _field(p["width_us"], 1e3, "width_us")
    w["gap_ns"] = _field(p["gap_us"], 1e3, "gap_us")
    w["amp2_na"] = _field(p["amplitude2_ua"], 1e3, "amplitude2_ua")
    w["width2_ns"] = _field(p["width2_us"], 1e3, "width2_us")
    head = _HEAD.pack(MAGIC, VERSION, int(flags) & 0xFFFF, int(seq) & 0xFFFFFFFF, len(p),
                      int(round(t_start_s * 1e9)), int(round(t_end_s * 1e9)))
    body = head + w.tobytes()
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def stop_frame(seq: int, now_s: float) -> bytes:
    """A STOP frame: the device halts and drops every pending pulse."""
    return encode_frame(np.zeros(0, PULSE_DTYPE), now_s, now_s, seq, flags=FLAG_STOP)


def decode_frame(data: bytes) -> Frame:
    """Decode and check one frame.

    Raises
    ------
    ValidationError
        For a wrong magic, version, length or CRC (the frame must then be ignored whole).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValidationError(f"command frame must be bytes; got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEAD.size + 4:
        raise ValidationError(f"command frame too short ({len(data)} bytes)")
    magic, version, flags, seq, n, t0, t1 = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ValidationError(f"command frame: bad magic {magic!r}")
    if version != VERSION:
        raise ValidationError(f"command frame: version {version} is not supported (this reader: {VERSION})")
    if len(data) != _HEAD.size + n * _WIRE.itemsize + 4:
        raise ValidationError(f"command frame: length {len(data)} does not match {n} pulses")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        raise ValidationError("command frame: CRC mismatch")
    w = np.frombuffer(data, _WIRE, count=n, offset=_HEAD.size)
    p = np.zeros(n, PULSE_DTYPE)
    p["time_s"] = w["t_ns"] / 1e9
    p["electrode"] = w["electrode"]
    p["cathodic_first"] = w["cathodic_first"].astype(bool)
    p["amplitude_ua"] = w["amp1_na"] / 1e3
    p["width_us"] = w["width1_ns"] / 1e3
    p["gap_us"] = w["gap_ns"] / 1e3
    p["amplitude2_ua"] = w["amp2_na"] / 1e3
    p["width2_us"] = w["width2_ns"] / 1e3
    return Frame(seq, flags, t0 / 1e9, t1 / 1e9, p)
