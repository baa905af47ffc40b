"""The LSL inlet: :class:`LSLInlet` (re-exported by :mod:`cortexlink.io.lsl`)."""

from __future__ import annotations

import collections
import logging
import math
import time
from typing import Iterator

import numpy as np

from cortexlink.core.errors import ConfigError, CortexlinkError, DeviceDisconnected
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.core.validation import check_choice, check_positive
from cortexlink.io._lsl_common import (
    _LSL_TO_DTYPE,
    LSLStreamNotFound,
    _pylsl,
    _read_channels,
    _resolve,
    _state,
    _xpath_literal,
)

logger = logging.getLogger("cortexlink.io.lsl")  # the name this code logged under before the split


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
