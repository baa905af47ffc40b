"""``cortexlink bench codec`` on a tiny input: the JSON's shape, and every codec lossless."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from cortexlink.bench import codec as bench_codec
from cortexlink.cli.main import main

KEYS = {"codec", "dataset", "ratio", "encode_mb_s", "decode_mb_s", "chunk_latency_p99_ms", "lossless"}


def test_bench_codec_json_on_tiny_simulated_input(capsys):
    assert main(["bench", "codec", "--no-data", "--channels", "4", "--seconds", "0.05", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bench"] == "codec"
    names = {r["codec"] for r in result["results"]} | {s["codec"] for s in result["skipped"]}
    assert names == set(bench_codec.CODECS)
    assert result["results"] and {r["dataset"] for r in result["results"]} == {"sim_4ch_30khz"}
    for r in result["results"]:
        assert KEYS <= set(r)
        assert r["lossless"] is True, r
        assert r["ratio"] > 0 and r["encode_mb_s"] > 0 and r["decode_mb_s"] > 0
        assert r["chunk_latency_p99_ms"] >= r["chunk_latency_p50_ms"] >= 0
    assert any(r["codec"] == "cortexlink" for r in result["results"])


def test_bench_codec_on_a_folder_of_wav_files(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        x = (np.round(np.cumsum(rng.integers(-3, 4, 3000)) * 64.1)).astype(np.int16)
        with wave.open(str(tmp_path / f"e{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(19531)
            w.writeframes(x.astype("<i2").tobytes())
    result = bench_codec.run(data=tmp_path, channels=2, seconds=0.02, codecs=["cortexlink", "zlib-9"])
    by = {(r["codec"], r["dataset"]): r for r in result["results"]}
    assert set(by) == {(c, d) for c in ("cortexlink", "zlib-9") for d in ("n1_broadband", "sim_2ch_30khz")}
    assert all(r["lossless"] for r in by.values())
    n1 = result["datasets"][0]
    assert n1["n_files"] == 2 and n1["original_bytes"] == sum(f.stat().st_size for f in tmp_path.glob("*.wav"))


def test_bench_codec_refuses_bad_arguments(tmp_path, capsys):
    assert main(["bench", "codec", "--no-data", "--codecs", "gzip"]) == 2
    assert "codecs must be among" in capsys.readouterr().err
    assert main(["bench", "codec", "--data", str(tmp_path)]) == 2
    assert "no .wav files" in capsys.readouterr().err
    with pytest.raises(Exception, match="channels"):
        bench_codec.run(channels=0, use_default_data=False)
