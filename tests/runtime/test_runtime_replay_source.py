"""``replay_source`` plays recordings through a graph: .npy, session folders and imported files."""

import numpy as np
import pytest
from scipy.io import wavfile

from cortexlink.core.errors import ConfigError
from cortexlink.io.importers import open_recording
from cortexlink.io.session_log import SessionReader
from cortexlink.runtime.runner import run_graph


def _record(path, tmp_path, name, **src):
    """Replay ``path`` once through a graph (fast clock, no loop) and record its raw stream."""
    g = {"name": name, "clock": "fast", "seconds": None, "nodes": {
        "src": {"kind": "replay_source", "params": {"path": str(path), "loop": False, **src}},
        "rec": {"kind": "recorder", "params": {"raw": True}, "inputs": {"raw": "src.raw"}}}}
    res = run_graph(g, out_dir=tmp_path / name)
    assert res["stop_reason"].startswith("src: end of")
    return res, SessionReader(res["nodes"]["rec"]["summary"]["path"])


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_an_imported_recording_plays_at_its_own_rate(tmp_path, dtype):
    rng = np.random.default_rng(3)
    data = rng.integers(-2000, 2000, (4000, 4)).astype(dtype)          # 0.2 s at 20 kHz
    wav = tmp_path / "rec.wav"
    wavfile.write(wav, 20000, data)
    res, rd = _record(wav, tmp_path, f"wav{np.dtype(dtype).itemsize}")
    assert rd.fs_hz == 20000.0 and rd.channel_map.n_channels == 4
    assert res["nodes"]["src"]["n_out"] == 200                           # 1 ms chunks of 20 samples
    _, raw = rd.read_array("raw")
    ref = open_recording(wav)
    if dtype == np.int16:                                                # counts as stored
        np.testing.assert_array_equal(raw, data)
    else:                                                                # other types: float32 µV
        assert raw.dtype == np.float32
        np.testing.assert_allclose(raw, data * ref.channel_map.gain_uv + ref.channel_map.offset_uv, rtol=1e-6)
    ref.close()


def test_a_session_folder_replays_its_raw_stream(tmp_path):
    rng = np.random.default_rng(4)
    data = rng.integers(-500, 500, (3000, 6)).astype(np.int16)
    npy = tmp_path / "a.npy"
    np.save(npy, data)
    _, first = _record(npy, tmp_path, "first")
    again_res, again = _record(first.path, tmp_path, "again", in_memory=True)
    _, raw = again.read_array("raw")
    np.testing.assert_array_equal(raw, data)
    assert again.channel_map.to_dict() == first.channel_map.to_dict() and again.fs_hz == 30000.0


def test_streamed_from_disk_equals_in_memory(tmp_path):
    data = np.random.default_rng(5).integers(-900, 900, (2000, 3)).astype(np.int16)
    wav = tmp_path / "s.wav"
    wavfile.write(wav, 20000, data)
    _, rd = _record(wav, tmp_path, "streamed", in_memory=False)
    np.testing.assert_array_equal(rd.read_array("raw")[1], data)


def test_replay_errors_name_the_field(tmp_path):
    wav = tmp_path / "r.wav"
    wavfile.write(wav, 20000, np.zeros((400, 2), np.int16))
    with pytest.raises(ConfigError, match=r"nodes\.src\.params\.fs_hz is 30000 Hz but .*r\.wav was recorded at 20000 Hz"):
        _record(wav, tmp_path, "rate", fs_hz=30000.0)
    with pytest.raises(ConfigError, match=r"nodes\.src\.params\.chunk_ms must be a whole number .* at 20000 Hz"):
        _record(wav, tmp_path, "chunk", chunk_ms=1.01)
    junk = tmp_path / "notes.txt"
    junk.write_text("not a recording")
    with pytest.raises(ConfigError, match=r"nodes\.src\.params\.path: "):
        _record(junk, tmp_path, "junk")


def test_chunks_in_samples_at_a_rate_without_round_milliseconds(tmp_path):
    # the N1's 19,531 Hz: 20-sample chunks (1.024 ms) and 400-sample bins (20.48 ms)
    data = np.random.default_rng(6).integers(-300, 300, (19531, 4)).astype(np.int16)
    wav = tmp_path / "n1like.wav"
    wavfile.write(wav, 19531, data)
    g = {"name": "n1like", "clock": "fast", "seconds": None, "bin_ms": 400 / 19.531, "nodes": {
        "src": {"kind": "replay_source", "params": {"path": str(wav), "loop": False, "chunk_samples": 20}},
        "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}}, "inputs": {"raw": "src.raw"}},
        "sink": {"kind": "sink", "inputs": {"data": "dsp.features"}}}}
    res = run_graph(g)
    n = res["nodes"]
    assert n["src"]["n_out"] == 19531 // 20 and n["dsp"]["summary"]["n_bins"] == 19531 // 400
    nf = n["dsp"]["summary"]["n_features"]                              # tx and sbp of the good channels
    assert 0 < nf <= 8 and nf % 2 == 0
