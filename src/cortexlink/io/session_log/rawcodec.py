"""Compressed raw streams: each record's payload is one frame of the lossless codec
(:mod:`cortexlink.codec`) instead of the rows' raw bytes.

A stream written so has a format-3 header whose JSON carries ``"codec": {"name": "cortexlink",
"entropy": "rice" | "range" | "lms" | "lms-fast", "resync_records": N}`` (``dtype`` is ``"<i2"``). Readers decode it
transparently: :func:`~cortexlink.io.session_log.scan_stream` yields the same int16 rows as an
uncompressed stream would.

Why a resynchronisation point every ``N`` records and not every record: a record of a live
recording is a 1 ms chunk (30 samples). Restarting the codec's adaptive state for each one costs
~11 % of the compression (Rice: 1.69x instead of 1.90x at 1,024 simulated channels) and ~25 % of
the encoding speed, where the codec is already short of 1,024 channels in real time on a small
machine. Every 30 records (the default) costs 0.3 % against every 100, every 10 1.3 % (measured
with Rice). With ``N`` records per resynchronisation point:

* crash safety is unchanged: a crash can only tear the tail, and every record before it
  decodes, since it depends only on earlier records (``recover`` cuts the torn tail and keeps
  every intact record);
* damage in the middle of the file (a record whose CRC fails) also makes the intact records
  after it undecodable up to the next resynchronisation point (at most ``N - 1``); they are
  reported as damage ("depends on a damaged record") and ``recover`` moves them to ``corrupt/``
  with the damaged one, their bytes kept; the record at the next resynchronisation point decodes
  on its own;
* a reader that wants samples from the middle decodes from the resynchronisation point before
  them (at most ``N - 1`` extra records; ``SessionReader.read_array(name, start, stop)`` decodes
  only the records it returns and those they depend on, and checks the others' frames).

``resync_records=1`` makes every record decodable on its own (the most robust, the largest and
slowest).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError

#: the values of ``raw_codec``: "none" stores the rows' bytes as they are
RAW_CODECS = ("none", "rice", "range", "lms", "lms-fast")
#: the default interval between resynchronisation points, in records (~30 ms of 1 ms chunks)
DEFAULT_RESYNC_RECORDS = 30
#: stream format version of a file whose records hold codec frames (older readers refuse it
#: instead of misreading compressed bytes as samples)
CODEC_STREAM_VERSION = 3


def check_raw_codec(raw_codec: Any, resync_records: Any) -> tuple[str, int]:
    """Validate ``raw_codec`` and ``raw_codec_resync_records``; raise :class:`ConfigError` naming them."""
    if raw_codec not in RAW_CODECS:
        raise ConfigError(f"raw_codec must be one of {', '.join(RAW_CODECS)}; got {raw_codec!r}")
    if isinstance(resync_records, bool) or not isinstance(resync_records, (int, np.integer)) \
            or not 1 <= resync_records <= 1 << 30:
        raise ConfigError(f"raw_codec_resync_records must be a whole number in [1, {1 << 30}]; got {resync_records!r}")
    return str(raw_codec), int(resync_records)


def codec_header(raw_codec: str, resync_records: int) -> dict[str, Any]:
    """The ``codec`` field of a compressed stream's header."""
    return {"name": "cortexlink", "entropy": raw_codec, "resync_records": int(resync_records)}


def codec_problem(info: dict[str, Any]) -> tuple[str, str, Any] | None:
    """For a header with a ``codec`` field: ``(field, what it must be, what it is)`` when it is
    not one this code decodes, else None."""
    c = info.get("codec")
    if not isinstance(c, dict):
        return "codec", "an object with name, entropy and resync_records", c
    if c.get("name") != "cortexlink":
        return "codec.name", "'cortexlink'", c.get("name")
    if c.get("entropy") not in RAW_CODECS[1:]:
        return "codec.entropy", "'rice', 'range' or 'lms'", c.get("entropy")
    r = c.get("resync_records")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        return "codec.resync_records", "a positive whole number", r
    if info.get("kind") != "array" or info.get("dtype") != "<i2":
        return "dtype", "'<i2' (the codec stores int16 samples)", info.get("dtype")
    return None


def make_encoder(info: dict[str, Any]) -> Any:
    """A codec encoder for the records of the stream with header ``info``."""
    from cortexlink.codec import Encoder

    c = info["codec"]
    return Encoder(len(info["columns"]), resync_frames=int(c["resync_records"]), entropy=c["entropy"])


class PayloadDecoder:
    """Decodes a compressed stream's record payloads in file order (state carried between them).

    :meth:`decode` raises ``ValueError`` (a :class:`~cortexlink.core.errors.ValidationError`)
    for a frame that is damaged, has the wrong width, or depends on a record it did not decode;
    :attr:`dependent` then says whether it was the last (an intact record whose predecessor is
    lost).
    """

    def __init__(self, info: dict[str, Any]) -> None:
        from cortexlink.codec import Decoder

        self._dec = Decoder()
        self._ncol = len(info["columns"])
        self.dependent = False
        self._next: int | None = None          # frame index that follows the last one checked
        self._chain: list[bytes] = []                 # frames checked but not decoded since the last resync point

    def skim(self, payload: bytes) -> np.ndarray:
        """What :meth:`decode` checks without decoding (frame header, width, length, the chain of
        frame indices since the last resynchronisation point): a zero-strided read-only array of
        the frame's shape (for counting rows; its values are not the samples)."""
        from cortexlink.codec import HEADER_SIZE, read_header

        h = read_header(payload)
        self.dependent = not h.resync and h.frame_index != self._next
        if self.dependent or h.n_channels != self._ncol or HEADER_SIZE + h.payload_len != len(payload):
            self._next = None
            self._chain = []
            raise ValueError("depends on a damaged or missing record before it; lost up to the next "
                             "resynchronisation point" if self.dependent else
                             f"codec frame of {h.n_channels} channels and {HEADER_SIZE + h.payload_len} bytes in a "
                             f"record of {len(payload)} bytes of a stream of {self._ncol} columns")
        self._next = (h.frame_index + 1) & 0xFFFFFFFF
        self._chain = [payload] if h.resync else self._chain + [payload]
        return np.broadcast_to(np.zeros((), np.int16), (h.n_samples, self._ncol))

    def feed(self, payload: bytes, need: Any) -> np.ndarray:
        """Decode the frame if ``need(n_rows)`` says its samples are wanted (first decoding the
        frames before it that were only checked, back to their resynchronisation point), else
        :meth:`skim` it."""
        from cortexlink.codec import read_header

        if not need(read_header(payload).n_samples):
            return self.skim(payload)
        chain, self._chain = self._chain, []
        for frame in chain:                     # they checked out: they decode
            self._dec.decode(frame)
        return self.decode(payload)

    def decode(self, payload: bytes) -> np.ndarray:
        from cortexlink.codec import read_header

        self.dependent = False
        h = read_header(payload)
        self.dependent = not h.resync and (not self._dec.synchronised or h.frame_index != self._next)
        self._chain = []
        try:
            out = self._dec.decode(payload)
        except ValueError as exc:
            self._next = None
            if self.dependent:
                raise ValueError(f"depends on a damaged or missing record before it; lost up to the next "
                                 f"resynchronisation point ({exc})") from None
            raise
        if out.shape[1] != self._ncol:
            self._next = None
            raise ValueError(f"codec frame of {out.shape[1]} channels in a stream of {self._ncol} columns")
        self._next = (h.frame_index + 1) & 0xFFFFFFFF
        return out
