"""The run folder's report survives figures a session did not produce: a Webgrid block without a
selection (accuracy None), blocks without bins, missing latency and wall time."""

import numpy as np

from cortexlink.tasks.report import fmt, summary_table, write_run_folder
from cortexlink.tasks.trace import TraceBuilder
from cortexlink.tasks.webgrid import WebgridTask


def _result():
    task = WebgridTask(n=4, seed=0)
    metrics = task.metrics(5.0)                  # no selection was made
    assert metrics["accuracy"] is None and metrics["n_selections"] == 0
    web = TraceBuilder("webgrid", "closed", "webgrid", 0.02, 10, n_raster=4).finish(metrics)
    empty = TraceBuilder("centre", "closed", "centre_out", 0.02, 10).finish({})
    assert web.n_bins == 0 and empty.n_bins == 0
    summary = {"session": "empty", "decoder": "kalman", "channels": 4,
               "blocks": [{"name": "webgrid", "kind": "evaluation", "task": "webgrid", "mode": "closed",
                           "metrics": metrics, "loop_latency_us": {"p50": None, "p99": float("nan")},
                           "decode_latency_us": {"p99": None}},
                          {"name": "centre", "kind": "evaluation", "task": "centre_out", "mode": "closed",
                           "metrics": {"success_rate": None}},
                          {"name": "chess", "kind": "evaluation", "task": "chess", "mode": "closed", "metrics": None},
                          {"name": "fit", "kind": "fit"}],
               "wall_s": None}
    return {"config": {"name": "empty"}, "summary": summary, "traces": [web, empty],
            "tasks": {"webgrid": task}}


def test_summary_table_says_na_for_missing_figures():
    rows = dict(summary_table(_result()["summary"]))
    assert rows["webgrid: selection accuracy"] == "n/a"
    assert rows["webgrid: bits per second"] == "0.00"
    assert rows["webgrid: chunk → cursor latency p50/p99 (µs)"] == "n/a / n/a"
    assert rows["chess: moves"] == "n/a" and rows["wall time (s)"] == "n/a"
    assert "decode step latency p99 (µs, worst block)" not in rows
    assert dict(summary_table({"decoder": "x"}))["wall time (s)"] == "n/a"       # no blocks at all


def test_a_run_folder_is_written_for_a_block_without_selections(tmp_path):
    out = write_run_folder(_result(), tmp_path / "run")
    html = (out / "report.html").read_text()
    assert "selection accuracy</th><td>n/a" in html
    assert (out / "traces" / "webgrid.npz").is_file() and (out / "summary.json").is_file()


def test_fmt():
    assert fmt(None) == "n/a" and fmt(float("nan")) == "n/a" and fmt("x") == "n/a" and fmt(True) == "n/a"
    assert fmt(np.float32(1.25), ".1f") == "1.2" and fmt(3) == "3.00"
