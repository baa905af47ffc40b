"""The speech loop on the runtime graph: a small session from YAML to decoded sentences and a recording."""

from __future__ import annotations

import numpy as np
import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.runtime.session import load_session, run_session, session_to_graph

# short sentences so that a session of a few dozen trials runs in seconds
SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "she read a good book", "we ate bread and cheese",
    "the sun is hot today", "he drank cold water", "my hand is on the desk", "the bird sang a song",
    "they walked to the shop", "the boy lost his hat", "it rained all night", "open the red door",
    "the fish swam away", "i like green tea", "the car is very fast", "he wrote a short note",
    "put the box down", "the child slept well", "we saw the moon", "she found the key",
]


def _lm_text() -> str:
    """The calibration sentences and a little more; never a held-out one (the build would refuse it)."""
    from cortexlink.tasks.speech_metrics import speech_split

    train, _ = speech_split(SENTENCES, n_test=4, seed=0)
    return (". ".join(train) + ". The moon is red. A song for the child. The key is in the box. ") * 3


def _session(tmp_path, **over):
    sent = tmp_path / "sentences.txt"
    sent.write_text("\n".join(SENTENCES) + "\n")
    lm = tmp_path / "lm.txt"
    lm.write_text(_lm_text())
    cfg = {
        "name": "speech-test", "seed": 1,
        "implant": {"preset": "default", "n_channels": 48, "speech_dims": 16, "n_dead": 0, "n_saturating": 0,
                    "artifact_rate_hz": 0.0, "speech_fraction": 1.0, "speech_depth_hz_range": [20.0, 60.0],
                    "units_per_channel_p": [0.0, 0.3, 0.4, 0.3]},
        "speaker": {"drive": 2.0, "duration_scale": 1.2, "prep_s": 0.4},
        "decoder": {"params": {"hidden_size": 64, "n_layers": 1, "input_proj": 32, "n_epochs": 80, "batch_size": 8,
                               "learning_rate": 0.005, "validation_fraction": 0.0, "white_noise_sd": 0.0,
                               "offset_sd": 0.0, "n_time_masks": 0, "random_state": 0}},
        "language": {"corpus": [str(lm)], "cache_dir": str(tmp_path / "cache"), "lm_order": 2,
                     "beam": {"beam_size": 8}},
        "sentences": {"path": str(sent), "n_test": 4},
        "blocks": [{"kind": "calibration", "task": "speech", "sentences": 16,
                    "task_params": {"prep_s": 0.4, "iti_s": 0.2}},
                   {"kind": "fit"},
                   {"kind": "evaluation", "task": "speech", "sentences": 4,
                    "task_params": {"prep_s": 0.4, "iti_s": 0.2}}],
    }
    cfg.update(over)
    return cfg


def test_speech_session_compiles_to_one_graph(tmp_path):
    g = session_to_graph(_session(tmp_path))
    kinds = {n: spec["kind"] for n, spec in g["nodes"].items()}
    assert kinds == {"task": "speech_task", "participant": "speaking_participant", "implant": "sim_source",
                     "dsp": "dsp", "phonemes": "phoneme_decoder", "words": "word_decoder"}
    assert g["nodes"]["implant"]["inputs"] == {"speech": "participant.speech"}
    assert g["nodes"]["words"]["inputs"]["frames"] == "phonemes.frames"


@pytest.mark.parametrize("change, match", [
    ({"blocks": [{"kind": "evaluation", "task": "speech", "sentences": 3}]}, "needs a fit block"),
    ({"blocks": [{"kind": "calibration", "task": "speech", "sentences": 3, "split": "test"}]}, "never uses the held-out"),
    ({"blocks": [{"kind": "calibration", "task": "speech", "sentences": 0}]}, "sentences must be"),
    ({"implant": {"n_channels": 32, "speech_dims": 0}}, "speech_dims must be an integer >= 1"),
    ({"speaker": {"drive": -1}}, "session.speaker is invalid"),
    ({"language": {"bogus": 1}}, "bogus"),
])
def test_bad_speech_sessions_are_refused_naming_the_field(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        load_session(_session(tmp_path, **change))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One session (40 calibration sentences, a fit, 4 training and 4 held-out sentences decoded)
    run with a recorder; shared by the tests below (a session takes tens of seconds)."""
    from cortexlink.io.session_log import SessionRecorder

    tmp = tmp_path_factory.mktemp("speech")
    cfg = _session(tmp)
    cfg["blocks"][0]["sentences"] = 40
    cfg["blocks"].insert(2, {"name": "eval-train", "kind": "evaluation", "task": "speech", "sentences": 4,
                             "split": "train", "task_params": {"prep_s": 0.4, "iti_s": 0.2}})
    rec = SessionRecorder(tmp / "rec", raw=False, catalogue=False)
    try:
        res = run_session(cfg, progress=False, recorder=rec, record_raw=False)
    finally:
        rec.close()
    return res, tmp / "rec"


def test_speech_session_decodes_held_out_sentences(recorded):
    res, _ = recorded
    s = res["summary"]
    cal = next(b for b in s["blocks"] if b["kind"] == "calibration")
    ev = next(b for b in s["blocks"] if b["name"] == "evaluation-3")
    assert cal["n_trials"] == 40 and ev["n_trials"] == 4
    m = ev["metrics"]
    assert m["n_decoded"] == 4 and m["n_timed_out"] == 0
    assert m["wer_lm"] >= 0.0 and m["wer_no_lm"] >= 0.0 and 0.0 <= m["per"] <= 1.5
    assert s["n_per_trials"] == 4 and s["per"] == m["per"]
    assert m["words_per_min"] > 10 and m["latency_to_text_ms"]["median"] >= 0
    trials = res["trials"]
    test = {t["sentence"] for t in trials if t["block"] == "evaluation-3"}
    train = {t["sentence"] for t in trials if t["train"]}
    assert len(test) == 4 and not (test & train)          # held-out sentences never calibrate
    assert all(isinstance(t["text"], str) for t in trials if not t["train"])
    assert s["phoneme_decoder"]["n_train_trials"] == 40 and s["phoneme_decoder"]["version"] == 1


def test_speech_session_learns_the_sentences_it_was_calibrated_on(recorded):
    """Training sentences attempted again after the fit: a decoder that ignored the features (all
    blank, or the same phonemes for every sentence) stays near a phoneme error rate of 1; this one,
    fitted on 40 short sentences from 48 electrodes, reaches 0.67 (measured)."""
    res, _ = recorded
    ev = next(b for b in res["summary"]["blocks"] if b["name"] == "eval-train")
    assert ev["metrics"]["per"] < 0.8


def test_speech_session_records_phonemes_and_decoded_text(recorded):
    from cortexlink.io.session_log import SessionReader

    _, out = recorded
    r = SessionReader(out)
    assert "phonemes" in r.streams and len(r.columns("phonemes")) == 41
    _, lp = r.read_array("phonemes")
    assert lp.shape[1] == 41 and lp.shape[0] > 10
    assert np.allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-3)     # rows are log-probabilities
    decoded = r.events("speech_decoded")
    assert len(decoded) == 8 and all("sentence" in e and "text" in e for e in decoded)
    assert len(r.events("speech_trial_begin")) == 48


def test_same_seed_same_speech_session(tmp_path):
    cfg = _session(tmp_path)
    cfg["decoder"]["params"]["n_epochs"] = 3
    cfg["blocks"][0]["sentences"] = 4
    cfg["blocks"][2]["sentences"] = 2
    a = run_session(cfg, progress=False)
    b = run_session(cfg, progress=False)
    assert [t["text"] for t in a["trials"]] == [t["text"] for t in b["trials"]]
    assert [t["go_bin"] for t in a["trials"]] == [t["go_bin"] for t in b["trials"]]
