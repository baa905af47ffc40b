"""Driver interface (host side) and a simulated stimulator (device side).

:class:`StimulatorDriver` is what the host runs: it accepts only an
:class:`~cortexlink.stim.interlock.ApprovedPlan` signed by its own interlock, checks the pulses
again, encodes them in the versioned command format (:mod:`cortexlink.stim.command`) and hands the
bytes to a ``send`` callable — a serial port or socket for a real device, the simulated device
here. :meth:`StimulatorDriver.stop` sends a STOP frame.

:class:`SimulatedStimulator` is the device end: it decodes frames (a frame with a bad magic,
version, length or CRC is dropped whole and counted), keeps pulses until their time comes, and
hands them out with :meth:`SimulatedStimulator.due` to be rendered into the simulated implant's
signal. It never repeats a frame, drops pulses whose time has passed, halts on STOP, and halts on
its own when no frame has arrived for ``watchdog_s`` (a stalled or dead host means silence).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cortexlink.core.errors import CortexlinkError, ValidationError
from cortexlink.core.pulses import PULSE_DTYPE, empty_pulses
from cortexlink.stim.command import decode_frame, encode_frame, stop_frame
from cortexlink.stim.interlock import ApprovedPlan, SafetyInterlock
from cortexlink.stim.verify import stateless_reasons

__all__ = ["StimulationRefused", "StimulatorDriver", "SimulatedStimulator"]


class StimulationRefused(CortexlinkError, PermissionError):
    """A driver was handed something its interlock did not approve (nothing is sent)."""


class StimulatorDriver:
    """Host-side driver: approved plans in, command frames out.

    Parameters
    ----------
    interlock : SafetyInterlock
        The only interlock whose approvals this driver accepts.
    send : callable
        ``send(frame_bytes)``: the transport to the device.
    """

    def __init__(self, interlock: SafetyInterlock, send: Callable[[bytes], Any]) -> None:
        if not isinstance(interlock, SafetyInterlock):
            raise ValidationError(f"interlock must be a SafetyInterlock; got {type(interlock).__name__}")
        if not callable(send):
            raise ValidationError("send must be callable (frame bytes -> None)")
        self.interlock = interlock
        self._send = send
        self._seq = 0
        self.frames_sent = 0
        self.pulses_sent = 0

    def deliver(self, approved: ApprovedPlan) -> int:
        """Send one approved plan; returns the pulses sent (0 while the interlock is E-STOPped).

        Raises
        ------
        StimulationRefused
            If ``approved`` was not signed by this driver's interlock, was altered after, or its
            pulses fail a per-pulse limit on the re-check. The refusal is audited; nothing is sent.
        """
        lock = self.interlock
        if not lock.vouches_for(approved):
            lock.audit.write({"kind": "driver_refused", "why": "not approved by this interlock",
                              "what": type(approved).__name__})
            raise StimulationRefused("the driver sends only plans approved (and signed) by its own "
                                     "safety interlock; this one was not, or was altered after")
        if lock.stopped is not None:
            lock.audit.write({"kind": "driver_dropped", "why": "estop", "decision": approved.decision_seq,
                              "pulses": len(approved)})
            return 0
        bad = stateless_reasons(approved.pulses, lock.limits, approved.t_start_s, approved.t_end_s, -np.inf)
        if np.any(bad != ""):
            lock.audit.write({"kind": "driver_refused", "why": "re-check failed", "decision": approved.decision_seq,
                              "reasons": sorted(set(bad[bad != ""].tolist()))})
            raise StimulationRefused("an approved plan failed the driver's re-check; nothing sent")
        frame = encode_frame(approved.pulses, approved.t_start_s, approved.t_end_s, self._seq)
        self._send(frame)
        self._seq += 1
        self.frames_sent += 1
        self.pulses_sent += len(approved)
        return len(approved)

    def keepalive(self, now_s: float) -> None:
        """An empty frame: tells the device the host is alive (its watchdog), delivers nothing."""
        self._send(encode_frame(empty_pulses(), now_s, now_s, self._seq))
        self._seq += 1
        self.frames_sent += 1

    def stop(self, now_s: float) -> None:
        """Send STOP: the device halts and drops everything pending."""
        self._send(stop_frame(self._seq, now_s))
        self._seq += 1
        self.frames_sent += 1


class SimulatedStimulator:
    """The device end of the command format, for the simulated implant.

    Parameters
    ----------
    watchdog_s : float
        Drop everything pending when no frame has arrived for this long (session time).
    limits : SafetyLimits, optional
        When given, the device re-checks every decoded pulse (per-pulse limits) and drops a frame
        with any failing pulse, as a device's own hardware limits would.
    """

    def __init__(self, *, watchdog_s: float = 0.1, limits: Any = None) -> None:
        if not (isinstance(watchdog_s, (int, float)) and np.isfinite(watchdog_s) and watchdog_s > 0):
            raise ValidationError(f"watchdog_s must be a finite number > 0; got {watchdog_s!r}")
        self.watchdog_s = float(watchdog_s)
        self.limits = limits
        self._pending = empty_pulses()
        self._last_frame_s: float | None = None
        self._last_seq: int | None = None
        self.delivered: list[np.ndarray] = []
        self.counts = {"frames": 0, "bad_frames": 0, "repeated_frames": 0, "stops": 0, "pulses_delivered": 0,
                       "pulses_dropped_late": 0, "pulses_dropped_stop": 0, "pulses_dropped_watchdog": 0,
                       "frames_refused_limits": 0}

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def receive(self, frame: bytes, now_s: float) -> None:
        """Take one frame from the host at session time ``now_s``."""
        try:
            f = decode_frame(frame)
        except ValidationError:
            self.counts["bad_frames"] += 1
            return
        self.counts["frames"] += 1
        self._last_frame_s = float(now_s)
        if self._last_seq is not None and f.seq <= self._last_seq and not f.is_stop:
            self.counts["repeated_frames"] += 1        # never deliver a frame twice
            return
        self._last_seq = f.seq
        if f.is_stop:
            self.stop()
            return
        p = f.pulses
        inside = (p["time_s"] >= f.t_start_s) & (p["time_s"] < f.t_end_s)
        p = p[inside]
        if self.limits is not None and len(p):
            if np.any(stateless_reasons(p, self.limits, -np.inf, np.inf, -np.inf) != ""):
                self.counts["frames_refused_limits"] += 1
                return
        if len(p):
            merged = np.concatenate([self._pending, p])
            self._pending = merged[np.argsort(merged["time_s"], kind="stable")]

    def stop(self) -> None:
        """Halt: drop every pending pulse."""
        self.counts["stops"] += 1
        self.counts["pulses_dropped_stop"] += len(self._pending)
        self._pending = empty_pulses()

    def due(self, now_s: float, until_s: float) -> np.ndarray:
        """Pulses to render in ``[now_s, until_s)`` (removed from pending; logged as delivered).

        Pulses before ``now_s`` are dropped as late; with no frame for ``watchdog_s`` everything
        pending is dropped instead.
        """
        if len(self._pending) == 0:
            return empty_pulses()
        if self._last_frame_s is None or now_s - self._last_frame_s > self.watchdog_s:
            self.counts["pulses_dropped_watchdog"] += len(self._pending)
            self._pending = empty_pulses()
            return empty_pulses()
        t = self._pending["time_s"]
        late = t < now_s - 1e-9          # below the format's ns resolution is on time
        take = (~late) & (t < until_s)
        self.counts["pulses_dropped_late"] += int(late.sum())
        out = self._pending[take]
        self._pending = self._pending[~(late | take)]
        if len(out):
            self.delivered.append(out)
            self.counts["pulses_delivered"] += len(out)
        return out

    def delivered_pulses(self) -> np.ndarray:
        """Every pulse handed out so far, in order."""
        return np.concatenate(self.delivered) if self.delivered else np.zeros(0, PULSE_DTYPE)
