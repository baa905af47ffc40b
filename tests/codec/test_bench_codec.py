"""``cortexlink bench codec`` on a tiny input: the JSON's shape, and every codec lossless."""

from __future__ import annotations

import json
import struct
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


def test_flac_and_blosc2_peers_are_lossless_beyond_flac_channel_limit():
    """12 channels: FLAC codes them as two FLAC streams (8 + 4 channels), still lossless."""
    result = bench_codec.run(use_default_data=False, channels=12, seconds=0.02,
                             codecs=["flac-8", "blosc2-zstd-shuffle", "blosc2-zstd-delta-bitshuffle"])
    assert not result["skipped"]
    assert {r["codec"] for r in result["results"]} == {"flac-8", "blosc2-zstd-shuffle",
                                                       "blosc2-zstd-delta-bitshuffle"}
    for r in result["results"]:
        assert r["lossless"] is True and r["ratio"] > 1, r
    comp, decomp = bench_codec._peer("flac-8", 30000.0)
    x = np.random.default_rng(3).integers(-32768, 32768, size=(500, 12)).astype(np.int16)
    blob = comp(x)
    assert struct.unpack_from("<I", blob)[0] < len(blob)      # two length-prefixed FLAC streams
    assert np.array_equal(decomp(blob, x.shape), x)


def test_a_peer_whose_package_is_missing_is_skipped_with_the_reason(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_blosc2(name, *args, **kwargs):
        if name in ("blosc2", "soundfile"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_blosc2)
    result = bench_codec.run(use_default_data=False, channels=2, seconds=0.01,
                             codecs=["zlib-9", "flac-8", "blosc2-zstd-shuffle"])
    assert [r["codec"] for r in result["results"]] == ["zlib-9"]
    reasons = {s["codec"]: s["skipped"] for s in result["skipped"]}
    assert "soundfile (>= 0.13) is not installed" in reasons["flac-8"]
    assert "python-blosc2 is not installed" in reasons["blosc2-zstd-shuffle"]
