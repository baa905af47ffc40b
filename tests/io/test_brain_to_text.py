"""Brain-to-Text HDF5 layout: read files written by hand in the published layout, write, round trip."""

import h5py
import numpy as np
import pytest

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.phonemes import SIL, phonemes_to_ids, sentence_phonemes
from cortexlink.io.importers.brain_to_text import (PAD_LEN, SpeechDataset, SpeechTrial, feature_names,
                                                   read_brain_to_text, write_brain_to_text)

SENTS = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
         "It's easy to tell the depth of a well."]


def _hand_file(path, trials, *, labels=True, session="t15.2023.08.11", n_feat=512, pad=500, id_dtype=np.int32):
    """A file in the published layout written with h5py directly (not through the module's writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(trials))
    out = []
    with h5py.File(path, "w") as h:
        for i, (sent, n_bins) in enumerate(trials):
            g = h.create_group(f"trial_{i:04d}")
            x = rng.normal(size=(n_bins, n_feat)).astype(np.float32)
            g.create_dataset("input_features", data=x)
            g.attrs["n_time_steps"] = n_bins
            g.attrs["session"] = session
            g.attrs["block_num"] = 3
            g.attrs["trial_num"] = 10 + i
            ids, _ = sentence_phonemes(sent)
            if labels:
                g.create_dataset("seq_class_ids", data=np.pad(ids, (0, pad - ids.size)).astype(id_dtype))
                g.attrs["seq_len"] = ids.size
                codes = np.array([ord(c) for c in sent], dtype=np.int32)
                g.create_dataset("transcription", data=np.pad(codes, (0, pad - codes.size)))
                g.attrs["sentence_label"] = sent
            out.append((x, ids))
    return out


def test_reads_a_hand_written_session_folder(tmp_path):
    folder = tmp_path / "t15.2023.08.11"
    train = _hand_file(folder / "data_train.hdf5", [(SENTS[0], 120), (SENTS[1], 95)], id_dtype=np.int64)
    _hand_file(folder / "data_test.hdf5", [(SENTS[2], 80)], labels=False)
    ds = read_brain_to_text(folder)
    assert len(ds) == 3 and ds.sessions == ("t15.2023.08.11",) and ds.splits == ("train", "test")
    t0 = ds[0]
    np.testing.assert_array_equal(t0.features, train[0][0])
    assert t0.features.dtype == np.float32 and not t0.features.flags.writeable
    np.testing.assert_array_equal(t0.phoneme_ids, train[0][1])
    assert t0.phoneme_ids.dtype == np.int32 and t0.phoneme_ids[-1] == SIL
    assert t0.sentence == SENTS[0] and (t0.day, t0.block, t0.trial, t0.split) == (0, 3, 10, "train")
    test = ds.select(split="test")
    assert len(test) == 1 and test[0].phoneme_ids is None and test[0].sentence is None and not test[0].labelled
    assert ds.feature_names[0] == "ch0000/tx" and ds.feature_names[255] == "ch0255/tx"
    assert ds.feature_names[256] == "ch0000/sbp" and len(ds.feature_names) == 512


def test_same_numbering_as_the_published_phoneme_table():
    # LOGIT_TO_PHONEME in nejm-brain-to-text: BLANK, AA, AE, ..., ZH, ' | ' (silence) -> ids 0..40
    assert phonemes_to_ids(["AA", "ZH"]).tolist() == [1, 39] and SIL == 40


def test_root_days_in_date_order_and_filters(tmp_path):
    for s in ("t15.2024.03.08", "t15.2023.08.13", "t15.2023.10.01"):
        _hand_file(tmp_path / s / "data_train.hdf5", [(SENTS[0], 30)], session=s)
        _hand_file(tmp_path / s / "data_val.hdf5", [(SENTS[1], 40)], session=s)
    ds = read_brain_to_text(tmp_path)
    assert ds.sessions == ("t15.2023.08.13", "t15.2023.10.01", "t15.2024.03.08")
    assert [(t.session, t.split) for t in ds][:3] == [("t15.2023.08.13", "train"), ("t15.2023.08.13", "val"),
                                                     ("t15.2023.10.01", "train")]
    assert all(ds.sessions[t.day] == t.session for t in ds)
    only = read_brain_to_text(tmp_path, splits=["val"], sessions=["t15.2024.03.08"])
    assert len(only) == 1 and only[0].split == "val" and only[0].day == 2  # days count every session under path
    assert only.sessions == ds.sessions
    (tmp_path / "t15.2023.08.13" / "data_val.hdf5").unlink()  # a session without a val file keeps the numbering
    assert [t.day for t in read_brain_to_text(tmp_path, splits=["val"])] == [1, 2]
    assert len(ds.select(split="val", day=2)) == 1 and ds.select(day=2)[0].session == "t15.2024.03.08"


def test_round_trip_through_the_writer(tmp_path):
    rng = np.random.default_rng(1)
    trials = []
    for i, (sess, split) in enumerate([("t15.2023.09.01", "train"), ("t15.2023.08.20", "train"),
                                       ("t15.2023.08.20", "val"), ("t15.2023.08.20", "test")]):
        ids, _ = sentence_phonemes(SENTS[i % 3])
        lab = split != "test"
        trials.append(SpeechTrial(rng.normal(size=(50 + i, 8)).astype(np.float32), ids if lab else None,
                                  SENTS[i % 3] if lab else None, 0, sess, 7, i, split))
    ds = SpeechDataset.from_trials(trials, feature_names(4))
    assert ds.sessions == ("t15.2023.08.20", "t15.2023.09.01") and trials[0].day == 0 and ds[0].day == 1
    files = write_brain_to_text(ds, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == [
        "t15.2023.08.20/data_test.hdf5", "t15.2023.08.20/data_train.hdf5", "t15.2023.08.20/data_val.hdf5",
        "t15.2023.09.01/data_train.hdf5"]
    with h5py.File(tmp_path / "out" / "t15.2023.08.20" / "data_train.hdf5", "r") as h:
        g = h["trial_0000"]
        assert g["seq_class_ids"].shape == (PAD_LEN,) and g["transcription"].dtype == np.int32
        assert set(g.attrs) == {"n_time_steps", "seq_len", "sentence_label", "session", "block_num", "trial_num"}
    with h5py.File(tmp_path / "out" / "t15.2023.08.20" / "data_test.hdf5", "r") as h:
        assert set(h["trial_0000"]) == {"input_features"} and "seq_len" not in h["trial_0000"].attrs
    back = read_brain_to_text(tmp_path / "out")
    key = lambda t: (t.session, t.split, t.trial)  # noqa: E731
    for a, b in zip(sorted(ds, key=key), sorted(back, key=key)):
        np.testing.assert_array_equal(a.features, b.features)
        assert (a.sentence, a.day, a.session, a.block, a.trial, a.split) == \
               (b.sentence, b.day, b.session, b.block, b.trial, b.split)
        assert (a.phoneme_ids is None and b.phoneme_ids is None) or np.array_equal(a.phoneme_ids, b.phoneme_ids)
    assert back.feature_names == ds.feature_names
    with pytest.raises(ConfigError, match="exists; pass overwrite=True"):
        write_brain_to_text(ds, tmp_path / "out")
    assert len(write_brain_to_text(ds, tmp_path / "out", overwrite=True)) == 4


def test_transcription_used_when_sentence_label_absent_and_n_time_steps_cuts(tmp_path):
    f = tmp_path / "s" / "data_val.hdf5"
    _hand_file(f, [(SENTS[1], 60)])
    with h5py.File(f, "a") as h:
        del h["trial_0000"].attrs["sentence_label"]
        h["trial_0000"].attrs["n_time_steps"] = 50
    t = read_brain_to_text(f)[0]
    assert t.sentence == SENTS[1] and t.n_bins == 50 and t.session == "t15.2023.08.11"


def _break(tmp_path, edit, name="data_train.hdf5"):
    f = tmp_path / "t15.2023.08.11" / name
    _hand_file(f, [(SENTS[0], 20)])
    with h5py.File(f, "a") as h:
        edit(h["trial_0000"])
    return f


@pytest.mark.req("SR-52")
@pytest.mark.parametrize("edit, match", [
    (lambda g: g.__delitem__("input_features"), "'input_features' is missing"),
    (lambda g: g.__delitem__("seq_class_ids"), "'seq_class_ids' is missing .*'train' file must be labelled"),
    (lambda g: g.attrs.__delitem__("seq_len"), "attribute 'seq_len' is missing"),
    (lambda g: g.attrs.__delitem__("block_num"), "attribute 'block_num' is missing"),
    (lambda g: (g.__delitem__("input_features"), g.create_dataset("input_features", data=np.zeros((5, 4), np.int16))),
     "'input_features' must be a 2-D float dataset.*int16"),
    (lambda g: (g.__delitem__("seq_class_ids"), g.create_dataset("seq_class_ids", data=np.zeros(9, np.float32))),
     "'seq_class_ids' must be a 1-D integer dataset"),
    (lambda g: g["seq_class_ids"].__setitem__(0, 41), "class ids 1..40"),
    (lambda g: g.attrs.__setitem__("seq_len", 501), "'seq_len' must be in 0..500"),
    (lambda g: g.attrs.__setitem__("n_time_steps", 21), "'n_time_steps' must be in 0..20"),
    (lambda g: (g.attrs.__delitem__("sentence_label"), g.__delitem__("transcription")), "without its text"),
])
def test_bad_files(tmp_path, edit, match):
    f = _break(tmp_path, edit)
    with pytest.raises(ValidationError, match=match):
        read_brain_to_text(f)


def test_unlabelled_allowed_in_test_files_or_when_asked(tmp_path):
    f = _break(tmp_path, lambda g: g.__delitem__("seq_class_ids"))
    t = read_brain_to_text(f, require_labels=False)[0]
    assert t.phoneme_ids is None and t.sentence == SENTS[0]  # text kept, phonemes absent
    f2 = tmp_path / "t15.2023.08.12" / "data_test.hdf5"
    _hand_file(f2, [(SENTS[0], 20)], labels=False)
    with pytest.raises(ValidationError, match="'seq_class_ids' is missing"):
        read_brain_to_text(f2, require_labels=True)


@pytest.mark.req("SR-52")
def test_bad_paths_and_mixed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_brain_to_text(tmp_path / "nope")
    with pytest.raises(ConfigError, match="found no .hdf5 file"):
        read_brain_to_text(tmp_path)
    (tmp_path / "x.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="not a readable HDF5 file"):
        read_brain_to_text(tmp_path / "x.hdf5")
    with h5py.File(tmp_path / "empty.hdf5", "w"):
        pass
    with pytest.raises(ValidationError, match="no trial_NNNN groups"):
        read_brain_to_text(tmp_path / "empty.hdf5")
    _hand_file(tmp_path / "a" / "data_train.hdf5", [(SENTS[0], 10)], n_feat=512)
    _hand_file(tmp_path / "a" / "data_val.hdf5", [(SENTS[0], 10)], n_feat=510)
    with pytest.raises(ValidationError, match="has 510 features"):
        read_brain_to_text(tmp_path / "a")
    _hand_file(tmp_path / "b" / "data_train.hdf5", [(SENTS[0], 10)], n_feat=7)
    with pytest.raises(ValidationError, match="even number of features; got 7"):
        read_brain_to_text(tmp_path / "b")
    with pytest.raises(ValidationError, match="no file of"):
        read_brain_to_text(tmp_path / "a", splits=["test"])


def test_trial_and_dataset_validation(tmp_path):
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(ValidationError, match="class ids in 1..40"):
        SpeechTrial(x, np.array([0, 1]), "a", 0, "s", 0, 0, "train")
    with pytest.raises(ValidationError, match="2-D float array"):
        SpeechTrial(np.zeros(5), None, None, 0, "s", 0, 0, "train")
    with pytest.raises(ValidationError, match="day must be >= 0"):
        SpeechTrial(x, None, None, -1, "s", 0, 0, "train")
    t = SpeechTrial(x, None, None, 0, "s", 0, 0, "train")
    with pytest.raises(ValidationError, match="feature_names has 3"):
        SpeechDataset((t,), ("a", "b", "c"))
    with pytest.raises(ValidationError, match="does not match"):
        SpeechDataset((t,), feature_names(2), ("other",))
    bad = SpeechDataset.from_trials([SpeechTrial(x, None, "caf\u00e9", 0, "s", 0, 0, "train")], feature_names(2))
    with pytest.raises(ValidationError, match="must be ASCII"):
        write_brain_to_text(bad, tmp_path)
    sneaky = SpeechDataset.from_trials([SpeechTrial(x, None, None, 0, "..", 0, 0, "train")], feature_names(2))
    with pytest.raises(ConfigError, match="session must not start with '.'"):
        write_brain_to_text(sneaky, tmp_path)
    with pytest.raises(ValidationError, match="n_channels"):
        feature_names(0)
