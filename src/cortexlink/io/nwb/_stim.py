"""Stimulation in the NWB file: every delivered pulse, and the interlock's decisions.

A session recorded with the stimulation loop (:mod:`cortexlink.runtime.nodes._stim_record`)
holds a ``stim_pulses`` stream (every pulse the stimulator delivered), a ``stim_status`` stream
(the interlock's running totals), ``stim_*`` events and the interlock's audit log
(``stim/stim_audit.jsonl``, named by the manifest's ``stimulation.audit_file``).
:func:`add_stim` writes them as:

==========================================  ================================================
what                                        where in the file
==========================================  ================================================
every delivered pulse                       ``intervals/stimulation_pulses`` (TimeIntervals:
                                            onset to the end of the second phase, electrode,
                                            both phases' amplitude (µA) and width (µs), the
                                            interphase gap (µs), polarity, first-phase charge
                                            (nC), source sample; ``electrodes`` points at the
                                            electrodes table when the ids are its rows)
every interlock decision (audit log)        ``intervals/stimulation_decisions`` (the plan's
                                            window, its source, pulses planned / approved /
                                            clamped / refused, refusals by reason)
refused pulses (audit log)                  ``intervals/stimulation_refused_pulses`` (the
                                            first 20 of each decision in full, with the reason)
E-STOP periods (events)                     ``intervals/stimulation_estops``
interlock totals                            ``processing/misc/interlock_totals``  
the audit log, the limits                   ``scratch/cortexlink_stim_audit`` (JSON lines, as
                                            recorded), ``scratch/cortexlink_stim_limits``
==========================================  ================================================

Times are seconds of the source clock, as everywhere in the file (a pulse's ``time_s`` is its
onset on that clock; the decisions' session times likewise).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError

__all__ = ["STIM_STREAMS", "has_stim", "add_stim"]

#: Streams this module exports (the generic ``stream_<name>`` export leaves them out).
STIM_STREAMS = ("stim_pulses", "stim_status")
_PULSE_DOC = {
    "electrode": "stimulating electrode id (the recording channel it sits on)",
    "amplitude_ua": "first-phase amplitude (µA)",
    "width_us": "first-phase width (µs)",
    "gap_us": "interphase gap (µs)",
    "amplitude2_ua": "second (charge-balancing) phase amplitude (µA)",
    "width2_us": "second-phase width (µs)",
    "cathodic_first": "True: cathodic phase first; False: anodic first",
}


def has_stim(reader: Any) -> bool:
    """The session recorded stimulation (a ``stim_*`` stream or a manifest ``stimulation`` entry)."""
    return any(s in reader.streams for s in STIM_STREAMS) or isinstance(reader.manifest.get("stimulation"), dict)


def _reasons_text(reasons: Any) -> str:
    if not isinstance(reasons, dict) or not reasons:
        return ""
    return "; ".join(f"{k} x{int(v)}" for k, v in sorted(reasons.items()))


def _vd(name: str, doc: str, data: Any, compression: str | None) -> Any:
    from hdmf.common import VectorData

    from cortexlink.io.nwb._common import _data_io

    a = np.asarray(data)
    if a.dtype.kind in "fiub" and a.size >= 1000 and compression is not None:
        a = _data_io(a, compression=compression)
    return VectorData(name=name, description=doc, data=a if not isinstance(a, np.ndarray) or a.dtype.kind != "U"
                      else a.tolist())


def _intervals(name: str, doc: str, start: np.ndarray, stop: np.ndarray, cols: dict, compression: str | None,
               extra: list | None = None) -> Any:
    from pynwb.epoch import TimeIntervals

    columns = [_vd("start_time", "start of the interval (s)", start, compression),
               _vd("stop_time", "end of the interval (s)", stop, compression)]
    columns += [_vd(k, d, v, compression) for k, (d, v) in cols.items()]
    return TimeIntervals(name=name, description=doc, columns=columns + (extra or []))


def _pulse_columns(p: dict, fs: float) -> dict:
    return {k: (d, p[k]) for k, d in _PULSE_DOC.items()} | {
        "charge_nc": ("first-phase charge (nC) = amplitude_ua x width_us / 1000", p["amplitude_ua"] * p["width_us"] / 1e3)}


def _read_audit(reader: Any, warn: list) -> tuple[list[dict], bytes | None]:
    st = reader.manifest.get("stimulation") or {}
    rel = st.get("audit_file")
    if not rel:
        if st.get("audit_missing"):
            warn.append(f"stimulation audit log not in the recording: {st['audit_missing']}")
        return [], None
    path = reader.path / rel
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"{path}: the manifest names this stimulation audit log, and it cannot be read "
                              f"({exc.strerror or exc})") from None
    out = []
    for i, line in enumerate(raw.splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ValidationError(f"{path}: line {i + 1} is not JSON; the audit log was damaged (the manifest's "
                                  "checksum of it names the change: `cortexlink sessions verify`)") from None
        if isinstance(rec, dict):
            out.append(rec)
    return out, raw


def add_stim(nwbfile: Any, reader: Any, events: list[dict], fs: float, compression: str | None,
             written: list, warn: list) -> dict:
    """Write the session's stimulation (see the module docstring); returns counts for the summary."""
    from hdmf.common import DynamicTableRegion
    from pynwb import TimeSeries

    from cortexlink.core.pulses import PULSE_DTYPE

    summary: dict[str, Any] = {"n_pulses": 0, "n_decisions": 0, "n_refused_pulses": 0, "n_estops": 0}
    # ---- delivered pulses
    if "stim_pulses" in reader.streams:
        cols = reader.columns("stim_pulses")
        missing = [c for c in PULSE_DTYPE.names if c not in cols]
        if missing:
            raise ValidationError(f"{reader.path / 'streams' / 'stim_pulses.clog'}: columns {missing} missing; a "
                                  f"stim_pulses stream has {list(PULSE_DTYPE.names)}")
        samples, rows = reader.read_array("stim_pulses")
        if samples.size:
            p = {c: rows[:, cols.index(c)] for c in PULSE_DTYPE.names}
            p["electrode"] = p["electrode"].astype(np.int32)
            p["cathodic_first"] = p["cathodic_first"] > 0.5
            order = np.argsort(p["time_s"], kind="stable")
            p = {k: v[order] for k, v in p.items()}
            start = p["time_s"]
            stop = start + (p["width_us"] + p["gap_us"] + p["width2_us"]) * 1e-6
            extra = []
            elec = nwbfile.electrodes
            if elec is not None and p["electrode"].min() >= 0 and p["electrode"].max() < len(elec):
                extra.append(DynamicTableRegion(name="electrodes", data=p["electrode"].astype(np.int64).tolist(),
                                                description="the stimulating electrode's row in the electrodes "
                                                            "table", table=elec))
            cols_ = _pulse_columns(p, fs) | {"sample": ("onset sample of the source clock (round(time x fs))",
                                                        samples[order].astype(np.int64))}
            nwbfile.add_time_intervals(_intervals(
                "stimulation_pulses", "every stimulation pulse the stimulator delivered (biphasic: first phase, "
                "interphase gap, second phase), from its onset to the end of its second phase; each passed the "
                "safety interlock (see stimulation_decisions)", start, stop, cols_, compression, extra))
            summary["n_pulses"] = int(samples.size)
            written.append(f"intervals/stimulation_pulses ({samples.size})")
    # ---- interlock totals
    if "stim_status" in reader.streams:
        s, rows = reader.read_array("stim_status")
        if s.size:
            from cortexlink.io.nwb._common import _time_kwargs

            mod = nwbfile.processing.get("misc") or nwbfile.create_processing_module(
                name="misc", description="other processed data: the stimulation safety interlock's running totals")
            mod.add(TimeSeries(name="interlock_totals", data=rows, unit="n.a.",
                               description="interlock state where it changed; columns " + ", ".join(
                                   f"{i} {c}" for i, c in enumerate(reader.columns("stim_status")))
                               + " (estop: 1 while an E-STOP is engaged; the rest: running counts)",
                               **_time_kwargs(s, fs)))
            written.append(f"processing/misc/interlock_totals ({s.size})")
    # ---- the audit log: decisions, refused pulses, limits
    audit, raw = _read_audit(reader, warn)
    dec = [a for a in audit if a.get("kind") == "decision"]
    if dec:
        dec.sort(key=lambda a: float(a.get("t_start_s", math.nan)))
        num = lambda k: np.asarray([float(a.get(k, math.nan)) for a in dec])      # noqa: E731
        cnt = lambda k: np.asarray([int(a.get(k) or 0) for a in dec], np.int64)   # noqa: E731
        nwbfile.add_time_intervals(_intervals(
            "stimulation_decisions", "every decision of the stimulation safety interlock (one per plan an encoder "
            "sent), over the plan's window; policy " + ", ".join(sorted({str(a.get("policy")) for a in dec}))
            + "; limits SHA-256 " + ", ".join(sorted({str(a.get("limits_sha256")) for a in dec})),
            num("t_start_s"), np.maximum(num("t_end_s"), num("t_start_s")), {
                "decision": ("the interlock's decision number", cnt("decision")),
                "decision_time": ("session time the plan was judged at (s)", num("now_s")),
                "source": ("the encoder that planned it", [str(a.get("source")) for a in dec]),
                "plan_seq": ("the encoder's plan number", cnt("plan_seq")),
                "n_pulses": ("pulses planned", cnt("pulses")), "n_approved": ("pulses approved", cnt("approved")),
                "n_clamped": ("pulses approved after clamping (policy clamp)", cnt("clamped")),
                "n_refused": ("pulses refused", cnt("refused")),
                "plan_refused": ("the whole plan was refused", np.asarray([bool(a.get("plan_refused")) for a in dec])),
                "refusal_reasons": ("refused pulses by reason ('reason xN; ...'; '' when none)",
                                    [_reasons_text(a.get("reasons")) for a in dec])}, compression))
        summary["n_decisions"] = len(dec)
        written.append(f"intervals/stimulation_decisions ({len(dec)})")
        ref = [(a.get("decision", -1), r) for a in dec for r in (a.get("refused_pulses") or []) if isinstance(r, dict)]
        if ref:
            ref.sort(key=lambda x: float(x[1].get("time_s", math.nan)))
            try:
                p = {k: np.asarray([r[k] for _, r in ref], np.float64) for k in PULSE_DTYPE.names}
            except KeyError as exc:
                raise ValidationError(f"{reader.path}: a refused pulse of the stimulation audit log lacks field "
                                      f"{exc}") from None
            p["electrode"] = p["electrode"].astype(np.int32)
            p["cathodic_first"] = p["cathodic_first"] > 0.5
            stop = p["time_s"] + (p["width_us"] + p["gap_us"] + p["width2_us"]) * 1e-6
            nwbfile.add_time_intervals(_intervals(
                "stimulation_refused_pulses", "pulses the safety interlock refused, as planned (never delivered): "
                "the first 20 of each decision in full (stimulation_decisions.n_refused counts them all)",
                p["time_s"], stop, _pulse_columns(p, fs) | {
                    "reason": ("why the interlock refused it", [str(r.get("reason", "")) for _, r in ref]),
                    "decision": ("the decision (stimulation_decisions.decision)",
                                 np.asarray([int(d) for d, _ in ref], np.int64))}, compression))
            summary["n_refused_pulses"] = len(ref)
            written.append(f"intervals/stimulation_refused_pulses ({len(ref)})")
    start = next((a for a in audit if a.get("kind") == "interlock_start"), None)
    if raw is not None:
        nwbfile.add_scratch(raw.decode("utf-8", "replace"), name="cortexlink_stim_audit",
                            description="the stimulation interlock's audit log as recorded (JSON lines: every "
                                        "decision, E-STOP and reset)")
        if start is not None:
            nwbfile.add_scratch(json.dumps(start.get("limits"), default=str), name="cortexlink_stim_limits",
                                description="the stimulation safety limits in force (SafetyLimits.summary)")
        written.append("scratch (stimulation audit log, limits)")
    # ---- E-STOP periods
    estops = []
    for e in events:
        if e.get("kind") == "stim_estop":
            estops.append([int(e.get("sample", 0)), None, str(e.get("reason"))])
        elif e.get("kind") == "stim_estop_released" and estops and estops[-1][1] is None:
            estops[-1][1] = int(e.get("sample", 0))
    if estops:
        last = max([int(e.get("sample", 0)) for e in events] + [0])
        a = np.asarray([s for s, _, _ in estops], np.float64) / fs
        b = np.asarray([last if t is None else t for _, t, _ in estops], np.float64) / fs
        nwbfile.add_time_intervals(_intervals(
            "stimulation_estops", "periods the stimulation interlock was E-STOPPED (no pulse passes); one still "
            "engaged at the end stops at the last event", a, np.maximum(a, b), {
                "reason": ("why it engaged", [r for _, _, r in estops]),
                "released": ("released before the recording ended", np.asarray([t is not None for _, t, _ in estops]))},
            compression))
        summary["n_estops"] = len(estops)
        written.append(f"intervals/stimulation_estops ({len(estops)})")
    return summary
