"""Near-lossless coding: every decoded sample within a bound in µV of the original.

Per channel ``c`` with ``g_c`` µV per count, the bound ``max_error_uv`` allows an error of
``d_c = floor(max_error_uv / g_c)`` counts. A sample ``x`` is quantised to the index
``k = floor((x + d_c) / q_c)`` with the step ``q_c = 2 d_c + 1`` and reconstructed as
``y = clip(k q_c, -32768, 32767)``, so ``|y - x| <= d_c`` counts and ``|y - x| g_c <=
max_error_uv`` for every sample, at the int16 limits too (when ``k q_c`` falls outside int16,
``x`` lies within ``d_c`` of the limit it is clipped to). ``max_error_uv = 0`` (or any bound
below a channel's ``g_c``) gives ``q_c = 1``: that channel is coded losslessly. The indices ``k``
(int16) are coded by the lossless codec (:class:`cortexlink.codec.Encoder`): quantising shrinks
the prediction residuals by about ``q_c``, which saves about ``log2(q_c)`` bits per sample.

Streaming: one :meth:`NearLosslessEncoder.encode` call per chunk gives one *near-lossless
frame*: a prefix, then one codec frame (its own header and CRC-32, see :mod:`cortexlink.codec`).
The steps travel in the prefix of every codec resynchronisation point, so a decoder needs no side
information and is back in step wherever the codec is.

Prefix layout (little-endian)
-----------------------------
====== ======= ===========================================================================
offset bytes   field
====== ======= ===========================================================================
0      4       magic ``b"CXLN"``
4      1       version (1)
5      1       flags: bit 0 the per-channel steps follow (set exactly when the codec frame
               is a resynchronisation point)
6      2       ``S``: number of steps that follow (the channel count, or 0)
8      2 S     ``q_c`` per channel, ``uint16`` (odd, 1..65535)
8+2S   4       CRC-32 (zlib) of bytes 0..8+2S-1
====== ======= ===========================================================================

Examples
--------
>>> import numpy as np
>>> x = np.array([[-32768, 5], [32767, -3], [100, 0]], np.int16)
>>> enc, dec = NearLosslessEncoder(2, max_error_uv=2.0, uv_per_count=0.5), NearLosslessDecoder()
>>> y = dec.decode(enc.encode(x))
>>> int(np.abs(y.astype(int) - x).max()) <= 4
True
"""

from __future__ import annotations

import math
import numbers
import struct
import zlib

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

from .stream import Decoder, Encoder, read_header

__all__ = ["NL_MAGIC", "NL_VERSION", "steps_for", "quantize", "dequantize", "NearLosslessEncoder",
           "NearLosslessDecoder", "encode_array_nl", "decode_array_nl", "iter_nl_frames"]

NL_MAGIC = b"CXLN"
NL_VERSION = 1
_PREFIX = struct.Struct("<4sBBH")
_FLAG_STEPS = 0x01


def steps_for(max_error_uv: float, uv_per_count: float | np.ndarray, n_channels: int) -> np.ndarray:
    """Per-channel quantisation steps ``2 floor(max_error_uv / uv_per_count) + 1`` (int64).

    Raises
    ------
    ConfigError
        A negative or non-finite bound, a gain that is not > 0 and finite, or gains whose count
        differs from ``n_channels``.
    """
    if isinstance(max_error_uv, bool) or not isinstance(max_error_uv, numbers.Real) \
            or not math.isfinite(max_error_uv) or max_error_uv < 0:
        raise ConfigError(f"max_error_uv must be a finite number >= 0 (µV); got {max_error_uv!r}")
    g = np.broadcast_to(np.asarray(uv_per_count, float), (n_channels,)) if np.ndim(uv_per_count) == 0 \
        else np.asarray(uv_per_count, float)
    if g.shape != (n_channels,):
        raise ConfigError(f"uv_per_count must be one number or one per channel ({n_channels}); got shape "
                          f"{g.shape}")
    bad = ~(np.isfinite(g) & (g > 0))
    if bad.any():
        raise ConfigError(f"uv_per_count must be finite and > 0 (µV per count); got {g[bad][:3].tolist()}")
    m = float(max_error_uv)
    d = np.minimum(np.floor(m / g), 32767.0)
    d = np.where(d * g > m, d - 1, d)     # a quotient rounded up (0.585 / 0.195) never passes the bound
    return 2 * d.astype(np.int64) + 1


def quantize(x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Indices ``floor((x + d) / q)`` (int16) of ``x`` (samples x channels int16) for steps ``q = 2d + 1``."""
    q = np.asarray(steps, np.int32)
    return np.floor_divide(x.astype(np.int32) + (q - 1) // 2, q).astype(np.int16)


def dequantize(k: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Samples ``clip(k q, -32768, 32767)`` (int16) of indices ``k``."""
    return np.clip(k.astype(np.int32) * np.asarray(steps, np.int32), -32768, 32767).astype(np.int16)


class NearLosslessEncoder:
    """Streaming near-lossless encoder: one :meth:`encode` call per chunk, one near-lossless frame.

    Parameters
    ----------
    n_channels : int
        Channels of every chunk.
    max_error_uv : float
        The bound on ``|decoded - original|`` in µV, for every sample (>= 0; 0 is lossless).
    uv_per_count : float or array of float
        µV per count, one for all channels or one per channel (a
        :class:`~cortexlink.core.types.ChannelMap`'s ``gain_uv``).
    resync_frames, entropy
        As :class:`cortexlink.codec.Encoder`.
    """

    def __init__(self, n_channels: int, *, max_error_uv: float, uv_per_count: float | np.ndarray = 1.0,
                 resync_frames: int = 32, entropy: str = "range") -> None:
        self._enc = Encoder(n_channels, resync_frames=resync_frames, entropy=entropy)
        self.n_channels = self._enc.n_channels
        self.max_error_uv = float(max_error_uv) if isinstance(max_error_uv, numbers.Real) else max_error_uv
        self.steps = steps_for(max_error_uv, uv_per_count, self.n_channels)
        self.max_error_counts = (self.steps - 1) // 2
        steps_b = self.steps.astype("<u2").tobytes()
        self._prefix = {True: self._make_prefix(_FLAG_STEPS, self.n_channels, steps_b),
                        False: self._make_prefix(0, 0, b"")}

    @staticmethod
    def _make_prefix(flags: int, n: int, body: bytes) -> bytes:
        head = _PREFIX.pack(NL_MAGIC, NL_VERSION, flags, n) + body
        return head + struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)

    def encode(self, chunk: np.ndarray) -> bytes:
        """Quantise ``chunk`` (samples x channels, int16) and encode it as one frame."""
        if not isinstance(chunk, np.ndarray) or chunk.dtype != np.int16 or chunk.ndim != 2 \
                or chunk.shape[1] != self.n_channels:
            raise ValidationError(f"chunk must be an int16 array of samples x {self.n_channels} channels; got "
                                  f"{getattr(chunk, 'dtype', type(chunk).__name__)} {getattr(chunk, 'shape', '')}")
        frame = self._enc.encode(quantize(chunk, self.steps))
        return self._prefix[read_header(frame).resync] + frame


class NearLosslessDecoder:
    """Streaming decoder of near-lossless frames, in the order they were encoded (a lost frame
    costs what it costs the codec's :class:`~cortexlink.codec.Decoder`)."""

    def __init__(self) -> None:
        self._dec = Decoder()
        self.steps: np.ndarray | None = None

    def decode(self, frame: bytes | bytearray | memoryview) -> np.ndarray:
        """Decode one frame; return its samples (samples x channels, int16).

        Raises
        ------
        ValidationError
            A damaged prefix (magic, version, CRC), resynchronisation frames without steps (or
            steps without one), or anything the codec's decoder refuses.
        """
        mv = memoryview(frame).cast("B")
        steps, size = _parse_prefix(mv)
        h = read_header(mv, size)
        if h.resync != (steps is not None):
            raise ValidationError("near-lossless frame: steps must come exactly with resynchronisation frames "
                                  "(corrupt frame)")
        k = self._dec.decode(mv[size:])
        if steps is not None:
            if steps.size != k.shape[1]:
                raise ValidationError(f"near-lossless frame: {steps.size} steps for {k.shape[1]} channels "
                                      "(corrupt frame)")
            self.steps = steps
        if self.steps is None or self.steps.size != k.shape[1]:
            raise ValidationError("near-lossless frame: no steps known for this stream yet; waiting for a "
                                  "resynchronisation point")
        return dequantize(k, self.steps)


def _parse_prefix(mv: memoryview) -> tuple[np.ndarray | None, int]:
    if len(mv) < _PREFIX.size + 4:
        raise ValidationError(f"truncated near-lossless frame: {len(mv)} bytes")
    magic, version, flags, n = _PREFIX.unpack_from(mv)
    if magic != NL_MAGIC:
        raise ValidationError(f"not a near-lossless frame (magic {bytes(magic)!r}, expected {NL_MAGIC!r})")
    if version != NL_VERSION:
        raise ValidationError(f"near-lossless frame version {version} is not supported (this reader: {NL_VERSION})")
    end = _PREFIX.size + 2 * n
    if len(mv) < end + 4 or flags & ~_FLAG_STEPS or bool(flags & _FLAG_STEPS) != (n > 0):
        raise ValidationError("near-lossless frame: malformed prefix (corrupt frame)")
    if zlib.crc32(mv[:end]) & 0xFFFFFFFF != struct.unpack_from("<I", mv, end)[0]:
        raise ValidationError("near-lossless frame: CRC-32 mismatch in its prefix (corrupt frame)")
    steps = None
    if n:
        steps = np.frombuffer(mv[_PREFIX.size:end], "<u2").astype(np.int64)
        if (steps % 2 == 0).any():
            raise ValidationError("near-lossless frame: a step is even (corrupt frame)")
    return steps, end + 4


def iter_nl_frames(buf: bytes | bytearray | memoryview):
    """Split a byte stream of concatenated near-lossless frames into frames."""
    mv = memoryview(buf).cast("B")
    pos = 0
    while pos < len(mv):
        _, size = _parse_prefix(mv[pos:])
        h = read_header(mv, pos + size)
        end = pos + size + h.frame_size
        if end > len(mv):
            raise ValidationError(f"truncated near-lossless frame at byte {pos}")
        yield mv[pos:end]
        pos = end


def encode_array_nl(data: np.ndarray, *, max_error_uv: float, uv_per_count: float | np.ndarray = 1.0,
                    chunk_samples: int = 4096, resync_frames: int = 32, entropy: str = "range") -> bytes:
    """Encode a whole array (samples x channels int16; 1-D is one channel) as near-lossless
    frames of ``chunk_samples`` samples (at least one frame)."""
    if isinstance(data, np.ndarray) and data.ndim == 1:
        data = data[:, None]
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        raise ValidationError(f"data must be a 2-D int16 array (samples x channels); got "
                              f"{getattr(data, 'shape', type(data).__name__)}")
    if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, numbers.Integral) or chunk_samples < 1:
        raise ConfigError(f"chunk_samples must be an integer >= 1; got {chunk_samples!r}")
    enc = NearLosslessEncoder(data.shape[1], max_error_uv=max_error_uv, uv_per_count=uv_per_count,
                              resync_frames=resync_frames, entropy=entropy)
    n = data.shape[0]
    parts = [enc.encode(data[i:i + chunk_samples]) for i in range(0, n, chunk_samples)] if n else [enc.encode(data)]
    return b"".join(parts)


def decode_array_nl(buf: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a stream of near-lossless frames into one array (samples x channels int16)."""
    dec = NearLosslessDecoder()
    parts = [dec.decode(f) for f in iter_nl_frames(buf)]
    if not parts:
        raise ValidationError("empty near-lossless stream: no frame")
    return np.concatenate(parts, axis=0)
