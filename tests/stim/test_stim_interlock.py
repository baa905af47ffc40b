"""The safety interlock, limit by limit: each fault refused (or clamped) and audited, never passed."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.stim import StimPlan, biphasic, pulse_train
from cortexlink.stim.audit import AuditLog, read_audit
from cortexlink.stim.interlock import SafetyInterlock
from cortexlink.stim.limits import SafetyLimits
from cortexlink.stim.verify import find_unsafe


def _limits(**kw):
    spec = {"version": 1, "participant": "T", "electrodes": [
        {"ids": [0, 15], "area_um2": 2000.0, "material": "SIROF"}, {"id": 9, "enabled": False},
        {"id": 4, "area_um2": 100.0}, {"id": 6, "material": "Pt"}],
        "electrode_limits": {2: {"max_amplitude_ua": 30.0}}}
    spec.update(kw)
    return SafetyLimits.from_dict(spec)


def _one(lock, pulses, now=0.0, t0=0.0, t1=0.05):
    return lock.review(StimPlan(pulses, t0, t1, "test", 1), now_s=now)


@pytest.mark.req("SR-20", "SR-23")
@pytest.mark.parametrize("pulse, reason", [
    (biphasic(0, 0.01, np.nan, 100.0), "nonfinite"),
    (biphasic(0, np.inf, 50.0, 100.0), "nonfinite"),
    (biphasic(99, 0.01, 50.0, 100.0), "unknown_electrode"),
    (biphasic(-1, 0.01, 50.0, 100.0), "unknown_electrode"),
    (biphasic(9, 0.01, 50.0, 100.0), "disabled_electrode"),
    (biphasic(0, 0.2, 50.0, 100.0), "outside_window"),
    (biphasic(0, 0.01, 50.0, 100.0, gap_us=-1.0), "gap"),
    (biphasic(0, 0.01, 50.0, 100.0, gap_us=900.0), "gap"),
    (biphasic(0, 0.01, 50.0, 5.0), "width"),
    (biphasic(0, 0.01, 50.0, 800.0), "width"),
    (biphasic(0, 0.01, 0.0, 100.0), "amplitude"),
    (biphasic(0, 0.01, -20.0, 100.0), "amplitude"),
    (biphasic(0, 0.01, 150.0, 100.0), "amplitude"),
    (biphasic(2, 0.01, 40.0, 100.0), "amplitude"),            # per-electrode override: 30 µA
    (biphasic(0, 0.01, 90.0, 300.0), "charge_per_phase"),      # 27 nC > 20 nC
    (biphasic(6, 0.01, 20.0, 100.0), "charge_density"),        # Pt: 2 nC on 2000 µm² = 100 µC/cm² ok
    (biphasic(4, 0.01, 60.0, 100.0), "charge_density"),        # 6 nC on 100 µm² = 6000 µC/cm²
])
def test_each_fault_is_refused_with_its_reason(pulse, reason):
    lock = SafetyInterlock(_limits())
    if reason == "charge_density" and pulse["electrode"][0] == 6:
        pulse = pulse.copy()
        pulse["amplitude_ua"] = pulse["amplitude2_ua"] = 25.0   # 2.5 nC -> 125 µC/cm² > 100 (Pt)
    d = _one(lock, pulse)
    assert d.n_approved == 0
    assert d.reasons == {reason: 1}
    assert lock.audit.recent[-1]["reasons"] == {reason: 1}


@pytest.mark.req("SR-20")
def test_shannon_k_and_balance():
    # Shannon: k = log10(Q^2/A): 20 nC on 2000 µm² gives k = 1.30; on a 500 µm² electrode with a
    # density limit raised out of the way, 20 nC gives k = 1.90 > 1.75.
    lim = SafetyLimits.from_dict({"electrodes": [{"id": 0, "area_um2": 500.0}],
                                  "limits": {"max_charge_density_uc_cm2": 1e6}})
    d = _one(SafetyInterlock(lim), biphasic(0, 0.01, 100.0, 200.0))
    assert d.reasons == {"shannon": 1}
    p = biphasic(0, 0.01, 50.0, 100.0)
    p["amplitude2_ua"] = 45.0          # 5 nC vs 4.5 nC
    assert _one(SafetyInterlock(_limits()), p).reasons == {"charge_balance": 1}


def test_safe_plan_passes_whole_and_matches_independent_checker():
    lim = _limits()
    lock = SafetyInterlock(lim)
    p = np.concatenate([pulse_train(e, 0.001 + e * 3e-4, 100.0, 4, 40.0, 150.0, 20.0) for e in (0, 1, 3, 5)])
    d = _one(lock, p)
    assert d.n_approved == len(p) and len(d.refused) == 0
    assert find_unsafe(d.approved.pulses, lim) == []


@pytest.mark.req("SR-20")
def test_frequency_overlap_and_history_across_plans():
    lock = SafetyInterlock(_limits())
    # 400 Hz on one electrode: every other pulse refused (300 Hz limit).
    d = _one(lock, pulse_train(0, 0.001, 400.0, 8, 40.0, 100.0))
    assert d.n_approved == 4 and d.reasons == {"frequency": 4}
    # A later plan may not squeeze a pulse 1 ms after one already approved.
    last = float(d.approved.pulses["time_s"].max())
    d2 = lock.review(StimPlan(biphasic(0, last + 0.001, 40.0, 100.0), last, last + 0.05, "test", 2), now_s=last)
    assert d2.reasons == {"frequency": 1}


@pytest.mark.req("SR-20")
def test_simultaneous_current_cap():
    lock = SafetyInterlock(_limits(max_simultaneous_current_ua=150.0))
    d = _one(lock, biphasic([0, 1, 3, 5], 0.01, 60.0, 100.0))
    assert d.n_approved == 2 and d.reasons == {"simultaneous_current": 2}


@pytest.mark.req("SR-20")
def test_hourly_count_and_net_charge():
    lock = SafetyInterlock(_limits(limits={"max_pulses_per_hour": 5}))
    d = _one(lock, pulse_train(0, 0.001, 100.0, 8, 40.0, 100.0), t1=0.2)
    assert d.n_approved == 5 and d.reasons == {"hourly_count": 3}
    lock = SafetyInterlock(_limits(limits={"max_net_charge_nc": 0.1}))
    p = pulse_train(1, 0.001, 100.0, 8, 40.0, 100.0)
    p["width2_us"] = 101.0              # 0.04 nC short on the second phase each time
    d = _one(lock, p, t1=0.2)
    assert d.n_approved == 2 and d.reasons == {"net_charge": 6}


@pytest.mark.req("SR-11", "SR-23")
def test_late_and_window_and_estop():
    lim = _limits()
    lock = SafetyInterlock(lim)
    assert _one(lock, biphasic(0, 0.01, 40.0, 100.0), now=0.02).reasons == {"late": 1}
    for t0, t1, why in ((np.nan, 0.05, "plan_window"), (0.05, 0.0, "plan_window"), (0.0, 60.0, "plan_too_long")):
        d = lock.review(StimPlan(biphasic(0, 0.01, 40.0, 100.0), t0, t1), now_s=0.0)
        assert d.plan_refused == why and d.n_approved == 0
    lock.estop("test")
    d = _one(lock, biphasic(1, 0.01, 40.0, 100.0))
    assert d.plan_refused == "estop" and d.n_approved == 0
    lock.reset("tester")
    assert _one(lock, biphasic(1, 0.03, 40.0, 100.0), now=0.02).n_approved == 1
    kinds = [r["kind"] for r in lock.audit.recent]
    assert "estop" in kinds and "estop_reset" in kinds


@pytest.mark.req("SR-20")
def test_clamp_policy_repairs_only_what_it_may():
    lim = _limits(policy="clamp")
    lock = SafetyInterlock(lim)
    p = np.concatenate([biphasic(0, 0.010, 150.0, 300.0),      # amplitude and charge: clamped
                        biphasic(1, 0.011, 50.0, 900.0),       # width: clamped
                        biphasic(99, 0.012, 50.0, 100.0),      # unknown electrode: refused anyway
                        biphasic(3, 0.013, np.nan, 100.0)])    # NaN: refused anyway
    d = _one(lock, p)
    assert d.n_approved == 2 and d.n_clamped == 2
    assert d.reasons == {"unknown_electrode": 1, "nonfinite": 1}
    assert find_unsafe(d.approved.pulses, lim) == []
    a = d.approved.pulses
    assert np.all(a["amplitude_ua"] * a["width_us"] <= 20_000.0 + 1e-6)


@pytest.mark.req("SR-23")
def test_audit_file_records_every_decision(tmp_path):
    path = tmp_path / "run" / "stim_audit.jsonl"
    with AuditLog(path) as audit:
        lock = SafetyInterlock(_limits(), audit=audit)
        for k in range(5):
            lock.review(StimPlan(biphasic([0, 99], 0.01 + k * 0.02, 40.0, 100.0), k * 0.02, k * 0.02 + 0.02,
                                 "test", k), now_s=k * 0.02)
    records = read_audit(path)
    decisions = [r for r in records if r["kind"] == "decision"]
    assert len(decisions) == 5
    assert all(r["refused"] == 1 and r["reasons"] == {"unknown_electrode": 1} for r in decisions)
    assert all(r["limits_sha256"] == lock.limits.sha256 for r in decisions)
    assert decisions[0]["refused_pulses"][0]["electrode"] == 99



@pytest.mark.req("SR-23")
def test_read_audit_refuses_a_damaged_line_and_skips_only_a_torn_last_one(tmp_path):
    path = tmp_path / "stim_audit.jsonl"
    with AuditLog(path) as audit:
        for k in range(3):
            audit.write({"kind": "estop", "k": k})
    good = path.read_bytes()
    assert [r["k"] for r in read_audit(path)] == [0, 1, 2]
    # a crash while writing the 4th record: its line has no newline and is skipped
    path.write_bytes(good + b'{"n": 3, "kind": "dec')
    assert [r["k"] for r in read_audit(path)] == [0, 1, 2]
    lines = good.split(b"\n")
    for bad in (b'{"n": 1, "kind": "estop", "k": 1', b"garbage", b"[1, 2]", b""):
        damaged = b"\n".join([lines[0], bad, *lines[2:]])
        path.write_bytes(damaged)
        with pytest.raises(ValidationError, match="line 2 is not an audit record"):
            read_audit(path)
    # a complete (newline-ended) last line that does not parse is damage, not a torn write
    path.write_bytes(good + b"not json\n")
    with pytest.raises(ValidationError, match="line 4 "):
        read_audit(path)

def test_bad_arguments():
    lock = SafetyInterlock(_limits())
    with pytest.raises(ValidationError, match="plan must be a StimPlan"):
        lock.review(biphasic(0, 0.01, 40.0, 100.0), now_s=0.0)
    with pytest.raises(ValidationError, match="now_s must be finite"):
        lock.review(StimPlan.empty(0, 1), now_s=float("nan"))
    with pytest.raises(ValidationError, match="limits must be a SafetyLimits"):
        SafetyInterlock({"electrodes": []})


@pytest.mark.parametrize("spec, match", [
    ({"electrodes": []}, "non-empty list"),
    ({"electrodes": [{"id": 0}]}, "must give area_um2"),
    ({"electrodes": [{"id": 0, "area_um2": -5}]}, "area_um2 must be finite and > 0"),
    ({"electrodes": [{"id": 0, "area_um2": 100, "material": "gold"}]}, "material must be one of"),
    ({"electrodes": [{"ids": [5, 1], "area_um2": 100}]}, "first <= last"),
    ({"electrodes": [{"id": 0, "area_um2": 100}], "limits": {"max_amplitude_ua": float("nan")}}, "max_amplitude_ua"),
    ({"electrodes": [{"id": 0, "area_um2": 100}], "limits": {"shannon_k_max": 2.5}}, "1.85"),
    ({"electrodes": [{"id": 0, "area_um2": 100}], "limits": {"bogus": 1}}, "unknown limit"),
    ({"electrodes": [{"id": 0, "area_um2": 100}], "policy": "ignore"}, "policy must be one of"),
    ({"electrodes": [{"id": 0, "area_um2": 100}], "electrode_limits": {3: {}}}, "does not list"),
    ({"electrodes": [{"id": 0, "area_um2": 100}], "extra": 1}, "unknown key"),
])
def test_limits_file_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        SafetyLimits.from_dict({"version": 1, **spec})


def test_limits_file_round_trip_and_hash(tmp_path):
    f = tmp_path / "limits.yaml"
    f.write_text("version: 1\nparticipant: P1\nelectrodes:\n  - {ids: [0, 7], area_um2: 1500}\n"
                 "limits: {max_amplitude_ua: 80}\n")
    a = SafetyLimits.from_file(f)
    assert a.participant == "P1" and a.per_electrode["max_amplitude_ua"][3] == 80.0
    b = SafetyLimits.from_dict(a.to_dict() | {"electrode_limits": {}})
    assert a.sha256 == b.sha256
    assert a.with_policy("clamp").sha256 != a.sha256
    f.write_text("version: 1\nelectrodes: [{id: 0}]\n")
    with pytest.raises(ConfigError, match=str(f)):
        SafetyLimits.from_file(f)
