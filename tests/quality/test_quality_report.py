"""The quality report: runner, report.json schema, HTML, figures, PDF (fake pipeline + real EEG)."""

from __future__ import annotations

import json
import shutil

import pytest
from _shared_data import need

import _report_fakes as F
from cortexlink.core.errors import ConfigError
from cortexlink.quality import html, plots, runner
from cortexlink.quality.model import (CHARACTERISTICS, SEVERITIES, DatasetContext, Finding, Recording,
                                      RecordingSummary)


def _strict(text: str):
    def bad(c):
        raise AssertionError(f"non-strict JSON constant {c}")
    return json.loads(text, parse_constant=bad)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    recs = [F.make_recording(root, "a.edf", seed=0), F.make_recording(root, "b.edf", seed=1, subject="2"),
            F.make_recording(root, F.HOSTILE + ".edf", seed=2, subject="3")]
    calls = F.Calls()
    opened = [Finding("missing_samples", "completeness", "error", "unreadable: not an EDF", file="junk.edf")]
    F.install(monkeypatch, F.fake_modules(recs, open_findings=opened, calls=calls))
    return root, recs, calls


def test_report_json_schema_and_files(fake, tmp_path):
    root, recs, calls = fake
    out = tmp_path / "out"
    split = tmp_path / "split.yaml"
    split.write_text("train: [a.edf]\n")     # the fake load_split ignores the text
    rep = runner.run_quality(root, out, n_permutations=7, split=split)
    d = _strict((out / "report.json").read_text())
    assert d["format"] == "cortexlink-quality-report"
    assert set(d["scores"]) == set(CHARACTERISTICS)
    for c, s in d["scores"].items():
        assert s is None or 0.0 <= s <= 1.0, (c, s)
    assert d["scores"]["fitness"] == 0.9 and d["scores"]["diversity"] is None
    keys = {"check", "characteristic", "severity", "file", "channel", "start_s", "detail", "clause"}
    assert d["findings"] and all(keys <= set(f) for f in d["findings"])
    assert all(f["severity"] in SEVERITIES and f["characteristic"] in CHARACTERISTICS for f in d["findings"])
    late = [f for f in d["findings"] if f["check"] == "event_bounds"][0]
    assert late["file"] == "a.edf" and late["start_s"] == 3.25
    # the unreadable file found while opening is reported, and lowers completeness
    assert any(f["file"] == "junk.edf" and f["severity"] == "error" for f in d["findings"])
    # NaN score and NaN metric became null (strict JSON)
    eb = [c for c in d["checks"] if c["check"] == "event_bounds"][0]
    assert eb["score"] is None
    mc = [c for c in d["checks"] if c["check"] == "missing_channels"][0]["metrics"]
    assert mc["nan"] is None and mc["odd"]["arr"] == [1.5, None] and "object" in mc["odd"]["obj"]
    assert [r["name"] for r in d["recordings"]] == [r.name for r in recs]
    assert [r["split"] for r in d["recordings"]] == ["train", "test", None]
    assert calls.n_permutations == 7
    assert calls.epochs_seen["a.edf"] > 0          # trial windows were extracted for the label checks
    assert d["options"]["n_permutations"] == 7 and "total" in d["options"]["timings_s"]
    assert rep.scores == d["scores"]
    for rel in d["figures"].values():
        assert (out / rel).is_file() and rel.startswith("figures/")
    assert {"scores", "channel_quality_eeg", "class_balance", "baseline", "split_membership"} <= set(d["figures"])
    assert not (out / "report.pdf").exists()


def test_a_failing_check_is_an_error_finding_not_a_crash(fake, tmp_path, caplog):
    root, _, _ = fake
    rep = runner.run_quality(root, tmp_path / "out", baseline=False)
    failed = [r for r in rep.results if r.check == "sampling_rate"]
    assert len(failed) == 1 and failed[0].score is None and failed[0].characteristic == "consistency"
    (f,) = failed[0].findings
    assert f.severity == "error" and f.check == "sampling_rate" and f.detail.startswith("check failed: RuntimeError")
    assert "boom" in caplog.text                    # the traceback is logged
    assert any(r.check == "missing_channels" for r in rep.results)   # the other checks still ran


def test_no_baseline_skips_fitness(fake, tmp_path):
    root, _, calls = fake
    rep = runner.run_quality(root, tmp_path / "out", baseline=False)
    assert not calls.fitness_ran and rep.scores["fitness"] is None
    assert "baseline" not in rep.figures


def test_html_escapes_file_text_and_lists_findings(fake, tmp_path):
    root, _, _ = fake
    out = tmp_path / "out"
    runner.run_quality(root, out, baseline=False)
    page = (out / "report.html").read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page       # a file name and a detail
    assert "C&lt;3&gt;" in page and "check failed: RuntimeError: boom &lt;b&gt;" in page
    assert "late event" in page and "3.250" in page
    for c in CHARACTERISTICS:
        assert f'id="{c}"' in page
    assert 'src="figures/channel_quality_eeg.png"' in page


def test_pdf_on_request(fake, tmp_path):
    root, _, _ = fake
    out = tmp_path / "out"
    runner.run_quality(root, out, baseline=False, pdf=True)
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000


def test_empty_data_set(tmp_path, monkeypatch):
    F.install(monkeypatch, F.fake_modules([]))
    (tmp_path / "empty").mkdir()
    rep = runner.run_quality(tmp_path / "empty", tmp_path / "out", pdf=True)
    d = _strict((tmp_path / "out" / "report.json").read_text())
    assert d["recordings"] == [] and all(v is None for v in d["scores"].values())
    assert "No recording could be opened" in (tmp_path / "out" / "report.html").read_text()
    assert (tmp_path / "out" / "report.pdf").is_file()
    assert set(rep.figures) == {"scores"}


def test_unreadable_samples_and_missing_stats(tmp_path, monkeypatch):
    recs = [F.make_recording(tmp_path, "ok.edf"), F.make_recording(tmp_path, "bad.edf"),
            F.make_recording(tmp_path, "nostats.edf")]
    recs[1].extra["explode"] = True
    recs[2].extra["no_stats"] = True
    F.install(monkeypatch, F.fake_modules(recs))
    rep = runner.run_quality(tmp_path, tmp_path / "out", baseline=False)
    bad = [f for f in rep.findings if f.file == "bad.edf" and f.check == "missing_samples"]
    assert bad and bad[0].severity == "error" and "disk on fire" in bad[0].detail
    assert (tmp_path / "out" / "figures" / "channel_quality_eeg.png").is_file()


@pytest.mark.parametrize("kwargs, match", [
    ({"n_permutations": 0}, "n_permutations"),
    ({"n_permutations": 2.5}, "n_permutations"),
    ({"fail_on": "fatal"}, "severity"),
    ({"line_hz": -50}, "line_hz"),
    ({"split": "no-such-split.yaml"}, "--split"),
])
def test_bad_options(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        runner.run_quality(tmp_path, tmp_path / "out", **kwargs)


def test_bad_paths(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        runner.run_quality(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--out"):
        runner.run_quality(tmp_path, tmp_path / "file")
    with pytest.raises(ConfigError, match="data set itself"):
        runner.run_quality(tmp_path, tmp_path)


def test_fails_threshold(fake, tmp_path):
    root, _, _ = fake
    rep = runner.run_quality(root, tmp_path / "out", baseline=False)
    assert rep.worst_severity() == "error"
    assert runner.fails(rep, "info") and runner.fails(rep, "error")
    assert not runner.fails(rep, "critical") and not runner.fails(rep, None)


def test_figures_survive_missing_values(tmp_path):
    rec = Recording(path=tmp_path / "x", name="x", kind="implant", fmt="session", fs_hz=None, n_samples=0,
                    channel_names=[], channel_types=[], units=[])
    ctx = DatasetContext(root=tmp_path, recordings=[rec],
                         summaries={"x": RecordingSummary("x", None, None, None)})
    assert plots.channel_quality_figure(ctx, "implant", tmp_path / "a.png") is None
    assert plots.implant_grid_figure(ctx, tmp_path / "b.png") is None
    assert plots.class_balance_figure(ctx, tmp_path / "c.png") is None
    assert plots.split_figure(ctx, tmp_path / "d.png") is None
    p = plots.scores_figure({c: None for c in CHARACTERISTICS}, tmp_path / "e.png")
    assert p.is_file()


def test_implant_grid_from_positions(tmp_path):
    import numpy as np

    from cortexlink.quality.model import ChannelStats

    n = 16
    rec = Recording(path=tmp_path / "s", name="s", kind="implant", fmt="session", fs_hz=None, n_samples=0,
                    channel_names=[f"e{i}" for i in range(n)], channel_types=["implant"] * n, units=["uV"] * n,
                    extra={"positions_um": np.stack(np.meshgrid(np.arange(4) * 400.0, np.arange(4) * 400.0),
                                                    -1).reshape(-1, 2)})
    nan = np.full(n, np.nan)
    st = ChannelStats(rms_uv=np.ones(n), ptp_uv=nan, flat_fraction=nan, clip_fraction=nan, line_ratio=nan,
                      artefact_fraction=nan, snr_db=nan, noise_rms_uv=np.r_[np.nan, np.ones(n - 1)],
                      crossing_rate_hz=np.arange(n, dtype=float))
    ctx = DatasetContext(root=tmp_path, recordings=[rec], summaries={"s": RecordingSummary("s", st, "h", None)})
    assert plots.implant_grid_figure(ctx, tmp_path / "g.png").is_file()
    assert plots.channel_quality_figure(ctx, "implant", tmp_path / "m.png").is_file()


def test_html_renders_without_figures_or_results(tmp_path):
    from cortexlink.quality.model import Report

    rep = Report(root=tmp_path, results=[], recordings=[], created_utc="2026-01-01T00:00:00Z", software={})
    page = html.render_html(rep)
    assert "No check of this characteristic ran" in page and "No figure" in page


def test_real_eeg_files(shared_data, tmp_path):
    """Three real EEGMMIDB runs through the real modules (skipped without them; fails under CI=true)."""
    src = need(shared_data / "eeg_motor_imagery", "the EEGMMIDB recordings")
    data = tmp_path / "eeg"
    data.mkdir()
    for n in ("S001R04.edf", "S001R06.edf", "S001R10.edf"):
        shutil.copy(src / n, data / n)
    out = tmp_path / "out"
    rep = runner.run_quality(data, out, baseline=False)
    d = _strict((out / "report.json").read_text())
    assert [r["name"] for r in d["recordings"]] == ["S001R04.edf", "S001R06.edf", "S001R10.edf"]
    assert all(r["channels"] == 64 and r["fs_hz"] == 160.0 for r in d["recordings"])
    failed = [f for f in rep.findings if f.detail.startswith("check failed")]
    assert not failed, failed
    assert d["scores"]["signal_quality"] is not None
    assert "channel_quality_eeg" in d["figures"] and (out / d["figures"]["channel_quality_eeg"]).is_file()


def test_simulated_implant_session(tmp_path):
    """A short simulated session without raw samples, through the real modules: its noise and
    crossing-rate maps are drawn on the electrode grid of the session's channel map."""
    import subprocess
    import sys

    sess = tmp_path / "sess"
    proc = subprocess.run([sys.executable, "-m", "cortexlink.cli.main", "record", "--sim", "--channels", "16",
                           "--seconds", "4", "--no-raw", "--out", str(sess), "--status-interval", "0", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    rep = runner.run_quality(sess, out, n_permutations=3)
    assert [r["kind"] for r in rep.recordings] == ["implant"] and rep.recordings[0]["channels"] == 16
    assert not [f for f in rep.findings if f.detail.startswith("check failed")]
    assert {"channel_quality_implant", "implant_grid"} <= set(rep.figures)
    assert (out / rep.figures["implant_grid"]).is_file()
    assert 'src="figures/implant_grid.png"' in (out / "report.html").read_text()
