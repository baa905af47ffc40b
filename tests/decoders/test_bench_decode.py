"""The decode benchmark runs end to end on a short simulation and returns JSON-able figures."""

import json

import pytest

from cortexlink import ConfigError
from cortexlink.bench.decode import run_decode_bench


def test_bench_on_short_simulation():
    r = run_decode_bench(["sim96"], n_steps=200, progress=False, sim_seconds={96: 12.0}, gru_fit_target=False)
    json.dumps(r)                                       # JSON-able
    ds = r["datasets"]["sim96"]
    names = [d["decoder"] for d in ds["decoders"]]
    assert names[:3] == ["WienerFilter", "KalmanFilter", "GRUDecoder"]
    for d in ds["decoders"][:3]:
        assert {"r2_vx", "r2_vy", "fit_s", "step"} <= set(d)
        assert d["step"]["n_steps"] == 200 and d["step"]["p50_us"] <= d["step"]["p99_us"] <= d["step"]["max_us"]
    assert ds["peers"], "a peer (neural-decoding or the Ridge stand-in) must be measured"
    assert "ours_vs_neural_decoding" in r["targets"]


def test_bench_rejects_unknown_dataset():
    with pytest.raises(ConfigError, match="datasets must be drawn from"):
        run_decode_bench(["imagenet"], progress=False)
