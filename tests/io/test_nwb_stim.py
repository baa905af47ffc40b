"""NWB export of stimulation: every delivered pulse, the interlock's decisions, refused pulses and
E-STOPs; read back with pynwb, checked with pynwb's validator and nwbinspector.

The session is written by the recorder's own stimulation code (runtime.nodes._stim_record) from
a real SafetyInterlock's decisions and audit log, so the export reads what a run records."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cortexlink.core.errors import ValidationError
from cortexlink.core.pulses import PULSE_DTYPE, pulse_end_s, pulses_to_dict
from cortexlink.core.types import ChannelMap
from cortexlink.io.nwb import check_nwb, export_nwb
from cortexlink.io.session_log import SessionRecorder

FS = 30000.0
N_CH = 16


def _status(il, now_s: float, last: list) -> dict:
    """What the stim_interlock node publishes (StimInterlockNode.status)."""
    return {"now_s": now_s, "estop": il.stopped, "policy": il.limits.policy, "limits_sha256": il.limits.sha256,
            **{f"n_{k}": v for k, v in il.totals.items()}, "reasons": dict(il.audit.reasons),
            "last_refused": list(last[-10:])}


def _record(folder: Path) -> dict:
    """Ten 20 ms bins of two 200 Hz trains (electrode 2 disabled, so its pulses are refused), an E-STOP
    at bin 6 released at bin 8 (the plans in between refused), recorded as the recorder does."""
    from cortexlink.runtime.nodes._stim_record import StimRecord
    from cortexlink.stim.audit import AuditLog
    from cortexlink.stim.interlock import SafetyInterlock
    from cortexlink.stim.limits import SafetyLimits
    from cortexlink.stim.model import StimPlan, pulse_train

    run = folder / "run"
    run.mkdir()
    d = SafetyLimits.default(N_CH).to_dict()
    d["electrodes"][2]["enabled"] = False
    d["electrode_limits"] = {int(k): v for k, v in d["electrode_limits"].items()}
    lim = SafetyLimits.from_dict(d)
    audit = AuditLog(run / "stim_audit.jsonl")
    il = SafetyInterlock(lim, audit=audit)
    cm = ChannelMap([f"ch{i:04d}" for i in range(N_CH)], ChannelMap.grid(N_CH).positions_um, gain_uv=0.25)
    rec = SessionRecorder(folder / "session", participant_id="S-stim", catalogue=False, raw=False,
                          config={"name": "stim-synthetic",
                                  "participant": {"species": "Homo sapiens", "sex": "U", "age": "P40Y/P60Y"}})
    rec.set_source(cm, FS, loop={"dt_s": 0.02, "samples_per_bin": 600})
    node = SimpleNamespace(name="rec", idle=False, ctx=SimpleNamespace(
        producer=lambda n, p: {"stim": "implant", "stim_status": "stim"}[p],
        wait_info=lambda key: {"fs_hz": FS}, out_dir=str(run)))
    sr = StimRecord(node)
    sr.attach(rec)
    delivered, last = [], []
    for b in range(10):
        t0 = b * 0.02
        if b == 6:
            il.estop("operator E-STOP")
        if b == 8:
            il.reset("operator")
        p = np.concatenate([pulse_train(1, t0 + 0.001, 200.0, 4, 40.0 + b, 150.0, 50.0),
                            pulse_train(2, t0 + 0.002, 200.0, 4, 30.0, 100.0, 0.0, cathodic_first=False)])
        dec = il.review(StimPlan(p, t0, t0 + 0.02, "touch", b), t0)
        last += [{"electrode": int(r["electrode"]), "time_s": float(r["time_s"]), "reason": str(r["reason"])}
                 for r in dec.refused]
        sample = int(round(t0 * FS))
        if dec.n_approved:
            ap = dec.approved.pulses
            delivered.append(ap)
            sr.pulses(rec, [SimpleNamespace(payload={"now_s": t0, **pulses_to_dict(ap)}, sample=sample, t_enter_ns=0)])
        sr.status(rec, [SimpleNamespace(payload=_status(il, t0, last), sample=sample, t_enter_ns=0)])
    audit.close()
    sr.finish(rec)
    rec.close()
    return {"pulses": np.concatenate(delivered), "totals": dict(il.totals), "sha": lim.sha256,
            "audit": (run / "stim_audit.jsonl").read_bytes()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("stimnwb")
    truth = _record(d)
    out = d / "stim.nwb"
    return out, export_nwb(d / "session", out, raw=False), truth, d / "session"


def test_every_delivered_pulse_is_a_row_of_stimulation_pulses(exported):
    from pynwb import NWBHDF5IO

    out, summary, truth, _ = exported
    p = truth["pulses"]
    assert len(p) == 4 * 8 and set(p["electrode"]) == {1}      # 8 bins not E-STOPPED, electrode 2 disabled
    assert summary["stimulation"]["n_pulses"] == len(p)
    with NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        t = f.intervals["stimulation_pulses"]
        np.testing.assert_array_equal(t["start_time"][:], p["time_s"])
        np.testing.assert_allclose(t["stop_time"][:], pulse_end_s(p), rtol=0, atol=1e-12)
        for name in PULSE_DTYPE.names:
            if name != "time_s":
                np.testing.assert_array_equal(t[name][:], p[name], err_msg=name)
        np.testing.assert_allclose(t["charge_nc"][:], p["amplitude_ua"] * p["width_us"] / 1000.0)
        np.testing.assert_array_equal(t["sample"][:], np.rint(p["time_s"] * FS))
        assert list(t["electrodes"].data[:]) == list(p["electrode"])       # rows of the electrodes table
        assert t["electrodes"].table is f.electrodes
        assert "stream_stim_pulses" not in (f.processing["misc"].data_interfaces if "misc" in f.processing else {})
        assert "behavior" not in f.processing                               # not exported twice


def test_decisions_refused_pulses_estops_and_audit(exported):
    from pynwb import NWBHDF5IO

    out, summary, truth, session = exported
    tot = truth["totals"]
    with NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        dec = f.intervals["stimulation_decisions"]
        assert len(dec) == 10 and list(dec["plan_seq"][:]) == list(range(10))
        assert int(np.sum(dec["n_approved"][:])) == tot["approved"] == len(truth["pulses"])
        assert int(np.sum(dec["n_refused"][:])) == tot["refused"] == 4 * 10 + 4 * 2
        assert truth["sha"] in dec.description
        reasons = list(dec["refusal_reasons"][:])
        assert all(r.startswith("disabled_electrode x4") or "estop" in r for r in reasons), reasons
        assert sum("estop" in r for r in reasons) == 2
        ref = f.intervals["stimulation_refused_pulses"]
        assert len(ref) == tot["refused"] and summary["stimulation"]["n_refused_pulses"] == tot["refused"]
        assert set(ref["reason"][:]) >= {"disabled_electrode"} and np.all(np.diff(ref["start_time"][:]) >= 0)
        assert not np.any(ref["cathodic_first"][:][ref["electrode"][:] == 2])
        es = f.intervals["stimulation_estops"]
        np.testing.assert_allclose([es["start_time"][0], es["stop_time"][0]], [0.12, 0.16])
        assert es["reason"][0] == "operator E-STOP" and bool(es["released"][0])
        tot_ts = f.processing["misc"]["interlock_totals"]
        assert list(tot_ts.data[-1, 1:]) == [tot[k] for k in ("plans", "pulses", "approved", "refused", "clamped")]
        assert f.scratch["cortexlink_stim_audit"].data.encode() == truth["audit"]
        assert json.loads(f.scratch["cortexlink_stim_limits"].data)["sha256"] == truth["sha"]
    m = json.loads((session / "manifest.json").read_text())
    assert m["stimulation"]["limits_sha256"] == truth["sha"] and m["stimulation"]["audit_file"] in m["files"]


@pytest.mark.req("SR-50")
def test_stim_export_passes_the_validator_and_nwbinspector(exported):
    out = exported[0]
    found = check_nwb(out)
    assert found["validator"] == []
    assert found["n_critical"] == 0, found["inspector"]
    mine = [m for m in found["inspector"] if "stimulation" in m["object"] or "interlock" in m["object"]]
    # one E-STOP in this session: a one-row table draws a suggestion (a session with one E-STOP is real)
    assert [(m["check"], m["object"]) for m in mine] in ([], [("check_single_row", "TimeIntervals/stimulation_estops")])


@pytest.mark.req("SR-52")
def test_a_damaged_audit_log_is_refused_naming_the_line(exported, tmp_path):
    from cortexlink.io.nwb._stim import _read_audit
    from cortexlink.io.session_log import SessionReader

    r = SessionReader(exported[3])
    audit, raw = _read_audit(r, [])
    assert raw == exported[2]["audit"] and audit[0]["kind"] == "interlock_start"
    lines = raw.splitlines(keepends=True)
    (tmp_path / "stim").mkdir()
    (tmp_path / "stim" / "stim_audit.jsonl").write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:]))
    fake = SimpleNamespace(path=tmp_path, manifest={"stimulation": {"audit_file": "stim/stim_audit.jsonl"}})
    with pytest.raises(ValidationError, match=r"stim_audit.jsonl: line 4 is not JSON"):
        _read_audit(fake, [])
    warn: list = []
    assert _read_audit(SimpleNamespace(path=tmp_path, manifest={"stimulation": {
        "audit_file": None, "audit_missing": "no output folder"}}), warn) == ([], None)
    assert warn == ["stimulation audit log not in the recording: no output folder"]
