"""quality.sources: opening EEG (EDF, BrainVision, FIF, BIDS), session folders and NWB files lazily;
unreadable files as findings; split files."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from _shared_data import need

from cortexlink.core.errors import ConfigError
from cortexlink.quality.model import Recording
from cortexlink.quality.sources import describe, load_split, open_dataset

EEG = "eeg_motor_imagery"


def _edf(shared_data: Path, name: str = "S001R04.edf") -> Path:
    return need(shared_data / EEG / name, "an EEGMMIDB run")


# ------------------------------------------------------------------------------------------
# real EEG


def test_real_eeg_folder_opens_lazily_in_microvolts(shared_data):
    folder = need(shared_data / EEG, "the EEGMMIDB recordings")
    recs, findings = open_dataset(folder)
    assert findings == []                     # the .edf.event sidecars and README are not recordings
    assert [r.name for r in recs] == sorted(f"S001R{k:02d}.edf" for k in range(3, 15))
    for r in recs:
        assert (r.kind, r.fmt, r.fs_hz, r.n_channels) == ("eeg", "edf", 160.0, 64)
        assert set(r.channel_types) == {"eeg"} and r.units[0] == "µV"
        assert {e.label for e in r.events} == {"T0", "T1", "T2"}
        assert all(0 <= e.onset_s < r.duration_s for e in r.events)
        assert r.positions_present is False               # the files carry no montage
        assert r.header_text["edf.patient"] == "X X X X"  # EDF+ "unknown" in every subfield
        assert r.subject is None and r.device == "BCI2000"
        assert r.problems == []
    r = recs[3]                                           # S001R06: imagined fists / feet
    x = r.read(0, 1600)
    assert x.shape == (64, 1600) and x.dtype == np.float64
    assert 5.0 < float(np.std(x[10])) < 500.0             # µV, not volts
    blocks = list(r.iter_blocks(10.0))
    assert sum(b.shape[1] for _, b in blocks) == r.n_samples
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks], axis=1)[:, :1600], x)
    digest = hashlib.sha256(r.path.read_bytes()).hexdigest()
    assert r.provenance["sha256"] == digest and r.provenance["meas_date"].startswith("2009-08-12")
    d = describe(r)
    assert d["n_events"] == len(r.events) and json.dumps(d)


def test_truncated_edf_is_a_problem_with_the_declared_length(shared_data, tmp_path):
    src = _edf(shared_data)
    data = src.read_bytes()
    dst = tmp_path / "cut.edf"
    dst.write_bytes(data[: len(data) * 6 // 10 + 123])   # mid-record: a torn last record too
    (r,), findings = open_dataset(dst)
    assert findings == []
    kinds = [k for k, _ in r.problems]
    assert "truncated" in kinds
    assert r.extra["declared_n_samples"] == 20000 > r.n_samples > 0
    assert r.read(r.n_samples - 10, r.n_samples + 100).shape == (64, 10)


def test_events_past_the_end_are_kept(shared_data, tmp_path):
    import edfio

    edf = edfio.read_edf(_edf(shared_data))
    edf.add_annotations([edfio.EdfAnnotation(130.0, 4.0, "T1")])   # the file lasts 125 s
    dst = tmp_path / "late.edf"
    edf.write(dst)
    (r,), _ = open_dataset(dst)
    assert max(e.onset_s for e in r.events) == pytest.approx(130.0)
    assert r.duration_s == pytest.approx(125.0)
    assert any(k == "events_outside" for k, _ in r.problems)


def test_identifying_edf_patient_field_reaches_header_text(shared_data, tmp_path):
    data = bytearray(_edf(shared_data).read_bytes())
    data[8:88] = b"MCH-0234567 F 02-MAY-1951 Haagse_Harry".ljust(80)
    dst = tmp_path / "named.edf"
    dst.write_bytes(bytes(data))
    (r,), _ = open_dataset(dst)
    assert "Haagse_Harry" in r.header_text["edf.patient"]
    assert r.subject == "MCH-0234567"
    assert any("1951" in v for v in r.header_text.values())


# ------------------------------------------------------------------------------------------
# FIF and BrainVision written here


def _raw_array(fs: float = 250.0, n: int = 1000):
    import mne

    rng = np.random.default_rng(0)
    info = mne.create_info(["Fz", "Cz", "Pz", "STI"], fs, ["eeg", "eeg", "eeg", "stim"])
    x = rng.normal(0.0, 20e-6, (4, n))
    x[3] = 0.0
    x[3, 250:260] = 5.0
    raw = mne.io.RawArray(x, info, verbose="error")
    raw.set_montage("standard_1020", verbose="error")
    raw.set_annotations(mne.Annotations([1.0, 2.5], [0.5, 0.0], ["left", "right"]))
    return raw, x


def test_fif_written_by_mne_opens_with_units_positions_and_events(tmp_path):
    raw, x = _raw_array()
    dst = tmp_path / "a_raw.fif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw.save(dst, verbose="error")
    (r,), findings = open_dataset(tmp_path)
    assert findings == [] and r.fmt == "fif" and r.name == "a_raw.fif"
    assert r.channel_types == ["eeg", "eeg", "eeg", "stim"]
    assert r.positions_present is True and r.extra["n_channels_with_position"] == 3
    y = r.read(0, r.n_samples)
    np.testing.assert_allclose(y[:3], x[:3] * 1e6, rtol=1e-5, atol=1e-3)   # volts -> µV
    assert y[3].max() == 5.0                                                 # stim codes kept
    assert [(e.label, round(e.onset_s, 3)) for e in r.events] == [("left", 1.0), ("right", 2.5)]
    gz = tmp_path / "gz" / "b_raw.fif.gz"
    gz.parent.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw.save(gz, verbose="error")
    (g,), _ = open_dataset(gz)
    assert g.fmt == "fif" and g.name == "b_raw.fif.gz"
    np.testing.assert_allclose(g.read(0, 100), y[:, :100])


def _write_brainvision(folder: Path, x_uv: np.ndarray, fs: float) -> Path:
    """A minimal BrainVision set (header, markers, float32 multiplexed data) for the reader test."""
    names = ["Fz", "Cz", "Pz"]
    (folder / "bv.eeg").write_bytes(np.ascontiguousarray(x_uv.T, dtype="<f4").tobytes())
    chans = "\n".join(f"Ch{i + 1}={n},,1,µV" for i, n in enumerate(names))
    (folder / "bv.vhdr").write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\nDataFile=bv.eeg\n"
        f"MarkerFile=bv.vmrk\nDataFormat=BINARY\nDataOrientation=MULTIPLEXED\nNumberOfChannels={len(names)}\n"
        f"SamplingInterval={1e6 / fs:g}\n\n[Binary Infos]\nBinaryFormat=IEEE_FLOAT_32\n\n[Channel Infos]\n"
        f"{chans}\n", encoding="utf-8")
    (folder / "bv.vmrk").write_text(
        "Brain Vision Data Exchange Marker File, Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\nDataFile=bv.eeg\n\n"
        "[Marker Infos]\nMk1=New Segment,,1,1,0\nMk2=Stimulus,S  1,251,1,0\n", encoding="utf-8")
    return folder / "bv.vhdr"


def test_brainvision_opens_and_its_sidecars_are_not_recordings(tmp_path):
    x = np.random.default_rng(1).normal(0.0, 30.0, (3, 2000))
    _write_brainvision(tmp_path, x, 500.0)
    recs, findings = open_dataset(tmp_path)
    assert findings == [] and [r.name for r in recs] == ["bv.vhdr"]
    r = recs[0]
    assert (r.fmt, r.fs_hz, r.n_samples, r.units) == ("brainvision", 500.0, 2000, ["µV"] * 3)
    np.testing.assert_allclose(r.read(100, 300), x[:, 100:300], rtol=1e-5, atol=1e-4)
    assert any(e.label.endswith("S  1") and e.onset_s == pytest.approx(0.5) for e in r.events)
    assert set(r.provenance["files"]) == {"bv.vhdr", "bv.vmrk", "bv.eeg"}


# ------------------------------------------------------------------------------------------
# BIDS


def test_bids_folder_gives_subject_session_and_sidecar_text(shared_data, tmp_path):
    import mne
    import mne_bids

    root = tmp_path / "bids"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = mne.io.read_raw_edf(_edf(shared_data), preload=False, verbose="error")
        bp = mne_bids.BIDSPath(subject="07", session="b", task="mi", run="1", root=root, datatype="eeg")
        mne_bids.write_raw_bids(raw, bp, verbose="error")
    recs, findings = open_dataset(root)
    assert findings == [] and len(recs) == 1           # sidecars (.json, .tsv) are not recordings
    r = recs[0]
    assert (r.fmt, r.subject, r.session, r.extra["task"], r.n_channels) == ("bids", "07", "b", "mi", 64)
    assert r.name == "sub-07/ses-b/eeg/sub-07_ses-b_task-mi_run-1_eeg.edf"
    assert any(k.endswith("_eeg.json") for k in r.header_text)
    assert "sub-07" in r.header_text["bids.participants.tsv"]
    assert {e.label for e in r.events} == {"T0", "T1", "T2"}


def test_bids_electrode_positions_are_read(tmp_path):
    import mne_bids

    raw, _ = _raw_array()
    raw.drop_channels(["STI"])
    raw.set_meas_date(1e9)
    root = tmp_path / "bids"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne_bids.write_raw_bids(raw, mne_bids.BIDSPath(subject="02", task="rest", root=root, datatype="eeg"),
                                allow_preload=True, format="EDF", verbose="error")
    assert list(root.rglob("*_electrodes.tsv"))
    (r,), findings = open_dataset(root)
    assert findings == [] and (r.subject, r.session, r.extra["task"]) == ("02", None, "rest")
    assert r.positions_present and r.extra["n_channels_with_position"] == 3


# ------------------------------------------------------------------------------------------
# implant: session folder and NWB


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory) -> Path:
    from cortexlink.cli.record import session_config
    from cortexlink.io.session_log import SessionRecorder
    from cortexlink.runtime import session as sess

    out = tmp_path_factory.mktemp("sess") / "s1"
    cfg = sess.load_session(session_config(16, 2.0, 0, "default"))
    rec = SessionRecorder(out, fs_hz=30000.0, config=cfg, seeds={"seed": 0}, participant_id="p-0042",
                          expected_seconds=4.0, catalogue=False)
    try:
        sess.run_session(cfg, progress=False, recorder=rec)
    finally:
        rec.close()
    return out


def test_session_folder_opens_with_raw_features_behaviour_and_events(session_dir):
    from cortexlink.io.session_log import SessionReader

    recs, findings = open_dataset(session_dir.parent)
    assert findings == [] and len(recs) == 1          # files inside the session are not recordings
    r = recs[0]
    assert (r.kind, r.fmt, r.subject, r.fs_hz, r.n_channels) == ("implant", "session", "p-0042", 30000.0, 16)
    sr = SessionReader(session_dir)
    _, counts = sr.read_array("raw")
    ref = (counts * sr.channel_map.gain_uv + sr.channel_map.offset_uv).T
    assert r.n_samples == ref.shape[1]
    np.testing.assert_allclose(r.read(1234, 5678), ref[:, 1234:5678])       # counts -> µV
    np.testing.assert_allclose(np.concatenate([b for _, b in r.iter_blocks(0.7)], axis=1), ref)
    fa = r.features
    assert fa is not None and fa.bin_s == pytest.approx(0.02) and len(fa.names) == 32
    blocks = list(fa.iter_blocks())
    assert sum(b.shape[0] for _, b in blocks) == fa.n_bins and blocks[0][0] == 0
    idx, v = fa.behaviour()
    assert v.shape == (idx.size, 2) and idx.size > 50 and np.all(np.diff(idx) == 1)
    s, intent = sr.read_array("intent")
    bins, _ = sr.read_array("features")
    assert bins[idx[0]] + 600 == s[0]                 # an intent row belongs to the bin it closes
    labels = {e.label for e in r.events}
    assert "block:calibration" in labels and any(lb.startswith("target") for lb in labels)
    assert r.provenance["files"] and r.provenance["cortexlink_version"]
    assert r.positions_present and r.header_text["participant_id"] == "p-0042"


def test_nwb_export_opens_with_samples_in_microvolts(session_dir, tmp_path):
    from cortexlink.io.nwb import export_nwb

    dst = tmp_path / "s1.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_nwb(session_dir, dst)
    (r,), findings = open_dataset(dst)
    (s,), _ = open_dataset(session_dir)
    assert findings == [] and (r.fmt, r.kind, r.subject) == ("nwb", "implant", "p-0042")
    assert (r.fs_hz, r.n_samples, r.channel_names) == (s.fs_hz, s.n_samples, s.channel_names)
    np.testing.assert_allclose(r.read(100, 4000), s.read(100, 4000), rtol=1e-6, atol=1e-3)
    assert r.positions_present
    assert r.header_text["subject.subject_id"] == "p-0042" and "subject.species" in r.header_text
    assert "cortexlink" in r.provenance["source_script"] and r.provenance["file_create_date"]
    trials = [e for e in r.events if e.label.startswith("target")]
    assert trials and {e.label for e in trials} <= {e.label for e in s.events}


def test_nwb_export_without_raw_opens_with_features_and_behaviour(session_dir, tmp_path):
    from cortexlink.io.nwb import export_nwb

    dst = tmp_path / "s1-features.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_nwb(session_dir, dst, raw=False)
    (r,), findings = open_dataset(dst)
    (s,), _ = open_dataset(session_dir)
    assert findings == [] and r.reader is None and r.n_samples == 0 and r.kind == "implant"
    assert ("no_raw", "no raw ElectricalSeries; checked from the binned features only") in r.problems
    assert r.features.names == s.features.names and r.features.n_bins == s.features.n_bins
    a = np.concatenate([b for _, b in r.features.iter_blocks()])
    b = np.concatenate([b for _, b in s.features.iter_blocks()])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)    # sbp µV -> V -> µV
    (ia, va), (ib, vb) = r.features.behaviour(), s.features.behaviour()
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(va, vb)
    assert r.fs_hz == 30000.0 and r.duration_s == pytest.approx(s.duration_s)
    assert [e.label for e in r.events if e.label.startswith("target")] == \
        [e.label for e in s.events if e.label.startswith("target")]


# ------------------------------------------------------------------------------------------
# failures


def test_unreadable_and_unknown_files_become_findings(shared_data, tmp_path):
    shutil.copy(_edf(shared_data), tmp_path / "good.edf")
    (tmp_path / "good.edf.event").write_bytes(b"\x00" * 10)        # PhysioNet sidecar: skipped
    (tmp_path / "broken.edf").write_bytes(b"0       not an edf header" * 3)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "broken.nwb").write_bytes(b"not hdf5")
    (tmp_path / "notes.xyz").write_text("?")
    (tmp_path / "README.md").write_text("about")
    recs, findings = open_dataset(tmp_path, progress=True)
    assert [r.name for r in recs] == ["good.edf"]
    by_file = {f.file: f for f in findings}
    assert set(by_file) == {"broken.edf", "sub/broken.nwb", "notes.xyz"}
    for name in ("broken.edf", "sub/broken.nwb"):
        f = by_file[name]
        assert (f.check, f.characteristic, f.severity) == ("missing_samples", "completeness", "error")
        assert f.detail.startswith("cannot be opened: ")
    assert by_file["notes.xyz"].severity == "info"


def test_missing_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="path must be an existing file or folder; got .*nope"):
        open_dataset(tmp_path / "nope")


# ------------------------------------------------------------------------------------------
# split files


def _recs() -> list[Recording]:
    out = []
    for subj, runs in (("1", (3, 4, 5)), ("2", (3, 4))):
        for k in runs:
            out.append(Recording(Path(f"S00{subj}R0{k}.edf"), f"S00{subj}R0{k}.edf", "eeg", "edf", 160.0, 0,
                                 [], [], [], subject=subj))
    return out


def test_split_yaml_names_patterns_and_subjects(tmp_path):
    p = tmp_path / "split.yaml"
    p.write_text("train: ['S001R0[34].edf', 'subject:2']\nvalidation: [S001R05.edf]\ntest: []\n")
    assert load_split(p, _recs()) == {"S001R03.edf": "train", "S001R04.edf": "train", "subject:2": "train",
                                      "S001R05.edf": "validation"}
    j = tmp_path / "split.json"
    j.write_text(json.dumps({"train": ["S002*"], "test": ["S001R03.edf"]}))
    assert load_split(j, _recs()) == {"S002R03.edf": "train", "S002R04.edf": "train", "S001R03.edf": "test"}


def test_split_csv_by_file_and_by_subject(tmp_path):
    p = tmp_path / "split.csv"
    p.write_text("file,split\nS001R03.edf,train\nS002*,test\n")
    assert load_split(p, _recs()) == {"S001R03.edf": "train", "S002R03.edf": "test", "S002R04.edf": "test"}
    q = tmp_path / "subjects.csv"
    q.write_text("subject,split\n1,train\n2,test\n")
    assert load_split(q, _recs()) == {"subject:1": "train", "subject:2": "test"}


@pytest.mark.parametrize("name, text, message", [
    ("s.yaml", "train: [S001R03.edf]\nholdout: [S002R03.edf]\n", "split names must be .*got 'holdout'"),
    ("s.yaml", "train: [S009*]\n", "entry 'S009\\*' \\(train\\) matches no recording"),
    ("s.yaml", "train: ['subject:7']\n", "entry 'subject:7' \\(train\\) names no subject"),
    ("s.yaml", "train: ['S001*']\ntest: [S001R04.edf]\n", "recording 'S001R04.edf' .* in both 'train' and 'test'"),
    ("s.yaml", "- a\n- b\n", "must map split names .*got list"),
    ("s.yaml", "train: {a: 1}\n", "'train' must be a list"),
    ("s.yaml", "train: [a\n", "not valid YAML"),
    ("s.json", "{", "not valid JSON"),
    ("s.csv", "name,fold\nx,train\n", "header must be 'file,split' \\(or 'recording,split'\\) or 'subject,split'; got 'name,fold'"),
    ("s.csv", "file,split\nS001R03.edf\n", "line 2: expected 2 columns"),
    ("s.txt", "train: []", "split file must be .yaml, .yml, .json or .csv; got 's.txt'"),
])
def test_split_bad_inputs(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_split(p, _recs())


def test_split_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="split file must be an existing file; got .*none.yaml"):
        load_split(tmp_path / "none.yaml", _recs())
