"""`cortexlink session run` on a speech session: the run folder and the printed figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from cortexlink.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from test_speech_session import _session  # noqa: E402  (the small session of the runtime tests)


def test_session_run_writes_a_speech_run_folder(tmp_path, capsys):
    cfg = _session(tmp_path)
    cfg["decoder"]["params"]["n_epochs"] = 5
    cfg["blocks"][0]["sentences"] = 6
    cfg["blocks"][2]["sentences"] = 2
    f = tmp_path / "speech.yaml"
    f.write_text(yaml.safe_dump(cfg))
    assert main(["session", "run", str(f), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "speech session 'speech-test'" in out and "48 electrodes" in out and "PER" in out and "WER" in out
    run = next((tmp_path / "runs").iterdir())
    summ = json.loads((run / "summary.json").read_text())
    trials = json.loads((run / "trials.json").read_text())
    assert summ["electrodes"] == 48 and len(trials) == 8
    assert [t["train"] for t in trials] == [True] * 6 + [False] * 2
    assert all(isinstance(t["text"], str) for t in trials[6:])
    assert yaml.safe_load((run / "session.yaml").read_text())["task"] == "speech"
