"""The recorder keeps stimulation: every delivered pulse, the interlock's status and its audit log."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest

from cortexlink.core.pulses import PULSE_DTYPE, pulses_from_dict

#: a cursor loop with touch feedback through the interlock into the simulated stimulator
STIM_GRAPH = {
    "name": "stim-rec-test", "bin_ms": 20, "clock": "fast", "seconds": 6,
    "nodes": {
        "participant": {"kind": "participant", "params": {"seed": 0}, "inputs": {"cursor": "cursor.state"}},
        "implant": {"kind": "sim_source", "params": {"preset": "default", "seed": 0, "config": {"n_channels": 64},
                                                     "chunk_ms": 1},
                    "inputs": {"intent": "participant.intent", "stim": "stim.command"}},
        "dsp": {"kind": "dsp", "inputs": {"raw": "implant.raw", "stim": "implant.stim"},
                "params": {"artifacts": {"mode": "blank"}}},
        "decoder": {"kind": "decoder", "params": {"decoder": "wiener", "click": False},
                    "inputs": {"features": "dsp.features", "labels": "participant.intent", "control": "cursor.control"}},
        "cursor": {"kind": "cursor", "params": {"seed": 0, "decoder_kind": "wiener", "blocks": [
            {"name": "calibration", "kind": "calibration", "task": "centre_out", "seconds": 10}]},
            "inputs": {"intent": "decoder.intent", "participant": "participant.intent"}},
        "touch": {"kind": "touch_encoder", "params": {"config": {
            "sensor_electrodes": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]}}, "inputs": {"cursor": "cursor.state"}},
        "stim": {"kind": "stim_interlock", "params": {"n_electrodes": 64},
                 "inputs": {"touch": "touch.plan", "cursor": "cursor.state"}},
    },
}


def stim_graph(limits: dict | None = None) -> dict:
    g = copy.deepcopy(STIM_GRAPH)
    if limits is not None:
        g["nodes"]["stim"]["params"] = {"limits": limits}
    return g


def _limits_with_electrode_off(electrode: int) -> dict:
    from cortexlink.stim.limits import SafetyLimits

    d = SafetyLimits.default(64).to_dict()
    for e in d["electrodes"]:
        if e["id"] == electrode:
            e["enabled"] = False
    return json.loads(json.dumps(d))


@pytest.fixture(scope="module")
def stim_run(tmp_path_factory):
    """One 6 s run: recorder on every stimulation output, and a sink keeping every delivered-pulse message."""
    from cortexlink.runtime.runner import GraphRunner

    out = tmp_path_factory.mktemp("stimrun")
    g = stim_graph(_limits_with_electrode_off(0))        # electrode 0 refused: decisions with refusals
    g["nodes"]["rec"] = {"kind": "recorder", "inputs": {"raw": "implant.raw", "stim": "implant.stim",
                                                        "stim_status": "stim.status", "events": "cursor.events"}}
    g["nodes"]["sink"] = {"kind": "sink", "params": {"keep": 100000}, "inputs": {"data": "implant.stim"}}
    runner = GraphRunner(g, out_dir=out)
    res = runner.run()
    kept = list(runner.by_name["sink"].node.kept)
    return SimpleNamespace(out=out, rec=out / "rec", res=res, kept=kept)


def test_every_delivered_pulse_is_recorded_at_its_onset_sample(stim_run):
    """Field by field, against what a second subscriber of the stimulator's output received."""
    from cortexlink.io.session_log import SessionReader

    delivered = stim_run.res["nodes"]["implant"]["summary"]["stimulator"]["pulses_delivered"]
    sent = np.concatenate([pulses_from_dict(m.payload) for m in stim_run.kept])
    r = SessionReader(stim_run.rec)
    samples, rows = r.read_array("stim_pulses")
    assert r.columns("stim_pulses") == list(PULSE_DTYPE.names)
    assert delivered > 100 and len(sent) == delivered and len(rows) == delivered
    for j, name in enumerate(PULSE_DTYPE.names):
        assert np.array_equal(rows[:, j], sent[name].astype(np.float64)), name
    assert np.array_equal(samples, np.rint(sent["time_s"] * 30000.0).astype(np.int64))
    assert set(np.unique(sent["electrode"])) <= set(range(1, 10))   # electrode 0 refused, never delivered


@pytest.mark.req("SR-23")
def test_interlock_status_events_audit_and_manifest(stim_run):
    from cortexlink.io.session_log import SessionReader, verify_session
    from cortexlink.stim.audit import read_audit

    rec = stim_run.rec
    assert verify_session(rec)["ok"]
    m = json.loads((rec / "manifest.json").read_text())
    st = m["stimulation"]
    summ = stim_run.res["nodes"]["stim"]["summary"]
    assert st["audit_file"] == "stim/stim_audit.jsonl" and st["audit_file"] in m["files"]
    assert st["limits_sha256"] == summ["limits"]["sha256"] and st["policy"] == "refuse"
    assert st["pulses_stream"] == "stim_pulses" and st["n_pulses_dropped"] == 0
    assert st["interlock_totals"]["n_refused"] == summ["refused"] > 0
    assert st["interlock_totals"]["n_approved"] == summ["approved"] == st["n_pulses_recorded"]
    # the audit log in the recording is the interlock's, whole
    assert (rec / st["audit_file"]).read_bytes() == (stim_run.out / "stim_audit.jsonl").read_bytes()
    audit = read_audit(rec / st["audit_file"])
    assert audit[0]["kind"] == "interlock_start" and audit[0]["limits"]["sha256"] == st["limits_sha256"]
    dec = [a for a in audit if a["kind"] == "decision"]
    assert sum(a["refused"] for a in dec) == summ["refused"]
    # the status stream ends on the interlock's totals; refusals are events with their reasons
    r = SessionReader(rec)
    _, srows = r.read_array("stim_status")
    assert r.columns("stim_status") == ["estop", "n_plans", "n_pulses", "n_approved", "n_refused", "n_clamped"]
    assert list(srows[-1, 1:]) == [summ["plans"], summ["pulses"], summ["approved"], summ["refused"], summ["clamped"]]
    assert np.all(np.diff(srows[:, 4]) >= 0)
    ev = r.events()
    first = [e for e in ev if e["kind"] == "stim_interlock"]
    assert len(first) == 1 and first[0]["limits_sha256"] == st["limits_sha256"]
    refusals = [e for e in ev if e["kind"] == "stim_refusals"]
    assert sum(e["n_refused"] for e in refusals) == summ["refused"]
    assert {k for e in refusals for k in e["reasons"]} == set(summ["reasons"])
    assert all(p["electrode"] == 0 for e in refusals for p in e["last_refused"])


class _FakeRec:
    def __init__(self):
        self.events, self.rows, self.fs_hz, self.channel_map, self.path = [], [], None, None, "."

    def event(self, kind, sample=-1, **f):
        self.events.append({"kind": kind, "sample": sample, **f})
        return True

    def write_array(self, name, sample, rows, **kw):
        self.rows.append((name, sample, np.asarray(rows).tolist()))
        return True


def _status(**kw):
    s = {"now_s": 0.0, "estop": None, "policy": "refuse", "limits_sha256": "a" * 64, "n_plans": 0, "n_pulses": 0,
         "n_approved": 0, "n_refused": 0, "n_clamped": 0, "reasons": {}, "last_refused": []}
    return {**s, **kw}


def test_estop_engaged_and_released_are_events_and_unchanged_status_is_not_rewritten():
    from cortexlink.runtime.nodes._stim_record import StimRecord

    node = SimpleNamespace(name="rec", idle=False, ctx=SimpleNamespace(producer=lambda n, p: {"stim_status": "il"}.get(p),
                                                                       out_dir=None))
    sr = StimRecord(node)
    rec = _FakeRec()
    sr.attach(rec)
    msgs = [_status(), _status(), _status(estop="cursor halted", now_s=0.1),
            _status(estop="cursor halted", now_s=0.12, n_plans=1, n_pulses=4, n_refused=4, reasons={"estop": 4},
                    last_refused=[{"electrode": 3, "time_s": 0.12, "reason": "estop"}] * 4),
            _status(now_s=0.2, n_plans=1, n_pulses=4, n_refused=4, reasons={"estop": 4}),
            # refusals within a second of the last event wait and add up; the close flushes the rest
            _status(now_s=0.5, n_plans=2, n_pulses=9, n_refused=9, reasons={"estop": 4, "frequency": 5}),
            _status(now_s=1.3, n_plans=3, n_pulses=12, n_refused=12, reasons={"estop": 4, "frequency": 8}),
            _status(now_s=1.5, n_plans=4, n_pulses=13, n_refused=13, reasons={"estop": 4, "frequency": 9},
                    last_refused=[{"electrode": 5, "time_s": 1.5, "reason": "frequency"}])]
    sr.status(rec, [SimpleNamespace(payload=p, sample=i * 600, t_enter_ns=0) for i, p in enumerate(msgs)])
    kinds = [(e["kind"], e["sample"]) for e in rec.events]
    assert kinds == [("stim_interlock", 0), ("stim_estop", 1200), ("stim_refusals", 1800),
                     ("stim_estop_released", 2400), ("stim_refusals", 3600)]
    assert rec.events[4]["n_refused"] == 8 and rec.events[4]["reasons"] == {"frequency": 8}
    assert rec.events[1]["reason"] == "cursor halted" and rec.events[2]["reasons"] == {"estop": 4}
    assert len(rec.events[2]["last_refused"]) == 4
    status_rows = [(s, r[0]) for n, s, r in rec.rows if n == "stim_status"]
    assert [s for s, _ in status_rows] == [0, 1200, 1800, 2400, 3000, 3600, 4200]   # the repeated first is not
    assert status_rows[1][1][0] == 1.0 and status_rows[3][1][0] == 0.0
    sr.finish(rec)
    assert sr.audit_missing.startswith("the run has no output folder")
    last = rec.events[-1]
    assert (last["kind"], last["sample"], last["n_refused"], last["reasons"]) == ("stim_refusals", 4200, 1,
                                                                                 {"frequency": 1})
    assert sum(e["n_refused"] for e in rec.events if e["kind"] == "stim_refusals") == 13


def test_the_recording_exports_to_nwb_with_every_pulse_and_decision(stim_run, tmp_path):
    from pynwb import NWBHDF5IO

    from cortexlink.io.nwb import export_nwb

    summ = stim_run.res["nodes"]["stim"]["summary"]
    delivered = stim_run.res["nodes"]["implant"]["summary"]["stimulator"]["pulses_delivered"]
    out = export_nwb(stim_run.rec, tmp_path / "stim.nwb", raw=False)
    assert out["stimulation"]["n_pulses"] == delivered and out["stimulation"]["n_decisions"] == summ["plans"]
    with NWBHDF5IO(str(tmp_path / "stim.nwb"), "r") as io:
        f = io.read()
        t = f.intervals["stimulation_pulses"]
        sent = np.concatenate([pulses_from_dict(m.payload) for m in stim_run.kept])
        np.testing.assert_array_equal(t["start_time"][:], np.sort(sent["time_s"], kind="stable"))
        d = f.intervals["stimulation_decisions"]
        assert int(np.sum(d["n_refused"][:])) == summ["refused"] and int(np.sum(d["n_approved"][:])) == delivered
        assert set(f.intervals["stimulation_refused_pulses"]["reason"][:]) == set(summ["reasons"])


@pytest.mark.req("SR-23")
def test_a_changed_or_shortened_audit_log_in_a_recording_fails_verification(stim_run, tmp_path):
    """The audit log copied into a recording is covered by the manifest's SHA-256: a decision
    rewritten, or a line removed, is found by ``verify_session`` naming the file."""
    import shutil

    from cortexlink.io.session_log import verify_session

    audit_rel = json.loads((stim_run.rec / "manifest.json").read_text())["stimulation"]["audit_file"]
    lines = (stim_run.rec / audit_rel).read_bytes().splitlines(keepends=True)
    i = next(k for k, ln in enumerate(lines) if json.loads(ln).get("refused", 0) > 0)
    forged = json.loads(lines[i])
    forged.update(approved=forged["approved"] + forged["refused"], refused=0, reasons={})
    for name, body in (("rewritten", lines[:i] + [(json.dumps(forged) + "\n").encode()] + lines[i + 1:]),
                       ("shortened", lines[:i] + lines[i + 1:])):
        rec = tmp_path / name
        shutil.copytree(stim_run.rec, rec)
        assert verify_session(rec)["ok"]
        (rec / audit_rel).write_bytes(b"".join(body))
        v = verify_session(rec)
        assert not v["ok"] and any("stim_audit.jsonl" in p for p in v["problems"]), v["problems"]
