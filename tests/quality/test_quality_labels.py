"""Label checks: events outside / overlapping / implausibly timed, and labels the signal contradicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from _eeg_recordings import imagined_fists_feet, synthetic_mi
from cortexlink.core.errors import ConfigError
from cortexlink.quality import checks_labels as cl
from cortexlink.quality.epochs import extract_epochs, group_epochs, groups, task_of, trial_labels
from cortexlink.quality.model import DatasetContext, Event, Recording, severity_rank


def _rec(name="a.edf", events=(), n_samples=1600, fs_hz=160.0, subject="1", data=None, types=None):
    """A small synthetic recording: 3 EEG channels + 1 stim channel, reads counted in rec.extra."""
    types = types or ["eeg", "eeg", "eeg", "stim"]
    rng = np.random.default_rng(0)
    arr = data if data is not None else rng.normal(0, 10, (len(types), n_samples))
    rec = Recording(path=Path(name), name=name, kind="eeg", fmt="edf", fs_hz=fs_hz, n_samples=n_samples,
                    channel_names=[f"C{i}" for i in range(len(types))], channel_types=list(types),
                    units=["uV"] * len(types), subject=subject, events=list(events))
    rec.extra["reads"] = []

    def reader(a, b):
        rec.extra["reads"].append((a, b))
        return arr[:, a:b]

    rec.reader = reader
    return rec


def _ctx(recs, **iu):
    return DatasetContext(root=Path("."), recordings=list(recs), summaries={}, intended_use=dict(iu))


def _warn_plus(findings, check=None):
    return [f for f in findings if severity_rank(f.severity) >= 1 and (check is None or f.check == check)]


# ------------------------------------------------------------------------------------------ epochs
def test_trial_labels_default_excludes_rest_and_rare_labels():
    ev = [Event(i, 1, "T0") for i in range(20)] + [Event(i, 1, "T1") for i in range(12)] + \
        [Event(i, 1, "T2") for i in range(10)] + [Event(i, 1, "boundary") for i in range(3)]
    recs = [_rec(events=ev)]
    assert trial_labels(recs) == ["T1", "T2"]
    assert trial_labels(recs, {"rest_labels": []}) == ["T0", "T1", "T2"]
    assert trial_labels(recs, {"classes": ["T2", "T1"]}) == ["T1", "T2"]
    with pytest.raises(ConfigError, match="classes"):
        trial_labels(recs, {"classes": "T1"})


def test_tasks_group_files_by_glob_per_subject():
    recs = [_rec("s1/R06.edf", [Event(1, 1, "T1")]), _rec("s1/R10.edf", [Event(1, 1, "T1")]),
            _rec("s1/R03.edf", [Event(1, 1, "T1")]), _rec("s2/R06.edf", [Event(1, 1, "T1")], subject="2")]
    iu = {"tasks": {"imagery": ["*R06.edf", "R10.edf"], "real": ["s1/R03*"]}}
    assert [task_of(r, iu) for r in recs] == ["imagery", "imagery", "real", "imagery"]
    g = groups(_ctx(recs, **iu))
    assert sorted(g) == [("1", "imagery"), ("1", "real"), ("2", "imagery")]
    assert [r.name for r in g[("1", "imagery")]] == ["s1/R06.edf", "s1/R10.edf"]
    assert task_of(recs[2], {"tasks": {"imagery": ["*R06*"]}}) is None
    assert set(groups(_ctx(recs))) == {("1", "all"), ("2", "all")}


def test_extract_epochs_reads_only_trial_windows_eeg_channels():
    fs = 160.0
    data = np.tile(np.arange(3200, dtype=float), (4, 1))
    data[3] = 99.0                                                   # stim channel
    ev = [Event(2.0, 4, "T1"), Event(8.0, 4, "T2"), Event(15.0, 4, "T0"), Event(19.5, 4, "T1")]
    rec = _rec(events=ev, n_samples=3200, data=data)
    ep = extract_epochs(rec, ["T1", "T2"], (0.5, 2.5))
    assert ep["X"].dtype == np.float32 and ep["X"].shape == (2, 3, 320)   # last T1 runs past the end
    assert list(ep["y"]) == ["T1", "T2"] and ep["n_dropped"] == 1 and ep["file"] == "a.edf"
    assert ep["channels"] == ["C0", "C1", "C2"]
    np.testing.assert_array_equal(ep["onsets_s"], [2.0, 8.0])
    assert ep["X"][0, 0, 0] == pytest.approx(2.5 * fs) and ep["X"][1, 1, 0] == pytest.approx(8.5 * fs)
    assert sum(b - a for a, b in rec.extra["reads"]) == 2 * 320            # never the whole file
    rec.extra["reads"].clear()
    bp = extract_epochs(rec, ["T1", "T2"], (0.5, 2.5), band_hz=(7, 30), margin_s=1.0)
    assert bp["X"].shape == (2, 3, 320)
    assert sum(b - a for a, b in rec.extra["reads"]) == 2 * (320 + 2 * 160)
    with pytest.raises(ConfigError, match="band_hz"):
        extract_epochs(rec, ["T1"], band_hz=(30, 7))
    with pytest.raises(ConfigError, match="window_s"):
        extract_epochs(rec, ["T1"], (2.5, 0.5))


def test_band_pass_keeps_mu_and_removes_slow_drift():
    fs, n = 160.0, 3200
    t = np.arange(n) / fs
    sig = 10 * np.sin(2 * np.pi * 10 * t) + 200 * np.sin(2 * np.pi * 0.3 * t)
    rec = _rec(events=[Event(5.0, 4, "T1")], n_samples=n, data=np.tile(sig, (4, 1)))
    x = extract_epochs(rec, ["T1"], (0.5, 2.5), band_hz=(7, 30))["X"][0, 0]
    ref = 10 * np.sin(2 * np.pi * 10 * t[int(5.5 * fs):int(7.5 * fs)])
    assert np.sqrt(np.mean((x - ref) ** 2)) < 1.0                          # 10 Hz kept, 0.3 Hz drift gone


# ---------------------------------------------------------------------------------- event checks
@pytest.mark.req("SR-51")
def test_event_bounds_names_each_event_outside_with_start():
    ev = [Event(1.0, 1, "T1"), Event(-2.0, 1, "T2"), Event(12.0, 1, "T1"), Event(9.5, 1.0, "T2")]
    res = cl.event_bounds(_ctx([_rec(events=ev)]))[0]                 # 1600 samples = 10 s
    bad = {f.start_s: f for f in res.findings}
    assert set(bad) == {-2.0, 12.0, 9.5}
    assert all(f.severity == "error" and f.file == "a.edf" and f.characteristic == "accuracy"
               for f in res.findings)
    assert "after the recording's end" in bad[12.0].detail and "before the recording" in bad[-2.0].detail
    assert res.score == pytest.approx(0.25)


@pytest.mark.req("SR-51")
def test_event_overlap_same_onset_is_error_partial_is_warning():
    ev = [Event(1.0, 2, "T1"), Event(1.0, 2, "T2"), Event(5.0, 2, "T1"), Event(6.0, 2, "T2"),
          Event(3.0, 1, "T0")] + [Event(20 + i, 0.5, "T1" if i % 2 else "T2") for i in range(18)]
    res = cl.event_overlap(_ctx([_rec(events=ev, n_samples=16000)]))[0]
    sev = {f.start_s: f.severity for f in res.findings}
    assert sev == {1.0: "error", 6.0: "warning"}


@pytest.mark.req("SR-51")
def test_event_timing_flags_negative_zero_short_and_crowded_trials():
    ev = [Event(10.0 * i, 4.0, "T1" if i % 2 else "T2") for i in range(12)]
    ev[3] = Event(30.0, -1.0, "T1")
    ev[5] = Event(50.0, 0.0, "T1")
    ev[7] = Event(70.0, 1.0, "T1")
    ev.append(Event(71.0, 4.0, "T2"))
    res = cl.event_timing(_ctx([_rec(events=ev, n_samples=160 * 130)], classes=["T1", "T2"]))[0]
    sev = {f.start_s: f.severity for f in res.findings}
    assert sev == {30.0: "error", 50.0: "warning", 70.0: "warning", 71.0: "warning"}
    implant = dataclasses.replace(_rec(events=ev, n_samples=160 * 130), kind="implant")
    sev = {f.start_s: f.severity for f in cl.event_timing(_ctx([implant], classes=["T1", "T2"]))[0].findings}
    assert sev == {30.0: "error", 50.0: "warning", 71.0: "warning"}         # no analysis window there
    markers = [Event(10.0 * i, 0.0, "T1" if i % 2 else "T2") for i in range(12)]
    assert cl.event_timing(_ctx([_rec(events=markers, n_samples=160 * 130)], classes=["T1", "T2"]))[0].findings == []


# --------------------------------------------------------------------------------- real EEG data
@pytest.fixture(scope="module")
def imagery():
    return imagined_fists_feet()


IU = {"classes": ["T1", "T2"], "rest_labels": ["T0"], "window_s": [0.5, 2.5]}


def _flip(rec: Recording, fraction: float = 0.2, seed: int = 0) -> tuple[Recording, list[float]]:
    """``fraction`` of the recording's T1/T2 labels swapped (the choice _damage.flip_labels makes)."""
    idx = [i for i, e in enumerate(rec.events) if e.label in ("T1", "T2")]
    n = max(1, int(round(fraction * len(idx))))
    flipped = sorted(int(i) for i in np.random.default_rng(seed).choice(idx, size=n, replace=False))
    swap = {"T1": "T2", "T2": "T1"}
    events = [Event(e.onset_s, e.duration_s, swap[e.label]) if i in flipped else e
              for i, e in enumerate(rec.events)]
    return dataclasses.replace(rec, events=events), [rec.events[i].onset_s for i in flipped]


def test_real_imagery_runs_are_clean_of_label_findings(imagery):
    ctx = _ctx(imagery, **IU)
    for check in cl.CHECKS:
        res = check(ctx)[0]
        assert _warn_plus(res.findings) == [], (res.check, res.findings)
        assert res.score is not None and res.score > 0.9
    g = group_epochs(ctx)[("S001", "all")]
    assert g["C"].shape == (45, 64, 64) and sorted(set(g["y"])) == ["T1", "T2"]


@pytest.mark.req("SR-51")
@pytest.mark.parametrize("target", [0, 2])
def test_flipped_labels_in_one_file_are_an_error_naming_it(imagery, target):
    recs = list(imagery)
    recs[target], onsets = _flip(recs[target])
    res = cl.label_disagreement(_ctx(recs, **IU))[0]
    bad = _warn_plus(res.findings)
    assert [(f.file, f.severity) for f in bad] == [(recs[target].name, "error")]
    trials = {f.start_s for f in res.findings if f.severity == "info" and f.file == recs[target].name}
    assert len(trials & set(onsets)) >= 2                                 # the flipped trials are listed
    row = next(r for r in res.metrics["groups"]["S001/all"]["files"] if r["file"] == recs[target].name)
    assert row["n_disagree"] >= 3 and row["p_value"] < cl.P_ERROR


@pytest.mark.req("SR-51")
def test_event_moved_past_the_end_is_caught_with_its_start(imagery):
    rec = imagery[0]
    moved = rec.duration_s + 10.0
    events = list(rec.events)
    events[-1] = Event(moved, events[-1].duration_s, events[-1].label)
    res = cl.event_bounds(_ctx([dataclasses.replace(rec, events=events)] + list(imagery[1:]), **IU))[0]
    assert [(f.file, f.start_s, f.severity) for f in res.findings] == [(rec.name, moved, "error")]


# ------------------------------------------------------------------------- synthetic label damage
@pytest.mark.req("SR-51")
def test_synthetic_flipped_file_is_an_error_and_a_class_only_one_file_has_is_not_judged():
    recs = [synthetic_mi(f"r{i}.edf", i) for i in range(3)]
    clean = cl.label_disagreement(_ctx(recs))[0]
    assert _warn_plus(clean.findings) == [] and clean.score == pytest.approx(1.0)
    flipped, onsets = _flip(recs[1])
    res = cl.label_disagreement(_ctx([recs[0], flipped, recs[2]]))[0]
    assert [(f.file, f.severity) for f in _warn_plus(res.findings)] == [("r1.edf", "error")]
    assert {f.start_s for f in res.findings if f.severity == "info"} == set(onsets)
    odd = [recs[0], recs[1], synthetic_mi("r2.edf", 2, extra_label="T3")]      # T3 only in r2: never learned
    res = cl.label_disagreement(_ctx(odd))[0]
    assert _warn_plus(res.findings) == []
    row = next(r for r in res.metrics["groups"]["1/all"]["files"] if r["file"] == "r2.edf")
    assert row["n_trials"] == 20 and row["n_disagree"] == 0


def test_two_runs_of_fifteen_trials_are_too_few_to_judge_a_file(imagery):
    """R10 and R14 alone: each judged by a model trained on the other's 15 trials -- not judged."""
    res = cl.label_disagreement(_ctx(imagery[1:], **IU))[0]
    assert _warn_plus(res.findings) == []
    assert any(f.file is None and "too few to judge" in f.detail for f in res.findings)
    assert all(r["severity"] is None for r in res.metrics["groups"]["S001/all"]["files"])
