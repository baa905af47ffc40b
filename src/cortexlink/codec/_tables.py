"""Value tables: per-channel sorted sets of the values a channel uses, so that a channel whose
samples take few, spread-out values (a 10-bit ADC scaled into int16) is coded as indices.

Two section formats (see the package docstring):

- *per frame* (``FLAG_TABLES`` alone, written by earlier versions, still read): every channel's
  table for this frame only, as LEB128 varints (length, first value + 32768, gaps).
- *carried* (``FLAG_TABLES | FLAG_TABLE_DELTA``, written now): tables belong to the stream's
  state from one resynchronisation point to the next; a frame lists only the values that are
  new to a channel. Section: varint number of channels listed; per channel, varint gap to the
  previous listed channel's index (the first: its index), varint count ``T`` of new values,
  varint first new value + 32768 and, when ``T > 1``, varint base gap ``g0`` then the ``T - 1``
  gaps as order-0 exponential-Golomb codes of zig-zag ``(gap - g0)``, bits most significant
  first, padded to a byte. Most gaps of an ADC ladder equal ``g0``: one bit each.
"""

from __future__ import annotations

import numpy as np

from cortexlink.core.errors import ValidationError

EMPTY = np.zeros(0, np.int32)


def _varints(values: list[int]) -> bytearray:
    out = bytearray()
    for v in values:
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return out


class _Reader:
    def __init__(self, payload: memoryview) -> None:
        self.buf, self.pos = payload, 0

    def varint(self) -> int:
        v = shift = 0
        while True:
            if self.pos >= len(self.buf) or shift > 28:
                raise ValidationError("codec frame: malformed value-table section (corrupt frame)")
            b = self.buf[self.pos]
            self.pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v


def choose_new(data: np.ndarray, carried: list[np.ndarray | None],
               with_table: list[int] | None = None) -> list[tuple[int, np.ndarray]]:
    """The values to add to each channel's carried table for frame ``data`` (samples x channels):
    every value a channel with a table uses and its table lacks; for a channel without one, all
    its values when they are few and spread out (at most a quarter as many distinct values as
    samples, over at least twice as many codes, in a frame of >= 64 samples). ``with_table``: the
    channels that have a table, when the caller keeps that list (saves a pass over channels)."""
    n, nc = data.shape
    updates = []
    if with_table is None:
        with_table = [c for c in range(nc) if carried[c] is not None]
    for c in with_table:
        vals = np.unique(data[:, c]).astype(np.int32)
        new = vals[~np.isin(vals, carried[c], assume_unique=True)]
        if new.size:
            updates.append((c, new))
    if n >= 64 and len(with_table) < nc:
        srt = np.sort(data, axis=0)
        first = np.ones((n, nc), bool)
        first[1:] = srt[1:] != srt[:-1]
        distinct = first.sum(axis=0)
        span = srt[-1].astype(np.int64) - srt[0].astype(np.int64) + 1
        use = (4 * distinct <= n) & (span >= 2 * distinct)
        for c in np.flatnonzero(use):
            if carried[c] is None:
                updates.append((int(c), srt[first[:, c], c].astype(np.int32)))
        updates.sort(key=lambda u: u[0])
    return updates


def merge(carried: list[np.ndarray | None], updates: list[tuple[int, np.ndarray]]) -> list[np.ndarray | None]:
    """The carried tables after ``updates`` (new lists; the input is not changed)."""
    out = list(carried)
    for c, new in updates:
        out[c] = new if out[c] is None else np.union1d(out[c], new).astype(np.int32)
    return out


def flatten(tables: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(concatenated tables, offsets)`` as the kernels take them."""
    sizes = [0 if t is None else t.size for t in tables]
    offsets = np.zeros(len(tables) + 1, np.int64)
    offsets[1:] = np.cumsum(sizes)
    if not offsets[-1]:
        return EMPTY, offsets
    return np.concatenate([t for t in tables if t is not None]).astype(np.int32), offsets


def _zigzag(v: int) -> int:
    return v << 1 if v >= 0 else ((-v) << 1) - 1


def encode_section(updates: list[tuple[int, np.ndarray]]) -> bytes:
    """The carried-table section listing ``updates`` (channel, sorted new values)."""
    out = _varints([len(updates)])
    prev = -1
    for c, new in updates:
        vals = [int(v) for v in new]
        out += _varints([c - prev - 1, len(vals), vals[0] + 32768])
        prev = c
        if len(vals) > 1:
            gaps = np.diff(np.asarray(vals, np.int64))
            g, counts = np.unique(gaps, return_counts=True)
            g0 = int(g[np.argmax(counts)])
            out += _varints([g0])
            bits = []
            for gap in gaps.tolist():
                z = _zigzag(gap - g0) + 1          # exp-Golomb of z - 1, z >= 1
                nb = z.bit_length()
                bits.append("0" * (nb - 1) + format(z, "b"))
            s = "".join(bits)
            s += "0" * (-len(s) % 8)
            out += int(s, 2).to_bytes(len(s) // 8, "big") if s else b""
    return bytes(out)


def decode_section(payload: memoryview, nc: int) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Parse a carried-table section: ``(updates, bytes used)``; raise on a malformed one."""
    r = _Reader(payload)
    listed = r.varint()
    if listed > nc:
        raise ValidationError("codec frame: value-table section lists more channels than the frame has "
                              "(corrupt frame)")
    updates, c = [], -1
    for _ in range(listed):
        c += r.varint() + 1
        t = r.varint()
        if c >= nc or not 1 <= t <= 65536:
            raise ValidationError("codec frame: value-table entry out of range (corrupt frame)")
        vals = [r.varint() - 32768]
        if t > 1:
            g0 = r.varint()
            acc, nacc, pos = 0, 0, r.pos
            buf = r.buf
            for _ in range(t - 1):
                zeros = 0
                while True:                      # leading zeros, then the value's bits
                    if nacc == 0:
                        if pos >= len(buf) or zeros > 40:
                            raise ValidationError("codec frame: truncated value-table section (corrupt frame)")
                        acc, nacc, pos = buf[pos], 8, pos + 1
                    nacc -= 1
                    if (acc >> nacc) & 1:
                        break
                    zeros += 1
                z = 1
                for _ in range(zeros):
                    if nacc == 0:
                        if pos >= len(buf):
                            raise ValidationError("codec frame: truncated value-table section (corrupt frame)")
                        acc, nacc, pos = buf[pos], 8, pos + 1
                    nacc -= 1
                    z = (z << 1) | ((acc >> nacc) & 1)
                z -= 1
                vals.append(vals[-1] + g0 + ((z >> 1) if z % 2 == 0 else -((z + 1) >> 1)))
            r.pos = pos
        arr = np.asarray(vals, np.int64)
        if arr[0] < -32768 or arr[-1] > 32767 or (arr.size > 1 and np.any(np.diff(arr) <= 0)):
            raise ValidationError("codec frame: value table out of order or range (corrupt frame)")
        updates.append((c, arr.astype(np.int32)))
    return updates, r.pos


def check_new(carried: list[np.ndarray | None], updates: list[tuple[int, np.ndarray]]) -> None:
    """Refuse updates that repeat a value the channel's table already has (a corrupt frame)."""
    for c, new in updates:
        if carried[c] is not None and np.isin(new, carried[c]).any():
            raise ValidationError("codec frame: value-table update repeats known values (corrupt frame)")


def read_per_frame(payload: memoryview, nc: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse a per-frame table section (the earlier format): ``(tables, offsets, bytes used)``;
    raise on a malformed one."""
    pos, size = 0, len(payload)

    def varint() -> int:
        nonlocal pos
        v = shift = 0
        while True:
            if pos >= size or shift > 28:
                raise ValidationError("codec frame: malformed value-table section (corrupt frame)")
            b = payload[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v

    tabs, offsets = [], np.zeros(nc + 1, np.int64)
    for c in range(nc):
        t = varint()
        if t > 65536:
            raise ValidationError("codec frame: value table larger than the int16 range (corrupt frame)")
        vals = []
        if t:
            v = varint() - 32768
            vals.append(v)
            for _ in range(t - 1):
                v += varint()
                vals.append(v)
            if vals[0] < -32768 or v > 32767 or any(b <= a for a, b in zip(vals, vals[1:])):
                raise ValidationError("codec frame: value table out of order or range (corrupt frame)")
        tabs.append(np.asarray(vals, np.int32))
        offsets[c + 1] = offsets[c] + t
    return (np.concatenate(tabs) if offsets[-1] else EMPTY), offsets, pos
