"""Stimulation in a recording: the recorder's ``stim`` and ``stim_status`` inputs.

What the :class:`~cortexlink.runtime.nodes.recorder.RecorderNode` keeps of a stimulation loop
(:mod:`cortexlink.runtime.nodes.stim`):

``stim_pulses`` (array stream, float64)
    Every pulse the stimulator delivered (the source's ``stim`` output), one record per pulse,
    columns :data:`STIM_PULSE_COLUMNS` (the fields of :data:`~cortexlink.core.pulses.PULSE_DTYPE`;
    ``cathodic_first`` 1.0 or 0.0). A record's sample is the pulse's onset on the source clock,
    ``round(time_s x fs_hz)``; ``time_s`` keeps the exact onset. Without a known rate the
    message's sample (the start of the chunk the pulse was rendered into) is used.
``stim_status`` (array stream, float64)
    The interlock's counters (:data:`STIM_STATUS_COLUMNS`: E-STOP engaged 1/0, plans, pulses,
    approved, refused, clamped, all running totals) at the bins where one of them changed.
events
    ``stim_interlock`` (the first status: policy, limits SHA-256, the interlock node),
    ``stim_estop`` (engaged, with its reason), ``stim_estop_released``, and ``stim_refusals``
    (refused or clamped counts grew: by how much and by reason since the last such event, the
    interlock's last refused pulses; at most one per :data:`REFUSAL_EVENT_S` of session time —
    refusals go on every bin while an E-STOP holds — the rest added up into the next, or into
    one when the recording closes; ``stim_status`` and the audit log have every bin and decision).
    A recording started mid-run counts from its first status.
``stim/stim_audit.jsonl``
    The interlock's audit log (every decision, E-STOP and reset; :func:`cortexlink.stim.audit.
    read_audit` reads it), copied in when the recording closes, so the manifest's checksums cover
    it: the whole log of a recording that began with the run; of one an operator started mid-run
    (``record_start``), the interlock's first line (its limits) and the lines written since.
manifest ``stimulation``
    Names the streams, the audit file, the interlock's policy and limits SHA-256, and counts.

Every pulse of every message that reaches the recorder is written (a record the writer's queue
drops for lack of room is counted in ``n_pulses_dropped`` and the manifest's ``dropped``). The
``stim`` input holds 8192 messages (one per chunk with pulses); a recorder that lags further
loses the oldest: counted on the edge (``n_dropped`` in the run's ``edges``) and raised as a
``dropped`` fault, which the recorder keeps as a ``fault`` event (its ``faults`` input).

The interlock writes its audit log to ``<run out dir>/stim_audit.jsonl`` (the run folder); a
recording whose graph runs without one, or in another process, gets ``audit_file: null`` and the
reason in ``audit_missing``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.pulses import pulses_from_dict
from cortexlink.io.session_log.format import STREAM_COLUMNS

__all__ = ["StimRecord", "STIM_PULSE_COLUMNS", "STIM_STATUS_COLUMNS", "AUDIT_NAME"]

logger = logging.getLogger(__name__)

STIM_PULSE_COLUMNS: tuple[str, ...] = STREAM_COLUMNS["stim_pulses"]
STIM_STATUS_COLUMNS: tuple[str, ...] = STREAM_COLUMNS["stim_status"]
#: the audit log's place in a recording (and in the run folder, where the interlock writes it)
AUDIT_NAME = "stim_audit.jsonl"
AUDIT_REL = f"stim/{AUDIT_NAME}"
#: session seconds between two ``stim_refusals`` events at most
REFUSAL_EVENT_S = 1.0


class StimRecord:
    """The stimulation part of one recorder node (see the module docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        ctx = node.ctx
        self.stimulator = ctx.producer(node.name, "stim")
        self.interlock = ctx.producer(node.name, "stim_status")
        self.fs = None
        if self.stimulator is not None:
            info = ctx.wait_info(f"{self.stimulator}/stream")
            self.fs = float(info["fs_hz"]) if info and info.get("fs_hz") else None
        out = getattr(ctx, "out_dir", None)
        self.audit_src = None if out is None or self.interlock is None else Path(out) / AUDIT_NAME

    # -- one recording ----------------------------------------------------------------------
    def attach(self, rec: Any) -> None:
        """A recording opened: counters from zero, and the audit log's lines from here on."""
        self.n_pulses = 0
        self.n_dropped = 0
        self.n_messages = 0
        self.last_status: dict | None = None
        self.first_status: dict | None = None
        self._ref_base: dict = {}                     # the status the last stim_refusals counted up to
        self._ref_t: float | None = None
        self._ref_pending: tuple | None = None
        self.audit_from = 0
        src = self.audit_src
        if getattr(self.node, "idle", False) and src is not None and src.is_file():
            self.audit_from = _complete_size(src)      # started by the operator mid-run
        self._manifest(rec)

    def pulses(self, rec: Any, messages: Any) -> int:
        """Record every pulse of every message; returns how many were queued."""
        cols = STIM_PULSE_COLUMNS
        n = 0
        for m in messages:
            p = pulses_from_dict(m.payload)
            self.n_messages += 1
            if not len(p):
                continue
            rows = np.empty((len(p), len(cols)), np.float64)
            for j, c in enumerate(cols):
                rows[:, j] = p[c]
            if self.fs is not None:
                samples = np.rint(p["time_s"] * self.fs).astype(np.int64)
            else:
                samples = np.full(len(p), int(m.sample), np.int64)
            for i in range(len(p)):
                if rec.write_array("stim_pulses", int(samples[i]), rows[i:i + 1], columns=cols, dtype="float64",
                                   host_time_ns=m.t_enter_ns, copy=False):
                    n += 1
                else:
                    self.n_dropped += 1
        self.n_pulses += n
        return n

    def status(self, rec: Any, messages: Any) -> int:
        """Record the interlock's counters where they changed, and its E-STOPs and refusals as
        events; returns the number of items written."""
        n = 0
        for m in messages:
            s = m.payload
            prev = self.last_status
            if prev is None:
                self.first_status = s
                rec.event("stim_interlock", sample=m.sample, interlock=self.interlock, policy=s.get("policy"),
                          limits_sha256=s.get("limits_sha256"), now_s=s.get("now_s"))
                self._manifest(rec)
                n += 1
            was = None if prev is None else prev.get("estop")
            if s.get("estop") is not None and was is None:
                rec.event("stim_estop", sample=m.sample, reason=s["estop"], now_s=s.get("now_s"))
                n += 1
            elif s.get("estop") is None and was is not None:
                rec.event("stim_estop_released", sample=m.sample, was=was, now_s=s.get("now_s"))
                n += 1
            if prev is None and getattr(self.node, "idle", False):
                self._ref_base = s                    # started mid-run: what came before is not this recording's
            if _grew(s, self._ref_base):
                now = float(s.get("now_s") or 0.0)
                if self._ref_t is None or now - self._ref_t >= REFUSAL_EVENT_S:
                    n += self._refusals(rec, m.sample, s)
                else:
                    self._ref_pending = (m.sample, s)
            row = _status_row(s)
            if prev is None or row != _status_row(prev):
                rec.write_array("stim_status", int(m.sample), np.asarray([row], np.float64),
                                columns=STIM_STATUS_COLUMNS, dtype="float64", host_time_ns=m.t_enter_ns, copy=False)
                n += 1
            self.last_status = s
        return n

    def _refusals(self, rec: Any, sample: int, s: dict) -> int:
        base = self._ref_base
        d_ref = int(s.get("n_refused", 0)) - int(base.get("n_refused", 0))
        d_cl = int(s.get("n_clamped", 0)) - int(base.get("n_clamped", 0))
        old = base.get("reasons") or {}
        reasons = {k: int(v) - int(old.get(k, 0)) for k, v in (s.get("reasons") or {}).items()
                   if int(v) - int(old.get(k, 0)) > 0}
        last = list(s.get("last_refused") or [])[-min(d_ref, 10):] if d_ref > 0 else []
        rec.event("stim_refusals", sample=sample, now_s=s.get("now_s"), n_refused=d_ref, n_clamped=d_cl,
                  reasons=reasons, last_refused=last, total_refused=int(s.get("n_refused", 0)))
        self._ref_base, self._ref_t, self._ref_pending = s, float(s.get("now_s") or 0.0), None
        return 1

    def finish(self, rec: Any) -> None:
        """Before the recording closes: the refusals not yet in an event, the audit log copied in,
        and the manifest entry completed."""
        if self._ref_pending is not None:
            self._refusals(rec, *self._ref_pending)
        self.audit_rel, self.audit_missing, self.audit_lines = None, None, 0
        src = self.audit_src
        if self.interlock is None:
            self.audit_missing = "no interlock connected (input stim_status)"
        elif src is None:
            self.audit_missing = "the run has no output folder, so the interlock kept its audit log in memory"
        elif not src.is_file():
            self.audit_missing = f"{src} not found (the interlock runs in another process or wrote nothing)"
        else:
            try:
                end = _complete_size(src)
                with open(src, "rb") as fh:
                    head = fh.readline() if self.audit_from > 0 else b""
                    fh.seek(min(self.audit_from, end))
                    data = fh.read(max(0, end - self.audit_from))
                if b'"interlock_start"' in head:      # the limits in force: kept in a recording begun mid-run
                    data = head + data
                dst = Path(rec.path) / AUDIT_REL
                dst.parent.mkdir(exist_ok=True)
                dst.write_bytes(data)
                self.audit_rel, self.audit_lines = AUDIT_REL, data.count(b"\n")
            except OSError as exc:
                self.audit_missing = f"copying {src} failed: {exc}"
                logger.warning("recorder %s: %s", rec.path, self.audit_missing)
        self._manifest(rec, final=True)

    def _manifest(self, rec: Any, final: bool = False) -> None:
        s = self.first_status or {}
        last = self.last_status or {}
        info: dict[str, Any] = {
            "pulses_stream": "stim_pulses" if self.stimulator else None,
            "status_stream": "stim_status" if self.interlock else None,
            "pulse_sample": "round(time_s * fs_hz)" if self.fs is not None else "the chunk's first sample",
            "stimulator": self.stimulator, "interlock": self.interlock,
            "policy": s.get("policy"), "limits_sha256": s.get("limits_sha256"),
            "audit_file": None, "n_pulses_recorded": self.n_pulses, "n_pulses_dropped": self.n_dropped}
        if final:
            info.update(audit_file=self.audit_rel, audit_lines=self.audit_lines, audit_missing=self.audit_missing,
                        interlock_totals={k: last.get(k) for k in STIM_STATUS_COLUMNS[1:]} if last else None,
                        estop_at_close=last.get("estop"))
        fs = rec.fs_hz if rec.fs_hz is not None else self.fs
        if fs is None:
            return                            # no clock to name: the events say what happened
        try:
            rec.set_source(rec.channel_map, fs, stimulation=info)
        except (OSError, ValueError) as exc:
            logger.warning("recorder %s: could not write the stimulation entry of the manifest: %s", rec.path, exc)


def _grew(s: dict, base: dict) -> bool:
    return any(int(s.get(k, 0) or 0) > int(base.get(k, 0) or 0) for k in ("n_refused", "n_clamped"))


def _status_row(s: dict) -> list[float]:
    return [1.0 if s.get("estop") is not None else 0.0] + [float(s.get(k, 0) or 0) for k in STIM_STATUS_COLUMNS[1:]]


def _complete_size(path: Path) -> int:
    """Bytes of ``path`` up to its last newline (a line being written is left out)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        back = min(size, 1 << 16)
        while True:
            fh.seek(size - back)
            tail = fh.read(back)
            i = tail.rfind(b"\n")
            if i >= 0:
                return size - back + i + 1
            if back >= size:
                return 0
            back = min(size, back * 4)
