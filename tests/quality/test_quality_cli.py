"""``cortexlink quality``: exit codes (--fail-on), bad arguments, --json, --pdf, an empty folder;
``cortexlink bench quality`` arguments."""

from __future__ import annotations

import json

import pytest

import _report_fakes as F
from cortexlink.cli.main import main


@pytest.fixture
def data(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    recs = [F.make_recording(root, "a.edf"), F.make_recording(root, "b.edf", seed=1, subject="2")]
    modules = F.fake_modules(recs)
    modules["checks_dataset"].CHECKS = modules["checks_dataset"].CHECKS[:1]   # one warning, no error
    F.install(monkeypatch, modules)
    return root


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["quality", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--split", "--intended-use", "--fail-on", "--pdf", "--no-baseline", "--permutations",
                "--json", "report.html", "report.json"):
        assert opt in text


@pytest.mark.parametrize("fail_on, rc", [(None, 0), ("info", 1), ("warning", 1), ("error", 0), ("critical", 0)])
def test_fail_on_exit_code(data, tmp_path, capsys, fail_on, rc):
    argv = ["quality", str(data), "--out", str(tmp_path / "out"), "--no-baseline"]
    if fail_on:
        argv += ["--fail-on", fail_on]
    assert main(argv) == rc
    out = capsys.readouterr().out
    assert "completeness" in out and "1 warning" in out and "report.html" in out
    if fail_on:
        assert ("FAILED" in out) == (rc == 1)


def test_json_output(data, tmp_path, capsys):
    assert main(["quality", str(data), "--out", str(tmp_path / "out"), "--json", "--permutations", "3",
                 "--fail-on", "warning"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert set(d["scores"]) >= {"completeness", "fitness"} and d["failed"] is True
    assert {f["check"] for f in d["findings"]} >= {"missing_channels", "event_bounds"}
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["findings"] == d["findings"] and on_disk["options"]["n_permutations"] == 3


def test_pdf_flag(data, tmp_path, capsys):
    assert main(["quality", str(data), "--out", str(tmp_path / "out"), "--no-baseline", "--pdf"]) == 0
    assert (tmp_path / "out" / "report.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("extra, message", [
    (["--fail-on", "fatal"], "invalid choice"),
    (["--permutations", "many"], "invalid int value"),
])
def test_bad_arguments_argparse(data, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        main(["quality", str(data), "--out", str(tmp_path / "out"), *extra])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_missing_out(data, capsys):
    with pytest.raises(SystemExit) as e:
        main(["quality", str(data)])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("no-path", "does not exist"), ("negative", "--permutations must be >= 1"),
    ("split", "--split"), ("use", "--intended-use"), ("out-file", "--out"),
])
def test_bad_arguments_errors(data, tmp_path, capsys, case, message):
    argv = ["quality", str(data), "--out", str(tmp_path / "out")]
    if case == "no-path":
        argv[1] = str(tmp_path / "nowhere")
    elif case == "negative":
        argv += ["--permutations", "0"]
    elif case == "split":
        argv += ["--split", str(tmp_path / "nosplit.yaml")]
    elif case == "use":
        argv += ["--intended-use", str(tmp_path / "nouse.yaml")]
    elif case == "out-file":
        (tmp_path / "f").write_text("x")
        argv[3] = str(tmp_path / "f")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cortexlink: error:") and message in err


def test_bad_intended_use_yaml(data, tmp_path, capsys):
    use = tmp_path / "use.yaml"
    use.write_text("window_s: banana\n")
    assert main(["quality", str(data), "--out", str(tmp_path / "out"), "--intended-use", str(use)]) == 2
    assert "window_s" in capsys.readouterr().err


def test_empty_folder_real_modules(tmp_path, capsys):
    """An empty folder through the real modules: a report, no crash."""
    (tmp_path / "empty").mkdir()
    rc = main(["quality", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert not [f for f in d["findings"] if f["detail"].startswith("check failed")]
    assert (tmp_path / "out" / "report.html").is_file()


def test_bench_quality_arguments(tmp_path, capsys):
    assert main(["bench", "quality", "--no-eeg", "--no-implant", "--json", "--work", str(tmp_path / "w")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["benchmark"] == "quality" and d["results"] == []
    assert main(["bench", "quality", "--no-eeg", "--channels", "0", "--json", "--work", str(tmp_path / "w")]) == 2


def test_bench_quality_small_implant(tmp_path, capsys):
    """bench quality on a tiny simulated session: recorded once, measured in a fresh process, cached."""
    from cortexlink.bench import quality as bq

    work = tmp_path / "w"
    assert main(["bench", "quality", "--no-eeg", "--channels", "8", "--seconds", "3", "--permutations", "3",
                 "--json", "--work", str(work)]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert "error" not in r, r
    assert r["files"] == 1 and r["channels"] == 8 and r["cached_session"] is False
    assert r["wall_s"] > 0 and r["peak_rss_mb"] >= r["rss_before_mb"] > 0
    assert set(r["scores"]) >= {"completeness", "fitness"}
    assert (work / "report-sim_implant_8ch_3s" / "report.html").is_file()
    folder, record_s = bq.implant_session(work, channels=8, seconds=3)
    assert record_s is None and folder.name == "sim-8ch-3s-seed0"    # reused, not recorded again
