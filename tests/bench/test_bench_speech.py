"""bench speech: its rows and table survive missing values and failed runs (the runs themselves are
measured with `cortexlink bench speech`, and the speech session they use is tested in tests/runtime)."""

from __future__ import annotations

import math

from cortexlink.bench import speech


def test_row_of_a_summary_with_nothing_decoded_has_empty_figures():
    row = speech._row(256, 0, {"blocks": [{"kind": "calibration", "metrics": {}}, {"kind": "fit"}]}, 1.0)
    assert row["electrodes"] == 256 and row["wer_lm"] is None and row["realtime_factor"] is None
    assert row["train_s"] is None and row["latency_to_text_ms"] is None


def test_row_reads_the_evaluation_block_and_the_decoders_costs():
    summ = {"per": 0.3, "blocks": [{"kind": "evaluation", "metrics": {
        "wer_lm": 0.2, "wer_no_lm": 0.5, "words_per_min": 60.0, "n_decoded": 10, "n_timed_out": 0,
        "latency_to_text_ms": {"median": 320.0, "max": 400.0}, "finish_ms": {"median": 1.0, "max": 2.0}}}],
            "phoneme_decoder": {"step_us_mean": 200.0, "fit_seconds": [12.0], "n_train_trials": 40},
            "word_decoder": {"realtime_factor": 0.1}}
    row = speech._row(64, 1, summ, 5.0)
    assert row["per"] == 0.3 and row["wer_lm"] == 0.2 and row["wer_no_lm"] == 0.5
    assert math.isclose(row["realtime_factor"], 200e-6 / 0.02 + 0.1)
    assert row["train_s"] == 12.0 and row["n_calibration"] == 40 and row["latency_to_text_ms"] == 320.0


def test_failed_run_is_a_row_and_the_table_prints(monkeypatch, capsys):
    import cortexlink.runtime.session as session

    def boom(cfg, progress=False):
        raise RuntimeError("no text corpus")

    monkeypatch.setattr(session, "run_session", boom)
    res = speech.run(electrodes=[64], seeds=[0], calibration_sentences=3, test_sentences=2, progress=False)
    assert res["results"][0]["error"] == "RuntimeError: no text corpus" and res["simulated"] is True
    res["results"].append({"electrodes": 128, "seed": 0, "per": None, "wer_lm": float("nan")})
    speech.print_summary(res)
    out = capsys.readouterr().out
    assert "error: RuntimeError" in out and "Willett" in out and " - " in out
