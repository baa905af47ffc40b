"""Stimulation-artefact removal on the raw wideband signal: :class:`StimArtifactRemover`.

Recording through stimulation (issue 18 §3): every pulse puts a large, brief artefact on the
recording (and may saturate the amplifiers), and a causal band-pass filter turns the artefact's
edges into ringing that crosses spike thresholds. The pulses are known in advance from the
stimulation plan, so the remover is told them (:meth:`StimArtifactRemover.schedule`) and cleans
the raw samples **before** the :class:`~cortexlink.dsp.FeatureExtractor`:

* ``"blank"`` -- the samples from ``blank_pre_ms`` before each pulse's onset to ``blank_post_ms``
  after its end are replaced, on every channel, by the last clean sample of that channel (a
  causal zero-order hold), so the filter sees a flat stretch instead of the artefact;
* ``"template"`` -- a per-channel artefact template aligned to the pulse onset (one per
  stimulating electrode(s) and pulse shape, normalised per µA when ``scale_by_amplitude``) is learned
  online as the running average of the first ``n_template_pulses`` pulses, and subtracted from the
  following pulses (pulse ``j`` uses the average of the pulses that ended before its window began);
* ``"blank+template"`` -- blanking, then the template subtracted after the blank window (the slow
  recovery tail that blanking alone leaves behind).

Blanking loses the spikes inside the windows; ``n_blanked_last_`` (per chunk),
``n_blanked_samples_`` and, with ``keep_intervals``, ``blanked_intervals_`` tell which samples were
blanked.

Pulses that start on the same sample (a multi-electrode pattern) are one event with one template,
keyed by all their electrodes and pulse shapes (scaled by their mean amplitude). A template
segment runs from ``blank_pre_ms`` before the onset for ``template_ms``, but stops where the next
pulse's segment starts, so no artefact is subtracted twice; it is taken relative to the raw sample
just before the segment (the level left by earlier pulses stays, as a slow offset the band-pass
removes). Limitation: pulses on different electrodes at irregular relative times mix into each
other's templates; regular patterns (simultaneous, or interleaved at fixed offsets) are fine. This
module imports only ``core``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.pulses import as_pulses, pulse_end_s
from cortexlink.core.types import Chunk, check_chunk
from cortexlink.core.validation import check_choice, check_positive, check_range
from cortexlink.dsp._ratelog import _RateLimitedLog

__all__ = ["StimArtifactRemover", "REMOVAL_MODES"]

logger = logging.getLogger(__name__)

REMOVAL_MODES = ("blank", "template", "blank+template")


@dataclasses.dataclass(eq=False)
class _Event:
    """One scheduled pulse: its blank window ``[w0, w1)`` and template segment ``[t0, t1)``."""

    k0: int
    w0: int
    w1: int
    t0: int
    t1: int
    key: tuple
    amps: list
    buf: np.ndarray | None = None      # raw samples of the segment, while learning
    base: np.ndarray | None = None     # raw sample before the segment (per channel)
    snap: np.ndarray | None = None     # template in force for this pulse (already scaled)
    started: bool = False

    @property
    def end(self) -> int:
        return max(self.w1, self.t1)

    def merge(self, other: "_Event") -> None:
        """Add a pulse starting on the same sample (one event, one template key)."""
        self.w0, self.w1 = min(self.w0, other.w0), max(self.w1, other.w1)
        pairs = sorted(zip(self.key + other.key, self.amps + other.amps))
        self.key = tuple(k for k, _ in pairs)
        self.amps = [a for _, a in pairs]


class StimArtifactRemover:
    """Causal, stateful removal of known stimulation artefacts from raw chunks.

    Parameters
    ----------
    n_channels : int
        Channels of the chunks.
    fs_hz : float
        Sampling rate; pulse times (``time_s``) are on the same clock as ``chunk.start_sample``
        (sample ``round(time_s * fs_hz)``).
    mode : {"blank", "template", "blank+template"}
        See the module docstring.
    blank_pre_ms : float
        Blanking starts this long before each pulse's onset (0 to 10 ms).
    blank_post_ms : float
        Blanking ends this long after each pulse's **end** (0 to 50 ms).
    template_ms : float
        Length of the artefact template after the pulse onset (0.1 to 100 ms); it also starts
        ``blank_pre_ms`` before the onset.
    n_template_pulses : int
        Templates are the running average of this many pulses (per electrode and pulse shape),
        then frozen (1 to 100000).
    scale_by_amplitude : bool
        Learn templates per µA of first-phase amplitude and scale them by each pulse's amplitude.
    keep_intervals : bool
        Keep the blanked sample intervals in ``blanked_intervals_`` (for offline metrics).

    Attributes
    ----------
    n_blanked_samples_ : int
        Samples (rows) blanked since :meth:`reset`.
    n_late_pulses_ : int
        Scheduled pulses whose window lay wholly in samples already processed (ignored).
    blank_mask_last_ : ndarray of bool or None
        Which rows of the last chunk given to :meth:`step` were blanked (None: none were).
    n_blanked_last_ : int
        Samples (rows) blanked in the chunk last given to :meth:`step` (the per-chunk count).
    blanked_intervals_ : ndarray (n, 2) int64
        Merged ``[start, stop)`` sample intervals blanked since :meth:`reset` (with
        ``keep_intervals=True``; they grow with the stream).
    n_template_pulses_ : dict
        Pulses averaged into each template so far, keyed by (electrode, phase samples...).

    Examples
    --------
    >>> rm = StimArtifactRemover(64, 30000.0, mode="blank")
    >>> rm.schedule(pulses)                # doctest: +SKIP
    >>> clean = rm.step(chunk)             # doctest: +SKIP
    """

    def __init__(self, n_channels: int, fs_hz: float, mode: str = "blank", *, blank_pre_ms: float = 0.1,
                 blank_post_ms: float = 1.5, template_ms: float = 5.0, n_template_pulses: int = 20,
                 scale_by_amplitude: bool = True, keep_intervals: bool = False) -> None:
        self.n_channels = check_positive("n_channels", n_channels, integer=True)
        self.fs_hz = check_positive("fs_hz", fs_hz)
        self.mode = check_choice("mode", mode, REMOVAL_MODES)
        self.blank_pre_ms = check_range("blank_pre_ms", blank_pre_ms, 0.0, 10.0)
        self.blank_post_ms = check_range("blank_post_ms", blank_post_ms, 0.0, 50.0)
        self.template_ms = check_range("template_ms", template_ms, 0.1, 100.0)
        if isinstance(n_template_pulses, bool) or not isinstance(n_template_pulses, (int, np.integer)) \
                or not 1 <= n_template_pulses <= 100000:
            raise ConfigError(f"n_template_pulses must be an integer in [1, 100000]; got {n_template_pulses!r}")
        self.n_template_pulses = int(n_template_pulses)
        if not isinstance(scale_by_amplitude, (bool, np.bool_)):
            raise ConfigError(f"scale_by_amplitude must be True or False; got {scale_by_amplitude!r}")
        self.scale_by_amplitude = bool(scale_by_amplitude)
        if not isinstance(keep_intervals, (bool, np.bool_)):
            raise ConfigError(f"keep_intervals must be True or False; got {keep_intervals!r}")
        self.keep_intervals = bool(keep_intervals)
        fs = self.fs_hz
        self._pre_n = int(round(self.blank_pre_ms * 1e-3 * fs))
        self._post_n = int(round(self.blank_post_ms * 1e-3 * fs))
        self._tmpl_n = max(1, int(round(self.template_ms * 1e-3 * fs)))
        self._blank = self.mode in ("blank", "blank+template")
        self._template = self.mode in ("template", "blank+template")
        self._log = _RateLimitedLog(logger)
        self.reset()

    def reset(self) -> None:
        """Forget the schedule, the stream position, the templates and the counters."""
        self._events: list[_Event] = []
        self._fin: list[_Event] = []
        self._sums: dict[tuple, np.ndarray] = {}
        self._counts: dict[tuple, int] = {}
        self._n_avg: dict[tuple, np.ndarray] = {}
        self._learning: dict[tuple, int] = {}
        self._next: int | None = None
        self._last = np.zeros(self.n_channels)
        # the last raw rows (enough for a segment that starts up to blank_pre_ms before the
        # chunk in which its pulse is scheduled just in time)
        self._hist = np.zeros((self._pre_n + 1, self.n_channels))
        self._hist_n = 0
        self.n_blanked_samples_ = 0
        self.n_late_pulses_ = 0
        self.n_blanked_last_ = 0
        self.blank_mask_last_ = None
        self._intervals: list[list[int]] = []

    @property
    def blanked_intervals_(self) -> np.ndarray:
        if not self.keep_intervals:
            raise ConfigError("blanked_intervals_ needs keep_intervals=True in the constructor")
        return np.array(self._intervals, np.int64).reshape(-1, 2)

    @property
    def n_template_pulses_(self) -> dict:
        return dict(self._counts)

    # ------------------------------------------------------------------ schedule
    def schedule(self, pulses: Any) -> int:
        """Tell the remover about pulses (from the stimulation plan), before or while their
        samples arrive.

        Parameters
        ----------
        pulses : ndarray of :data:`~cortexlink.core.pulses.PULSE_DTYPE`
            ``time_s`` finite and >= 0, widths finite and > 0, gap finite and >= 0.

        Returns
        -------
        int
            Pulses scheduled; a pulse whose window lies wholly before the next sample expected
            is counted in ``n_late_pulses_`` and ignored (a window partly in the past is handled
            for the part still to come, but is not learned from).

        Raises
        ------
        ValidationError
            If ``pulses`` is not a pulse array or holds invalid times or widths.
        """
        p = as_pulses(pulses, where="pulses")
        if p.size == 0:
            return 0
        for name, strict in (("time_s", False), ("width_us", True), ("width2_us", True), ("gap_us", False)):
            v = p[name]
            bad = ~np.isfinite(v) | ((v <= 0) if strict else (v < 0))
            if bad.any():
                raise ValidationError(f"pulses: {name} must be finite and {'> 0' if strict else '>= 0'}; "
                                      f"got {v[bad][:5].tolist()}")
        amp = p["amplitude_ua"]
        if self._template and self.scale_by_amplitude and not np.all(np.isfinite(amp) & (amp > 0)):
            raise ValidationError(f"pulses: amplitude_ua must be finite and > 0 to scale templates by it "
                                  f"(scale_by_amplitude=True); got {amp[~(np.isfinite(amp) & (amp > 0))][:5].tolist()}")
        fs = self.fs_hz
        k0 = np.round(p["time_s"] * fs).astype(np.int64)
        kend = np.round(pulse_end_s(p) * fs).astype(np.int64)
        by_k0 = {ev.k0: ev for ev in self._events if not ev.started}
        n_ok = 0
        for i in range(p.size):
            r = p[i]
            key = ((int(r["electrode"]), int(round(r["width_us"] * 1e-6 * fs)), int(round(r["gap_us"] * 1e-6 * fs)),
                    int(round(r["width2_us"] * 1e-6 * fs)), bool(r["cathodic_first"])),)
            ev = _Event(k0=int(k0[i]), w0=int(k0[i]) - self._pre_n, w1=int(kend[i]) + self._post_n,
                        t0=int(k0[i]) - self._pre_n, t1=int(k0[i]) + self._tmpl_n, key=key,
                        amps=[float(r["amplitude_ua"])])
            if not self._template:
                ev.t1 = ev.t0
            if self._next is not None and ev.end <= self._next:
                self.n_late_pulses_ += 1
                continue
            n_ok += 1
            if ev.k0 in by_k0:
                by_k0[ev.k0].merge(ev)
            else:
                by_k0[ev.k0] = ev
                self._events.append(ev)
        if n_ok < p.size:
            self._log.warning("late", "schedule: %d pulse(s) late (window before sample %s), ignored; "
                              "%d so far", p.size - n_ok, self._next, self.n_late_pulses_)
        self._events.sort(key=lambda e: e.k0)
        if self._template:      # a template segment stops where the next pulse's segment starts
            for a, b in zip(self._events[:-1], self._events[1:]):
                a.t1 = min(a.t1, max(b.t0, a.t0))
        return n_ok

    # ------------------------------------------------------------------ streaming
    def _finalize_until(self, limit: int) -> None:
        while self._fin and self._fin[0].t1 <= limit:
            ev = self._fin.pop(0)
            self._learning[ev.key] -= 1
            if self._counts.get(ev.key, 0) < self.n_template_pulses:
                L = ev.t1 - ev.t0
                if ev.key not in self._sums:
                    self._sums[ev.key] = np.zeros((self._pre_n + self._tmpl_n, self.n_channels))
                    self._n_avg[ev.key] = np.zeros(self._pre_n + self._tmpl_n, np.int64)
                self._sums[ev.key][:L] += (ev.buf[:L] - ev.base[None, :]) / self._scale(ev)
                self._n_avg[ev.key][:L] += 1
                self._counts[ev.key] = self._counts.get(ev.key, 0) + 1
            ev.buf = ev.base = None

    def _scale(self, ev: _Event) -> float:
        return float(np.mean(ev.amps)) if self.scale_by_amplitude else 1.0

    def _snapshot(self, ev: _Event) -> np.ndarray | None:
        n = self._n_avg.get(ev.key)
        if n is None or n[0] == 0:
            return None
        return self._sums[ev.key] * (self._scale(ev) / np.maximum(n, 1))[:, None]

    def step(self, chunk: Chunk) -> Chunk:
        """Clean one chunk; return a chunk of the same dtype, shape and clock.

        Parameters
        ----------
        chunk : Chunk
            int16 counts or float32 µV, ``n_channels`` columns, ``start_sample`` at or after the
            end of the previous chunk (a jump is a gap: windows inside it are skipped).

        Returns
        -------
        Chunk
            The cleaned samples (the input itself when no window touches it).

        Raises
        ------
        ValidationError
            Wrong type, dtype, channel count or sampling rate; overlapping chunk.
        """
        data = check_chunk(chunk, self.n_channels, self.fs_hz)
        s0, n = chunk.start_sample, data.shape[0]
        s1 = s0 + n
        if self._next is not None and s0 < self._next:
            raise ValidationError(f"chunk.start_sample must be >= {self._next} (one past the last sample "
                                  f"received; chunks may not overlap or go backwards); got {s0}")
        if self._next is not None and s0 > self._next:      # gap: no learning across it
            for ev in self._events:
                if ev.buf is not None and ev.t0 < s0 and ev.t1 > self._next:     # incomplete segment
                    ev.buf = ev.base = None
                    self._learning[ev.key] -= 1
            self._hist_n = 0
        self._next = s1
        if n == 0:
            self.n_blanked_last_ = 0
            self.blank_mask_last_ = None
            return chunk
        if not self._events or (self._events[0].t0 >= s1 and self._events[0].w0 >= s1):
            self._push_history(data)                  # nothing to do in this chunk
            self._finalize_until(s1)
            self._last = data[-1].astype(np.float64)
            self.n_blanked_last_ = 0
            self.blank_mask_last_ = None
            return chunk
        x = data.astype(np.float64)
        out = None
        blank = np.zeros(n, bool) if self._blank else None
        keep: list[_Event] = []
        for ev in self._events:
            if ev.t0 >= s1 and ev.w0 >= s1:
                keep.append(ev)
                continue
            if not ev.started:
                ev.started = True
                if self._template:
                    self._finalize_until(ev.t0)
                    ev.snap = self._snapshot(ev)
                    n_old = s0 - (ev.t0 - 1)       # rows of the segment (and its base) before the chunk
                    if (n_old <= self._hist_n and self._counts.get(ev.key, 0) + self._learning.get(ev.key, 0)
                            < self.n_template_pulses):
                        ev.buf = np.zeros((self._pre_n + self._tmpl_n, self.n_channels))
                        if n_old > 0:
                            old = self._hist[len(self._hist) - n_old:]
                            ev.base = old[0].copy()
                            ev.buf[:n_old - 1] = old[1:]
                        else:
                            ev.base = x[ev.t0 - s0 - 1].copy()
                        self._learning[ev.key] = self._learning.get(ev.key, 0) + 1
            if self._template:
                a, b = max(ev.t0, s0), min(ev.t1, s1)
                if ev.buf is not None and b > a:
                    ev.buf[a - ev.t0:b - ev.t0] = x[a - s0:b - s0]
                    if ev.t1 <= s1:
                        self._fin.append(ev)
                if ev.snap is not None:
                    a = max(ev.w1 if self._blank else ev.t0, s0)
                    if b > a:
                        if out is None:
                            out = x.copy()
                        out[a - s0:b - s0] -= ev.snap[a - ev.t0:b - ev.t0]
            if self._blank:
                a, b = max(ev.w0, s0), min(ev.w1, s1)
                if b > a:
                    blank[a - s0:b - s0] = True
            if ev.end > s1:
                keep.append(ev)
        self._events = keep
        if self._template:
            self._finalize_until(s1)
        self._push_history(x)
        n_bl = 0
        if blank is not None and blank.any():
            if out is None:
                out = x.copy()
            idx = np.where(~blank, np.arange(n), -1)
            np.maximum.accumulate(idx, out=idx)
            held = np.where((idx >= 0)[:, None], out[np.maximum(idx, 0)], self._last[None, :])
            out[blank] = held[blank]
            n_bl = int(blank.sum())
            if self.keep_intervals:
                self._record_runs(blank, s0)
        clean = np.flatnonzero(~blank) if blank is not None else None
        src = out if out is not None else x
        if clean is None:
            self._last = src[-1].copy()
        elif clean.size:
            self._last = src[clean[-1]].copy()
        self.n_blanked_samples_ += n_bl
        self.n_blanked_last_ = n_bl
        self.blank_mask_last_ = blank if n_bl else None
        if out is None:
            return chunk
        if data.dtype == np.int16:
            res = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        else:
            res = out.astype(np.float32)
        return Chunk(res, chunk.fs_hz, s0, host_time_ns=chunk.host_time_ns, seq=chunk.seq)

    def _push_history(self, x: np.ndarray) -> None:
        H, n = len(self._hist), x.shape[0]
        if n >= H:
            self._hist[:] = x[n - H:]
        else:
            self._hist[:H - n] = self._hist[n:]
            self._hist[H - n:] = x
        self._hist_n = min(H, self._hist_n + n)

    def _record_runs(self, blank: np.ndarray, s0: int) -> None:
        d = np.diff(np.concatenate([[0], blank.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(d == 1) + s0, np.flatnonzero(d == -1) + s0
        for a, b in zip(starts.tolist(), stops.tolist()):
            if self._intervals and self._intervals[-1][1] == a:
                self._intervals[-1][1] = b
            else:
                self._intervals.append([a, b])

    def apply(self, data: Any, pulses: Any, *, chunk_size: int | None = None, start_sample: int = 0) -> np.ndarray:
        """Offline: :meth:`reset`, :meth:`schedule` ``pulses``, then :meth:`step` through ``data``.

        Parameters
        ----------
        data : ndarray (n_samples, n_channels), int16 or float32
            A stream starting at ``start_sample``.
        pulses : ndarray of PULSE_DTYPE
        chunk_size : int, optional
            Feed ``data`` in chunks of this many samples (the result does not depend on it).

        Returns
        -------
        ndarray
            The cleaned samples, same dtype and shape as ``data``.
        """
        if not isinstance(data, np.ndarray) or data.ndim != 2:
            raise ValidationError(f"data must be a 2-D numpy array (samples x channels); got "
                                  f"{type(data).__name__} {getattr(data, 'shape', '')}")
        self.reset()
        self.schedule(pulses)
        n = data.shape[0]
        cs = n if chunk_size is None else check_positive("chunk_size", chunk_size, integer=True)
        parts = [self.step(Chunk(data[i:i + cs], self.fs_hz, start_sample + i)).data
                 for i in range(0, n, max(cs, 1))]
        return np.concatenate(parts) if parts else data.copy()

    def __repr__(self) -> str:
        return (f"StimArtifactRemover(n_channels={self.n_channels}, fs_hz={self.fs_hz:g}, mode={self.mode!r}, "
                f"blank_pre_ms={self.blank_pre_ms:g}, blank_post_ms={self.blank_post_ms:g})")
