"""The command line, run as a user would: a real subprocess of the installed console script."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _shared_data import need

from cortexlink.cli.main import main


def _cortexlink() -> list[str]:
    exe = shutil.which("cortexlink", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "cortexlink.cli.main"]


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "bench" in out


def test_bad_argument_is_a_clear_error(capsys, tmp_path):
    assert main(["demo", "--channels", "0", "--out", str(tmp_path)]) == 2
    assert "--channels must be a" in capsys.readouterr().err


def test_feature_demo_writes_a_run_folder(tmp_path):
    proc = subprocess.run(_cortexlink() + ["demo", "--features", "--channels", "64", "--seconds", "1.5", "--out", str(tmp_path),
                                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "real time" in proc.stdout and "bad channels found" in proc.stdout
    (run_dir,) = list(tmp_path.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["channels"] == 64 and summary["n_bins"] > 0
    assert summary["dsp_realtime_factor"] > 0
    png = (run_dir / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bench_dsp_json_has_every_peer(tmp_path):
    out = tmp_path / "dsp.json"
    proc = subprocess.run(_cortexlink() + ["bench", "dsp", "--channels", "32", "--seconds", "1.0", "--json",
                                           "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    for name in ("cortexlink", "scipy_reference", "spikeinterface"):
        r = result["implementations"][name]["32"]
        assert "error" not in r, r
        assert r["samples_per_s"] > 0 and r["realtime_channels"] > 0 and r["peak_rss_mb"] > 0
        d = result["detection"][name]
        assert 0.0 <= d["precision"] <= 1.0 and d["n_true_spikes"] > 0
    assert result["ratios"]["32"]["cortexlink_vs_scipy_reference"] > 0


def test_bench_dsp_rejects_unknown_peer(capsys):
    assert main(["bench", "dsp", "--peers", "matlab"]) == 2
    assert "peers must be among" in capsys.readouterr().err


def test_bench_dsp_on_real_n1_recordings(shared_data, tmp_path):
    """The N1 broadband WAVs (19531 Hz, no gain) go through cortexlink and the scipy reference."""
    folder = need(shared_data / "n1_broadband", "the N1 broadband recordings")
    # a copy of 8 electrodes keeps the test quick
    sub = tmp_path / "n1"
    sub.mkdir()
    for f in sorted(folder.glob("*.wav"))[:8]:
        shutil.copy(f, sub / f.name)
    proc = subprocess.run(_cortexlink() + ["bench", "dsp", "--data", str(sub), "--peers", "cortexlink",
                                           "scipy_reference", "--json"],
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["channels"] == 8 and 19000 < result["fs_hz"] < 20000
    ours, ref = result["crossing_rate_hz"]["cortexlink"], result["crossing_rate_hz"]["scipy_reference"]
    assert set(ours["per_channel"]) == {f.stem for f in sub.glob("*.wav")}
    # same filter, reference and threshold rule: per-channel rates agree closely
    for name, rate in ours["per_channel"].items():
        assert abs(rate - ref["per_channel"][name]) <= 0.25 * max(rate, ref["per_channel"][name]) + 1.0, name
    assert result["implementations"]["cortexlink"]["realtime_channels_at_fs"] > 0


def test_demo_runs_a_closed_loop_session(tmp_path):
    proc = subprocess.run(_cortexlink() + ["demo", "--channels", "32", "--webgrid-s", "5", "--chess-moves", "1",
                                           "--out", str(tmp_path), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for label in ("webgrid: bits per second", "chess: moves", "decode step latency"):
        assert label in proc.stdout
    (run_dir,) = list(tmp_path.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["channels"] == 32 and summary["decoder"] == "refit_kalman"
    kinds = [b["kind"] for b in summary["blocks"]]
    assert kinds == ["calibration", "fit", "closed_loop", "refit", "evaluation", "evaluation"]
    assert (run_dir / "chess.pgn").read_text().startswith("[Event")
    for f in ("report.html", "session.yaml", "figures/chess_board.png", "figures/webgrid_bitrate.png",
              "figures/neural_activity_and_decoding.png", "traces/webgrid.npz"):
        assert (run_dir / f).is_file(), f


def test_session_example_check_and_bad_file(tmp_path, capsys):
    assert main(["session", "example"]) == 0
    text = capsys.readouterr().out
    p = tmp_path / "s.yaml"
    p.write_text(text)
    assert main(["session", "check", str(p)]) == 0
    assert "refit_kalman" in capsys.readouterr().out
    p.write_text(text.replace("task: webgrid", "task: pong"))
    assert main(["session", "check", str(p)]) == 2
    assert "session.blocks[0].task must be one of" in capsys.readouterr().err      # the calibration
