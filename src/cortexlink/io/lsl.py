"""Lab Streaming Layer (LSL) interop through pylsl.

* :class:`LSLOutlet` publishes features or decoded intent so that LabRecorder,
  other BCI software or a task computer can record or consume them;
  :meth:`LSLOutlet.features_outlet` and :meth:`LSLOutlet.intent_outlet` build the
  two standard cortexlink streams.
* :class:`LSLInlet` reads any regular-rate numeric LSL stream as a cortexlink
  source of :class:`~cortexlink.core.types.Chunk` objects.

Metadata follow the XDF meta-data conventions that LabRecorder and XDF readers
(pyxdf, MNE, EEGLAB) read: ``desc/channels/channel/{label,unit,type}``, plus
``desc/acquisition/manufacturer`` and a ``desc/cortexlink`` node.

Discovery
---------
liblsl finds streams with UDP multicast/broadcast queries on every interface
(ResolveScope ``site`` by default). Where that is undesired or blocked (sandboxes,
CI, a laptop on a hostile network), call :func:`use_loopback_only` before any
other LSL call in the process: it hands liblsl an ``lsl_api.cfg`` with
``ResolveScope = machine`` (queries go to 127.0.0.1 only, TTL 0),
``Interfaces = {127.0.0.1}`` and IPv6 off. ``KnownPeers = {127.0.0.1}`` is left
out on purpose: with machine scope the query already goes to 127.0.0.1, and the
extra unicast query waves it adds made liblsl 1.18's resolver teardown overrun
by ``UnicastMaxRTT`` (5 s) about every other time. Setting the
environment variable ``CORTEXLINK_LSL_LOOPBACK=1`` does the same automatically
on the first outlet, inlet or resolve made through this module. liblsl reads its
configuration once per process, so either must happen before the first LSL
call; ``LSLAPICFG=/path/lsl_api.cfg`` is liblsl's own way to do the same.

Time
----
Outlet timestamps are in LSL's clock (``pylsl.local_clock()``); a chunk's
timestamp is that of its *last* sample and LSL derives the others from the
nominal rate. On the inlet, :attr:`Chunk.start_sample` counts samples received
(the source's clock as far as we can know it) and lost samples are detected from
the LSL timestamps: each gap is counted, logged (rate-limited) and listed in
:attr:`LSLInlet.gaps`; with ``on_gap="advance"`` chunks are also split at gaps and
``start_sample`` skips the estimated number of missing samples, so downstream
gap handling sees the hole.

``pylsl`` is imported here only, never from a package ``__init__``.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import socket
import threading
import time
from typing import Any, Iterator, Sequence

import numpy as np

from cortexlink.core.errors import (
    ConfigError,
    CortexlinkError,
    DeviceDisconnected,
    ValidationError,
)
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.core.validation import check_choice, check_positive

__all__ = [
    "FEATURES_STREAM_TYPE",
    "FEATURE_UNITS",
    "INTENT_STREAM_TYPE",
    "LOOPBACK_CONFIG",
    "LSLInlet",
    "LSLOutlet",
    "LSLStreamNotFound",
    "use_loopback_only",
]

logger = logging.getLogger(__name__)

#: LSL content type of the binned-feature stream (LSL types are free-form).
FEATURES_STREAM_TYPE = "Features"
#: LSL content type of the decoded-intent stream (a control signal).
INTENT_STREAM_TYPE = "Control"
#: Unit of each feature kind (the part of a feature name after the last "/"): threshold
#: crossings per bin, spike-band power as mean |x| in µV, LFP power as mean square in µV².
FEATURE_UNITS = {"tx": "counts", "sbp": "uV", "lfp": "uV^2"}
#: Channels and units of the intent stream (screen units per second, probability).
INTENT_CHANNELS = (("vx", "screen/s", "velocity"), ("vy", "screen/s", "velocity"),
                   ("click", "probability", "click"))

#: lsl_api.cfg content that keeps discovery on this machine (see module docstring).
LOOPBACK_CONFIG = """\
[ports]
IPv6 = disable
[multicast]
ResolveScope = machine
Interfaces = {127.0.0.1}
[log]
level = -1
"""

_DTYPE_TO_LSL = {"float32": "float32", "float64": "double64", "int8": "int8", "int16": "int16",
                 "int32": "int32", "int64": "int64"}
_LSL_TO_DTYPE = {1: np.float32, 2: np.float64, 4: np.int32, 5: np.int16, 6: np.int8, 7: np.int64}

_state = {"used": False, "configured": None}


class LSLStreamNotFound(CortexlinkError, LookupError):
    """No LSL stream matching the query was found within the timeout."""


def _pylsl() -> Any:
    """Import pylsl; apply the loopback config first if the environment asks for it."""
    import pylsl

    if not _state["used"]:
        if os.environ.get("CORTEXLINK_LSL_LOOPBACK", "").strip().lower() in ("1", "true", "yes"):
            if _state["configured"] is None:
                pylsl.set_config_content(LOOPBACK_CONFIG)
                _state["configured"] = "loopback (CORTEXLINK_LSL_LOOPBACK)"
        _state["used"] = True
    return pylsl


def use_loopback_only() -> bool:
    """Configure liblsl for discovery on this machine only (127.0.0.1).

    Must run before any other LSL call in the process, because liblsl reads its
    configuration once, at first use.

    Returns
    -------
    bool
        True if the configuration was handed to liblsl before this module made
        any LSL call; False if this module had already used LSL (the call then
        has no effect and a warning is logged). LSL use by other code in the
        process cannot be detected.
    """
    import pylsl

    if _state["configured"] is not None:
        return _state["configured"].startswith("loopback")
    if _state["used"]:
        logger.warning("use_loopback_only() called after LSL was first used in this process; "
                       "liblsl keeps the configuration it loaded then")
        return False
    pylsl.set_config_content(LOOPBACK_CONFIG)
    _state["configured"] = "loopback (use_loopback_only)"
    return True


# -- XML description helpers -----------------------------------------------------------

def _write_channels(desc: Any, labels: Sequence[str], units: Sequence[str], types: Sequence[str]) -> None:
    chans = desc.append_child("channels")
    for label, unit, typ in zip(labels, units, types):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", typ)


def _read_channels(desc: Any, n_channels: int) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Labels, units and types from desc/channels/channel (None where absent)."""
    labels: list[str | None] = []
    units: list[str | None] = []
    types: list[str | None] = []
    ch = desc.child("channels").child("channel")
    while not ch.empty() and len(labels) < n_channels:
        for out, key in ((labels, "label"), (units, "unit"), (types, "type")):
            v = ch.child_value(key)
            out.append(v if v else None)
        ch = ch.next_sibling("channel")
    pad = n_channels - len(labels)
    return labels + [None] * pad, units + [None] * pad, types + [None] * pad


def _str_list(name: str, value: Any, n: int | None = None) -> list[str]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ConfigError(f"{name} must be a sequence of strings; got {value!r}")
    out = [str(v) for v in value]
    if n is not None and len(out) != n:
        raise ConfigError(f"{name} must have {n} entries (one per channel); got {len(out)}")
    return out


def _xpath_literal(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string; got {value!r}")
    if "'" in value:
        raise ConfigError(f"{name} must not contain a single quote (it goes into an XPath query); "
                          f"got {value!r}")
    return f"'{value}'"


def _resolve(pylsl: Any, query: str, deadline: float, poll_s: float = 0.02) -> list:
    """Streams matching the XPath ``query``, polled until found or ``deadline`` (monotonic s).

    A continuous resolver polled from here keeps the bound: liblsl 1.18's
    one-shot ``resolve_bypred(..., timeout)`` and its resolver teardown can
    overrun by a resolve attempt's RTT budget (seen here: 0.5 s -> 5.5 s) when
    the end coincides with the start of a new query wave.
    """
    holder = [pylsl.ContinuousResolver(pred=query, forget_after=5.0)]
    try:
        while True:
            found = holder[0].results()
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            time.sleep(min(poll_s, left))
    finally:
        # Destroying the resolver joins its IO thread, which can take seconds when a query
        # wave starts as it is cancelled; do that off this thread (ctypes releases the GIL).
        t = threading.Thread(target=holder.clear, name="lsl-resolver-teardown", daemon=True)
        t.start()
        t.join(0.1)


# -- outlet ----------------------------------------------------------------------------

class LSLOutlet:
    """An LSL outlet for cortexlink features, intent or any numeric signal.

    Parameters
    ----------
    name : str
        Stream name (what LabRecorder lists).
    stream_type : str
        LSL content type, e.g. ``"Features"``, ``"Control"``, ``"EEG"``.
    channel_labels : sequence of str
        One label per channel (``desc/channels/channel/label``).
    units : str or sequence of str
        Unit of every channel, or one per channel (``.../unit``).
    fs_hz : float
        Nominal rate in Hz; 0 for an irregular stream.
    source_id : str, optional
        Unique id that lets inlets recover after a restart. Default: derived
        from name, type, channel count and host name (stable across restarts).
    dtype : str
        ``float32`` (default), ``float64``, ``int8``, ``int16``, ``int32`` or ``int64``.
    chunk_size : int
        Preferred transmission chunk in samples; 0 sends each push as one chunk.
    channel_types : str or sequence of str, optional
        ``.../type`` per channel (default: ``stream_type``).
    max_buffered_s : float
        Seconds of data the outlet keeps for slow consumers (for an irregular
        stream LSL reads this number as hundreds of samples).
    metadata : dict, optional
        Extra ``desc/cortexlink/<key>`` text values.
    """

    def __init__(self, name: str, stream_type: str, channel_labels: Sequence[str],
                 units: Sequence[str] | str, fs_hz: float, *, source_id: str | None = None,
                 dtype: str = "float32", chunk_size: int = 0,
                 channel_types: Sequence[str] | str | None = None, max_buffered_s: float = 60.0,
                 metadata: dict | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string; got {name!r}")
        if not isinstance(stream_type, str) or not stream_type:
            raise ConfigError(f"stream_type must be a non-empty string; got {stream_type!r}")
        labels = _str_list("channel_labels", channel_labels)
        n = len(labels)
        if n == 0:
            raise ConfigError("channel_labels must name at least one channel; got 0")
        if len(set(labels)) != n:
            raise ConfigError("channel_labels must be unique; got duplicates")
        unit_list = [units] * n if isinstance(units, str) else _str_list("units", units, n)
        if channel_types is None:
            channel_types = stream_type
        type_list = ([channel_types] * n if isinstance(channel_types, str)
                     else _str_list("channel_types", channel_types, n))
        fs = check_positive("fs_hz", fs_hz, allow_zero=True)
        try:
            dt = np.dtype(dtype).name
        except TypeError:
            dt = dtype
        check_choice("dtype", dt, tuple(_DTYPE_TO_LSL))
        chunk_size = check_positive("chunk_size", chunk_size, integer=True, allow_zero=True)
        max_buffered_s = check_positive("max_buffered_s", max_buffered_s)
        if source_id is None:
            source_id = f"cortexlink:{name}:{stream_type}:{n}ch@{socket.gethostname()}"

        pylsl = _pylsl()
        info = pylsl.StreamInfo(name, stream_type, n, fs, _DTYPE_TO_LSL[dt], source_id)
        desc = info.desc()
        _write_channels(desc, labels, unit_list, type_list)
        desc.append_child("acquisition").append_child_value("manufacturer", "cortexlink")
        meta = desc.append_child("cortexlink")
        for k, v in (metadata or {}).items():
            meta.append_child_value(str(k), str(v))
        self._outlet = pylsl.StreamOutlet(info, chunk_size, max(1, math.ceil(max_buffered_s)))
        self.name = name
        self.stream_type = stream_type
        self.channel_labels = tuple(labels)
        self.units = tuple(unit_list)
        self.channel_types = tuple(type_list)
        self.fs_hz = fs
        self.source_id = source_id
        self.dtype = np.dtype(dt)
        self.n_channels = n
        self.n_pushed = 0
        logger.info("LSL outlet %r (type %r, %d ch, %g Hz, %s) is up", name, stream_type, n, fs, dt)

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def features_outlet(cls, feature_names: Sequence[str], bin_s: float,
                        name: str = "cortexlink-features", **kw: Any) -> "LSLOutlet":
        """Outlet for binned features (one sample per bin).

        Parameters
        ----------
        feature_names : sequence of str
            ``"ch0012/tx"``-style names; the kind after the last ``/`` sets the
            unit (:data:`FEATURE_UNITS`: ``tx`` counts, ``sbp`` uV, ``lfp`` uV^2)
            and the channel type.
        bin_s : float
            Bin width in seconds; the nominal rate is ``1 / bin_s``.
        name : str
            Stream name.
        **kw
            Passed to :class:`LSLOutlet` (e.g. ``source_id``, ``chunk_size``).
        """
        names = _str_list("feature_names", feature_names)
        bin_s = check_positive("bin_s", bin_s)
        kinds = [f.rsplit("/", 1)[-1] if "/" in f else "" for f in names]
        unknown = sorted({k for k in kinds if k not in FEATURE_UNITS})
        if unknown:
            raise ConfigError(f"feature_names must end in /{' or /'.join(FEATURE_UNITS)} "
                              f"(feature kinds with a known unit); got kinds {unknown}")
        meta = {"bin_s": repr(bin_s), "content": "binned features"} | kw.pop("metadata", {})
        return cls(name, FEATURES_STREAM_TYPE, names, [FEATURE_UNITS[k] for k in kinds], 1.0 / bin_s,
                   channel_types=kinds, metadata=meta, **kw)

    @classmethod
    def intent_outlet(cls, bin_s: float, name: str = "cortexlink-intent", **kw: Any) -> "LSLOutlet":
        """Outlet for decoded intent: channels ``vx``, ``vy`` (screen/s) and ``click`` (probability).

        Parameters
        ----------
        bin_s : float
            Decoder bin width in seconds; the nominal rate is ``1 / bin_s``.
        name : str
            Stream name.
        **kw
            Passed to :class:`LSLOutlet`.
        """
        bin_s = check_positive("bin_s", bin_s)
        labels, units, types = zip(*INTENT_CHANNELS)
        meta = {"bin_s": repr(bin_s), "content": "decoded intent"} | kw.pop("metadata", {})
        return cls(name, INTENT_STREAM_TYPE, labels, units, 1.0 / bin_s, channel_types=types,
                   metadata=meta, **kw)

    # -- data ---------------------------------------------------------------------------
    def push(self, data: np.ndarray, timestamp: float | np.ndarray | None = None) -> None:
        """Send one sample ``(n_channels,)`` or a block ``(n_samples, n_channels)``.

        Parameters
        ----------
        data : ndarray
            Values; floats are refused by an integer outlet (no silent truncation)
            and integers must fit its dtype.
        timestamp : float or ndarray, optional
            LSL time (``pylsl.local_clock()``) of the *last* sample; LSL derives
            the earlier ones from the nominal rate. An array gives one time per
            sample. ``None``: now.
        """
        if self._outlet is None:
            raise CortexlinkError(f"LSL outlet {self.name!r} is closed")
        arr = np.asarray(data)
        if arr.ndim not in (1, 2) or arr.shape[-1] != self.n_channels:
            raise ValidationError(f"data must have shape ({self.n_channels},) or (n_samples, "
                                  f"{self.n_channels}); got {arr.shape}")
        if arr.dtype != self.dtype:
            if self.dtype.kind == "i":
                if arr.dtype.kind not in "iub":
                    raise ValidationError(f"data must be integer for this {self.dtype} outlet; "
                                          f"got {arr.dtype}")
                info = np.iinfo(self.dtype)
                if arr.size and (arr.min() < info.min or arr.max() > info.max):
                    raise ValidationError(f"data must fit in {self.dtype} [{info.min}, {info.max}]; "
                                          f"got values in [{arr.min()}, {arr.max()}]")
            elif arr.dtype.kind not in "iufb":
                raise ValidationError(f"data must be numeric; got {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if arr.ndim == 1:
            ts = 0.0 if timestamp is None else float(timestamp)
            self._outlet.push_sample(arr, ts)
            self.n_pushed += 1
            return
        n = arr.shape[0]
        if n == 0:
            return
        if timestamp is None:
            self._outlet.push_chunk(arr, 0.0)
        elif np.ndim(timestamp) == 0:
            self._outlet.push_chunk(arr, float(timestamp))
        else:
            ts_arr = np.asarray(timestamp, dtype=np.float64)
            if ts_arr.shape != (n,):
                raise ValidationError(f"timestamp must be a float or have shape ({n},); got {ts_arr.shape}")
            self._outlet.push_chunk(arr, ts_arr.tolist())
        self.n_pushed += n

    def have_consumers(self) -> bool:
        """True while at least one inlet is connected."""
        return self._outlet is not None and self._outlet.have_consumers()

    def wait_for_consumers(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an inlet to connect; True if one did."""
        check_positive("timeout_s", timeout_s)
        return self._outlet is not None and self._outlet.wait_for_consumers(timeout_s)

    def close(self) -> None:
        """Withdraw the stream (idempotent)."""
        if self._outlet is not None:
            out, self._outlet = self._outlet, None
            del out  # pylsl destroys the liblsl outlet when the object goes
            logger.info("LSL outlet %r closed after %d samples", self.name, self.n_pushed)

    @property
    def closed(self) -> bool:
        return self._outlet is None

    def __enter__(self) -> "LSLOutlet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"LSLOutlet(name={self.name!r}, type={self.stream_type!r}, n_channels={self.n_channels}, "
                f"fs_hz={self.fs_hz:g}, dtype={self.dtype.name}, closed={self.closed})")


# -- inlet -----------------------------------------------------------------------------

class LSLInlet:
    """An LSL stream as a cortexlink source of :class:`~cortexlink.core.types.Chunk`.

    Parameters
    ----------
    name : str, optional
        Stream name to resolve.
    stream_type : str, optional
        LSL content type to resolve (with or without ``name``).
    timeout_s : float
        Bound on resolving, reading the description and opening the data
        connection, together.
    channel_map : ChannelMap, optional
        Map to attach; must have the stream's channel count. Default: a map whose
        ids are the stream's channel labels.
    max_chunk_samples : int
        Most samples one :meth:`read_chunk` returns.
    max_buffered_s : float
        Seconds of data liblsl buffers for this inlet before dropping the oldest.
    processing_flags : int
        pylsl post-processing flags (``pylsl.proc_clocksync`` …); default none,
        so timestamps are the sender's.
    gap_tolerance_s : float or None
        Timestamp step beyond ``1 / fs_hz`` tolerated before a gap is reported
        (covers senders that stamp pushes with jitter). ``None`` turns gap
        detection off.
    on_gap : {"count", "advance"}
        ``"count"``: ``start_sample`` counts samples received and gaps are only
        reported. ``"advance"``: chunks are split at gaps and ``start_sample``
        also skips the estimated missing samples.

    Raises
    ------
    LSLStreamNotFound
        No matching stream within ``timeout_s``.
    ConfigError
        Bad arguments, or a stream cortexlink cannot read as chunks (irregular
        rate, string samples, channel count not matching ``channel_map``).
    """

    #: How many gap records :attr:`gaps` keeps.
    MAX_GAP_RECORDS = 1000

    def __init__(self, name: str | None = None, stream_type: str | None = None, *,
                 timeout_s: float = 5.0, channel_map: ChannelMap | None = None,
                 max_chunk_samples: int = 1024, max_buffered_s: float = 10.0,
                 processing_flags: int = 0, gap_tolerance_s: float | None = 0.005,
                 on_gap: str = "count") -> None:
        if name is None and stream_type is None:
            raise ConfigError("name or stream_type must be given to find an LSL stream; got neither")
        terms = []
        if name is not None:
            terms.append(f"name={_xpath_literal('name', name)}")
        if stream_type is not None:
            terms.append(f"type={_xpath_literal('stream_type', stream_type)}")
        query = " and ".join(terms)
        timeout_s = check_positive("timeout_s", timeout_s)
        self._max_n = check_positive("max_chunk_samples", max_chunk_samples, integer=True)
        max_buffered_s = check_positive("max_buffered_s", max_buffered_s)
        if gap_tolerance_s is not None:
            gap_tolerance_s = check_positive("gap_tolerance_s", gap_tolerance_s, allow_zero=True)
        self.on_gap = check_choice("on_gap", on_gap, ("count", "advance"))
        self.gap_tolerance_s = gap_tolerance_s
        if channel_map is not None and not isinstance(channel_map, ChannelMap):
            raise ConfigError(f"channel_map must be a ChannelMap or None; got {type(channel_map).__name__}")

        pylsl = _pylsl()
        self._pylsl = pylsl
        deadline = time.monotonic() + timeout_s
        found = _resolve(pylsl, query, deadline)
        if not found:
            raise LSLStreamNotFound(
                f"no LSL stream with {query} was found within {timeout_s:g} s; check that the sender "
                f"runs, the name/type spelling, and that LSL discovery reaches it (liblsl config: "
                f"{_state['configured'] or 'default or lsl_api.cfg/LSLAPICFG'})")
        if len(found) > 1:
            logger.warning("%d LSL streams match %s; using the first (source_id %r)", len(found), query,
                           found[0].source_id())
        stub = found[0]
        fmt = stub.channel_format()
        if fmt not in _LSL_TO_DTYPE:
            raise ConfigError(f"the LSL stream {stub.name()!r} must carry numeric samples to be read as "
                              f"chunks; got channel format {fmt} (string or undefined)")
        fs = stub.nominal_srate()
        if not fs > 0:
            raise ConfigError(f"the LSL stream {stub.name()!r} must have a regular rate (nominal_srate > 0) "
                              f"to be read as chunks; got {fs}")
        self._inlet = pylsl.StreamInlet(stub, max_buflen=max(1, math.ceil(max_buffered_s)),
                                        max_chunklen=0, recover=True,
                                        processing_flags=processing_flags)
        try:
            # a stream found just before the deadline still gets a short chance to answer
            full = self._inlet.info(timeout=max(0.25, deadline - time.monotonic()))
            self._inlet.open_stream(timeout=max(0.25, deadline - time.monotonic()))
        except (pylsl.util.TimeoutError, pylsl.util.LostError) as err:
            self.close()
            raise LSLStreamNotFound(f"found the LSL stream with {query} but could not connect to it "
                                    f"within {timeout_s:g} s: {type(err).__name__} {err}") from err

        n = full.channel_count()
        labels, units, types = _read_channels(full.desc(), n)
        self.name = full.name()
        self.stream_type = full.type()
        self.source_id = full.source_id()
        self.hostname = full.hostname()
        self.fs_hz = float(fs)
        self.n_channels = n
        self.dtype = np.dtype(_LSL_TO_DTYPE[fmt])
        self.channel_labels = tuple(lab if lab is not None else f"ch{i:04d}" for i, lab in enumerate(labels))
        self.units = tuple(u if u is not None else "" for u in units)
        self.channel_types = tuple(t if t is not None else "" for t in types)
        self.metadata = {}
        node = full.desc().child("cortexlink").first_child()
        while not node.empty():
            self.metadata[node.name()] = node.first_child().value()
            node = node.next_sibling()
        if channel_map is not None:
            if channel_map.n_channels != n:
                self.close()
                raise ConfigError(f"channel_map must have the stream's {n} channels; "
                                  f"got {channel_map.n_channels}")
            self.channel_map = channel_map
        else:
            unique = len(set(self.channel_labels)) == n
            ids = self.channel_labels if unique else [f"ch{i:04d}" for i in range(n)]
            self.channel_map = ChannelMap(ids)

        self._buf = np.empty((self._max_n, n), self.dtype)
        # segments waiting to be returned: (data, lsl_timestamps, n_missing_before, host_time_ns)
        self._pending: collections.deque = collections.deque()
        self._last_ts: float | None = None
        self._next_sample = 0
        self._seq = 0
        self._last_gap_log_ns = 0
        self.gaps: collections.deque = collections.deque(maxlen=self.MAX_GAP_RECORDS)
        self.n_chunks = 0
        self.n_samples = 0
        self.n_gaps = 0
        self.n_samples_missing = 0
        self.n_time_jumps_back = 0
        self.last_timestamps: np.ndarray = np.empty(0)
        logger.info("LSL inlet connected to %r (type %r, %d ch, %g Hz, %s) on %s", self.name,
                    self.stream_type, n, self.fs_hz, self.dtype.name, self.hostname)

    # -- reading ------------------------------------------------------------------------
    @property
    def stats(self) -> dict:
        """Counters: chunks and samples delivered, gaps, missing samples, backward time jumps."""
        return {"n_chunks": self.n_chunks, "n_samples": self.n_samples, "n_gaps": self.n_gaps,
                "n_samples_missing": self.n_samples_missing,
                "n_time_jumps_back": self.n_time_jumps_back,
                "last_gap": self.gaps[-1] if self.gaps else None}

    def read_chunk(self, timeout_s: float = 0.0) -> Chunk | None:
        """Return the samples that are available now (waiting up to ``timeout_s`` for the first).

        Parameters
        ----------
        timeout_s : float
            Longest wait for at least one sample; 0 does not wait.

        Returns
        -------
        Chunk or None
            At most ``max_chunk_samples`` samples, ``None`` if nothing arrived.
            ``host_time_ns`` is ``time.monotonic_ns()`` right after the pull;
            :attr:`last_timestamps` holds the chunk's LSL timestamps.

        Raises
        ------
        DeviceDisconnected
            The stream was lost and cannot be recovered.
        """
        if self._inlet is None:
            raise CortexlinkError(f"LSL inlet {self.name!r} is closed")
        if not timeout_s >= 0:
            raise ConfigError(f"timeout_s must be a number >= 0; got {timeout_s!r}")
        if not self._pending and not self._pull(timeout_s):
            return None
        data, ts, n_missing, host_ns = self._pending.popleft()
        if self.on_gap == "advance":
            self._next_sample += n_missing
        chunk = Chunk(data, self.fs_hz, self._next_sample, host_ns, self._seq)
        self._next_sample += data.shape[0]
        self._seq += 1
        self.n_chunks += 1
        self.n_samples += data.shape[0]
        self.last_timestamps = ts
        return chunk

    def _pull(self, timeout_s: float) -> bool:
        """Pull into the buffer, record gaps, queue the segment(s); False if nothing came."""
        pylsl = self._pylsl
        try:
            if timeout_s > 0:
                _, ts = self._inlet.pull_chunk(timeout=timeout_s, max_samples=self._max_n,
                                               dest_obj=self._buf, min_samples=1, as_numpy=True)
            else:
                _, ts = self._inlet.pull_chunk(timeout=0.0, max_samples=self._max_n,
                                               dest_obj=self._buf, as_numpy=True)
        except pylsl.util.LostError as err:
            raise DeviceDisconnected(f"the LSL stream {self.name!r} (source_id {self.source_id!r}) "
                                     f"was lost: {err}") from err
        host_ns = time.monotonic_ns()
        n = len(ts)
        if n == 0:
            return False
        data = self._buf[:n].copy()
        ts = np.asarray(ts, dtype=np.float64).copy()
        cuts, missing = self._find_gaps(ts)
        if self.on_gap == "advance" and cuts:
            bounds = [0, *cuts, n]
            miss = [missing.get(0, 0)] + [missing[c] for c in cuts]
            for (a, b), m in zip(zip(bounds[:-1], bounds[1:]), miss):
                if b > a:
                    self._pending.append((data[a:b], ts[a:b], m, host_ns))
        else:
            self._pending.append((data, ts, missing.get(0, 0), host_ns))
        return True

    def _find_gaps(self, ts: np.ndarray) -> tuple[list[int], dict[int, int]]:
        """Indices (>0) where a gap precedes a sample, and missing counts by index (0 included)."""
        prev = self._last_ts
        self._last_ts = float(ts[-1])
        if self.gap_tolerance_s is None:
            return [], {}
        steps = np.diff(ts, prepend=ts[0] if prev is None else prev)
        period = 1.0 / self.fs_hz
        est = np.rint(steps * self.fs_hz).astype(np.int64) - 1
        is_gap = (steps > period + self.gap_tolerance_s) & (est >= 1)
        back = steps < -self.gap_tolerance_s
        if back.any():
            self.n_time_jumps_back += int(back.sum())
            logger.warning("LSL stream %r: timestamps went back %d time(s) (sender restarted or "
                           "re-stamped?)", self.name, int(back.sum()))
        idx = np.flatnonzero(is_gap)
        if idx.size == 0:
            return [], {}
        missing = {int(i): int(est[i]) for i in idx}
        # Index of the first sample after each gap, in start_sample numbering. _pull runs only
        # with nothing pending, so this pull's first sample will be self._next_sample (plus, in
        # "advance" mode, the samples missing before it).
        skipped = 0
        for i, m in missing.items():
            if self.on_gap == "advance":
                skipped += m
            self.gaps.append((self._next_sample + i + skipped, m))
            self.n_gaps += 1
            self.n_samples_missing += m
        now = time.monotonic_ns()
        if now - self._last_gap_log_ns > 5_000_000_000:
            self._last_gap_log_ns = now
            logger.warning("LSL stream %r: gap of ~%d sample(s) detected from timestamps "
                           "(total %d gaps, ~%d samples missing)", self.name, missing[int(idx[-1])],
                           self.n_gaps, self.n_samples_missing)
        return [int(i) for i in idx if i > 0], missing

    def iter_chunks(self, seconds: float | None = None, max_chunks: int | None = None, *,
                    poll_s: float = 0.05, stall_timeout_s: float | None = 5.0) -> Iterator[Chunk]:
        """Yield chunks until ``seconds`` have passed or ``max_chunks`` were yielded.

        Parameters
        ----------
        seconds : float, optional
            Stop after this long.
        max_chunks : int, optional
            Stop after this many chunks. At least one of the two bounds is required.
        poll_s : float
            Longest single wait for data.
        stall_timeout_s : float or None
            Raise :class:`DeviceDisconnected` when no sample arrives for this
            long; ``None`` only with ``seconds``.

        Yields
        ------
        Chunk
        """
        if seconds is None and max_chunks is None:
            raise ConfigError("iter_chunks needs seconds or max_chunks (loops must be bounded); got neither")
        if seconds is not None:
            seconds = check_positive("seconds", seconds)
        if max_chunks is not None:
            max_chunks = check_positive("max_chunks", max_chunks, integer=True)
        poll_s = check_positive("poll_s", poll_s)
        if stall_timeout_s is None and seconds is None:
            raise ConfigError("stall_timeout_s=None needs seconds, or the loop could wait forever")
        if stall_timeout_s is not None:
            stall_timeout_s = check_positive("stall_timeout_s", stall_timeout_s)
        start = time.monotonic()
        last_data = start
        n_yielded = 0
        while max_chunks is None or n_yielded < max_chunks:
            now = time.monotonic()
            wait = poll_s
            if seconds is not None:
                left = start + seconds - now
                if left <= 0:
                    return
                wait = min(wait, left)
            chunk = self.read_chunk(timeout_s=wait)
            if chunk is None:
                if stall_timeout_s is not None and time.monotonic() - last_data > stall_timeout_s:
                    raise DeviceDisconnected(f"the LSL stream {self.name!r} delivered no sample for "
                                             f"{stall_timeout_s:g} s")
                continue
            last_data = time.monotonic()
            n_yielded += 1
            yield chunk

    def close(self) -> None:
        """Disconnect (idempotent)."""
        inlet = getattr(self, "_inlet", None)
        if inlet is not None:
            self._inlet = None
            try:
                inlet.close_stream()
            finally:
                del inlet

    @property
    def closed(self) -> bool:
        return self._inlet is None

    def __enter__(self) -> "LSLInlet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"LSLInlet(name={self.name!r}, type={self.stream_type!r}, n_channels={self.n_channels}, "
                f"fs_hz={self.fs_hz:g}, closed={self.closed}, n_gaps={self.n_gaps})")
