"""Frames, the streaming :class:`Encoder` and :class:`Decoder`, and whole-array helpers.

See the package docstring (:mod:`cortexlink.codec`) for the byte layout.
"""

from __future__ import annotations

import json
import numbers
import struct
import zlib
from typing import Iterator

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

from . import _kernels, _lms, _lmsfast, _range, _rice, _tables

MAGIC = b"CXLC"
VERSION = 1
FLAG_RESYNC = 0x01
FLAG_TABLES = 0x02
FLAG_RANGE = 0x04
FLAG_LMS = 0x08
FLAG_TABLE_DELTA = 0x10
#: A channel-map frame: no samples; the payload is the stream's channel map as UTF-8 JSON.
FLAG_MAP = 0x20
_KNOWN_FLAGS = FLAG_RESYNC | FLAG_TABLES | FLAG_RANGE | FLAG_LMS | FLAG_TABLE_DELTA | FLAG_MAP
#: Largest channel-map payload accepted (bytes).
MAX_MAP_BYTES = 1 << 24
ENTROPY_CODERS = ("range", "rice", "lms", "lms-fast")
#: magic, version, flags, channels, samples, frame index, payload length, CRC-32.
HEADER = struct.Struct("<4sBBHIIII")
HEADER_SIZE = HEADER.size
MAX_CHANNELS = 65535
#: Largest frame accepted (samples x channels): bounds the decoder's allocation.
MAX_FRAME_VALUES = 1 << 28


def _crc(header_wo_crc: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(header_wo_crc)) & 0xFFFFFFFF


def _fresh_state(n_channels: int, coder: str) -> tuple:
    """The state ``coder``'s kernels carry from frame to frame, as at a resynchronisation point:
    rice ``(hist, cost, acc)``; range those and the bit models ``(pu, pl)``; lms ``(hist, hd, lw,
    mag, prob, count)``; lms-fast ``(hist, ring, lw, ch, head, cnt, cum, look, due, ivl)``."""
    base = _kernels.init_state(n_channels)
    if coder == "rice":
        return base
    if coder == "range":
        return base + _range.init_models()
    if coder == "lms-fast":
        return (base[0],) + _lmsfast.init_state(n_channels)
    return (base[0],) + _lms.init_lms_state(n_channels)


_KERNELS = {"range": _range, "lms": _lms}
_ENCODERS = {"range": _range.encode_range, "lms": _lms.encode_lms}
_DECODERS = {"range": _range.decode_range, "lms": _lms.decode_lms, "lms-fast": _lmsfast.decode_fast,
             "rice": _rice.decode_rice}
#: The coder's bits in a frame's flags (lms-fast: both the range and the LMS bit).
_CODER_FLAGS = {"rice": 0, "range": FLAG_RANGE, "lms": FLAG_LMS, "lms-fast": FLAG_RANGE | FLAG_LMS}


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}")
    return int(value)


class Encoder:
    """Streaming encoder of int16 multichannel samples: one :meth:`encode` call, one frame.

    Parameters
    ----------
    n_channels : int
        Channels of every chunk (1..65535).
    resync_frames : int
        Every this many frames (the first included) the state is reset and the frame is flagged
        as a resynchronisation point, so a decoder that lost a frame is back at the next one
        (default 32; 1 makes every frame decodable on its own).
    value_tables : bool
        Code channels whose values are few and sparse (e.g. a 10-bit ADC scaled into int16) as
        indices into a table of those values, sent once per resynchronisation interval with only
        new values added later (default True).
    entropy : str
        ``"range"`` (default): fixed predictors and context-modelled adaptive binary range coding;
        ``"lms"``: adaptive LMS prediction and a fully modelled range coder (smallest, about half
        the range coder's speed); ``"lms-fast"``: the same LMS prediction, channel-parallel, with
        one adaptive multi-symbol letter per sample in two range-coder lanes (about ``lms``'s size,
        ~3x the range coder's speed on many channels; on one channel no faster than ``lms``);
        ``"rice"``: fixed predictors and adaptive Golomb-Rice codes (fastest, largest).
    channel_map : ChannelMap, optional
        The electrodes the channels are (ids, positions, gains, offsets, bad): :meth:`map_frame`
        then writes it as a channel-map frame, which a stream should start with (and may repeat,
        e.g. before resynchronisation points) so that it describes itself.

    Raises
    ------
    ConfigError
        For a channel count or interval out of range, or a channel map of another size.
    """

    def __init__(self, n_channels: int, *, resync_frames: int = 32, value_tables: bool = True,
                 entropy: str = "range", channel_map: object = None) -> None:
        self.n_channels = _check_int("n_channels", n_channels, 1, MAX_CHANNELS)
        self.resync_frames = _check_int("resync_frames", resync_frames, 1, 1 << 30)
        if not isinstance(value_tables, bool):
            raise ConfigError(f"value_tables must be True or False; got {value_tables!r}")
        self.value_tables = value_tables
        if entropy not in ENTROPY_CODERS:
            raise ConfigError(f"entropy must be one of {', '.join(ENTROPY_CODERS)}; got {entropy!r}")
        self.entropy = entropy
        if channel_map is not None:
            from cortexlink.core.types import ChannelMap

            if not isinstance(channel_map, ChannelMap):
                raise ConfigError(f"channel_map must be a ChannelMap; got {type(channel_map).__name__}")
            if channel_map.n_channels != self.n_channels:
                raise ConfigError(f"channel_map has {channel_map.n_channels} channels; the encoder "
                                  f"{self.n_channels}")
            if not all(np.isfinite(a).all() for a in (channel_map.positions_um, channel_map.gain_uv,
                                                      channel_map.offset_uv)):
                raise ConfigError("channel_map must hold finite positions, gains and offsets to be "
                                  "written into a stream")
        self.channel_map = channel_map
        self.frame_index = 0
        self._state = _fresh_state(self.n_channels, entropy)
        self._carried: list = [None] * self.n_channels
        self._with_table: list[int] = []
        self._flat = _tables.flatten(self._carried)
        self._work: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _check(self, chunk: object) -> np.ndarray:
        if not isinstance(chunk, np.ndarray):
            raise ValidationError(f"chunk must be a numpy array of int16; got {type(chunk).__name__}")
        if chunk.dtype != np.int16:
            raise ValidationError(f"chunk must be int16 (samples x channels); got dtype {chunk.dtype}")
        if chunk.ndim != 2:
            raise ValidationError(f"chunk must be 2-D (samples x channels); got shape {chunk.shape}")
        if chunk.shape[1] != self.n_channels:
            raise ValidationError(f"chunk has {chunk.shape[1]} channels; the encoder was made for "
                                  f"{self.n_channels}")
        if chunk.shape[0] * chunk.shape[1] > MAX_FRAME_VALUES or chunk.shape[0] > 0xFFFFFFFF:
            raise ValidationError(f"chunk too large for one frame ({chunk.shape}); split it")
        return np.ascontiguousarray(chunk)

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode ``chunk`` (samples x channels, int16) as one frame and return its bytes."""
        data = self._check(chunk)
        resync = self.frame_index % self.resync_frames == 0
        if resync:
            self._state = _fresh_state(self.n_channels, self.entropy)
            self._carried = [None] * self.n_channels
            self._with_table = []
            self._flat = _tables.flatten(self._carried)
        n = data.shape[0]
        updates = _tables.choose_new(data, self._carried, self._with_table) if self.value_tables else []
        section = b""
        if updates:
            self._carried = _tables.merge(self._carried, updates)
            self._with_table = [c for c in range(self.n_channels) if self._carried[c] is not None]
            self._flat = _tables.flatten(self._carried)
            section = _tables.encode_section(updates)
        tabs, offs = self._flat
        if self.entropy == "rice":
            out = np.empty(n * self.n_channels * _kernels.WORST_BITS // 8 + 16, np.uint8)
            used = _rice.encode_rice(data, *self._state, tabs, offs, out) if n else 0
        elif self.entropy == "lms-fast":
            out, outb, raw32 = self._lms_fast_work(n)
            used = _lmsfast.encode_fast(data, *self._state, tabs, offs, out, outb, raw32) if n else 0
            if used < 0:                          # the buffers are sized for the worst case
                raise RuntimeError("the lms-fast coder overran its worst-case buffer")
        else:
            mod = _KERNELS[self.entropy]
            kernel = _ENCODERS[self.entropy]
            used = -1
            for per_sample in (mod.TYPICAL_BYTES_PER_SAMPLE, mod.WORST_BYTES_PER_SAMPLE):
                out = np.empty(n * self.n_channels * per_sample + 4 * mod.WORST_BYTES_PER_SAMPLE, np.uint8)
                state = tuple(a.copy() for a in self._state) if per_sample != mod.WORST_BYTES_PER_SAMPLE \
                    else self._state
                used = kernel(data, *state, tabs, offs, out) if n else 0
                if used >= 0:
                    self._state = state
                    break
            if used < 0:                          # the worst case is sized to fit: a bug if reached
                raise RuntimeError(f"the {self.entropy} coder overran its worst-case buffer")
        payload = section + out[:used].tobytes()
        flags = ((FLAG_RESYNC if resync else 0) | (FLAG_TABLES | FLAG_TABLE_DELTA if updates else 0)
                 | _CODER_FLAGS[self.entropy])
        head = HEADER.pack(MAGIC, VERSION, flags, self.n_channels, n,
                           self.frame_index & 0xFFFFFFFF, len(payload), 0)[:-4]
        self.frame_index += 1
        return head + struct.pack("<I", _crc(head, payload)) + payload

    def _lms_fast_work(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """lms-fast's output and work buffers for ``n`` samples, kept from frame to frame (grown as
        needed): fresh memory for every 1 ms frame cost page faults, several times the coding."""
        size = n * self.n_channels * _lmsfast.WORST_BYTES_PER_SAMPLE + 64
        nb, nw = _lmsfast.scratch_sizes(n, self.n_channels)
        work = self._work
        if work is None or work[0].shape[0] < size or work[1].shape[0] < nb or work[2].shape[0] < nw:
            work = self._work = (np.zeros(size, np.uint8), np.zeros(nb, np.uint8), np.zeros(nw, np.uint32))
        return work

    def map_frame(self) -> bytes:
        """A channel-map frame (flag bit 5, 0 samples, the map as UTF-8 JSON, CRC-32): it takes no
        part in the sample state or the frame sequence (it carries the index of the next data
        frame and a decoder accepts it at any time), so losing one costs nothing but the map.

        Raises
        ------
        ConfigError
            If the encoder has no ``channel_map``.
        """
        if self.channel_map is None:
            raise ConfigError("this encoder has no channel_map to write")
        payload = json.dumps(self.channel_map.to_dict(), separators=(",", ":"), sort_keys=True,
                             allow_nan=False).encode()
        head = HEADER.pack(MAGIC, VERSION, FLAG_MAP, self.n_channels, 0,
                           self.frame_index & 0xFFFFFFFF, len(payload), 0)[:-4]
        return head + struct.pack("<I", _crc(head, payload)) + payload


class FrameHeader:
    """A parsed frame header (see the package docstring): ``tables`` is ``""`` (no table section),
    ``"carried"`` (new values for the stream's tables) or ``"frame"`` (this frame's own tables, the
    earlier format); ``coder`` is ``"rice"``, ``"range"``, ``"lms"`` or ``"lms-fast"``; ``is_map``:
    a channel-map frame (no samples)."""

    __slots__ = ("version", "resync", "tables", "coder", "n_channels", "n_samples", "frame_index",
                 "payload_len", "crc", "is_map")

    def __init__(self, version: int, resync: bool, tables: str, coder: str, n_channels: int,
                 n_samples: int, frame_index: int, payload_len: int, crc: int, is_map: bool = False) -> None:
        self.version, self.resync, self.tables, self.n_channels = version, resync, tables, n_channels
        self.coder = coder
        self.is_map = is_map
        self.n_samples, self.frame_index, self.payload_len, self.crc = n_samples, frame_index, payload_len, crc

    @property
    def frame_size(self) -> int:
        return HEADER_SIZE + self.payload_len


def read_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> FrameHeader:
    """Parse the frame header at ``offset`` of ``buf``.

    Raises
    ------
    ValidationError
        If the bytes are too short, the magic or version is wrong, or the counts are out of range.
    """
    if len(buf) - offset < HEADER_SIZE:
        raise ValidationError(f"truncated frame: {len(buf) - offset} bytes, a header needs {HEADER_SIZE}")
    magic, version, flags, nc, ns, idx, plen, crc = HEADER.unpack_from(buf, offset)
    if magic != MAGIC:
        raise ValidationError(f"not a cortexlink codec frame (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ValidationError(f"codec frame version {version} is not supported (this reader: {VERSION})")
    if flags & ~_KNOWN_FLAGS or (flags & FLAG_TABLE_DELTA and not flags & FLAG_TABLES):
        raise ValidationError(f"codec frame has unknown flags 0x{flags:02x}")
    if flags & FLAG_MAP and (flags != FLAG_MAP or ns != 0 or plen > MAX_MAP_BYTES):
        raise ValidationError(f"codec channel-map frame with flags 0x{flags:02x}, {ns} samples and a "
                              f"{plen}-byte payload (a map frame has no other flag, no samples, at most "
                              f"{MAX_MAP_BYTES} bytes)")
    if nc < 1:
        raise ValidationError("codec frame declares 0 channels")
    if ns * nc > MAX_FRAME_VALUES:
        raise ValidationError(f"codec frame declares {ns} x {nc} samples, over the limit")
    coder = {0: "rice", FLAG_RANGE: "range", FLAG_LMS: "lms",
             FLAG_RANGE | FLAG_LMS: "lms-fast"}[flags & (FLAG_RANGE | FLAG_LMS)]
    tables = "carried" if flags & FLAG_TABLE_DELTA else ("frame" if flags & FLAG_TABLES else "")
    return FrameHeader(version, bool(flags & FLAG_RESYNC), tables, coder, nc, ns, idx, plen, crc,
                       bool(flags & FLAG_MAP))


def iter_frames(buf: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    """Split a byte stream of concatenated frames into frames (headers checked, CRCs not).

    Raises
    ------
    ValidationError
        For a bad header or a frame cut short by the end of ``buf``.
    """
    mv = memoryview(buf)
    pos = 0
    while pos < len(mv):
        h = read_header(mv, pos)
        end = pos + h.frame_size
        if end > len(mv):
            raise ValidationError(f"truncated frame at byte {pos}: needs {h.frame_size} bytes, "
                                  f"{len(mv) - pos} left")
        yield mv[pos:end]
        pos = end


class Decoder:
    """Streaming decoder: frames in the order they were encoded, one :meth:`decode` call each.

    After a lost frame, frames that are not resynchronisation points are refused (their state
    is unknown) until the next resynchronisation point, which decodes on its own.
    """

    def __init__(self) -> None:
        self.n_channels: int | None = None
        self._coder: str | None = None
        self._state: tuple | None = None
        self._carried: list = []
        self._flat: tuple | None = None
        self._next_index: int | None = None
        #: The stream's channel map (a :class:`~cortexlink.core.types.ChannelMap`), from its last
        #: channel-map frame; None until one arrives.
        self.channel_map = None

    @property
    def synchronised(self) -> bool:
        """True when the next frame in sequence can be decoded."""
        return self._state is not None

    def decode(self, frame: bytes | bytearray | memoryview, out: np.ndarray | None = None) -> np.ndarray:
        """Decode one frame; return its samples (samples x channels, int16).

        ``out``: an int16, C-contiguous, writeable array of the frame's shape to decode into (and
        return) instead of a new one — a stream decoded into one preallocated buffer.

        Raises
        ------
        ValidationError
            For a damaged frame (header, length, CRC, payload), or a frame that depends on one
            this decoder did not see (out of sequence before a resynchronisation point). The
            decoder's state is left as it was, except that it loses synchronisation. Also for an
            ``out`` of another shape or kind (the decoder's state is then unchanged).
        """
        mv = memoryview(frame).cast("B") if not isinstance(frame, (bytes, bytearray)) else memoryview(frame)
        h = read_header(mv)
        if len(mv) != h.frame_size:
            raise ValidationError(f"frame is {len(mv)} bytes; its header says {h.frame_size}")
        if out is not None and not (isinstance(out, np.ndarray) and out.dtype == np.int16
                                    and out.shape == (h.n_samples, h.n_channels)
                                    and out.flags.c_contiguous and out.flags.writeable):
            raise ValidationError(f"out must be a writeable, C-contiguous int16 array of shape "
                                  f"({h.n_samples}, {h.n_channels}) for frame {h.frame_index}; got "
                                  f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
        payload = mv[HEADER_SIZE:]
        if h.is_map:
            return self._read_map(h, payload, out)
        if _crc(bytes(mv[:HEADER_SIZE - 4]), payload) != h.crc:
            self._state = None
            raise ValidationError(f"codec frame {h.frame_index}: CRC-32 mismatch (the frame is corrupt)")
        if h.resync:
            if self.channel_map is not None and self.channel_map.n_channels != h.n_channels:
                self.channel_map = None          # a new stream of another width: its map is not known
            state = _fresh_state(h.n_channels, h.coder)
            carried = [None] * h.n_channels
        else:
            if self._state is None:
                raise ValidationError(f"codec frame {h.frame_index} depends on earlier frames this decoder "
                                      f"does not have; waiting for a resynchronisation point")
            if h.frame_index != self._next_index:
                self._state = None
                raise ValidationError(f"codec frame {h.frame_index} out of sequence (expected "
                                      f"{self._next_index}): a frame was lost; waiting for a "
                                      f"resynchronisation point")
            if h.n_channels != self.n_channels or h.coder != self._coder:
                self._state = None
                raise ValidationError(f"codec frame {h.frame_index} has {h.n_channels} channels and the "
                                      f"{h.coder} coder; the stream has {self.n_channels} and {self._coder} "
                                      f"(corrupt frame)")
            state = tuple(a.copy() for a in self._state)
            carried = self._carried
        if out is None:
            out = np.empty((h.n_samples, h.n_channels), np.int16)
        skip = 0
        try:
            if h.tables == "frame":
                tabs, offs, skip = _tables.read_per_frame(payload, h.n_channels)
            else:
                flat = self._flat
                if h.tables == "carried":
                    updates, skip = _tables.decode_section(payload, h.n_channels)
                    _tables.check_new(carried, updates)
                    carried = _tables.merge(carried, updates)
                    flat = _tables.flatten(carried)
                elif h.resync or flat is None:
                    flat = _tables.flatten(carried)
                tabs, offs = flat
        except ValidationError:
            self._state = None
            raise
        if h.n_samples:
            body = np.frombuffer(payload[skip:], np.uint8)
            used = _DECODERS[h.coder](body, out, *state, tabs, offs)
            if used != h.payload_len - skip:
                self._state = None
                raise ValidationError(f"codec frame {h.frame_index}: payload does not decode to "
                                      f"{h.n_samples} x {h.n_channels} samples (corrupt frame)")
        elif h.payload_len:
            self._state = None
            raise ValidationError(f"codec frame {h.frame_index}: payload in a frame of 0 samples")
        self._state = state
        self._coder = h.coder
        self._carried = carried
        if h.tables != "frame":
            self._flat = (tabs, offs)
        self.n_channels = h.n_channels
        self._next_index = (h.frame_index + 1) & 0xFFFFFFFF
        return out


    def _read_map(self, h: FrameHeader, payload: memoryview, out: np.ndarray | None) -> np.ndarray:
        """A channel-map frame: checked and kept in :attr:`channel_map`; the sample state and the
        frame sequence are not touched (a damaged map frame is refused, the stream goes on)."""
        from cortexlink.core.errors import CortexlinkError
        from cortexlink.core.types import ChannelMap

        head = HEADER.pack(MAGIC, h.version, FLAG_MAP, h.n_channels, 0, h.frame_index, h.payload_len, 0)[:-4]
        if _crc(head, payload) != h.crc:
            raise ValidationError(f"codec channel-map frame (before frame {h.frame_index}): CRC-32 mismatch "
                                  f"(the frame is corrupt)")
        def no_constants(name: str) -> None:
            raise ValueError(f"{name} is not a number a channel map may hold")

        try:
            cmap = ChannelMap.from_dict(json.loads(bytes(payload).decode("utf-8"), parse_constant=no_constants))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError,
                CortexlinkError) as exc:
            raise ValidationError(f"codec channel-map frame (before frame {h.frame_index}) holds no valid "
                                  f"channel map: {exc}") from None
        if cmap.n_channels != h.n_channels or (self.n_channels is not None and h.n_channels != self.n_channels):
            raise ValidationError(f"codec channel-map frame maps {cmap.n_channels} channels in a frame of "
                                  f"{h.n_channels}; the stream has {self.n_channels}")
        self.channel_map = cmap
        return out if out is not None else np.empty((0, h.n_channels), np.int16)


def read_channel_map(buf: bytes | bytearray | memoryview):
    """The channel map of a stream of frames (its first channel-map frame), or None if it has none.

    Raises
    ------
    ValidationError
        For a bad frame header, or when every channel-map frame is damaged or holds no valid map
        (a damaged copy is skipped when a later one is intact).
    """
    dec = Decoder()
    first_error = None
    for f in iter_frames(buf):
        if read_header(f).is_map:
            try:
                dec.decode(f)
            except ValidationError as exc:     # a damaged copy: try the next one
                first_error = first_error or exc
                continue
            return dec.channel_map
    if first_error is not None:
        raise first_error
    return None


def encode_array(data: np.ndarray, *, chunk_samples: int = 4096, resync_frames: int = 32,
                 value_tables: bool = True, entropy: str = "range", channel_map: object = None) -> bytes:
    """Encode a whole array (samples x channels, int16; 1-D is one channel) as a stream of frames
    of ``chunk_samples`` samples each (at least one frame), after a channel-map frame when
    ``channel_map`` is given (:func:`read_channel_map` reads it back)."""
    if isinstance(data, np.ndarray) and data.ndim == 1:
        data = data[:, None]
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        raise ValidationError(f"data must be a 2-D int16 array (samples x channels); got "
                              f"{getattr(data, 'shape', type(data).__name__)}")
    chunk_samples = _check_int("chunk_samples", chunk_samples, 1, 1 << 30)
    enc = Encoder(data.shape[1], resync_frames=resync_frames, value_tables=value_tables, entropy=entropy,
                  channel_map=channel_map)
    n = data.shape[0]
    parts = [enc.map_frame()] if channel_map is not None else []
    parts += [enc.encode(data[i:i + chunk_samples]) for i in range(0, n, chunk_samples)] if n else [enc.encode(data)]
    return b"".join(parts)


def decode_array(buf: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a stream of frames (as :func:`encode_array` writes) into one array (samples x channels)."""
    dec = Decoder()
    frames = list(iter_frames(buf))
    if not frames:
        raise ValidationError("empty codec stream: no frame")
    heads = [read_header(f) for f in frames]
    widths = sorted({h.n_channels for h in heads})
    if len(widths) > 1:
        raise ValidationError(f"codec stream holds frames of {widths} channels; decode_array returns one "
                              f"array (decode such a stream frame by frame with a Decoder)")
    total = sum(h.n_samples for h in heads)
    if 2 * total * widths[0] > max(64 * len(buf), 1 << 24):
        # more than 64x the stream's size declared: decode (and check) frame by frame rather than
        # trusting the headers with one large allocation
        return np.concatenate([dec.decode(f) for f in frames], axis=0)
    # one output array, each frame decoded into its rows (no per-frame arrays, no concatenation)
    out = np.empty((total, widths[0]), np.int16)
    row = 0
    for f, h in zip(frames, heads):
        dec.decode(f, out=out[row:row + h.n_samples])
        row += h.n_samples
    return out
