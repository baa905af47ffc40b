"""The watchdog: fail safe when anything on the real-time path stalls, fails or misbehaves.

The :class:`Watchdog` lives in the node that moves the cursor (the *gate*, see the ``cursor``
node) and is evaluated on every pass of its process's scheduler (each tick of a source, at least
every ``check_interval_ms`` elsewhere). A *halt* fault makes the gate publish a zero velocity at
once and suppress clicks until every halt fault has cleared:

========================  ======================================================  ==================
fault ``kind``            raised when                                             cleared when
========================  ======================================================  ==================
``source_stall``          a source's output counter has not moved for             it moves again
                          ``stall_ms`` (armed after its first output)
``node_down``             a critical node's state is ``failed``, or it was        it runs again
                          stopped after repeated failures                         (restart)
``decoder_nan``           the decoder's velocity or click output is NaN/Inf       next valid output
``decoder_out_of_range``  ``|velocity| > max_speed`` or click outside [0, 1]       next valid output
``pipeline_stall``        no decoder output for ``output_timeout_ms`` after the   next fresh output
                          first one, or an output whose data entered the graph
                          more than ``output_timeout_ms`` ago (a backlog a
                          stopped process catches up on: the cursor is not
                          driven by the past); 0 disables both
``bus_down``              the process's message bus is broken (its Redis server   never: the run
                          was lost; the health entry :data:`BUS_HEALTH`)          ends
``fit_failed``            a scheduled fit or refit failed (:meth:`Watchdog.latch`) never: the run
                                                                                  ends
========================  ======================================================  ==================

With the defaults (``stall_ms=5``, checks every tick of 1 ms) the cursor stops well within one
20 ms bin of a stall. Every raise and clear is a fault event (``severity`` ``"halt"`` or
``"clear"``) on the ``runtime.faults`` topic: logged as a warning (the operator is told),
recorded by a ``recorder`` node and listed in the run summary.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable

from cortexlink.core.errors import ConfigError
from cortexlink.core.validation import check_keys, check_positive

logger = logging.getLogger(__name__)

__all__ = ["Watchdog", "WatchdogConfig", "HALT_KINDS", "BUS_HEALTH"]

HALT_KINDS = ("source_stall", "node_down", "decoder_nan", "decoder_out_of_range", "pipeline_stall", "bus_down",
              "fit_failed")
#: The health entry (not a node: node names hold no '.') that reports a broken bus:
#: ``{"state": "failed", "bus": True, "error": ...}``.
BUS_HEALTH = "runtime.bus"


@dataclasses.dataclass(frozen=True)
class WatchdogConfig:
    """Limits of the watchdog (the graph's ``watchdog:`` section).

    Parameters
    ----------
    stall_ms : float
        A source that has produced nothing for this long has stalled (must be below the bin).
    max_speed : float
        Largest plausible decoded speed, screen units per second.
    output_timeout_ms : float
        Longest gap between two decoder outputs once they flow (0: off).
    check_interval_ms : float
        Longest time between two checks in a process without a source (its scheduler wakes up
        at least this often).
    """

    stall_ms: float = 5.0
    max_speed: float = 10.0
    output_timeout_ms: float = 100.0
    check_interval_ms: float = 2.0

    def __post_init__(self) -> None:
        check_positive("watchdog.stall_ms", self.stall_ms)
        check_positive("watchdog.max_speed", self.max_speed)
        check_positive("watchdog.output_timeout_ms", self.output_timeout_ms, allow_zero=True)
        check_positive("watchdog.check_interval_ms", self.check_interval_ms)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, path: str = "watchdog") -> "WatchdogConfig":
        d = dict(d or {})
        check_keys(path, d, (f.name for f in dataclasses.fields(cls)))
        try:
            return cls(**{k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in d.items()})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc


class Watchdog:
    """Keeps the set of active halt faults from health reports and decoder outputs.

    Parameters
    ----------
    config : WatchdogConfig
    emit : callable
        ``emit(kind, severity=..., node=..., message=..., sample=..., **fields)``: publishes a fault
        event (the node context's ``fault``).
    gate : str
        Name of the node that owns this watchdog (reported as the node of its own faults).
    """

    def __init__(self, config: WatchdogConfig, emit: Callable[..., None], gate: str = "cursor") -> None:
        self.config = config
        self._emit = emit
        self.gate = gate
        self.active: dict[tuple[str, str], dict[str, Any]] = {}
        self._last_n: dict[str, int] = {}
        self._last_change: dict[str, int] = {}
        self._last_output_ns: int | None = None
        self.n_raised = 0
        self.n_checks = 0

    @property
    def halted(self) -> bool:
        """True while any halt fault is active."""
        return bool(self.active)

    def _raise(self, kind: str, node: str, message: str, sample: int, **fields: Any) -> bool:
        key = (kind, node)
        if key in self.active:
            return False
        self.active[key] = {"kind": kind, "node": node, "message": message, "sample": sample}
        self.n_raised += 1
        self._emit(kind, node=node, severity="halt", message=message, sample=sample, **fields)
        return True

    def _clear(self, kind: str, node: str, sample: int) -> None:
        if self.active.pop((kind, node), None) is not None:
            self._emit(kind, node=node, severity="clear", message=f"{kind} on {node} cleared", sample=sample)

    def latch(self, kind: str, node: str, message: str, sample: int = -1, **fields: Any) -> bool:
        """Raise a halt nothing clears (the run is ending on it); True if it is new."""
        return self._raise(kind, node, message, sample, **fields)

    # -- periodic -----------------------------------------------------------------------
    def check_health(self, now_ns: int, health: dict[str, Any], sample: int = -1) -> bool:
        """Evaluate node states and source progress; return True if a new fault was raised."""
        self.n_checks += 1
        new = False
        stall_ns = int(self.config.stall_ms * 1e6)
        for node, h in health.items():
            state = h.get("state")
            if h.get("bus"):
                if state == "failed":
                    new |= self._raise("bus_down", node, f"the message bus is broken: {h.get('error')}", sample)
                continue
            if h.get("critical", True):
                if state == "failed":
                    new |= self._raise("node_down", node, f"node {node} failed: {h.get('error')}", sample)
                elif state == "stopped" and h.get("gave_up"):
                    new |= self._raise("node_down", node, f"node {node} was stopped after repeated failures",
                                       sample)
                elif state == "running":
                    self._clear("node_down", node, sample)
            if h.get("source") and state == "running":
                n = int(h.get("n_out", 0))
                last = self._last_n.get(node)
                if last is None or n != last:
                    self._last_n[node] = n
                    if n > 0:
                        self._last_change[node] = now_ns
                        self._clear("source_stall", node, sample)
                elif node in self._last_change and now_ns - self._last_change[node] > stall_ns:
                    age = (now_ns - self._last_change[node]) / 1e6
                    new |= self._raise("source_stall", node, f"source {node} produced nothing for {age:.1f} ms",
                                       sample, age_ms=age)
        to = self.config.output_timeout_ms
        if to > 0 and self._last_output_ns is not None and now_ns - self._last_output_ns > to * 1e6:
            age = (now_ns - self._last_output_ns) / 1e6
            new |= self._raise("pipeline_stall", self.gate, f"no decoder output for {age:.1f} ms", sample,
                               age_ms=age)
        return new

    # -- per output ---------------------------------------------------------------------
    def _stale(self, age_ns: int | None, sample: int) -> bool:
        """An output whose data entered the graph more than ``output_timeout_ms`` ago is stale: it
        raises (or keeps) ``pipeline_stall`` and neither restarts the timeout nor clears it."""
        to = self.config.output_timeout_ms
        if age_ns is None or to <= 0 or age_ns <= to * 1e6:
            return False
        age = age_ns / 1e6
        self._raise("pipeline_stall", self.gate, f"decoder output is {age:.1f} ms old (its data entered the graph "
                    f"that long ago; output_timeout_ms {to:g})", sample, age_ms=age)
        return True

    def output_seen(self, now_ns: int, sample: int = -1, age_ns: int | None = None) -> None:
        """A decoder output arrived that does not drive the cursor (between an operator's blocks,
        open loop, mouse mode): the pipeline runs, so its timeout restarts (values unchecked);
        ``age_ns``: how long ago its data entered the graph (None: unknown; see :meth:`check_output`)."""
        if self._stale(age_ns, sample):
            return
        self._last_output_ns = now_ns
        self._clear("pipeline_stall", self.gate, sample)

    def check_output(self, now_ns: int, velocity: Any, click: float | None, *, node: str, sample: int = -1,
                     age_ns: int | None = None) -> bool:
        """Check one decoder output; return True if it may drive the cursor.

        NaN/Inf or out-of-range output raises a fault (and returns False); a valid output clears
        the decoder faults of ``node`` and the pipeline timeout. ``age_ns``: how long ago the
        output's data entered the graph (None: unknown, not checked); older than
        ``output_timeout_ms`` it is stale: ``pipeline_stall``, False.
        """
        if self._stale(age_ns, sample):
            return False
        self._last_output_ns = now_ns
        self._clear("pipeline_stall", self.gate, sample)
        try:
            vx, vy = float(velocity[0]), float(velocity[1])
        except (TypeError, ValueError, IndexError):
            vx = vy = math.nan
        c = 0.0 if click is None else float(click)
        if not (math.isfinite(vx) and math.isfinite(vy) and math.isfinite(c)):
            self._raise("decoder_nan", node, f"decoder {node} output is not finite (v=({vx}, {vy}), click={c})",
                        sample)
            return False
        speed = math.hypot(vx, vy)
        if speed > self.config.max_speed or not 0.0 <= c <= 1.0:
            self._raise("decoder_out_of_range", node,
                        f"decoder {node} output out of range (|v|={speed:.3g} > {self.config.max_speed:g} or "
                        f"click={c:.3g} outside [0, 1])", sample, speed=speed, click=c)
            return False
        self._clear("decoder_nan", node, sample)
        self._clear("decoder_out_of_range", node, sample)
        return True
