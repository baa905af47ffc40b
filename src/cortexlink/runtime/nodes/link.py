"""``raw_link``: the implant's link in the graph — raw chunks through the codec and back."""

from __future__ import annotations

import dataclasses

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node

__all__ = ["RawLinkNode", "LINK_CODECS"]

#: Entropy coders the link can use (see :class:`cortexlink.codec.Encoder`).
LINK_CODECS = ("rice", "range", "lms", "lms-fast")


@register_node
class RawLinkNode(Node):
    """Raw chunks encoded as they would cross the implant's link, decoded, and passed on: what
    the nodes after it see is exactly what a receiver of the compressed stream would have.

    Parameters (``params``)
    -----------------------
    codec : {"rice", "range", "lms", "lms-fast"}
        The lossless codec's entropy coder (default ``rice``: the fastest).
    max_error_uv : float
        0 (default): lossless. Above 0: near-lossless, every sample within this many µV of the
        original (:mod:`cortexlink.codec.nearlossless`, with the channel map's µV per count).
    resync_frames : int
        A resynchronisation point every this many chunks (default 100).

    Its counters (``info()`` and the run summary) give the bytes that crossed, the bits per
    sample and the largest error seen in counts (0 when lossless: every chunk is checked).
    Chunks must be int16 counts; others fail the node with a clear error.
    """

    kind = "raw_link"
    INPUTS = {"raw": PortSpec(maxlen=256, policy="drop_oldest", required=True, message="chunk")}
    OUTPUTS = {"raw": "chunk"}
    PARAMS = {
        "codec": Param("str", "rice", choices=LINK_CODECS),
        "max_error_uv": Param("float", 0.0, lo=0.0),
        "resync_frames": Param("int", 100, lo=1),
    }

    def setup(self) -> None:
        from cortexlink.codec import Decoder, Encoder
        from cortexlink.codec.nearlossless import NearLosslessDecoder, NearLosslessEncoder
        from cortexlink.core.types import ChannelMap

        prod = self.ctx.producer(self.name, "raw")
        info = self.ctx.wait_info(f"{prod}/stream")
        self.ctx.bus.set_info(f"{self.name}/stream", dict(info))
        cmap = ChannelMap.from_dict(info["channel_map"])
        p = self.params
        n = cmap.n_channels
        if p["max_error_uv"] > 0:
            self.enc = NearLosslessEncoder(n, max_error_uv=p["max_error_uv"], uv_per_count=np.abs(cmap.gain_uv),
                                           resync_frames=p["resync_frames"], entropy=p["codec"])
            self.dec = NearLosslessDecoder()
        else:
            self.enc = Encoder(n, resync_frames=p["resync_frames"], entropy=p["codec"])
            self.dec = Decoder()
        self.n_bytes = 0
        self.n_samples = 0
        self.max_error_counts = 0

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox["raw"]:
            chunk = m.payload
            if chunk.data.dtype != np.int16:
                raise ConfigError(f"node {self.name!r} (raw_link) codes int16 counts; its input sends "
                                  f"{chunk.data.dtype} chunks")
            frame = self.enc.encode(np.ascontiguousarray(chunk.data))
            y = self.dec.decode(frame)
            self.n_bytes += len(frame)
            self.n_samples += chunk.data.size
            if chunk.data.size and not np.array_equal(y, chunk.data):    # one pass when lossless
                err = int(np.abs(y.astype(np.int32) - chunk.data.astype(np.int32)).max())
                self.max_error_counts = max(self.max_error_counts, err)
            self.emit("raw", dataclasses.replace(chunk, data=y), sample=m.sample, t_enter_ns=m.t_enter_ns)

    def _figures(self) -> dict:
        n = getattr(self, "n_samples", 0)
        return {"codec": self.params["codec"], "max_error_uv": self.params["max_error_uv"],
                "n_bytes": getattr(self, "n_bytes", 0), "n_samples": n,
                "bits_per_sample": (8.0 * self.n_bytes / n) if n else None,
                "max_error_counts": getattr(self, "max_error_counts", 0)}

    def info(self) -> dict:
        return {**super().info(), **self._figures()}

    def summary(self) -> dict:
        return self._figures()
