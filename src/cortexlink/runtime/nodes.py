"""Built-in nodes: sources, feature extraction, decoder, participant, cursor/task, recorder, UI, LSL.

================  ==========================================  =========================  =======================
kind              does                                        inputs                     outputs
================  ==========================================  =========================  =======================
``sim_source``    a :class:`~cortexlink.sim.SimulatedImplant`  ``intent`` (participant)   ``raw`` (Chunk)
                  read in ``chunk_ms`` chunks
``replay_source`` a ``.npy`` array (samples x channels) played  --                         ``raw``
                  in chunks, optionally looped
``lsl_source``    an LSL stream (:class:`~cortexlink.io.lsl.    --                         ``raw``
                  LSLInlet`)
``dsp``           :class:`~cortexlink.dsp.FeatureExtractor`,    ``raw``                    ``features``
                  one message per bin, decoder columns selected
``decoder``       a velocity decoder (+ click decoder), loaded  ``features``, ``labels``,  ``intent``
                  or calibrated in session                      ``control``
``participant``   a :class:`~cortexlink.sim.SimulatedParticipant` ``cursor`` (feedback)    ``intent``
``cursor``        :class:`~cortexlink.tasks.CursorEffector` +   ``intent``,                ``state``, ``control``,
                  a block schedule of tasks; the watchdog gate  ``participant``            ``gate``, ``events``
``recorder``      :class:`~cortexlink.io.session_log.           any of ``raw``,            --
                  SessionRecorder` (never blocks)               ``features``, ...
``ui_feed``       latest values, rate-limited snapshots         any (latest value)         --
``lsl_outlet``    features or intent as an LSL stream           ``data``                   --
``sink``          counts messages, end-to-end latency           ``data``                   --
================  ==========================================  =========================  =======================

Message payloads (dicts unless said otherwise):

* ``raw``: a :class:`~cortexlink.core.types.Chunk`; ``sample`` = its first sample.
* ``features``: ``bin`` (bin index since the stream began), ``bin_start`` (sample), ``x`` (float32
  decoder features of the bin, None until the extractor is calibrated), ``valid`` (False for bins
  masked entirely, e.g. inside the calibration window); ``sample`` = bin end.
* ``intent`` (decoder): ``bin``, ``v`` (vx, vy; NaN when not decoding), ``click`` (click onset),
  ``proba``, ``ready`` (fitted and decoding in closed mode), ``features_valid``, ``version`` (fit count).
* ``intent`` (participant): ``bin``, ``v`` (intended velocity), ``click`` (click intent),
  ``neural`` (vx, vy, click for the implant), ``active``.
* ``state`` (cursor): ``bin`` (the next bin), ``t_s``, ``xy``, ``velocity``, ``clicked``,
  ``halted``, ``block``, ``mode``, ``begin``, ``target`` (xy, radius, click, dwell_s, or None).
* ``control`` (cursor → decoder): ``cmd`` in ``begin`` / ``end`` / ``fit`` / ``refit``.
* ``gate`` (cursor): ``halted``, ``velocity`` (0, 0 while halted), ``faults``.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_keys
from cortexlink.runtime.bus import Message
from cortexlink.runtime.node import Node, Param, PortSpec, register_node
from cortexlink.runtime.stats import LatencyStats

logger = logging.getLogger(__name__)

__all__ = ["SimSource", "ReplaySource", "LSLSource", "DspNode", "DecoderNode", "ParticipantNode",
           "CursorNode", "RecorderNode", "UiFeedNode", "LSLOutletNode", "SinkNode", "stream_info"]

_NAN2 = (math.nan, math.nan)
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
    OUTPUTS = ("raw",)
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
class SimSource(_ClockedSource):
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
    between bins (always so in one process).
    """

    kind = "sim_source"
    INPUTS = {"intent": PortSpec(maxlen=64, policy="drop_oldest", doc="participant intent (neural)")}
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
        unknown = sorted(set(params["config"]) - fields - {"seed"})
        if unknown:
            raise ConfigError(f"nodes.{name}.params.config has unknown field(s) {unknown}; "
                              f"ImplantConfig fields: {sorted(fields)}")
        try:
            PRESETS[params["preset"]].replace(**params["config"])
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{name}.params.config is invalid: {exc}") from exc
        fs = cls.implant_fs(params)
        chunk = _samples(name, "chunk_ms", params["chunk_ms"], fs)
        if "intent" in graph["nodes"][name].get("inputs", {}):
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
        self.wait_intent = bool(wait) and "intent" in self.subs
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
        last = self.subs["intent"].peek_last()
        have = max(self._intent_bin, -1 if last is None else int(last.payload.get("bin", -1)))
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
            vx, vy, c = p["neural"]
            self.implant.set_intent(velocity=(float(vx), float(vy)), click=float(c))
            self._intent_bin = int(p.get("bin", self._intent_bin))
        if self._stalled():
            return
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
class DspNode(Node):
    """Feature extraction: one ``features`` message per completed bin of the graph's ``bin_ms``.

    Parameters (``params``)
    -----------------------
    extractor : dict
        :class:`~cortexlink.dsp.FeatureExtractor` keyword arguments (``reference``,
        ``threshold_rms``, ``calibration_s``, ``band_hz``, ``backend``, ...; not ``bin_ms``,
        which is the graph's).
    feature_kinds : list of {"tx", "sbp"} or None
        Columns given to the decoder; default as :class:`~cortexlink.tasks.loop.ClosedLoop`: both
        up to 128 channels, ``sbp`` above.
    exclude_bad : bool
        Leave out the bad channels found at calibration.

    The decoder columns are fixed when the extractor's calibration completes and published under
    ``<name>/features`` (names, bad channels). Deadline: a chunk that completes no bin must be
    processed within ``deadline_ms`` of entering the graph (else ``n_missed``); one that completes
    a bin is checked at the cursor.
    """

    kind = "dsp"
    INPUTS = {"raw": PortSpec(maxlen=256, policy="drop_oldest", required=True)}
    OUTPUTS = ("features",)
    PARAMS = {
        "extractor": Param("dict", {}),
        "feature_kinds": Param("list", None, nullable=True),
        "exclude_bad": Param("bool", True),
    }

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        fk = params["feature_kinds"]
        if fk is not None and (not fk or any(k not in ("tx", "sbp", "lfp") for k in fk)):
            raise ConfigError(f"nodes.{name}.params.feature_kinds must be a non-empty list drawn from "
                              f"['tx', 'sbp', 'lfp']; got {fk!r}")
        if "bin_ms" in params["extractor"] or "channel_map" in params["extractor"]:
            raise ConfigError(f"nodes.{name}.params.extractor must not set bin_ms or channel_map "
                              "(bin_ms is the graph's; the channel map comes from the source)")
        src = graph["nodes"][name]["inputs"].get("raw")
        if src is not None:
            prod = graph["nodes"].get(src["from"].split(".", 1)[0], {})
            fs = None
            if prod.get("kind") == "sim_source":
                fs = SimSource.implant_fs(prod["params"])
            elif prod.get("kind") == "replay_source":
                fs = ReplaySource.known_fs(prod["params"])
            if fs is not None:
                n = graph["bin_ms"] * fs / 1000.0
                if abs(n - round(n)) > 1e-6 or round(n) < 1:
                    raise ConfigError(f"bin_ms must be a whole number of samples at the source's {fs:g} Hz "
                                      f"(a multiple of {1000.0 / fs:g} ms); got {graph['bin_ms']!r} for node {name}")
                from cortexlink.core.types import ChannelMap
                from cortexlink.dsp import FeatureExtractor

                try:
                    FeatureExtractor(ChannelMap.grid(2), fs, bin_ms=graph["bin_ms"], **params["extractor"])
                except (ConfigError, TypeError) as exc:
                    raise ConfigError(f"nodes.{name}.params.extractor is invalid: {exc}") from exc

    def setup(self) -> None:
        from cortexlink.core.types import ChannelMap
        from cortexlink.dsp import FeatureExtractor

        prod = self.ctx.producer(self.name, "raw")
        info = self.ctx.wait_info(f"{prod}/stream")
        cmap = ChannelMap.from_dict(info["channel_map"])
        try:
            self.fx = FeatureExtractor(cmap, info["fs_hz"], bin_ms=self.ctx.bin_ms, **self.params["extractor"])
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{self.name}.params.extractor is invalid: {exc}") from exc
        n = cmap.n_channels
        fk = self.params["feature_kinds"]
        self.kinds = tuple(fk) if fk else (("tx", "sbp") if n <= 128 else ("sbp",))
        self.W = self.fx.bin_width_samples
        self.cols: np.ndarray | None = None
        self.names: tuple[str, ...] = ()
        if not hasattr(self, "g"):                         # a restart recalibrates but keeps counting bins
            self.g = 0
            self.chunk_stats = LatencyStats(1 << 20)

    def _fix_columns(self) -> None:
        bad = np.asarray(self.fx.bad_channels_, bool)
        ids = self.fx.channel_map.channel_ids
        bad_ids = {ids[i] for i in np.flatnonzero(bad)} if self.params["exclude_bad"] else set()
        names = self.fx.feature_names
        cols = [i for i, nm in enumerate(names)
                if nm.rsplit("/", 1)[-1] in self.kinds and nm.split("/", 1)[0] not in bad_ids]
        self.cols = np.asarray(cols, dtype=np.intp)
        self.names = tuple(names[i] for i in cols)
        self.ctx.bus.set_info(f"{self.name}/features", {
            "names": list(self.names), "kinds": list(self.kinds), "bin_ms": self.ctx.bin_ms,
            "fs_hz": self.fx.fs_hz, "bad_channels": [ids[i] for i in np.flatnonzero(bad)]})
        logger.info("%s: %d decoder features (%s), %d bad channels left out", self.name, len(cols),
                    "+".join(self.kinds), len(bad_ids))

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        stats_from = self.ctx.stats_from_sample
        deadline = self.ctx.deadline_ns
        for m in inbox["raw"]:
            bf = self.fx.step(m.payload)
            if self.cols is None and self.fx.is_calibrated:
                self._fix_columns()
            for i in range(bf.n_bins):
                x = None
                if self.cols is not None:
                    x = bf.data[i][self.cols]
                    x.flags.writeable = False
                start = int(bf.bin_start_samples[i])
                valid = x is not None and bool(bf.valid[i].any())
                self.emit("features", {"bin": self.g, "bin_start": start, "x": x, "valid": valid},
                          sample=start + self.W, t_enter_ns=m.t_enter_ns)
                self.g += 1
            if m.sample >= stats_from and m.t_enter_ns:
                lat = time.monotonic_ns() - m.t_enter_ns
                self.chunk_stats.add(lat)
                if bf.n_bins == 0 and lat > deadline:
                    self.n_missed += 1

    def summary(self) -> dict:
        return {"n_features": len(self.names), "n_bins": self.g, "chunk_latency": self.chunk_stats.summary(),
                "fx": dict(self.fx.counters_) if hasattr(self.fx, "counters_") else {}}


def _trace(**arrays: Any) -> SimpleNamespace:
    return SimpleNamespace(**arrays)


@register_node
class DecoderNode(Node):
    """Velocity (and click) decoding, one ``intent`` per ``features`` message.

    Parameters (``params``)
    -----------------------
    decoder : {"wiener", "kalman", "refit_kalman", "gru"}
        Kind fitted in session (``fit`` / ``refit`` control messages).
    decoder_params : dict
        Its hyperparameters.
    path : str or None
        A decoder saved with ``decoder.save`` to load instead (ready at once; its feature names
        are checked against the dsp's when the first calibrated bin arrives).
    click : bool
        Fit a :class:`~cortexlink.decoders.ClickDecoder` with the velocity decoder.
    click_params : dict
    click_path : str or None
        A saved click decoder to load.
    save_dir : str or None
        Save every fitted decoder there (``<name>-v<k>.npz``).
    fit_in_thread : bool or None
        Fit in a background thread (the loop keeps running; the cursor is held until the new
        decoder is ready). Default: in ``clock: realtime`` runs.

    Without a ``control`` input the node decodes every bin (once a decoder is loaded). With one,
    it follows the cursor's blocks: ``open`` blocks collect training data (features + the
    participant's intent from ``labels``), ``closed`` blocks decode (state reset at each block
    start), ``fit`` fits on every open block so far, ``refit`` re-estimates ReFIT-Kalman from the
    closed-loop blocks since the last fit, exactly as :func:`~cortexlink.tasks.session.run_session`.
    """

    kind = "decoder"
    INPUTS = {
        "features": PortSpec(maxlen=256, policy="drop_oldest", required=True),
        "labels": PortSpec(maxlen=1024, policy="drop_oldest", doc="participant intent (training labels)"),
        "control": PortSpec(maxlen=64, policy="fail", feedback=True, doc="block begin/end, fit, refit"),
    }
    OUTPUTS = ("intent",)
    PARAMS = {
        "decoder": Param("str", "kalman", choices=("wiener", "kalman", "refit_kalman", "gru")),
        "decoder_params": Param("dict", {}),
        "path": Param("str", None, nullable=True),
        "click": Param("bool", True),
        "click_params": Param("dict", {}),
        "click_path": Param("str", None, nullable=True),
        "save_dir": Param("str", None, nullable=True),
        "fit_in_thread": Param("bool", None, nullable=True),
    }
    INJECT = {**Node.INJECT,
              "nan_at_bins": Param("list", [], doc="bins whose velocity output is NaN (with a click onset)"),
              "out_of_range_at_bins": Param("list", [], doc="bins whose velocity output is 1000 units/s "
                                                            "(with a click onset)")}

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.tasks.session import make_decoder

        try:
            make_decoder(params["decoder"], params["decoder_params"])
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{name}.params.decoder_params is invalid for {params['decoder']}: {exc}") from exc
        for key in ("path", "click_path"):
            if params[key] is not None and not Path(params[key]).is_file():
                raise ConfigError(f"nodes.{name}.params.{key} {params[key]} does not exist")

    def setup(self) -> None:
        from cortexlink.decoders import ClickDecoder, load
        from cortexlink.tasks.session import make_decoder

        p = self.params
        self._click_cls = ClickDecoder
        self._thread = None
        self._new = None
        if getattr(self, "_set_up", False):
            # a restart keeps the fitted decoders, the training data and the block (their state is
            # reset, as at a block start)
            if self.fitted:
                self.decoder.reset_state()
            if self.click_dec is not None:
                self.click_dec.reset_state()
            return
        self._set_up = True
        self.decoder = make_decoder(p["decoder"], p["decoder_params"])
        self.click_dec = None
        self.version = 0
        self.fitted = False
        if p["path"]:
            self.decoder = load(p["path"])
            self.fitted = True
            self.version = 1
        if p["click_path"]:
            self.click_dec = load(p["click_path"])
        self.has_control = "control" in self.subs
        self.mode = "rest" if self.has_control else "closed"
        self.block: dict | None = None
        self.calib: list[dict] = []
        self.closed: dict[str, dict] = {}
        self.labels: dict[int, tuple] = {}
        self.names: tuple[str, ...] | None = None
        self._checked = False
        fit_thread = p["fit_in_thread"]
        self.fit_in_thread = self.ctx.realtime if fit_thread is None else fit_thread
        self._nan = {int(b) for b in self.inject.get("nan_at_bins", ())}
        self._oor = {int(b) for b in self.inject.get("out_of_range_at_bins", ())}
        self.fit_info: list[dict] = []
        self.decode_stats = LatencyStats(1 << 18)

    # -- control --------------------------------------------------------------------------
    def _control(self, c: dict) -> None:
        cmd = c.get("cmd")
        if cmd == "begin":
            self.mode = c["mode"]
            self.block = {"name": c["name"], "kind": c["kind"], "bins": [], "x": [], "v": [], "c": [], "dec": []}
            if self.mode == "closed":
                if self.fitted:
                    self.decoder.reset_state()
                if self.click_dec is not None:
                    self.click_dec.reset_state()
        elif cmd == "end":
            b, self.block = self.block, None
            self.mode = "rest"
            if b is not None and b["kind"] == "calibration":
                self.calib.append(b)
            elif b is not None and b["kind"] == "closed_loop":
                self.closed[b["name"]] = b
        elif cmd == "fit":
            self._start(self._fit)
            self.closed = {}
        elif cmd == "refit":
            self._start(self._refit, c, dict(self.closed))
            self.closed = {}
        else:
            raise ConfigError(f"{self.name}: unknown control command {cmd!r}")

    def _start(self, fn: Any, *args: Any) -> None:
        if self._thread is not None:
            self._thread.join()
            self._swap()
        if not self.fit_in_thread:
            fn(*args, in_place=True)
            return
        self._thread = threading.Thread(target=self._run_fit, args=(fn, args), name=f"{self.name}-fit", daemon=True)
        self._thread.start()

    def _run_fit(self, fn: Any, args: tuple) -> None:
        try:
            fn(*args, in_place=False)
        except Exception as exc:  # reported on the node's next step
            self._new = ("error", exc)

    def _swap(self) -> None:
        new, self._new = self._new, None
        if new is None:
            return
        if new[0] == "error":
            raise new[1]
        self.decoder, self.click_dec, info = new[1], new[2], new[3]
        self.fitted = True
        self.version += 1
        self._after_fit(info)

    def _after_fit(self, info: dict) -> None:
        self.fit_info.append(info)
        sd = self.params["save_dir"]
        if sd:
            Path(sd).mkdir(parents=True, exist_ok=True)
            self.decoder.save(Path(sd) / f"{self.name}-v{self.version}.npz")
            if self.click_dec is not None:
                self.click_dec.save(Path(sd) / f"{self.name}-click-v{self.version}.npz")
        logger.info("%s: decoder v%d ready (%s)", self.name, self.version, info)

    def _fit(self, *, in_place: bool) -> None:
        from cortexlink.tasks.loop import training_set
        from cortexlink.tasks.session import make_decoder

        t0 = time.perf_counter()
        traces = [_trace(features=np.asarray(b["x"], np.float32).reshape(len(b["x"]), -1),
                         intended_velocity=np.asarray(b["v"], float).reshape(-1, 2),
                         click_intent=np.asarray(b["c"], float), cursor_velocity=None)
                  for b in self.calib if b["x"]]
        if not traces:
            raise ConfigError(f"{self.name}: 'fit' but no calibration bins were collected")
        X, y, c = training_set(traces)
        dec = self.decoder if in_place else make_decoder(self.params["decoder"], self.params["decoder_params"])
        dec.fit(X, y, feature_names=self.names)
        click = self.click_dec
        if self.params["click"]:
            if c.min() == c.max():
                raise ConfigError(f"nodes.{self.name}.params.click is true but the calibration blocks hold no "
                                  "click intent (use a click task, e.g. centre_out with task_params: {click: true})")
            click = self._click_cls(**self.params["click_params"]).fit(X, c)
        info = {"cmd": "fit", "n_bins": int(X.shape[0]), "n_features": int(X.shape[1]),
                "n_click_bins": int(c.sum()), "fit_s": time.perf_counter() - t0}
        if in_place:
            self.decoder, self.click_dec = dec, click
            self.fitted = True
            self.version += 1
            self._after_fit(info)
        else:
            self._new = ("ok", dec, click, info)

    def _refit(self, c: dict, closed: dict, *, in_place: bool) -> None:
        from cortexlink.tasks.loop import refit_set

        t0 = time.perf_counter()
        traces = []
        for blk in c["blocks"]:
            rec = closed.get(blk["name"])
            bins = np.asarray(blk["bins"], np.int64)
            n = bins.size
            F = len(self.names or ())
            feats = np.full((n, F), np.nan, np.float32)
            dec = np.full((n, 2), np.nan)
            if rec is not None:
                where = {b: i for i, b in enumerate(rec["bins"])}
                for j, b in enumerate(bins.tolist()):
                    i = where.get(b)
                    if i is not None and rec["x"][i] is not None and np.all(np.isfinite(rec["dec"][i])):
                        feats[j] = rec["x"][i]          # bins left NaN (not decoded) are dropped by refit_set
                        dec[j] = rec["dec"][i]
            traces.append(_trace(features=feats, decoded_velocity=dec,
                                 cursor_xy=np.asarray(blk["cursor_xy"], float).reshape(n, 2),
                                 target_xy=np.asarray(blk["target_xy"], float).reshape(n, 2),
                                 on_target=np.asarray(blk["on_target"], bool).reshape(n),
                                 dt_s=float(blk["dt_s"]), n_bins=n))
        Xr, dv, cur, tgt, ont = refit_set(traces)
        dec_obj = self.decoder if in_place else copy.deepcopy(self.decoder)
        dec_obj.refit(Xr, dv, cur, tgt, ont)
        info = {"cmd": "refit", "n_bins": int(Xr.shape[0]), "fit_s": time.perf_counter() - t0}
        if in_place:
            self.version += 1
            self._after_fit(info)
        else:
            self._new = ("ok", dec_obj, self.click_dec, info)

    # -- bins -----------------------------------------------------------------------------
    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None
            self._swap()
        for m in inbox.get("control", ()):
            self._control(m.payload)
        for m in inbox.get("labels", ()):
            p = m.payload
            self.labels[int(p["bin"])] = (p["v"], float(p["click"]))
        if len(self.labels) > 4096:
            for k in sorted(self.labels)[:-1024]:
                del self.labels[k]
        for m in inbox.get("features", ()):
            self._bin(m)

    def _bin(self, m: Message) -> None:
        p = m.payload
        g = int(p["bin"])
        x = p["x"]
        have_x = x is not None
        valid = have_x and bool(p.get("valid", True))
        if have_x and self.names is None:
            info = self.ctx.bus.get_info(f"{self.ctx.producer(self.name, 'features')}/features")
            self.names = tuple(info["names"]) if info else None
        if have_x and not self._checked and self.fitted:
            self._checked = True
            self.decoder.check_compatible(feature_names=self.names, n_features=int(np.size(x)))
        v = _NAN2
        click = False
        proba = None
        blk = self.block
        # in a session (control input) every bin with features is decoded, as ClosedLoop does (NaN
        # input holds the decoder); free-running, bins masked entirely are skipped
        if (have_x if self.has_control else valid) and self.mode == "closed" and self.fitted:
            t0 = time.perf_counter_ns()
            xd = np.asarray(x, dtype=np.float64)
            out = np.asarray(self.decoder.step(xd), dtype=float).reshape(-1)
            v = (float(out[0]), float(out[1]))
            if self.click_dec is not None:
                cs = self.click_dec.step(xd)
                click, proba = bool(cs.onset), float(cs.proba)
            self.decode_stats.add(time.perf_counter_ns() - t0)
        if have_x and self.fitted and (g in self._nan or g in self._oor):
            v = _NAN2 if g in self._nan else (1000.0, 0.0)
            click = True                      # a click the gate must suppress
        if blk is not None and blk["kind"] in ("calibration", "closed_loop"):
            lab = self.labels.pop(g, None)
            blk["bins"].append(g)
            blk["x"].append(None if x is None else np.asarray(x, np.float32))
            blk["v"].append(_NAN2 if lab is None else tuple(lab[0]))
            blk["c"].append(0.0 if lab is None else lab[1])
            blk["dec"].append(v)
        # ready: this output may drive the cursor — fitted, and in closed mode (over Redis a block's
        # start reaches the decoder a little after the cursor: until then the cursor holds still
        # instead of taking the undecoded bins for NaN output)
        self.emit("intent", {"bin": g, "v": v, "click": click, "proba": proba,
                             "ready": self.fitted and self.mode == "closed",
                             "features_valid": valid, "version": self.version},
                  sample=m.sample, t_enter_ns=m.t_enter_ns)

    def teardown(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=60)

    def summary(self) -> dict:
        return {"fits": self.fit_info, "version": self.version, "decode": self.decode_stats.summary()}


@register_node
class ParticipantNode(Node):
    """The simulated participant: sees the cursor state, forms an intent for the next bin.

    Parameters (``params``)
    -----------------------
    seed : int
    config : dict
        :class:`~cortexlink.sim.ParticipantConfig` overrides.

    Between blocks (``state.block`` is None) it rests: intent zero, its model is not stepped (as
    in :meth:`~cortexlink.tasks.loop.ClosedLoop.warm_up`). At a block's first bin it is reset and
    its adaptation is switched off in open-loop blocks, as in ``ClosedLoop.begin_block``.
    """

    kind = "participant"
    INPUTS = {"cursor": PortSpec(maxlen=64, policy="drop_oldest", required=True, feedback=True)}
    OUTPUTS = ("intent",)
    PARAMS = {"seed": Param("int", 0, lo=0), "config": Param("dict", {})}

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.sim.participant import ParticipantConfig

        try:
            ParticipantConfig().replace(**params["config"])
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"nodes.{name}.params.config is invalid: {exc}") from exc

    def setup(self) -> None:
        from cortexlink.sim.participant import ParticipantConfig, SimulatedParticipant
        from cortexlink.tasks.base import Target

        self._Target = Target
        if getattr(self, "participant", None) is not None:     # a restart keeps its state
            return
        cfg = ParticipantConfig(**self.params["config"]) if self.params["config"] else None
        self.participant = SimulatedParticipant(cfg, seed=self.params["seed"], dt_s=self.ctx.bin_ms / 1000.0)
        self._adapt_default = self.participant.adapt

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox["cursor"]:
            s = m.payload
            g = int(s["bin"])
            if s.get("block") is None:
                self.participant.adapt = self._adapt_default
                out = {"bin": g, "v": (0.0, 0.0), "click": 0.0, "neural": (0.0, 0.0, 0.0), "active": False}
            else:
                if s.get("begin"):
                    self.participant.reset()
                    self.participant.adapt = bool(self._adapt_default) and s.get("mode") != "open"
                t = s.get("target")
                target = None if t is None else self._Target(tuple(t["xy"]), t["radius"], t["click"], t["dwell_s"])
                it = self.participant.step(float(s["t_s"]), np.array(s["xy"], dtype=float), target)
                vx, vy, c = self.participant.neural_intent(it)
                out = {"bin": g, "v": (float(it.velocity[0]), float(it.velocity[1])), "click": float(it.click),
                       "neural": (vx, vy, c), "active": True}
            self.emit("intent", out, sample=m.sample, t_enter_ns=m.t_enter_ns)


_BLOCK_TASKS = ("calibration", "closed_loop", "evaluation")


class _Block:
    def __init__(self, spec: dict, task: Any, mode: str, n_max: int, t_start: float, start_bin: int) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.kind = spec["kind"]
        self.task = task
        self.mode = mode
        self.n_max = n_max
        self.t_start = t_start
        self.start_bin = start_bin
        self.n = 0
        self.prev_c = 0.0
        self.events: list = []
        self.bins: list[int] = []
        self.cursor_xy: list = []
        self.target_xy: list = []
        self.on_target: list = []
        self.latency = LatencyStats(1 << 17)
        self.n_halted = 0

    @property
    def done(self) -> bool:
        return self.n >= self.n_max or bool(self.task.done)


@register_node
class CursorNode(Node):
    """Cursor and task: moves a :class:`~cortexlink.tasks.CursorEffector` once per bin, runs a
    schedule of task blocks, and is the watchdog's gate (velocity zero, no clicks while halted).

    Parameters (``params``)
    -----------------------
    blocks : list of dict
        The session's block list (``kind``: calibration, fit, closed_loop, refit, evaluation;
        ``task``, ``seconds``, ``max_seconds``, ``task_params``, ``name``; see
        :mod:`cortexlink.tasks.session`). Empty: free-running cursor driven by the decoder.
    seed : int
        Seed of the tasks.
    effector : dict
        ``gain``, ``smoothing``, ``refractory_s``.
    autopilot_speed : float
        Peak speed of the open-loop calibration cursor.
    decoder_kind : str
        The decoder's kind (validation of ``fit``/``refit`` blocks).
    stop_when_done : bool
        End the run when the schedule is finished.

    Each bin follows :meth:`~cortexlink.tasks.loop.ClosedLoop.step_bin`: the first bins (until the
    feature extractor is calibrated) are the warm-up; then each block resets its task, the cursor
    and the participant; ``open`` blocks move the cursor to the target by themselves, ``closed``
    blocks apply the decoded velocity and click. The end-to-end latency of each update (cursor
    update time minus the time the bin's last chunk entered the graph) is kept per block.
    """

    kind = "cursor"
    TICKS = True
    INPUTS = {
        "intent": PortSpec(maxlen=64, policy="drop_oldest", required=True, doc="decoder intent"),
        "participant": PortSpec(maxlen=1024, policy="drop_oldest", doc="participant intent (open loop, clicks)"),
    }
    OUTPUTS = ("state", "control", "gate", "events")
    PARAMS = {
        "blocks": Param("list", []),
        "seed": Param("int", 0, lo=0),
        "effector": Param("dict", {}),
        "autopilot_speed": Param("float", 1.0, gt=0.0),
        "decoder_kind": Param("str", "refit_kalman"),
        "stop_when_done": Param("bool", True),
    }

    @classmethod
    def validate_config(cls, name: str, params: dict, graph: dict) -> None:
        from cortexlink.tasks.cursor import CursorEffector
        from cortexlink.tasks.session import load_session

        path = f"nodes.{name}.params"
        eff = params["effector"]
        check_keys(f"{path}.effector", eff, ("gain", "smoothing", "refractory_s"))
        try:
            CursorEffector(dt_s=graph["bin_ms"] / 1000.0, **eff)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{path}.effector is invalid: {exc}") from exc
        if params["blocks"]:
            try:
                cfg = load_session({"seed": params["seed"], "blocks": params["blocks"],
                                    "decoder": {"kind": params["decoder_kind"]}})
            except ConfigError as exc:
                raise ConfigError(str(exc).replace("session.", f"{path}.", 1)) from exc
            params["blocks"] = cfg["blocks"]
            if any(b["kind"] in ("closed_loop", "evaluation", "calibration") for b in cfg["blocks"]) \
                    and "participant" not in graph["nodes"][name]["inputs"]:
                raise ConfigError(f"nodes.{name}.inputs.participant must be connected when blocks run tasks "
                                  "(the participant's intent drives open-loop clicks)")

    def setup(self) -> None:
        from cortexlink.runtime.watchdog import Watchdog, WatchdogConfig
        from cortexlink.tasks.cursor import CursorEffector

        if getattr(self, "effector", None) is not None:
            # a restart keeps the schedule, the task and the cursor; the loop resumes at the next bin
            self._halted_pub = None
            return
        self.dt = self.ctx.bin_ms / 1000.0
        self.effector = CursorEffector(dt_s=self.dt, **self.params["effector"])
        self.watchdog = Watchdog(WatchdogConfig.from_dict(self.ctx.graph.get("watchdog")), self._wd_emit, self.name)
        self._check_ns = int(self.watchdog.config.check_interval_ms * 1e6)
        self._next_check = 0
        self.blocks = list(self.params["blocks"])
        self._i = 0
        self.block: _Block | None = None
        self.warm = bool(self.blocks)
        self.finished = False
        self.t_s = 0.0
        self._part: dict[int, dict] = {}
        self._closed_since_fit: list[dict] = []
        self.results: list[dict] = []
        #: Per finished block: bins, cursor_xy, target_xy, on_target, events (in-process inspection).
        self.traces: list[dict] = []
        self.latency = LatencyStats(1 << 20)
        self.n_updates = 0
        self.n_halted_bins = 0
        self.n_not_ready = 0
        self.n_wait_bins = 0
        self._await_version: int | None = None
        self._last_version = 0
        self.last_sample = -1
        self._halted_pub = False
        self._decoder_node = self.ctx.producer(self.name, "intent") or "decoder"
        self._publish_state(0, sample=0, t_enter=0, begin=False, clicked=False)

    def _wd_emit(self, kind: str, **kw: Any) -> None:
        self.ctx.fault(kind, **kw)

    # -- schedule ---------------------------------------------------------------------------
    def _begin_next(self, next_bin: int, sample: int, t_enter: int) -> bool:
        """Send the fit/refit commands up to the next task block and begin it at ``next_bin``.

        With ``clock: realtime`` a block after a fit waits (the participant rests, the cursor
        stays put) until the decoder's output carries the new version: the fit may run in a
        thread for seconds. With ``clock: fast`` the fit is done before the next bin, so the
        block begins at once, as in :func:`~cortexlink.tasks.session.run_session`.
        """
        from cortexlink.tasks.session import make_task

        n_fits = 0
        while self._i < len(self.blocks):
            b = self.blocks[self._i]
            kind = b["kind"]
            if kind in ("fit", "refit"):
                self._i += 1
                msg = {"cmd": kind, "name": b["name"]}
                if kind == "refit":
                    msg["blocks"] = self._closed_since_fit
                self.emit("control", msg, sample=sample, t_enter_ns=t_enter)
                self._closed_since_fit = []
                self.results.append({"name": b["name"], "kind": kind})
                n_fits += 1
                continue
            if n_fits and self.ctx.realtime:
                self._await_version = self._last_version + n_fits
                self.block = None
                return False
            self._i += 1
            task = make_task(b["task"], b["task_params"], seed=self.params["seed"])
            mode = "open" if kind == "calibration" else "closed"
            secs = b.get("seconds")
            n_max = int(round((secs if secs is not None else b["max_seconds"]) / self.dt))
            task.reset()
            self.effector.reset()
            self.block = _Block(b, task, mode, n_max, self.t_s, next_bin)
            self.emit("control", {"cmd": "begin", "name": b["name"], "kind": kind, "mode": mode, "bin": next_bin},
                      sample=sample, t_enter_ns=t_enter)
            self.emit("events", {"kind": "block_start", "name": b["name"], "mode": mode, "task": b["task"],
                                 "bin": next_bin}, sample=sample, t_enter_ns=t_enter)
            return True
        self.block = None
        self.finished = True
        return False

    def _waiting(self) -> bool:
        return self._await_version is not None

    def _end_block(self, sample: int, t_enter: int) -> None:
        from cortexlink.tasks.session import _jsonable

        blk = self.block
        elapsed = self.t_s - blk.t_start
        metrics = _jsonable(blk.task.metrics(elapsed))
        info = {"name": blk.name, "kind": blk.kind, "task": blk.spec["task"], "mode": blk.mode,
                "seconds": blk.n * self.dt, "n_bins": blk.n, "metrics": metrics, "n_halted_bins": blk.n_halted,
                "loop_latency_ms": blk.latency.summary()}
        self.results.append(info)
        self.emit("control", {"cmd": "end", "name": blk.name}, sample=sample, t_enter_ns=t_enter)
        self.emit("events", {"kind": "block_end", **info}, sample=sample, t_enter_ns=t_enter)
        self.traces.append({"name": blk.name, "bins": np.asarray(blk.bins, np.int64),
                            "cursor_xy": np.asarray(blk.cursor_xy).reshape(-1, 2),
                            "target_xy": np.asarray(blk.target_xy).reshape(-1, 2),
                            "on_target": np.asarray(blk.on_target, bool), "events": blk.events})
        if blk.kind == "closed_loop":
            self._closed_since_fit.append({
                "name": blk.name, "bins": np.asarray(blk.bins, np.int64), "cursor_xy": np.asarray(blk.cursor_xy),
                "target_xy": np.asarray(blk.target_xy), "on_target": np.asarray(blk.on_target), "dt_s": self.dt})
        logger.info("block %s: %d bins (%.1f s), metrics %s", blk.name, blk.n, elapsed, metrics)
        self.block = None

    # -- outputs ------------------------------------------------------------------------
    def _publish_state(self, next_bin: int, *, sample: int, t_enter: int, begin: bool, clicked: bool) -> None:
        blk = self.block
        target = None
        if blk is not None:
            t = blk.task.current_target()
            if t is not None:
                target = {"xy": [float(t.xy[0]), float(t.xy[1])], "radius": float(t.radius),
                          "click": bool(t.click), "dwell_s": float(getattr(t, "dwell_s", 0.0))}
        xy = self.effector.xy
        v = self.effector.velocity
        self.emit("state", {"bin": next_bin, "t_s": self.t_s, "xy": [float(xy[0]), float(xy[1])],
                            "velocity": [float(v[0]), float(v[1])], "clicked": bool(clicked),
                            "halted": self.watchdog.halted, "block": None if blk is None else blk.name,
                            "mode": None if blk is None else blk.mode, "begin": bool(begin), "target": target,
                            "done": self.finished}, sample=sample, t_enter_ns=t_enter)

    def _publish_gate(self, sample: int) -> None:
        halted = self.watchdog.halted
        if halted == self._halted_pub:
            return
        self._halted_pub = halted
        self.emit("gate", {"halted": halted, "velocity": [0.0, 0.0] if halted else None,
                           "click_suppressed": halted,
                           "faults": [dict(v) for v in self.watchdog.active.values()]},
                  sample=sample, t_enter_ns=0)

    # -- step ---------------------------------------------------------------------------
    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox.get("participant", ()):
            self._part[int(m.payload["bin"])] = m.payload
        if now_ns >= self._next_check:
            self._next_check = now_ns + self._check_ns
            self.watchdog.check_health(now_ns, self.ctx.health(), self.last_sample)
            self._publish_gate(self.last_sample)
        for m in inbox.get("intent", ()):
            self._bin(m, now_ns)
        if len(self._part) > 4096:
            for k in sorted(self._part)[:-1024]:
                del self._part[k]

    def _bin(self, m: Message, now_ns: int) -> None:
        p = m.payload
        g = int(p["bin"])
        self.last_sample = m.sample
        self._last_version = max(self._last_version, int(p.get("version", 0)))
        if self._await_version is not None:
            # between blocks, waiting for the decoder's new fit (realtime): the participant rests
            self.t_s += self.dt
            self.n_wait_bins += 1
            begin = False
            if self._last_version >= self._await_version:
                self._await_version = None
                begin = self._begin_next(g + 1, m.sample, m.t_enter_ns)
                if not begin and not self._waiting() and self.params["stop_when_done"]:
                    self.ctx.request_stop(f"{self.name}: schedule finished")
            self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=begin, clicked=False)
            return
        if self.warm:
            self.t_s += self.dt
            if p.get("features_valid"):
                self.warm = False
                begin = self._begin_next(g + 1, m.sample, m.t_enter_ns)
                if not begin and not self._waiting() and self.params["stop_when_done"]:
                    self.ctx.request_stop(f"{self.name}: schedule finished")
                self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=begin, clicked=False)
            else:
                self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=False, clicked=False)
            return
        blk = self.block
        if blk is None and self.blocks:
            # schedule finished: the cursor rests (and the run ends if stop_when_done)
            self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=False, clicked=False)
            return
        if not p.get("features_valid") and blk is None:
            return                                   # free-running: extractor still calibrating
        target = blk.task.current_target() if blk is not None else None
        part = self._part.pop(g, None)
        c_int = 0.0 if part is None else float(part["click"])
        mode = "closed" if blk is None else blk.mode
        if mode == "open":
            vel = self._autopilot(target)
            click = c_int >= 0.5 > (blk.prev_c if blk is not None else 0.0)
            ok = True
        else:
            vel = np.asarray(p["v"], dtype=float)
            click = bool(p.get("click"))
            if not p.get("ready", True):
                ok = False
                self.n_not_ready += 1
            else:
                ok = self.watchdog.check_output(now_ns, vel, p.get("proba"), node=self._decoder_node,
                                                sample=m.sample)
        halted = self.watchdog.halted or not ok
        if halted or not np.all(np.isfinite(vel)):
            vel = np.zeros(2)
            click = False
            self.n_halted_bins += 1
            if blk is not None:
                blk.n_halted += 1
        xy, clicked = self.effector.step(vel, bool(click))
        t_upd = time.monotonic_ns()
        self.n_updates += 1
        if m.t_enter_ns and m.sample > self.ctx.stats_from_sample:
            lat = t_upd - m.t_enter_ns
            self.latency.add(lat)
            if blk is not None:
                blk.latency.add(lat)
            if lat > self.ctx.deadline_ns:
                self.n_missed += 1
        self._publish_gate(m.sample)
        self.t_s += self.dt
        begin = False
        if blk is not None:
            ev = blk.task.update(self.t_s, np.asarray(xy, dtype=float), bool(clicked))
            blk.events.extend(ev)
            for e in ev:
                self.emit("events", {"kind": "task", "block": blk.name, "t_s": e.t_s, "event": e.kind,
                                     "data": e.data}, sample=m.sample, t_enter_ns=m.t_enter_ns)
            blk.bins.append(g)
            blk.cursor_xy.append((float(xy[0]), float(xy[1])))
            if target is not None:
                blk.target_xy.append((float(target.xy[0]), float(target.xy[1])))
                blk.on_target.append(bool(float(np.hypot(*(np.asarray(xy) - np.asarray(target.xy)))) <= target.radius))
            else:
                blk.target_xy.append(_NAN2)
                blk.on_target.append(False)
            blk.prev_c = c_int
            blk.n += 1
            if blk.done:
                self._end_block(m.sample, m.t_enter_ns)
                begin = self._begin_next(g + 1, m.sample, m.t_enter_ns)
                if not begin and not self._waiting() and self.params["stop_when_done"]:
                    self.ctx.request_stop(f"{self.name}: schedule finished")
        self._publish_state(g + 1, sample=m.sample, t_enter=m.t_enter_ns, begin=begin, clicked=clicked)

    def _autopilot(self, target: Any) -> np.ndarray:
        from cortexlink.tasks.loop import autopilot_velocity

        return autopilot_velocity(target, self.effector.xy, self.params["autopilot_speed"])

    def summary(self) -> dict:
        return {"blocks": self.results, "n_updates": self.n_updates, "n_halted_bins": self.n_halted_bins,
                "n_not_ready": self.n_not_ready, "n_wait_bins": self.n_wait_bins, "loop_latency_ms": self.latency.summary(),
                "faults_raised": self.watchdog.n_raised, "finished": self.finished}


@register_node
class RecorderNode(Node):
    """Record streams with a :class:`~cortexlink.io.session_log.SessionRecorder` (its own writer
    thread and bounded queue: ``step`` only enqueues, it never waits on disk).

    Parameters (``params``)
    -----------------------
    out_dir : str or None
        Session folder; default ``<run out dir>/<node name>`` (``--out``).
    participant_id : str
    raw : bool
        Record raw chunks (when ``raw`` is connected).
    on_full : {"drop", "block", "fail"}
        The recorder queue's policy (drops are counted in its manifest).

    Inputs (all optional): ``raw`` (chunks), ``features``, ``intent`` (decoder), ``cursor``
    (cursor state), ``events``, ``faults`` (``runtime.faults``, connected by default).
    """

    kind = "recorder"
    CRITICAL = False
    INPUTS = {
        "raw": PortSpec(maxlen=4096, policy="drop_oldest"),
        "features": PortSpec(maxlen=1024, policy="drop_oldest"),
        "intent": PortSpec(maxlen=1024, policy="drop_oldest"),
        "cursor": PortSpec(maxlen=1024, policy="drop_oldest"),
        "events": PortSpec(maxlen=1024, policy="drop_oldest"),
        "faults": PortSpec(maxlen=1024, policy="drop_oldest"),
    }
    PARAMS = {
        "out_dir": Param("str", None, nullable=True),
        "participant_id": Param("str", "sim-0001"),
        "raw": Param("bool", True),
        "on_full": Param("str", "drop", choices=("drop", "block", "fail")),
    }

    def setup(self) -> None:
        from cortexlink.core.types import ChannelMap
        from cortexlink.io.session_log import SessionRecorder

        p = self.params
        if p["out_dir"]:
            base = Path(p["out_dir"])
        elif self.ctx.out_dir is not None:
            base = Path(self.ctx.out_dir) / self.name
        else:
            raise ConfigError(f"nodes.{self.name}.params.out_dir is required when the run has no output folder "
                              "(give out_dir or --out)")
        out = base if self.n_restarts == 0 and self.n_failures == 0 else base.with_name(
            f"{base.name}-restart{self.n_failures}")
        cmap, fs = None, None
        prod = self.ctx.producer(self.name, "raw")
        if prod is not None:
            info = self.ctx.wait_info(f"{prod}/stream")
            cmap, fs = ChannelMap.from_dict(info["channel_map"]), info["fs_hz"]
        graph = {k: v for k, v in self.ctx.graph.items() if not k.startswith("_")}
        self.rec = SessionRecorder(out, channel_map=cmap, fs_hz=fs, config={"graph": graph},
                                   participant_id=p["participant_id"], raw=p["raw"] and prod is not None,
                                   on_full=p["on_full"], catalogue=False)
        self.path = str(out)
        self._feature_cols: list[str] | None = None
        self.n_written = 0

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        rec = self.rec
        for m in inbox.get("raw", ()):
            if self.params["raw"]:
                rec.write_raw(m.payload)
                self.n_written += 1
        for m in inbox.get("features", ()):
            x = m.payload.get("x")
            if x is None:
                continue
            if self._feature_cols is None:
                prod = self.ctx.producer(self.name, "features")
                info = self.ctx.bus.get_info(f"{prod}/features") if prod else None
                self._feature_cols = list(info["names"]) if info else [f"f{i}" for i in range(len(x))]
            rec.write_array("features", int(m.payload["bin_start"]), x, columns=self._feature_cols,
                            host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("intent", ()):
            p = m.payload
            v = p.get("v", _NAN2)
            proba = p.get("proba")
            rec.write_row("decoder", m.sample, (v[0], v[1], math.nan if proba is None else float(proba),
                                                float(bool(p.get("click")))),
                          columns=("vx", "vy", "click_proba", "click"), host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("cursor", ()):
            s = m.payload
            rec.write_row("cursor", m.sample, (s["xy"][0], s["xy"][1], s["velocity"][0], s["velocity"][1],
                                               float(s["clicked"]), float(s["halted"])),
                          columns=("x", "y", "vx", "vy", "clicked", "halted"), host_time_ns=m.t_enter_ns)
            self.n_written += 1
        for m in inbox.get("events", ()):
            e = dict(m.payload)
            e.pop("sample", None)
            rec.event(str(e.pop("kind", "event")), sample=m.sample, **e)
            self.n_written += 1
        for m in inbox.get("faults", ()):
            e = dict(m.payload)
            e.pop("sample", None)
            rec.event("fault", sample=m.sample, **{("fault_kind" if k == "kind" else k): v for k, v in e.items()})
            self.n_written += 1

    def teardown(self) -> None:
        rec = getattr(self, "rec", None)
        if rec is not None:
            self.rec = None
            rec.close()

    def summary(self) -> dict:
        return {"path": getattr(self, "path", None), "n_written": getattr(self, "n_written", 0)}


@register_node
class UiFeedNode(Node):
    """Latest values for an operator UI, published at most ``max_hz`` times per second.

    Its inputs hold one message each (``maxlen: 1``, ``drop_oldest``): a slow UI only ever sees
    the newest value and can never hold up the graph (superseded messages are counted in the
    edge's ``n_dropped``). The snapshot is :meth:`snapshot` in-process and the shared value
    ``<name>/snapshot`` on the bus (``bus.get_info``) for a UI in another process.
    """

    kind = "ui_feed"
    CRITICAL = False
    TICKS = True
    INPUTS = {p: PortSpec(maxlen=1, policy="drop_oldest") for p in ("cursor", "intent", "gate", "events", "features")}
    PARAMS = {"max_hz": Param("float", 30.0, gt=0.0)}
    LOSSY = True

    def setup(self) -> None:
        self._latest: dict[str, Any] = {}
        self._snap: dict = {}
        self._period = int(1e9 / self.params["max_hz"])
        self._next = 0
        self.n_snapshots = 0

    @staticmethod
    def _plain(p: Any) -> Any:
        if isinstance(p, dict):
            return {k: (v.tolist() if isinstance(v, np.ndarray) and v.size <= 64 else
                        (None if isinstance(v, np.ndarray) else v)) for k, v in p.items()}
        return None

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for port, msgs in inbox.items():
            if msgs:
                self._latest[port] = (msgs[-1].sample, self._plain(msgs[-1].payload))
        if now_ns < self._next or not self._latest:
            return
        self._next = now_ns + self._period
        health = self.ctx.health()
        self._snap = {"t_ns": now_ns, **{k: {"sample": s, **(v or {})} for k, (s, v) in self._latest.items()},
                      "nodes": {n: {"state": h.get("state"), "n_out": h.get("n_out")} for n, h in health.items()}}
        self.ctx.bus.set_info(f"{self.name}/snapshot", self._snap)
        self.n_snapshots += 1

    def snapshot(self) -> dict:
        """The newest snapshot (a dict; replaced, never mutated, so safe to read from another thread)."""
        return self._snap

    def summary(self) -> dict:
        return {"n_snapshots": self.n_snapshots}


@register_node
class LSLOutletNode(Node):
    """Publish features or decoded intent as an LSL stream (:class:`~cortexlink.io.lsl.LSLOutlet`).

    Parameters (``params``)
    -----------------------
    stream : {"intent", "features"}
        ``intent``: channels vx, vy, click (probability) from a decoder's ``intent``;
        ``features``: the dsp's decoder features (names from the dsp).
    name : str or None
        LSL stream name (default ``cortexlink-intent`` / ``cortexlink-features``).
    """

    kind = "lsl_outlet"
    CRITICAL = False
    INPUTS = {"data": PortSpec(maxlen=256, policy="drop_oldest", required=True)}
    PARAMS = {"stream": Param("str", "intent", choices=("intent", "features")),
              "name": Param("str", None, nullable=True)}

    def setup(self) -> None:
        from cortexlink.io.lsl import LSLOutlet

        p = self.params
        bin_s = self.ctx.bin_ms / 1000.0
        kw = {} if p["name"] is None else {"name": p["name"]}
        if p["stream"] == "intent":
            self.outlet = LSLOutlet.intent_outlet(bin_s, **kw)
        else:
            prod = self.ctx.producer(self.name, "data")
            info = self.ctx.wait_info(f"{prod}/features", timeout_s=120.0)
            self.outlet = LSLOutlet.features_outlet(info["names"], bin_s, **kw)
        self.n_pushed = 0

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        for m in inbox["data"]:
            p = m.payload
            if self.params["stream"] == "intent":
                proba = p.get("proba")
                row = np.array([p["v"][0], p["v"][1], math.nan if proba is None else proba], np.float32)
            else:
                if p.get("x") is None:
                    continue
                row = np.asarray(p["x"], np.float32)
            self.outlet.push(row)
            self.n_pushed += 1

    def teardown(self) -> None:
        out = getattr(self, "outlet", None)
        if out is not None:
            out.close()

    def summary(self) -> dict:
        return {"n_pushed": getattr(self, "n_pushed", 0)}


@register_node
class SinkNode(Node):
    """Counts what arrives and its end-to-end latency (tests, benchmarks, drills)."""

    kind = "sink"
    CRITICAL = False
    INPUTS = {"data": PortSpec(maxlen=1024, policy="drop_oldest", required=True)}
    PARAMS = {"keep": Param("int", 0, lo=0, doc="keep the last N messages (for inspection)")}

    def setup(self) -> None:
        import collections

        self.n = 0
        self.latency = LatencyStats(1 << 18)
        self.kept: Any = collections.deque(maxlen=max(self.params["keep"], 1))

    def step(self, inbox: dict[str, list[Message]], now_ns: int) -> None:
        t = time.monotonic_ns()
        for m in inbox["data"]:
            self.n += 1
            if m.t_enter_ns and m.sample >= self.ctx.stats_from_sample:
                self.latency.add(t - m.t_enter_ns)
            if self.params["keep"]:
                self.kept.append(m)

    def summary(self) -> dict:
        return {"n": self.n, "latency_ms": self.latency.summary()}

