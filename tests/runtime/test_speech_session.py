"""The speech loop on the runtime graph: a small session from YAML to decoded sentences and a recording."""

from __future__ import annotations

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
LM_TEXT = ("The cat sat on the mat. The dog ran in the park. She read a book. We ate bread and cheese. "
           "The sun is hot. He drank water. The bird sang. They walked to the shop. The boy lost his hat. "
           "It rained. Open the door. The fish swam. I like tea. The car is fast. He wrote a note. "
           "Put the box down. The child slept. We saw the moon. She found the key. ") * 3


def _session(tmp_path, **over):
    sent = tmp_path / "sentences.txt"
    sent.write_text("\n".join(SENTENCES) + "\n")
    lm = tmp_path / "lm.txt"
    lm.write_text(LM_TEXT)
    cfg = {
        "name": "speech-test", "seed": 1,
        "implant": {"preset": "default", "n_channels": 48, "speech_dims": 8, "n_dead": 0, "n_saturating": 0,
                    "artifact_rate_hz": 0.0},
        "speaker": {"drive": 2.0, "duration_scale": 1.2, "prep_s": 0.4},
        "decoder": {"params": {"hidden_size": 48, "n_layers": 1, "input_proj": 32, "n_epochs": 30, "random_state": 0}},
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


def test_speech_session_decodes_held_out_sentences_and_records_them(tmp_path):
    res = run_session(_session(tmp_path), progress=False)
    s = res["summary"]
    ev = next(b for b in s["blocks"] if b["kind"] == "evaluation")
    cal = next(b for b in s["blocks"] if b["kind"] == "calibration")
    assert cal["n_trials"] == 16 and ev["n_trials"] == 4
    m = ev["metrics"]
    assert m["n_decoded"] == 4 and m["n_timed_out"] == 0
    assert 0.0 <= m["wer_lm"] <= 2.0 and 0.0 <= m["wer_no_lm"] <= 2.0
    assert 0.0 <= s["per"] <= 1.5 and s["n_per_trials"] == 4
    assert m["words_per_min"] > 10
    trials = res["trials"]
    test = {t["sentence"] for t in trials if not t["train"]}
    train = {t["sentence"] for t in trials if t["train"]}
    assert len(test) == 4 and not (test & train)          # held-out sentences never calibrate
    assert all(isinstance(t["text"], str) for t in trials if not t["train"])
    assert s["phoneme_decoder"]["n_train_trials"] == 16 and s["phoneme_decoder"]["version"] == 1
    # the same seed gives the same session
    again = run_session(_session(tmp_path), progress=False)
    assert [t["text"] for t in again["trials"]] == [t["text"] for t in trials]


def test_speech_session_learns_the_sentences_it_was_calibrated_on(tmp_path):
    """Decoding training sentences (heard in calibration) must beat decoding nothing: a loop whose
    decoder ignored the features could not reach a phoneme error rate well below 1."""
    cfg = _session(tmp_path)
    cfg["blocks"][2] = {"kind": "evaluation", "task": "speech", "sentences": 4, "split": "train",
                        "task_params": {"prep_s": 0.4, "iti_s": 0.2}}
    res = run_session(cfg, progress=False)
    assert res["summary"]["per"] < 0.6


def test_speech_graph_records_phonemes_and_decoded_text(tmp_path):
    from cortexlink.io.session_log import SessionReader
    from cortexlink.runtime.runner import GraphRunner
    from cortexlink.runtime.speech_session import speech_session_to_graph

    cfg = load_session(_session(tmp_path))
    out = tmp_path / "rec"
    g = speech_session_to_graph(cfg, recorder={"out_dir": str(out), "raw": False})
    rr = GraphRunner(g).run()
    assert rr["stop_reason"] == "task: schedule finished"
    r = SessionReader(out)
    assert "phonemes" in r.streams() and len(r.columns("phonemes")) == 41
    lp = r.read_array("phonemes")
    assert lp.shape[1] == 41 and lp.shape[0] > 10
    decoded = r.events("speech_decoded")
    assert len(decoded) == 4 and all("sentence" in e and "text" in e for e in decoded)
    assert len(r.events("speech_trial_begin")) == 20
