"""Sources: ``sim_source``, ``replay_source``, ``lsl_source`` (clocked; they publish ``raw``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.types import Intent
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.nodes._stim_device import StimDeviceMixin

__all__ = ["SimSource", "ReplaySource", "LSLSource", "BinClock", "stream_info"]


_STALL = {
    "stall_at_s": Param("float", None, nullable=True, lo=0.0, doc="source time at which it stops producing"),
    "stall_for_s": Param("float", 0.5, gt=0.0, doc="how long it stays silent"),
}


def _wrap(name: str, exc: Exception) -> ConfigError:
    return ConfigError(f"nodes.{name}.params: {exc}")


def stream_info(channel_map: Any, fs_hz: float, chunk_samples: int) -> dict:
    """What a source publishes under ``<name>/stream`` for its consumers."""
    return {"fs_hz": float(fs_hz), "n_channels": int(channel_map.n_channels), "chunk_samples": int(chunk_samples),
            "channel_map": channel_map.to_dict()}


def _samples(name: str, key: str, ms: float, fs: float) -> int:
    n = ms * fs / 1000.0
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ConfigError(f"nodes.{name}.params.{key} must be a whole number (>= 1) of samples at "
                          f"{fs:g} Hz; got {ms!r} ms ({n:g} samples)")
    return int(round(n))


class _ClockedSource(Node):
    """Shared behaviour of sources: a period, stall injection, stream info."""

    CLOCKED = True
    SOURCE = True
    OUTPUTS = {"raw": "chunk"}
    INJECT = {**Node.INJECT, **_STALL}

    def _init_clock(self, fs: float, chunk_samples: int) -> None:
        self.fs_hz = float(fs)
        self.chunk_samples = int(chunk_samples)
        self.period_ns = int(round(chunk_samples / fs * 1e9))
        self._ticks = 0
        at = self.inject.get("stall_at_s")
        self._stall = None if at is None else (at, at + self.inject.get("stall_for_s", 0.5))

    def _stalled(self) -> bool:
        """Fault injection: True during the configured stall window (in ticks of the clock)."""
        t = self._ticks * self.period_ns / 1e9
        self._ticks += 1
        return self._stall is not None and self._stall[0] <= t < self._stall[1]


@register_node
class SimSource(StimDeviceMixin, _ClockedSource):
    """Simulated implant read in chunks of ``chunk_ms``; its intent comes from a participant.

    Parameters (``params``)
    -----------------------
    preset : str
        A :data:`cortexlink.sim.PRESETS` name.
    seed : int
    config : dict
        :class:`~cortexlink.sim.ImplantConfig` overrides (``n_channels``, ``noise_uv``, ...).
    chunk_ms : float
        Chunk length (the source period), default 1 ms.
    wait_intent : bool or None
        Hold each bin until the participant's intent for it has arrived (a lock-step loop across
        processes in ``clock: fast``). Default (None): in ``clock: fast`` runs whose nodes live in
        more than one process.

    Intent messages (``neural`` = vx, vy, click) go to ``set_intent`` when they arrive; the
    implant applies them from its next generated block, which is the next bin when they come
    between bins (always so in one process). Speech messages (``articulators``, None at rest) go
    to ``set_articulators`` the same way; an implant driven by a speaking participant alone has no
    movement intent (velocity zero, no click). With the ``stim`` input connected the source is
    also the simulated stimulator (:mod:`cortexlink.runtime.nodes._stim_device`): it renders the
    pulses of the command frames it receives into the signal and sends what it delivered on its
    ``stim`` output.
    """

    kind = "sim_source"
    INPUTS = {"intent": PortSpec(maxlen=64, policy="drop_oldest", message="participant_intent",
                                 doc="participant intent (neural)"),
              "speech": PortSpec(maxlen=64, policy="drop_oldest", message="speech_intent",
                                 doc="speaking participant's articulator state (implant with speech_dims)"),
              "stim": PortSpec(maxlen=4096, policy="drop_oldest", message="stim_command", feedback=True,
                               doc="stimulator command frames (the simulated stimulator renders their pulses)")}
    OUTPUTS = {"raw": "chunk", "stim": "stim_pulses"}
    PARAMS = {
        "preset": Param("str", "default", doc="simulator preset"),
        "seed": Param("int", 0, lo=0),
        "config": Param("dict", {}, doc="ImplantConfig overrides"),
        "chunk_ms": Param("float", 1.0, gt=0.0),
        "wait_intent": Param("bool", None, nullable=True),
        "intent_wait_s": Param("float", 10.0, gt=0.0, doc="longest wait for an intent (then carry on)"),
    }

    @classmethod
    def implant_fs(cls, params: dict) -> float:
        from cortexlink.sim.config import PRESETS

        base = PRESETS.get(params.get("preset", "default"))
        fs = (params.get("config") or {}).get("fs_hz")
        return float(fs if fs is not None else (base.fs_hz if base is not None else 30000.0))

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.sim.config import PRESETS, ImplantConfig

        if params["preset"] not in PRESETS:
            raise ConfigError(f"nodes.{name}.params.preset must be one of {sorted(PRESETS)}; got {params['preset']!r}")
        fields = set(ImplantConfig.__dataclass_fields__)
        unknown = sorted(str(k) for k in params["config"] if k not in fields | {"seed"})
        if unknown:
            raise ConfigError(f"nodes.{name}.params.config has unknown field(s) {unknown}; "
                              f"ImplantConfig fields: {sorted(fields)}")
        try:
            PRESETS[params["preset"]].replace(**params["config"])
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"nodes.{name}.params.config is invalid: {exc}") from exc
        fs = cls.implant_fs(params)
        chunk = _samples(name, "chunk_ms", params["chunk_ms"], fs)
        inputs = graph["nodes"][name].get("inputs", {})
        if "speech" in inputs and not PRESETS[params["preset"]].replace(**params["config"]).speech_dims:
            raise ConfigError(f"nodes.{name}.params.config.speech_dims must be >= 1 when a speaking participant "
                              "drives the implant (its speech input is connected)")
        if "intent" in inputs or "speech" in inputs:
            b = _samples(name, "chunk_ms", graph["bin_ms"], fs)
            if b % chunk:
                raise ConfigError(f"nodes.{name}.params.chunk_ms must divide the graph's bin_ms "
                                  f"({graph['bin_ms']:g} ms) when an intent drives the implant; got {params['chunk_ms']!r}")

    def setup(self) -> None:
        from cortexlink.sim import SimulatedImplant

        p = self.params
        if getattr(self, "implant", None) is None:       # a restart keeps the implant: samples go on
            try:
                self.implant = SimulatedImplant.from_preset(p["preset"], **{"seed": p["seed"], **p["config"]})
            except ConfigError as exc:
                raise _wrap(self.name, exc) from exc
        fs = self.implant.fs_hz
        chunk = _samples(self.name, "chunk_ms", p["chunk_ms"], fs)
        self._init_clock(fs, chunk)
        self.bin_samples = int(round(self.ctx.bin_ms * fs / 1000.0))
        self.ctx.bus.set_info(f"{self.name}/stream", stream_info(self.implant.channel_map, fs, chunk))
        wait = p["wait_intent"]
        if wait is None:
            # lock-step only when the loop crosses processes (in one process the participant always
            # runs before the source within a pass)
            placement = self.ctx.graph.get("_placement", {})
            wait = not self.ctx.realtime and len(set(placement.values())) > 1
        self._intent_port = "intent" if "intent" in self.subs else ("speech" if "speech" in self.subs else None)
        if self._intent_port == "speech" and self.implant.sample_index == 0:
            # a speaking participant alone: no hand-movement intent (the implant's built-in random
            # velocity would otherwise modulate its velocity-tuned units)
            self.implant.set_intent((0.0, 0.0), 0.0)
        self.wait_intent = bool(wait) and self._intent_port is not None
        self._stim_setup()
        self._intent_bin = -1
        self._wait_since: float | None = None
        self.n_intent_late = 0

    def ready(self, now_ns: int) -> bool:
        if not self.wait_intent:
            return True
        pos = self.implant.sample_index
        if pos % self.bin_samples:
            return True
        need = pos // self.bin_samples
        last = self.subs[self._intent_port].peek_last()
        have = max(self._intent_bin, -1 if last is None else int(last.payload.bin))
        if have >= need:
            self._wait_since = None
            return True
        t = time.monotonic()
        if self._wait_since is None:
            self._wait_since = t
        if t - self._wait_since > self.params["intent_wait_s"]:
            self.n_intent_late += 1
            self._wait_since = None
            self.fault("intent_late", severity="warning", sample=pos,
                       message=f"no participant intent for bin {need} within {self.params['intent_wait_s']:g} s; "
                               "carrying on with the last one")
            return True
        return False

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox.get("intent", ()):
            p = m.payload
            vx, vy, c = p.neural
            self.implant.set_intent(velocity=(vx, vy), click=c)
            self._intent_bin = p.bin
        for m in inbox.get("speech", ()):
            self.implant.set_articulators(m.payload.articulators)
            self._intent_bin = m.payload.bin
        self._stim_frames(inbox.get("stim", ()))
        if self._stalled():
            return
        self._stim_render(self.chunk_samples)
        chunk = self.implant.read(self.chunk_samples)
        self.emit("raw", chunk, sample=chunk.start_sample, t_enter_ns=time.monotonic_ns())


@register_node
class ReplaySource(_ClockedSource):
    """Play a recording in chunks, paced like a live source: a ``.npy`` array, a session folder
    recorded with raw data, or any file or folder :mod:`cortexlink.io.importers` reads
    (Blackrock NSx, Intan, Open Ephys, SpikeGLX, NWB, WAV, raw + sidecar).

    The latency benchmark plays pre-generated ``.npy`` data with it; the same node replays a
    lab recording through the whole graph (dsp, decoder, recorder) as if it came from an implant.

    Parameters (``params``)
    -----------------------
    path : str
        ``.npy`` (samples x channels, int16 counts or float32 µV; a ``<path>.json`` beside it with a
        ``channel_map`` (``ChannelMap.to_dict``) is used when present, otherwise a grid with
        ``gain_uv``), a session folder (``manifest.json``; its ``raw`` stream), or a recording.
    format, stream : str or None
        Importer format and stream (see :func:`cortexlink.io.importers.open_recording`).
    fs_hz : float or None
        Sampling rate of a ``.npy`` (default 30 kHz); a recording's own rate is used, and a
        different value given here is an error.
    chunk_ms : float
        A whole number of samples at the rate.
    chunk_samples : int or None
        The chunk in samples instead (convenient at rates such as 19,531 Hz, where no round
        number of milliseconds is a whole number of samples).
    loop : bool
        Start again at the end (sample indices keep counting up).
    gain_uv : float
        µV per count of a ``.npy`` without a channel map.
    in_memory : bool
        Load the whole recording before the real-time loop (no disk reads or page faults on the
        hot path) instead of reading each chunk when it is due (a session folder's raw stream is
        always loaded whole). Samples stored as another type
        than int16 or float32 are converted to float32 µV either way.
    """

    kind = "replay_source"
    PARAMS = {
        "path": Param("str"),
        "format": Param("str", None, nullable=True),
        "stream": Param("str", None, nullable=True),
        "fs_hz": Param("float", None, gt=0.0, nullable=True),
        "chunk_ms": Param("float", 1.0, gt=0.0),
        "chunk_samples": Param("int", None, lo=1, nullable=True),
        "loop": Param("bool", True),
        "gain_uv": Param("float", 0.195, gt=0.0),
        "in_memory": Param("bool", True),
    }
    #: Rate of a ``.npy`` when ``fs_hz`` is not given.
    NPY_FS_HZ = 30000.0

    @classmethod
    def known_fs(cls, params: dict) -> float | None:
        """The rate known without opening the recording (``None``: read at set-up)."""
        if params.get("fs_hz") is not None:
            return float(params["fs_hz"])
        return cls.NPY_FS_HZ if str(params.get("path", "")).lower().endswith(".npy") else None

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        fs = cls.known_fs(params)
        if fs is not None and params.get("chunk_samples") is None:
            _samples(name, "chunk_ms", params["chunk_ms"], fs)

    def setup(self) -> None:
        p = self.params
        path = Path(p["path"])
        if not path.exists():
            raise ConfigError(f"nodes.{self.name}.params.path {path} does not exist")
        self._rec = None
        if path.suffix.lower() == ".npy":
            data, cmap, fs = self._open_npy(path)
        elif path.is_dir() and (path / "manifest.json").is_file():
            data, cmap, fs = self._open_session(path)
        else:
            data, cmap, fs = self._open_recording(path)
        if p["fs_hz"] is not None and abs(p["fs_hz"] - fs) > 1e-9 * fs:
            raise ConfigError(f"nodes.{self.name}.params.fs_hz is {p['fs_hz']:g} Hz but {path} was recorded at "
                              f"{fs:g} Hz (leave fs_hz out to use the recording's rate)")
        chunk = p["chunk_samples"] or _samples(self.name, "chunk_ms", p["chunk_ms"], fs)
        n = data.shape[0] if data is not None else self._rec.n_samples
        if n < chunk:
            raise ConfigError(f"nodes.{self.name}.params.path holds {n} samples, fewer than one chunk ({chunk})")
        self.channel_map = cmap
        self.data = data
        self.n_file = n
        self._init_clock(fs, chunk)
        if not hasattr(self, "_pos"):                     # a restart goes on where it stopped
            self._pos = 0
            self._sample = 0
            self._chunk_seq = 0
        self.ctx.bus.set_info(f"{self.name}/stream", stream_info(self.channel_map, fs, chunk))

    def _open_npy(self, path: Path) -> tuple:
        import json

        from cortexlink.core.types import ChannelMap

        p = self.params
        data = np.load(path, mmap_mode=None if p["in_memory"] else "r", allow_pickle=False)
        if data.ndim != 2 or data.dtype not in (np.int16, np.float32):
            raise ConfigError(f"nodes.{self.name}.params.path must hold a 2-D int16 or float32 array "
                              f"(samples x channels); got {data.dtype} {data.shape}")
        side = path.with_name(path.name + ".json")
        if side.is_file():
            cmap = ChannelMap.from_dict(json.loads(side.read_text())["channel_map"])
        else:
            cmap = ChannelMap.grid(data.shape[1], gain_uv=p["gain_uv"])
        return data, cmap, float(p["fs_hz"] or self.NPY_FS_HZ)

    def _open_session(self, path: Path) -> tuple:
        from cortexlink.io.session_log import SessionReader

        rd = SessionReader(path)
        if "raw" not in rd.streams or rd.channel_map is None:
            raise ConfigError(f"nodes.{self.name}.params.path {path} is a session recorded without raw data "
                              "(nothing to replay)")
        parts = [c.data for c in rd.iter_chunks("raw")]
        if not parts:
            raise ConfigError(f"nodes.{self.name}.params.path {path}: its raw stream is empty")
        data = np.ascontiguousarray(np.concatenate(parts))
        cmap = self._set_conversion(data.dtype, rd.channel_map)
        return self._convert(data), cmap, float(rd.fs_hz)

    def _open_recording(self, path: Path) -> tuple:
        from cortexlink.core.errors import ValidationError
        from cortexlink.io.importers import open_recording

        p = self.params
        try:
            rec = open_recording(path, p["format"], stream=p["stream"])
        except (ValidationError, ConfigError) as exc:
            raise ConfigError(f"nodes.{self.name}.params.path: {exc}") from None
        cmap = self._set_conversion(rec.dtype, rec.channel_map)
        if not p["in_memory"]:
            self._rec = rec                                # read chunk by chunk (_block)
            return None, cmap, float(rec.fs_hz)
        try:
            return self._convert(rec.read()), cmap, float(rec.fs_hz)
        finally:
            rec.close()

    def _set_conversion(self, dtype: Any, cmap: Any) -> Any:
        """Samples the feature extractor takes: int16 counts and float32 µV as they are; any
        other type is converted to float32 µV (:meth:`_convert`) under a channel map of unit
        gain, which this returns."""
        from cortexlink.core.types import ChannelMap

        if dtype == np.int16 or dtype == np.float32:
            self._to_uv = None
            return cmap
        self._to_uv = (cmap.gain_uv, cmap.offset_uv)
        return ChannelMap(cmap.channel_ids, cmap.positions_um, gain_uv=1.0, offset_uv=0.0, bad=cmap.bad)

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        if self._to_uv is None:
            return raw
        gain, offset = self._to_uv
        return (raw * gain + offset).astype(np.float32)

    def _block(self, pos: int, n: int) -> np.ndarray:
        if self.data is not None:
            return self.data[pos:pos + n]
        return self._convert(self._rec.read(pos, pos + n))

    def teardown(self) -> None:
        if getattr(self, "_rec", None) is not None:
            self._rec.close()
            self._rec = None

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        from cortexlink.core.types import Chunk

        if self._stalled():
            return
        n = self.chunk_samples
        if self._pos + n > self.n_file:
            if not self.params["loop"]:
                self.ctx.request_stop(f"{self.name}: end of {self.params['path']}")
                return
            self._pos = 0
        block = self._block(self._pos, n)
        self._pos += n
        t = time.monotonic_ns()
        chunk = Chunk(block, self.fs_hz, self._sample, t, self._chunk_seq)
        self._sample += n
        self._chunk_seq += 1
        self.emit("raw", chunk, sample=chunk.start_sample, t_enter_ns=t)


@register_node
class LSLSource(_ClockedSource):
    """An LSL stream as a source: :class:`~cortexlink.io.lsl.LSLInlet`, polled every ``poll_ms``.

    Parameters (``params``)
    -----------------------
    name, stream_type : str
        What to resolve (at least one).
    timeout_s : float
        Bound on resolving and connecting.
    poll_ms : float
        Polling period (the node's clock).
    """

    kind = "lsl_source"
    PARAMS = {
        "name": Param("str", None, nullable=True),
        "stream_type": Param("str", None, nullable=True),
        "timeout_s": Param("float", 5.0, gt=0.0),
        "poll_ms": Param("float", 1.0, gt=0.0),
    }

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        if params["name"] is None and params["stream_type"] is None:
            raise ConfigError(f"nodes.{name}.params needs name or stream_type to find the LSL stream")

    def setup(self) -> None:
        from cortexlink.io.lsl import LSLInlet

        p = self.params
        self.inlet = LSLInlet(name=p["name"], stream_type=p["stream_type"], timeout_s=p["timeout_s"])
        # after a restart (reconnect) the inlet counts from 0 again: keep the sample clock going
        self._offset = getattr(self, "_next", 0)
        self._next = self._offset
        self.fs_hz = self.inlet.fs_hz
        self.period_ns = int(p["poll_ms"] * 1e6)
        self._ticks = 0
        at = self.inject.get("stall_at_s")
        self._stall = None if at is None else (at, at + self.inject.get("stall_for_s", 0.5))
        self.ctx.bus.set_info(f"{self.name}/stream", stream_info(self.inlet.channel_map, self.fs_hz, 0))

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        if self._stalled():
            return
        chunk = self.inlet.read_chunk(0.0)
        if chunk is not None:
            if self._offset:
                from cortexlink.core.types import Chunk
                chunk = Chunk(chunk.data, chunk.fs_hz, chunk.start_sample + self._offset, chunk.host_time_ns,
                              chunk.seq)
            self._next = chunk.end_sample
            self.emit("raw", chunk, sample=chunk.start_sample, t_enter_ns=chunk.host_time_ns or time.monotonic_ns())

    def teardown(self) -> None:
        inlet = getattr(self, "inlet", None)
        if inlet is not None:
            inlet.close()


@register_node
class BinClock(Node):
    """One tick per bin, for a loop without an implant (the perfect-decoder ceiling).

    Each tick is an ``intent``-shaped message (``bin``, ``v`` NaN, ``ready``, ``features_valid``)
    that clocks the cursor node; with ``decoder_kind: perfect`` the cursor then follows the
    participant's intent. Connect ``after`` to the participant's intent so that, within a pass,
    the tick of bin k comes after the participant's intent for bin k (as an implant's does).
    """

    kind = "bin_clock"
    CLOCKED = True
    SOURCE = True
    INPUTS = {"after": PortSpec(maxlen=64, policy="drop_oldest", doc="ordering only (read and dropped)")}
    OUTPUTS = {"tick": "decoded_intent"}
    PARAMS = {"fs_hz": Param("float", 30000.0, gt=0.0, doc="the sample clock ticks are counted in")}

    def setup(self) -> None:
        self.period_ns = int(round(self.ctx.bin_ms * 1e6))
        self.bin_samples = max(1, int(round(self.ctx.bin_ms * self.params["fs_hz"] / 1000.0)))
        if not hasattr(self, "g"):
            self.g = 0

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        g = self.g
        self.g += 1
        self.emit("tick", Intent(g, (float("nan"), float("nan"))),
                  sample=(g + 1) * self.bin_samples, t_enter_ns=time.monotonic_ns())
