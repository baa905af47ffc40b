"""The LSL outlet: :class:`LSLOutlet` (re-exported by :mod:`cortexlink.io.lsl`)."""

from __future__ import annotations

import logging
import math
import socket
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, CortexlinkError, ValidationError
from cortexlink.core.validation import check_choice, check_positive
from cortexlink.io._lsl_common import (
    _DTYPE_TO_LSL,
    FEATURE_UNITS,
    FEATURES_STREAM_TYPE,
    INTENT_CHANNELS,
    INTENT_STREAM_TYPE,
    _pylsl,
    _str_list,
    _write_channels,
)

logger = logging.getLogger("cortexlink.io.lsl")  # the name this code logged under before the split


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
