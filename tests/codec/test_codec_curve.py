"""``cortexlink bench codec --near-lossless`` on tiny inputs: every bound held, bound 0 is the
lossless codec, larger bounds cost fewer bits, the JSON and the plot."""

import json
import wave

import numpy as np
import pytest

from cortexlink.bench import codec_curve
from cortexlink.cli.main import main
from cortexlink.codec import encode_array


def _wavs(folder, n_files=3, seconds=1.5, fs=19531):
    rng = np.random.default_rng(0)
    for i in range(n_files):
        n = int(seconds * fs)
        x = rng.normal(0, 18, n).cumsum() * 0.05 + rng.normal(0, 18, n)
        spikes = rng.choice(n, 25, replace=False)
        for s in spikes:
            x[s:s + 10] -= 120 * np.hanning(10)[: n - s]
        with wave.open(str(folder / f"e{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(fs)
            w.writeframes((np.round(x) * 64).clip(-32768, 32767).astype("<i2").tobytes())


def test_sim_curve_bounds_bits_and_lossless_row():
    r = codec_curve.sim_curve([0, 5, 50], channels=8, seconds=1.0, seed=1)
    rows = r["rows"]
    assert [row["max_error_uv"] for row in rows] == [0, 5, 50]
    assert all(row["bound_held"] and row["max_abs_error_uv"] <= row["max_error_uv"] for row in rows)
    assert rows[0]["max_abs_error_uv"] == 0
    bits = [row["bits_per_sample"] for row in rows]
    assert bits[0] > bits[1] > bits[2]
    # bound 0 is the lossless codec's stream plus the near-lossless prefixes, in the same frames
    imp = codec_curve.implant(8, 1)
    x = np.ascontiguousarray(imp.read_seconds(1.0).data)
    lossless = len(encode_array(x, chunk_samples=30, resync_frames=codec_curve.SIM_RESYNC_FRAMES))
    n_frames = 1000
    prefixes = 12 * n_frames + 2 * 8 * (n_frames // codec_curve.SIM_RESYNC_FRAMES)
    assert bits[0] == pytest.approx(8 * (lossless + prefixes) / x.size, abs=1e-3)
    assert rows[0]["n_true_spikes"] > 0 and rows[0]["recall_snr_ge_5"] is not None


def test_n1_curve_crossing_agreement(tmp_path):
    _wavs(tmp_path)
    r = codec_curve.n1_curve(tmp_path, [0, 64, 2000])
    rows = r["rows"]
    assert all(row["bound_held"] for row in rows)
    lossless = rows[0]
    assert lossless["max_abs_error_counts"] == 0 and lossless["crossings"] == lossless["crossings_original"] > 0
    assert lossless["crossing_recall"] == 1.0 and lossless["crossing_precision"] == 1.0
    assert lossless["crossing_count_rel_error"] == 0
    assert rows[2]["bits_per_sample"] < rows[1]["bits_per_sample"] < rows[0]["bits_per_sample"]


def test_cli_near_lossless_json_and_plot(tmp_path, capsys):
    (tmp_path / "n1").mkdir()
    _wavs(tmp_path / "n1", n_files=2, seconds=1.2)
    out = tmp_path / "curve.json"
    assert main(["bench", "codec", "--near-lossless", "--data", str(tmp_path / "n1"), "--channels", "4",
                 "--seconds", "1", "--errors-uv", "0", "10", "--n1-errors", "0", "128", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sim_4ch_30khz" in text and "n1_broadband" in text and "not measured" in text
    result = json.loads(out.read_text())
    assert result["bench"] == "codec-near-lossless"
    assert [c["dataset"] for c in result["curves"]] == ["sim_4ch_30khz", "n1_broadband"]
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["bench", "codec", "--near-lossless", "--no-data", "--errors-uv", "-1"]) == 2
    assert "errors_uv must be a non-empty list of numbers >= 0" in capsys.readouterr().err
    assert main(["bench", "codec", "--near-lossless", "--no-data", "--out", str(tmp_path / "x.png")]) == 2
    assert "the plot is written beside it" in capsys.readouterr().err


def test_closed_loop_curve_runs_the_session_through_the_link(tmp_path):
    """Each bound is one session whose raw chunks cross a near-lossless link node: the bits per
    sample fall as the bound grows, every sample stays within its bound, Webgrid is scored."""
    from cortexlink.bench import codec_curve
    from cortexlink.bench.codec_loop import loop_curve
    from cortexlink.sim import SimulatedImplant

    session = {"name": "loopcurve", "seed": 3,
               "implant": {"preset": "tiny", "n_channels": 24, "n_dead": 0, "n_saturating": 0},
               "decoder": {"kind": "kalman"}, "click_decoder": {"enabled": False},
               "blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 6, "task_params": {"n": 8}},
                          {"kind": "fit"},
                          {"kind": "evaluation", "task": "webgrid", "seconds": 3, "task_params": {"n": 8}}]}
    c = loop_curve([0.0, 30.0], session=session)
    assert c["channels"] == 24 and c["webgrid_s"] == 3.0
    lossless, near = c["rows"]
    assert lossless["max_abs_error_counts"] == 0
    gain = abs(SimulatedImplant.from_preset("tiny", n_channels=24, seed=3).channel_map.gain_uv).min()
    assert 0 < near["max_abs_error_counts"] * gain <= 30.0 + 1e-9
    assert near["bits_per_sample"] < lossless["bits_per_sample"]
    assert all(isinstance(r["webgrid_bps"], float) and r["webgrid_bps"] >= 0 for r in c["rows"])
    import io

    buf = io.StringIO()
    codec_curve.print_summary({"curves": [c]}, file=buf)
    assert "closed_loop_sim_24ch" in buf.getvalue() and "not measured" not in buf.getvalue()
    png = codec_curve.plot({"curves": [c]}, tmp_path / "loop.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
