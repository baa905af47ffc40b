"""Data-set-level quality checks (completeness, consistency, diversity, independence,
de-identification, traceability) and the intended-use YAML, on Recording / RecordingSummary
objects built directly: each check with a clean case and a damaged one whose finding names the
damaged file / channel / time."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from _shared_data import SHARED_DATA, need

from cortexlink.core.errors import ConfigError
from cortexlink.quality import checks_dataset, checks_meta
from cortexlink.quality.intended_use import group_by_task, subject_of, trial_classes
from cortexlink.quality.model import DatasetContext, Event, Recording, RecordingSummary, severity_rank

EEG_DIR = SHARED_DATA / "eeg_motor_imagery"
CH = [f"C{i}" for i in range(8)]
ALL_CHECKS = checks_dataset.CHECKS + checks_meta.CHECKS


def rec(name: str, *, fs: float | None = 160.0, n: int = 16000, ch: list[str] | None = None,
        units: list | None = None, labels: tuple = ("T0", "T1", "T2") * 10, **kw) -> Recording:
    ch = list(CH if ch is None else ch)
    kw.setdefault("positions_present", True)
    kw.setdefault("subject", "01")
    kw.setdefault("device", "amp")
    kw.setdefault("provenance", {"software": "writer 1.0", "created": "2020-01-01T00:00:00"})
    events = [Event(2.0 + 3.0 * i, 1.0, lab) for i, lab in enumerate(labels)]
    return Recording(path=Path("/nonexistent") / name, name=name, kind=kw.pop("kind", "eeg"), fmt="edf",
                     fs_hz=fs, n_samples=n, channel_names=ch, channel_types=["eeg"] * len(ch),
                     units=list(units if units is not None else ["µV"] * len(ch)), events=events, **kw)


def summ(name: str, content_hash: str | None = None, fingerprint=None, **kw) -> RecordingSummary:
    return RecordingSummary(name=name, stats=None, content_hash=content_hash or hashlib.sha256(name.encode()).hexdigest(),
                            fingerprint=fingerprint, **kw)


def ctx(recs: list[Recording], summaries: dict | None = None, **kw) -> DatasetContext:
    s = {r.name: summ(r.name) for r in recs}
    s.update(summaries or {})
    return DatasetContext(root=Path("/nonexistent"), recordings=recs, summaries=s, **kw)


def run(check, c: DatasetContext):
    results = check(c)
    assert results and all(r.score is None or 0.0 <= r.score <= 1.0 for r in results)
    return results[0]


def serious(res):
    return [f for f in res.findings if severity_rank(f.severity) >= 1]


def clean_set(n: int = 4) -> list[Recording]:
    return [rec(f"S01R0{i}.edf") for i in range(n)]


# ---------------------------------------------------------------------------------------------
# every check: empty data set, clean data set

@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_empty_data_set_gives_no_score_and_no_error(check):
    res = check(ctx([]))
    assert all(r.score is None for r in res)
    assert not any(r.findings for r in res)


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_clean_data_set_gives_no_warning(check):
    recs = clean_set()
    split = {r.name: s for r, s in zip(recs, ["train", "train", "test", "test"])}
    for r, subj in zip(recs, ["01", "01", "02", "02"]):
        r.subject = subj
    sm = {r.name: summ(r.name, fingerprint=np.array([3.0 + i, 2.0, 1.0, 0.9 - 0.1 * i]))
          for i, r in enumerate(recs)}
    res = run(check, ctx(recs, sm, split=split, intended_use={"classes": ["T1", "T2"], "rest_labels": ["T0"]}))
    assert serious(res) == [], res.findings
    assert res.score is None or res.score == 1.0


# ---------------------------------------------------------------------------------------------
# completeness

@pytest.mark.req("SR-51")
def test_missing_channels_names_file_and_each_channel():
    recs = clean_set()
    recs[2] = rec("S01R02.edf", ch=[c for c in CH if c not in ("C3", "C5")])
    res = run(checks_dataset.missing_channels, ctx(recs))
    got = {(f.file, f.channel) for f in res.findings}
    assert got == {("S01R02.edf", "C3"), ("S01R02.edf", "C5")}
    assert all(f.severity == "error" for f in res.findings)
    assert res.score == pytest.approx(1 - 2 / 32)


def test_missing_channels_required_by_intended_use():
    recs = [rec("a.edf", ch=["Fc5.", "C3..", "Cz.."]), rec("b.edf", ch=["Fc5.", "Cz.."])]
    res = run(checks_dataset.missing_channels, ctx(recs, intended_use={"channels_required": ["C3", "CZ"]}))
    req = [f for f in res.findings if "intended use" in f.detail]
    assert [(f.file, f.channel) for f in req] == [("b.edf", "C3")]


def test_missing_samples_truncated_file_names_where_data_stop():
    recs = clean_set()
    recs[1] = rec("S01R01.edf", n=8000, problems=[("truncated", "file ends early")],
                  extra={"declared_n_samples": 16000})
    res = run(checks_dataset.missing_samples, ctx(recs))
    [f] = res.findings
    assert (f.file, f.severity) == ("S01R01.edf", "error")
    assert f.start_s == pytest.approx(50.0)
    assert "16000" in f.detail and "8000" in f.detail
    assert res.score == pytest.approx(0.75)


def test_missing_samples_short_recording_and_nan_run():
    recs = clean_set()
    recs[3] = rec("S01R03.edf", n=4000)
    sm = {"S01R00.edf": summ("S01R00.edf", extra={"nan_runs": [{"start_s": 12.5, "duration_s": 2.0, "channel": "C2"}]})}
    res = run(checks_dataset.missing_samples, ctx(recs, sm))
    by_file = {f.file: f for f in res.findings}
    assert by_file["S01R03.edf"].severity == "warning" and by_file["S01R03.edf"].start_s == pytest.approx(25.0)
    nan = by_file["S01R00.edf"]
    assert (nan.channel, nan.start_s, nan.severity) == ("C2", 12.5, "error")


def test_missing_samples_unreadable_file():
    recs = clean_set(3) + [rec("bad.edf", n=0, problems=[("unreadable", "not an EDF file")])]
    res = run(checks_dataset.missing_samples, ctx(recs))
    assert [(f.file, f.severity) for f in res.findings] == [("bad.edf", "error")]
    assert "not an EDF file" in res.findings[0].detail


@pytest.mark.req("SR-51")
def test_missing_annotations_no_events_and_empty_labels():
    recs = clean_set()
    recs[0] = rec("S01R00.edf", labels=())
    recs[1] = rec("S01R01.edf", labels=("T1", " ", "T2"))
    res = run(checks_dataset.missing_annotations, ctx(recs))
    by_file = {f.file: f for f in res.findings}
    assert set(by_file) == {"S01R00.edf", "S01R01.edf"}
    assert by_file["S01R00.edf"].severity == "error"        # 3 of 4 have events
    assert by_file["S01R01.edf"].start_s == pytest.approx(5.0)
    assert res.score == pytest.approx(0.5)


@pytest.mark.req("SR-51")
def test_missing_metadata_per_item_and_severity():
    recs = clean_set()
    recs[0] = rec("S01R00.edf", fs=None)
    recs[1] = rec("S01R01.edf", units=["µV"] * 7 + [None])
    recs[2] = rec("S01R02.edf", device=None)
    for r in recs:
        r.positions_present = False
    res = run(checks_dataset.missing_metadata, ctx(recs))
    sev = {(f.file, f.detail.split(":")[0]): (f.severity, f.channel) for f in res.findings}
    assert sev[("S01R00.edf", "sampling rate")] == ("error", None)
    assert sev[("S01R01.edf", "units")] == ("error", "C7")
    assert sev[("S01R02.edf", "device")] == ("warning", None)
    assert sev[(None, "channel positions")] == ("warning", None)     # missing in all: one finding
    assert res.score == pytest.approx(1 - 7 / 20)


# ---------------------------------------------------------------------------------------------
# consistency

@pytest.mark.req("SR-51")
def test_sampling_rate_names_file_and_both_rates():
    recs = clean_set()
    recs[2] = rec("S01R02.edf", fs=128.0, n=12800)
    res = run(checks_dataset.sampling_rate, ctx(recs))
    [f] = res.findings
    assert (f.file, f.severity) == ("S01R02.edf", "error")
    assert "128 Hz" in f.detail and "160 Hz" in f.detail


@pytest.mark.req("SR-51")
def test_units_mixed_across_files():
    recs = clean_set()
    recs[1] = rec("S01R01.edf", units=["V"] * 8)
    recs[2] = rec("S01R02.edf", units=["uV"] * 8)              # an alias of µV: consistent
    res = run(checks_dataset.units, ctx(recs))
    assert [(f.file, f.severity) for f in res.findings] == [("S01R01.edf", "warning")]
    assert "V" in res.findings[0].detail and "µV" in res.findings[0].detail


@pytest.mark.req("SR-51")
def test_channel_set_names_and_order():
    recs = clean_set()
    recs[1] = rec("S01R01.edf", ch=CH[:7] + ["X9"])
    recs[2] = rec("S01R02.edf", ch=[CH[1], CH[0]] + CH[2:])
    res = run(checks_dataset.channel_set, ctx(recs))
    by_file = {f.file: f for f in res.findings}
    assert by_file["S01R01.edf"].severity == "error" and "C7" in by_file["S01R01.edf"].detail \
        and "X9" in by_file["S01R01.edf"].detail
    assert by_file["S01R02.edf"].severity == "warning" and by_file["S01R02.edf"].channel == "C1"


@pytest.mark.req("SR-51")
def test_label_vocabulary_variants_and_missing_labels():
    recs = clean_set()
    recs[1] = rec("S01R01.edf", labels=("T0", "t1 ", "T2") * 10)
    recs[2] = rec("S01R02.edf", labels=("T0", "T1") * 10)
    res = run(checks_dataset.label_vocabulary, ctx(recs))
    by_file = {(f.file, f.severity): f for f in res.findings}
    assert "'t1 '" in by_file[("S01R01.edf", "error")].detail
    assert by_file[("S01R01.edf", "error")].start_s == pytest.approx(5.0)
    assert "'T2'" in by_file[("S01R02.edf", "warning")].detail
    assert {f.file for f in res.findings} == {"S01R01.edf", "S01R02.edf"}


def test_label_vocabulary_per_task():
    recs = [rec("a_run1.edf"), rec("a_run2.edf"), rec("b_run1.edf", labels=("T0", "T3") * 10),
            rec("b_run2.edf", labels=("T0", "T3") * 10)]
    use = {"tasks": {"a": ["a_*"], "b": ["b_*"]}}
    assert run(checks_dataset.label_vocabulary, ctx(recs, intended_use=use)).findings == []
    assert run(checks_dataset.label_vocabulary, ctx(recs)).findings        # one task: T3 vs T1/T2


def test_duplicates_by_content_hash_and_by_file_bytes():
    recs = clean_set()
    sm = {"S01R00.edf": summ("S01R00.edf", "h" * 64), "S01R03.edf": summ("S01R03.edf", "h" * 64)}
    recs[1].provenance["sha256"] = "a" * 64
    recs[2].provenance["sha256"] = "a" * 64
    res = run(checks_dataset.duplicates, ctx(recs, sm))
    assert {f.file for f in res.findings} == {r.name for r in recs}
    f0 = next(f for f in res.findings if f.file == "S01R00.edf")
    assert "S01R03.edf" in f0.detail and f0.severity == "error"
    assert sorted(res.metrics["groups"]) == [["S01R00.edf", "S01R03.edf"], ["S01R01.edf", "S01R02.edf"]]
    assert res.score == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# diversity

@pytest.mark.req("SR-51")
def test_class_balance_imbalanced_and_min_trials():
    recs = [rec("a.edf", labels=("T1",) * 30 + ("T2",) * 10 + ("T0",) * 50)]
    res = run(checks_meta.class_balance, ctx(recs, intended_use={"rest_labels": ["T0"], "min_trials_per_class": 20}))
    assert res.metrics["per_task"]["all"]["counts"] == {"T1": 30, "T2": 10}
    assert res.metrics["per_task"]["all"]["imbalance_ratio"] == pytest.approx(3.0)
    assert res.score == pytest.approx(1 / 3)
    assert len(serious(res)) == 2 and all("T2" in f.detail for f in res.findings)


def test_trial_classes_default_and_tasks():
    recs = [rec("x/a.edf", labels=("T0",) * 12 + ("T1",) * 10 + ("T9",) * 3), rec("x/b.edf", labels=())]
    assert trial_classes(recs, {}) == ["T0", "T1"]
    assert trial_classes(recs, {"rest_labels": ["T0"]}) == ["T1"]
    assert {k: [r.name for r in v] for k, v in group_by_task(recs, {"tasks": {"t": ["a.*"]}}).items()} == \
        {"t": ["x/a.edf"]}


def test_subjects_sessions_counts_and_min_subjects():
    recs = clean_set()
    for r, s, ses in zip(recs, ["01", "01", "02", "03"], ["1", "2", "1", "1"]):
        r.subject, r.session = s, ses
    res = run(checks_meta.subjects_sessions, ctx(recs, intended_use={"min_subjects": 5}))
    assert (res.metrics["n_subjects"], res.metrics["n_sessions"], res.metrics["n_devices"]) == (3, 4, 1)
    assert res.score == pytest.approx(0.6)
    assert serious(res)[0].severity == "warning" and "5" in serious(res)[0].detail


def test_coverage_claims():
    recs = clean_set()
    recs[0].fs_hz = 100.0
    recs[1].extra["sex"] = "F"
    use = {"sampling_rate_hz_min": 128, "channels_required": ["C1"], "sexes": ["F", "M"], "sites": ["A"]}
    res = run(checks_meta.coverage, ctx(recs, intended_use=use))
    assert res.metrics["claims"] == {"sampling_rate_hz_min": False, "channels_required C1": True,
                                     "sexes": False, "sites": False}
    assert res.score == pytest.approx(0.25)
    assert any(f.file == "S01R00.edf" and f.severity == "error" for f in res.findings)
    assert run(checks_meta.coverage, ctx(recs)).score is None


# ---------------------------------------------------------------------------------------------
# independence

def test_split_leakage_names_subject_and_files_in_each_split():
    recs = [rec("S001R06.edf", subject=None), rec("S001R10.edf", subject=None), rec("S001R14.edf", subject=None),
            rec("S002R06.edf", subject=None)]
    split = {"S001R06.edf": "train", "S001R10.edf": "train", "S001R14.edf": "test", "S002R06.edf": "test"}
    res = run(checks_meta.split_leakage, ctx(recs, split=split))
    assert {f.file for f in res.findings} == {"S001R06.edf", "S001R10.edf", "S001R14.edf"}
    d = res.findings[0].detail
    assert "subject 001" in d and "train: S001R06.edf, S001R10.edf" in d and "test: S001R14.edf" in d
    assert res.score == pytest.approx(0.25)
    assert subject_of(recs[0]) == ("001", True)


def test_split_leakage_by_subject_key_and_none_without_split():
    recs = clean_set()
    for r, s in zip(recs, ["01", "01", "02", "02"]):
        r.subject = s
    split = {"subject:01": "train", "subject:02": "test", "S01R01.edf": "test"}   # the name wins
    res = run(checks_meta.split_leakage, ctx(recs, split=split))
    assert {f.file for f in serious(res)} == {"S01R00.edf", "S01R01.edf"}
    assert run(checks_meta.split_leakage, ctx(recs)).score is None


def test_near_duplicates_across_splits():
    recs = clean_set()
    for r, s in zip(recs, ["01", "02", "03", "04"]):
        r.subject = s
    base = np.r_[np.log(np.linspace(10, 40, 8)), np.full(8, 0.9)]
    rng = np.random.default_rng(0)
    sm = {"S01R00.edf": summ("S01R00.edf", fingerprint=base),
          "S01R01.edf": summ("S01R01.edf", fingerprint=base + rng.normal(0, 1e-5, base.size)),  # near copy
          # another recording of the same kind: correlated 0.9999 but 1.2 % away (as two EEGMMIDB runs)
          "S01R02.edf": summ("S01R02.edf", fingerprint=base * (1 + 0.012 * np.sign(np.sin(np.arange(16))))),
          "S01R03.edf": summ("S01R03.edf", fingerprint=base[::-1].copy())}
    split = {"S01R00.edf": "train", "S01R01.edf": "test", "S01R02.edf": "test", "S01R03.edf": "test"}
    res = run(checks_meta.near_duplicates, ctx(recs, sm, split=split))
    [f] = res.findings
    assert "S01R00.edf" in f.detail and "S01R01.edf" in f.detail and f.severity == "error"
    assert res.score == pytest.approx(0.5)
    # same content hash across splits, and a trial copied from one split into the other
    ep = np.arange(2 * 8 * 10, dtype=float).reshape(2, 8, 10)
    sm2 = {"S01R00.edf": summ("S01R00.edf", "z" * 64), "S01R01.edf": summ("S01R01.edf", "z" * 64),
           "S01R02.edf": summ("S01R02.edf", epochs={"data": ep, "onsets_s": [2.0, 5.0]}),
           "S01R03.edf": summ("S01R03.edf", epochs={"data": np.stack([ep[1] + 1, ep[1]]), "onsets_s": [3.0, 9.0]})}
    split2 = {"S01R00.edf": "train", "S01R01.edf": "test", "S01R02.edf": "train", "S01R03.edf": "test"}
    res2 = run(checks_meta.near_duplicates, ctx(recs, sm2, split=split2))
    assert len(res2.findings) == 2
    trial = next(f for f in res2.findings if "trial" in f.detail)
    assert trial.file == "S01R03.edf" and trial.start_s == pytest.approx(9.0) and "S01R02.edf" in trial.detail
    assert run(checks_meta.near_duplicates, ctx(recs, sm)).score is None


# ---------------------------------------------------------------------------------------------
# de-identification

IDENTIFIED = {"subject_info.his_id": "MCH-0234567", "subject_info.sex": "1", "subject_info.first_name": "John",
              "subject_info.last_name": "Smith", "subject_info.birthday": "1951-08-02",
              "edf.patient": "MCH-0234567 M 02-AUG-1951 John_Smith",
              "edf.recording": "Startdate 12-AUG-2009 X X BCI2000"}
ANONYMOUS = {"subject_info.his_id": "X", "subject_info.sex": "0", "subject_info.last_name": "X",
             "edf.patient": "X X X X", "edf.recording": "Startdate 12-AUG-2009 X X BCI2000"}


@pytest.mark.req("SR-61")
def test_identifying_text_patient_name_and_birth_date_masked():
    recs = [rec("S001R03.edf", header_text=dict(ANONYMOUS), provenance={"meas_date": "2009-08-12T16:15:00+00:00"}),
            rec("S001R04.edf", header_text=dict(IDENTIFIED), provenance={"meas_date": "2009-08-12T16:15:00+00:00"})]
    res = run(checks_meta.identifying_text, ctx(recs))
    assert {f.file for f in res.findings} == {"S001R04.edf"}
    assert all(f.severity == "error" for f in res.findings)
    text = " ".join(f.detail for f in res.findings)
    for field in ("subject_info.first_name", "subject_info.last_name", "subject_info.birthday",
                  "subject_info.his_id", "edf.patient (name)", "edf.patient (birth date)"):
        assert field in text, field
    assert "J*** S****" in text
    for secret in ("John", "Smith", "1951", "0234567"):
        assert secret not in text
    assert "2009" not in text                          # the measurement date is not a birth date
    assert res.score == pytest.approx(0.5)


@pytest.mark.req("SR-61")
def test_identifying_text_free_text_and_file_name():
    recs = [rec("a.edf", header_text={"description": "contact jane.doe@example.org, +44 20 7946 0958",
                                      "bids.participants.tsv": "participant_id\tage\tsex\nsub-01\t34\tF",
                                      "bids.sub-01_eeg.json": json.dumps({"TaskName": "motor imagery",
                                                                          "InstitutionAddress": "Main St 1",
                                                                          "Authors": ["Ada Lovelace"]})}),
            rec("jane.doe@example.org_run1.edf"), rec("sub-01_ses-20200101_eeg.edf"),
            rec("b.nwb", header_text={"subject.subject_id": "P01", "subject.description": "Healthy Volunteer",
                                      "subject.date_of_birth": "1980-03-04T00:00:00", "subject.sex": "F",
                                      "session_start_time": "2021-05-06T10:00:00", "notes": "recorded 2021-05-06"}),
            rec("c.edf", header_text={"edf.patient": "Smith, John", "edf.recording": "ward 3, 2019-01-02"},
                provenance={"meas_date": "2019-01-02T08:00:00"})]
    res = run(checks_meta.identifying_text, ctx(recs))
    got = sorted((f.file, f.detail.split(" holds ")[1].split(" (")[0]) for f in res.findings)
    assert got == [("a.edf", "a phone number"), ("a.edf", "an e-mail address"), ("b.nwb", "a birth date"),
                   ("c.edf", "a personal name"), ("jane.doe@example.org_run1.edf", "an e-mail address")]
    assert "S****, J***" in " ".join(f.detail for f in res.findings)


# ---------------------------------------------------------------------------------------------
# traceability

def test_provenance_missing_items():
    recs = clean_set()
    recs[1].provenance = {"created": "2020-01-01"}
    recs[2].provenance = {}
    res = run(checks_meta.provenance, ctx(recs))
    assert sorted((f.file, f.detail.split(":")[0]) for f in res.findings) == [
        ("S01R01.edf", "software"), ("S01R02.edf", "creation date"), ("S01R02.edf", "software")]
    assert all(f.severity == "warning" for f in res.findings)
    assert res.score == pytest.approx(5 / 8)


def test_checksums_computed_streaming_and_declared_mismatch(tmp_path):
    data = np.random.default_rng(1).bytes(3 * (1 << 20) + 123)        # more than one 1 MiB block
    for n in ("a.edf", "b.edf"):
        (tmp_path / n).write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{want}  a.edf\n{'0' * 64}  b.edf\n")
    recs = [rec(n, provenance={}) for n in ("a.edf", "b.edf")]
    for r in recs:
        r.path = tmp_path / r.name
    c = ctx(recs)
    c.root = tmp_path
    res = run(checks_meta.checksums, c)
    assert res.metrics["sha256"] == {"a.edf": want, "b.edf": want}
    assert [(f.file, f.severity) for f in res.findings] == [("b.edf", "error")]
    assert res.score == pytest.approx(0.5)


def test_checksums_session_manifest_verified(tmp_path):
    sess = tmp_path / "sess1"
    (sess / "streams").mkdir(parents=True)
    (sess / "streams" / "raw.clog").write_bytes(b"abc" * 1000)
    (sess / "streams" / "tx.clog").write_bytes(b"xyz")
    good = hashlib.sha256(b"abc" * 1000).hexdigest()
    (sess / "manifest.json").write_text(json.dumps({"files": {
        "streams/raw.clog": {"bytes": 3000, "sha256": good},
        "streams/tx.clog": {"bytes": 3, "sha256": "1" * 64},
        "streams/gone.clog": {"bytes": 3, "sha256": "2" * 64}}}))
    r = rec("sess1", kind="implant")
    r.path = sess
    res = run(checks_meta.checksums, ctx([r]))
    assert sorted(f.detail.split(":")[0] for f in res.findings) == ["streams/gone.clog", "streams/tx.clog"]
    assert all(f.file == "sess1" and f.severity == "error" for f in res.findings)
    assert res.metrics["sha256"]["sess1"]["streams/raw.clog"] == good
    assert res.score == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------
# intended use

def test_load_intended_use_valid(tmp_path):
    p = tmp_path / "use.yaml"
    p.write_text("intended_use: imagined fists vs feet\nclasses: [T1, T2]\nrest_labels: T0\n"
                 "tasks: {imagery: ['S*R06.edf', 'S*R10.edf']}\nwindow_s: [0.5, 2.5]\nmin_trials_per_class: 20\n"
                 "sampling_rate_hz_min: 128\nsexes: [female, M]\nage_range: [18, 65]\nsubjects: [1, 2]\n")
    use = checks_meta.load_intended_use(p)
    assert use["classes"] == ["T1", "T2"] and use["rest_labels"] == ["T0"] and use["sexes"] == ["F", "M"]
    assert use["tasks"] == {"imagery": ["S*R06.edf", "S*R10.edf"]} and use["subjects"] == ["1", "2"]
    assert use["window_s"] == [0.5, 2.5] and use["sampling_rate_hz_min"] == 128.0
    (tmp_path / "empty.yaml").write_text("")
    assert checks_meta.load_intended_use(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize("text, words", [
    ("classes: [T1, T2]\nclases: [T3]\n", ["'clases'", "allowed keys", "classes"]),
    ("window_s: [2.5, 0.5]\n", ["'window_s'", "low < high", "[2.5, 0.5]"]),
    ("min_subjects: 0\n", ["'min_subjects'", "whole number >= 1", "0"]),
    ("min_trials_per_class: 2.5\n", ["'min_trials_per_class'", "whole number", "2.5"]),
    ("sampling_rate_hz_min: fast\n", ["'sampling_rate_hz_min'", "number > 0", "'fast'"]),
    ("sexes: [F, X]\n", ["'sexes'", "F, M or O", "'X'"]),
    ("classes: []\n", ["'classes'", "non-empty list", "[]"]),
    ("classes: [T1, T1]\n", ["'classes'", "without repeats"]),
    ("tasks: {a: 3}\n", ["'tasks.a'", "glob patterns", "3"]),
    ("classes: [T1]\nrest_labels: [T1]\n", ["'T1'", "both 'classes' and 'rest_labels'"]),
    ("- T1\n- T2\n", ["must be a mapping", "['T1', 'T2']"]),
    ("classes: [T1\n", ["not valid YAML"]),
])
def test_load_intended_use_errors_name_key_allowed_and_received(tmp_path, text, words):
    p = tmp_path / "use.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        checks_meta.load_intended_use(p)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))
    with pytest.raises(ConfigError, match="cannot be read"):
        checks_meta.load_intended_use(tmp_path / "missing.yaml")


def test_a_bad_intended_use_in_the_context_is_refused_other_options_ignored():
    with pytest.raises(ConfigError, match="'min_subjects'"):
        checks_meta.subjects_sessions(ctx(clean_set(), intended_use={"min_subjects": "many"}))
    res = checks_meta.subjects_sessions(ctx(clean_set(), intended_use={"min_subjects": 2, "n_permutations": 10}))
    assert res[0].score == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# the real EEG folder

def test_real_eeg_headers_are_not_identifying():
    import mne

    need(EEG_DIR, "the real EEG data", glob="*.edf")
    recs = []
    for path in sorted(EEG_DIR.glob("*.edf")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
        si = raw.info["subject_info"] or {}
        assert si.get("his_id") == "X" and si.get("last_name") == "X"
        header = {f"subject_info.{k}": str(v) for k, v in si.items()}
        with open(path, "rb") as f:
            head = f.read(168).decode("ascii")
        header["edf.patient"], header["edf.recording"] = head[8:88].strip(), head[88:168].strip()
        assert header["edf.patient"] == "X X X X" and header["edf.recording"].startswith("Startdate 12-AUG-2009")
        recs.append(rec(path.name, subject=None, header_text=header,
                        provenance={"meas_date": raw.info["meas_date"].isoformat()}))
    assert len(recs) == 12
    res = run(checks_meta.identifying_text, ctx(recs))
    assert res.findings == [] and res.score == 1.0


def test_real_eeg_near_duplicate_found_and_distinct_runs_not():
    """Scanned fingerprints of two real runs of one subject are not near-duplicates; a copy of a
    run with 0.05 µV of noise added (another hash) is, across splits."""
    import mne

    need(EEG_DIR, "the real EEG data", glob="*.edf")
    from cortexlink.quality.scan import summarise

    def eeg(path: Path, name: str, noise_uv: float = 0.0) -> Recording:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
        data = raw.get_data() * 1e6
        if noise_uv:
            data = data + np.random.default_rng(0).normal(0, noise_uv, data.shape)
        r = rec(name, fs=raw.info["sfreq"], n=data.shape[1], ch=raw.ch_names, subject=name[:4])
        r.reader = lambda a, b: data[:, a:b]
        return r

    recs = [eeg(EEG_DIR / "S001R06.edf", "S001R06.edf"), eeg(EEG_DIR / "S001R10.edf", "S009R10.edf"),
            eeg(EEG_DIR / "S001R06.edf", "S007R06.edf", noise_uv=0.05)]
    sm = {r.name: summarise(r) for r in recs}
    assert len({s.content_hash for s in sm.values()}) == 3
    split = {"S001R06.edf": "train", "S009R10.edf": "test", "S007R06.edf": "test"}
    res = run(checks_meta.near_duplicates, ctx(recs, sm, split=split))
    assert [(f.file, f.severity) for f in res.findings] == [("S001R06.edf", "error")]
    assert "S007R06.edf" in res.findings[0].detail and "S009R10.edf" not in res.findings[0].detail
    assert run(checks_dataset.duplicates, ctx(recs, sm)).findings == []


def test_real_eeg_checksums_verified_against_the_folder_above(tmp_path):
    need(EEG_DIR / ".." / "SHA256SUMS", "the real EEG data's SHA256SUMS")
    recs = []
    for path in sorted(EEG_DIR.glob("*.edf")):
        r = rec(path.name, provenance={})
        r.path = path
        recs.append(r)
    c = ctx(recs)
    c.root = EEG_DIR
    res = run(checks_meta.checksums, c)
    assert (res.metrics["n_checked"], res.metrics["n_declared"], res.findings) == (12, 12, [])
    # the same bytes under a list that declares another checksum
    (tmp_path / "d").mkdir()
    copy = tmp_path / "d" / "S001R03.edf"
    copy.write_bytes((EEG_DIR / "S001R03.edf").read_bytes())
    (tmp_path / "d" / "SHA256SUMS").write_text(f"{'f' * 64}  ./S001R03.edf\n")
    r = rec("S001R03.edf", provenance={})
    r.path = copy
    c2 = ctx([r])
    c2.root = tmp_path / "d"
    [f] = run(checks_meta.checksums, c2).findings
    assert f.file == "S001R03.edf" and f.severity == "error" and "SHA256SUMS" in f.detail
