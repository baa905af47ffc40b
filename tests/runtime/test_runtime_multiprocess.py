"""A graph across two processes over a real redis-server: source here, dsp in a child process."""

from cortexlink.runtime.graph import run_graph


def test_two_process_graph_over_redis(redis_server, tmp_path):
    g = {"name": "two-proc", "clock": "realtime", "seconds": 2.0, "bus": {"kind": "redis"},
         "nodes": {
             "src": {"kind": "sim_source", "params": {"config": {"n_channels": 16}, "seed": 5}},
             "dsp": {"kind": "dsp", "params": {"extractor": {"calibration_s": 0.5}},
                     "inputs": {"raw": {"from": "src.raw", "maxlen": 512}}, "where": "subprocess"},
             "sink": {"kind": "sink", "inputs": {"data": "dsp.features"}},
         }}
    res = run_graph(g, redis_url=redis_server.url, out_dir=tmp_path)
    nodes = res["nodes"]
    assert res["bus"] == "redis" and res["stop_reason"].startswith("2 s of source time")
    proc = res["processes"]["dsp"]
    assert proc["nodes"] == ["dsp"] and proc["returncode"] == 0 and proc["restarts"] == 0
    assert nodes["dsp"]["process"] == "dsp" and nodes["src"]["process"] == "main"
    assert nodes["dsp"]["state"] == "stopped" and nodes["dsp"]["n_failures"] == 0
    # every chunk crossed the process boundary, and the bins came back
    n_chunks = nodes["src"]["n_out"]
    assert n_chunks >= 1900
    assert nodes["dsp"]["n_in"] + nodes["dsp"]["n_dropped"] >= n_chunks - 50   # in flight at the stop
    assert nodes["sink"]["summary"]["n"] >= 0.9 * nodes["dsp"]["n_in"] / 20
    assert nodes["dsp"]["latency"]["hops"]["raw"]["n"] > 0                    # per-hop times are kept
    assert res["redis"]["xadd"] >= n_chunks
    assert (tmp_path / "logs" / "dsp.log").is_file()
