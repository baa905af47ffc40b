"""Raw chunks compressed on the Redis bus: one frame of the lossless codec (:mod:`cortexlink.codec`)
per int16 :class:`~cortexlink.core.types.Chunk`, encoded by the publishing process, decoded by each
reading process (wire kind ``z``, see :mod:`cortexlink.runtime.wire`).

Each published topic has its own encoder, each read topic its own decoder. A frame that depends
on one the reader does not have — it joined the stream late (``start_at_end``, or the oldest
entries were trimmed by ``MAXLEN ~``), or an entry was lost — cannot be decoded; the reader skips
it, counts it as a gap on every subscription of the topic (``n_dropped``) and in
:attr:`ChunkCodecs.n_lost`, and decodes again from the next resynchronisation point (every
``resync_frames`` chunks of the topic, the first included). Nothing is lost silently.

Chunks that are not int16 (µV floats) are sent as they are, whatever the option.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError

logger = logging.getLogger(__name__)

#: values of the bus's ``chunk_codec`` option
CHUNK_CODECS = ("none", "rice", "range", "lms", "lms-fast")
#: default interval between resynchronisation points, in chunks of a topic (~32 ms of 1 ms chunks)
DEFAULT_RESYNC_FRAMES = 32


def check_chunk_codec(codec: Any, resync_frames: Any, where: str = "bus") -> tuple[str, int]:
    """Validate the option pair; :class:`ConfigError` naming ``<where>.chunk_codec`` or
    ``<where>.chunk_codec_resync``."""
    if codec not in CHUNK_CODECS:
        raise ConfigError(f"{where}.chunk_codec must be one of {', '.join(CHUNK_CODECS)}; got {codec!r}")
    if isinstance(resync_frames, bool) or not isinstance(resync_frames, (int, np.integer)) \
            or not 1 <= resync_frames <= 1 << 30:
        raise ConfigError(f"{where}.chunk_codec_resync must be a whole number in [1, {1 << 30}]; got "
                          f"{resync_frames!r}")
    return str(codec), int(resync_frames)


class ChunkCodecs:
    """Per-topic encoders (``codec`` != ``"none"``) and decoders of one bus.

    Attributes
    ----------
    n_encoded, raw_bytes, frame_bytes : int
        Chunks this process compressed, their bytes before and after.
    n_decoded, n_lost : int
        Frames this process decoded, and frames it could not (counted as gaps).
    """

    def __init__(self, codec: str = "none", resync_frames: int = DEFAULT_RESYNC_FRAMES) -> None:
        self.codec, self.resync_frames = check_chunk_codec(codec, resync_frames)
        self._enc: dict[str, Any] = {}
        self._dec: dict[str, Any] = {}
        self.n_encoded = self.raw_bytes = self.frame_bytes = 0
        self.n_decoded = self.n_lost = 0

    @property
    def enabled(self) -> bool:
        return self.codec != "none"

    def encode(self, topic: str, data: np.ndarray) -> bytes | None:
        """The frame of ``data`` (samples x channels) for ``topic``, or None when it is sent as
        it is (codec off, not int16, not 2-D)."""
        if self.codec == "none" or data.dtype != np.int16 or data.ndim != 2 or not 1 <= data.shape[1] <= 65535:
            return None
        enc = self._enc.get(topic)
        if enc is None or enc.n_channels != data.shape[1]:
            from cortexlink.codec import Encoder

            enc = self._enc[topic] = Encoder(data.shape[1], resync_frames=self.resync_frames, entropy=self.codec)
        frame = enc.encode(data)
        self.n_encoded += 1
        self.raw_bytes += data.nbytes
        self.frame_bytes += len(frame)
        return frame

    def decode(self, topic: str, frame: bytes) -> np.ndarray | None:
        """The samples of a frame of ``topic``, or None when it cannot be decoded (it depends on
        a frame this reader does not have, or it is damaged): counted in :attr:`n_lost`."""
        dec = self._dec.get(topic)
        if dec is None:
            from cortexlink.codec import Decoder

            dec = self._dec[topic] = Decoder()
        try:
            out = dec.decode(frame)
        except ValueError as exc:
            self.n_lost += 1
            if self.n_lost == 1 or self.n_lost % 1000 == 0:
                logger.warning("topic %s: %d compressed chunk(s) lost so far, waiting for a resynchronisation "
                               "point (%s)", topic, self.n_lost, exc)
            return None
        self.n_decoded += 1
        return out

    def stats(self) -> dict:
        """Counters (see the class docstring) and the mean bytes per encoded chunk."""
        return {"codec": self.codec, "resync_frames": self.resync_frames, "n_encoded": self.n_encoded,
                "raw_bytes": self.raw_bytes, "frame_bytes": self.frame_bytes,
                "ratio": self.raw_bytes / self.frame_bytes if self.frame_bytes else None,
                "n_decoded": self.n_decoded, "n_lost": self.n_lost}
