"""The operator UI of a speech (brain-to-text) session: the graph it serves, its E-STOP over HTTP,
the speech panel in a real headless Chromium, a snapshot that survives missing values."""

import copy
import json

import pytest

from _browser import assert_no_js_errors, browser_or_skip

from cortexlink.core.errors import ConfigError

SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "she read a good book", "we ate bread and cheese",
    "the sun is hot today", "he drank cold water", "my hand is on the desk", "the bird sang a song",
    "they walked to the shop", "the boy lost his hat", "it rained all night", "open the red door",
]
N_TEST = 3
TIMING = {"prep_s": 0.4, "iti_s": 0.2}


def _session(tmp_path, n_cal=6, n_eval=N_TEST):
    """A tiny speech session: 48 channels, short sentences, a language model from the training
    sentences only (the held-out ones must never be in its text)."""
    from cortexlink.tasks.speech_metrics import speech_split

    train, _ = speech_split(SENTENCES, n_test=N_TEST, seed=0)
    sent = tmp_path / "sentences.txt"
    sent.write_text("\n".join(SENTENCES) + "\n")
    lm = tmp_path / "lm.txt"
    lm.write_text((". ".join(train) + ". ") * 3)
    return {
        "name": "speech-ui-test", "seed": 1,
        "implant": {"preset": "default", "n_channels": 48, "speech_dims": 8, "n_dead": 0, "n_saturating": 0,
                    "artifact_rate_hz": 0.0},
        "speaker": {"drive": 2.0, "duration_scale": 1.2, "prep_s": 0.4},
        "decoder": {"params": {"hidden_size": 32, "n_layers": 1, "input_proj": 32, "n_epochs": 10, "random_state": 0}},
        "language": {"corpus": [str(lm)], "cache_dir": str(tmp_path / "cache"), "lm_order": 2,
                     "beam": {"beam_size": 8}},
        "sentences": {"path": str(sent), "n_test": N_TEST},
        "blocks": [{"kind": "calibration", "task": "speech", "sentences": n_cal, "task_params": TIMING},
                   {"kind": "fit"},
                   {"kind": "evaluation", "task": "speech", "sentences": n_eval, "task_params": TIMING}],
    }


# ---------------------------------------------------------------------------------------------- graph
def test_a_speech_session_compiles_to_an_operator_graph_with_an_estop(tmp_path):
    from cortexlink.web.graphs import check_operator_graph, operator_graph

    g = operator_graph(_session(tmp_path), record_dir=tmp_path / "rec")
    nodes = g["nodes"]
    assert nodes["task"]["kind"] == "speech_task" and nodes["task"]["inputs"]["operator"] == "operator.commands"
    assert nodes["task"]["params"]["stop_when_done"] is False
    assert nodes["ui"]["inputs"] == {"speech_cue": "task.cue", "speech_text": "words.text", "activity": "dsp.features"}
    assert g["clock"] == "realtime"
    found = check_operator_graph(g)
    assert (found["task"], found["cursor"], found["ui"], found["dsp"], found["recorder"]) == \
        ("task", None, "ui", "dsp", "recorder")


def test_a_speech_graph_without_a_working_estop_is_refused(tmp_path):
    from cortexlink.web.graphs import check_operator_graph, operator_graph

    g = operator_graph(_session(tmp_path))
    no_stop = copy.deepcopy(g)
    del no_stop["nodes"]["task"]["inputs"]["operator"]
    with pytest.raises(ConfigError, match=r"speech_task node\(s\) \['task'\] to read 'operator.commands'.*E-STOP"):
        check_operator_graph(no_stop)
    no_view = copy.deepcopy(g)
    no_view["nodes"]["ui"]["inputs"]["speech_cue"] = "participant.speech"
    with pytest.raises(ConfigError, match="speech_cue"):
        check_operator_graph(no_view)          # the feed reads a cue from a node that is not the speech task
    no_text = copy.deepcopy(g)
    del no_text["nodes"]["ui"]["inputs"]["speech_text"]
    with pytest.raises(ConfigError, match="speech_text must come from a word_decoder"):
        check_operator_graph(no_text)


# ---------------------------------------------------------------------------------------------- snapshot
def test_the_speech_snapshot_survives_missing_and_empty_values():
    from cortexlink.core.speech_messages import SpeechCue, SpeechText
    from cortexlink.runtime.nodes._uiview import _SpeechState

    st = _SpeechState()
    v = st.view({})                                            # nothing from the task yet
    assert v["phase"] == "rest" and v["trial"] == -1 and v["text"] == "" and v["final"] is None
    assert v["metrics"] is None and v["state"] == "starting" and v["halted"] is False
    assert st.slow({})["metrics"] is None
    st.cue(SpeechCue(5, "prep", 3, "the cat sat", "cal", True))
    st.text(SpeechText(6, 3, "the"))
    st.text(SpeechText(7, 3, ""))                              # a bin with no news keeps the partial text
    assert st.view({})["text"] == "the" and st.view({})["sentence"] == "the cat sat"
    assert st.view({"estop": True})["text"] == ""              # nothing decoded is shown under an E-STOP
    st.cue(SpeechCue(40, "prep", 4, "a dog ran", "cal", True))
    assert st.view({})["text"] == ""                           # a new prompt starts with no text
    st.cue(SpeechCue(41))
    op = {"state": "evaluation", "block": None, "last_final": {"trial": 3, "sentence": "x", "text": None},
          "last_block": {"name": "b", "metrics": {"wer_lm": None}}, "n_aborted": None}
    v = st.view(op)
    assert v["final"]["text"] is None and v["n_aborted"] == 0 and v["sentence"] == ""
    json.dumps(v, allow_nan=False)
    json.dumps(st.slow(op), allow_nan=False)


# ---------------------------------------------------------------------------------------------- E-STOP
def _wait(ctl, pred, timeout_s=60.0):
    return ctl.wait_for(lambda s: s.fast.get("speech") is not None and pred(s.fast["speech"], s), timeout_s)


def test_estop_over_http_halts_the_speech_task(tmp_path, web_http):
    from cortexlink.web.controller import OperatorController
    from cortexlink.web.server import OperatorServer

    ctl = OperatorController(session=_session(tmp_path, n_cal=8), speed=4.0, record_dir=tmp_path / "rec").start()
    try:
        with OperatorServer(ctl, "127.0.0.1", 0) as srv:
            url = f"http://127.0.0.1:{srv.port}"
            status, _, body = web_http("GET", url + "/api/state")
            assert status == 200 and body["meta"]["speech"] is True and body["meta"]["tasks"] == ["speech"]
            _wait(ctl, lambda sp, s: sp["phase"] == "go" and sp["trial"] >= 1)
            status, _, body = web_http("POST", url + "/api/control", {"cmd": "estop"})
            assert status == 200 and body["ok"] and body["result"]["estop"] is True
            snap = _wait(ctl, lambda sp, s: s.fast["estop"] and s.fast["estop_bin"] is not None
                         and s.fast["bin"] > s.fast["estop_bin"] + 2)
            sp = snap.fast["speech"]
            assert sp["halted"] and sp["phase"] == "rest" and sp["trial"] == -1 and sp["n_aborted"] == 1
            aborted_bin = snap.fast["bin"]
            # no new trial begins while the stop is latched (tens of bins; a trial's rest is 10)
            held = _wait(ctl, lambda sp, s: s.fast["bin"] >= aborted_bin + 40)
            assert held.fast["speech"]["trial"] == -1 and held.fast["speech"]["phase"] == "rest"
            assert held.fast["speech"]["n_trials"] == sp["n_trials"] >= 2
            # the cursor's commands are refused with the reason, not left unanswered
            status, _, body = web_http("POST", url + "/api/control", {"cmd": "fit"})
            assert status == 409 and "speech session runs its block schedule" in body["error"]
            status, _, body = web_http("POST", url + "/api/control", {"cmd": "release"})
            assert status == 200 and body["result"] == {"estop": False, "was_engaged": True}
            resumed = _wait(ctl, lambda sp, s: not s.fast["estop"] and sp["trial"] >= 0)
            n_before = held.fast["speech"]["n_trials"]
            assert resumed.fast["speech"]["trial"] == n_before     # the next sentence; the aborted one is not redone
    finally:
        ctl.stop()


# ---------------------------------------------------------------------------------------------- browser
def _js(d, expr):
    return d.execute_script("return " + expr)


def test_the_page_shows_the_prompt_and_the_decoded_text(tmp_path, artifact_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from cortexlink.web.controller import OperatorController
    from cortexlink.web.server import OperatorServer

    b = browser_or_skip()
    d = b.driver
    ctl = OperatorController(session=_session(tmp_path), speed=4.0, record_dir=tmp_path / "rec").start()
    try:
        with OperatorServer(ctl, "127.0.0.1", 0) as srv:
            d.get(srv.url)
            wait = WebDriverWait(d, 90, poll_frequency=0.05)
            wait.until(lambda d: _js(d, "window.cl && cl.nMeta > 0 && cl.fast !== null && cl.speechMode === true"))
            assert d.find_element(By.ID, "speech-panel").is_displayed()
            assert not d.find_element(By.ID, "task").is_displayed()           # no cursor task view
            assert not d.find_element(By.ID, "btn-calibrate").is_displayed()
            assert d.find_element(By.ID, "estop").is_displayed()
            # the prompt, large, with the cue phase
            wait.until(lambda d: d.find_element(By.ID, "speech-prompt").text in SENTENCES)
            wait.until(lambda d: d.find_element(By.ID, "speech-cue").text == "GO")
            d.save_screenshot(str(artifact_dir / "web_ui_speech_prompt.png"))
            # the prompt on the page is the task's (or the trial ended): the page renders the snapshot it
            # holds on its next frame, so wait for that rather than compare one instant
            wait.until(lambda d: _js(d, "(s => !s || document.getElementById('speech-prompt').textContent === s)"
                                        "(cl.fast.speech.sentence)"))
            # the evaluation block: the text as it forms, then the final sentence beside its reference
            d.execute_script("cl.seenText = []; setInterval(() => { const t = document.getElementById('speech-text')"
                             ".textContent; if (t && cl.seenText[cl.seenText.length - 1] !== t) cl.seenText.push(t); }, 20);")
            wait.until(lambda d: _js(d, "cl.fast.speech.final !== null"))
            fin = _js(d, "cl.fast.speech.final")
            wait.until(lambda d: d.find_element(By.ID, "speech-ref").text == fin["sentence"])
            assert fin["sentence"] in SENTENCES and fin["block"].startswith("evaluation")
            assert d.find_element(By.ID, "speech-final").text == (fin["text"] or "(nothing)")
            # the partial text the page showed grew word by word toward what the decoder sent
            seen = [t for t in _js(d, "cl.seenText") if t]
            assert seen, "the page never showed partial decoded text"
            wait.until(lambda d: _js(d, "cl.fast.speech.metrics !== null && cl.fast.speech.metrics.kind === 'evaluation'"))
            m = _js(d, "cl.fast.speech.metrics.metrics")
            # the page shows the block's metrics on its next frame: wait for them rather than read one instant
            wait.until(lambda d: d.find_element(By.ID, "speech-wer").text == f"{100 * m['wer_lm']:.1f} %")
            assert d.find_element(By.ID, "speech-ndecoded").text == f"{m['n_decoded']} / {m['n_trials']}"
            d.save_screenshot(str(artifact_dir / "web_ui_speech_decoded.png"))
            # the E-STOP button halts the task and the page says so
            d.find_element(By.ID, "estop").click()
            wait.until(lambda d: d.find_element(By.ID, "estop-banner").is_displayed())
            wait.until(lambda d: d.find_element(By.ID, "speech-cue").text == "HALTED")
            assert "no new trial begins" in d.find_element(By.ID, "estop-text").text
            assert d.find_element(By.ID, "state").text.startswith("E-STOP")
            d.save_screenshot(str(artifact_dir / "web_ui_speech_estop.png"))
            assert_no_js_errors(d)
    finally:
        ctl.stop()
        b.quit()
