"""``cortexlink bench latency``: a few seconds only (figures belong to the benchmark, not to tests)."""

import json

import pytest

from cortexlink.bench import latency
from cortexlink.cli.main import main

KEYS = {"bus", "channels", "p50_ms", "p99_ms", "p999_ms", "max_ms", "missed"}


def test_cli_reports_the_json_fields(capsys, tmp_path):
    out = tmp_path / "lat.json"
    rc = main(["bench", "latency", "--json", "--channels", "32", "--buses", "inprocess", "--seconds", "1",
               "--warmup-s", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == res
    (row,) = res["results"]
    assert KEYS <= set(row) and row["bus"] == "inprocess" and row["channels"] == 32
    assert row["n_bins"] == 50 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["p999_ms"] <= row["max_ms"]
    assert isinstance(row["missed"], int) and row["dropped"] == 0 and row["n_chunks"] == 2000
    assert set(row["hops"]) == {"source->dsp", "dsp->decoder", "decoder->cursor"}
    assert res["brand_reference"]["hop_ms"] == 0.6 and "missed" in res["definitions"]
    assert row["steal_pct"] is None or 0.0 <= row["steal_pct"] <= 100.0    # the host's share, beside the figures


def test_redis_condition_runs_across_processes(redis_server):
    res = latency.run(channels=[32], buses=["redis"], seconds=1.0, warmup_s=1.0, redis_url=redis_server.url,
                      progress=False)
    assert res["settings"]["redis_socket"] == "redis"      # a given server: its URL's scheme
    pipe, split = res["results"]
    assert KEYS <= set(split) and split["bus"] == "redis" and split["layout"] == "redis split"
    assert pipe["layout"] == "redis pipeline" and set(res["settings"]["redis_layouts"]) == {"pipeline", "split"}
    for row in (pipe, split):
        # what load cannot break: the run completed, counted what it dropped, and measured (how
        # many messages a busy machine drops is the benchmark's figure, not a test's)
        assert isinstance(row["dropped"], int) and 0 <= row["dropped"] <= row["n_chunks"]
        assert row["n_chunks"] > 0 and row["n_bins"] > 0 and row["p50_ms"] > 0 and row["wall_s"] > 0
    for hop in split["hops"].values():                  # every edge crossed a process boundary
        assert hop["n"] > 0 and hop["transport_p50_ms"] > 0
    hops = pipe["hops"]                                 # only the raw stream did
    assert hops["source->dsp"]["transport_p50_ms"] > 0
    assert "transport_p50_ms" not in hops["dsp->decoder"] and "transport_p50_ms" not in hops["decoder->cursor"]


def test_bad_settings():
    with pytest.raises(ValueError, match="buses must be drawn from"):
        latency.run(channels=[32], buses=["zeromq"], seconds=1.0)
    with pytest.raises(ValueError, match="redis_layouts must be"):
        latency.run(channels=[32], buses=["redis"], seconds=1.0, redis_layouts=["star"])
    with pytest.raises(ValueError, match="redis_socket must be 'unix' or 'tcp'"):
        latency.run(channels=[32], buses=["redis"], seconds=1.0, redis_socket="shm")
    with pytest.raises(ValueError, match="warmup_s > 0.5"):
        latency.run(channels=[32], buses=["inprocess"], seconds=1.0, warmup_s=0.2)
