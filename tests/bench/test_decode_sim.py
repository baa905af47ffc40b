"""``cortexlink bench decode --sim-preset``: rows, summary, refusals (tiny channel counts, a few seconds)."""

import json

import numpy as np
import pytest

from cortexlink.bench import decode_sim
from cortexlink.bench.decode import run_decode_bench, simulated_dataset
from cortexlink.core.errors import ConfigError
from cortexlink.sim.reach_intent import CentreOutIntent


def test_rows_per_preset_channels_seed_and_decoder():
    res = decode_sim.score_sim_presets(["cortex", "tiny"], channels=[8], seeds=[0, 1], seconds=10.0,
                                      decoders=["KalmanFilter", "WienerFilter"])
    rows = res["rows"]
    assert len(rows) == 2 * 1 * 2 * 2
    assert {r["dataset"] for r in rows} == {"sim:cortex/8", "sim:tiny/8"}
    for r in rows:
        assert r["decoder"] in ("KalmanFilter", "WienerFilter")
        assert np.isfinite(r["r2_vx"]) and np.isfinite(r["r2_vy"])
        assert r["r2_mean"] == pytest.approx((r["r2_vx"] + r["r2_vy"]) / 2)
        assert r["n_train"] + r["n_test"] <= 500 and r["n_test"] > 50
    # the ceiling: 1 without shared noise (tiny), below 1 with it (cortex)
    assert all(r["r2_ceiling_seen_intent"] == pytest.approx(1.0) for r in rows if r["preset"] == "tiny")
    assert all(r["r2_ceiling_seen_intent"] < 0.99 for r in rows if r["preset"] == "cortex")
    assert len(res["summary"]) == 4 and res["summary"][0]["n_seeds"] == 2
    assert res["targets"] == {}                     # cortex not scored at 96 and 1024
    json.dumps(res)


def test_simulated_dataset_with_a_preset_and_an_intent_fn():
    intent = CentreOutIntent(seed=2)
    ds = simulated_dataset(8, 10.0, 2, preset="cortex", intent_fn=intent, kinds=("tx", "sbp"))
    y = np.concatenate([ds["y_train"], ds["y_test"]])
    assert np.mean(np.all(y == 0.0, axis=1)) > 0.2           # rests and holds of the centre-out intent
    assert np.hypot(y[:, 0], y[:, 1]).max() <= 1.5
    assert ds["y_seen_test"].shape == ds["y_test"].shape
    assert not np.array_equal(ds["y_seen_test"], ds["y_test"])
    assert ds["source"].startswith("cortexlink.sim (cortex preset)")


def test_targets_from_rows():
    def row(n, r2):
        return {"preset": "cortex", "channels": n, "decoder": "KalmanFilter", "r2_mean": r2}
    t = decode_sim._targets([row(96, 0.55), row(96, 0.6), row(256, 0.7), row(1024, 0.8)])
    assert t["cortex_kalman_r2_96"]["met"] and t["cortex_kalman_r2_1024"]["met"]
    assert t["cortex_kalman_r2_256_between"]["met"]
    t = decode_sim._targets([row(96, 0.4), row(1024, 0.9)])
    assert not t["cortex_kalman_r2_96"]["met"] and not t["cortex_kalman_r2_1024"]["met"]


@pytest.mark.parametrize("kw, msg", [
    (dict(presets=["nope"]), r"sim presets must be one or more of \["),
    (dict(presets=[]), "sim presets must be one or more of"),
    (dict(presets="cortex", channels=[2]), r"sim channels must be one or more integers in \[4, 65536\]; got \[2\]"),
    (dict(presets="cortex", seeds=[-1]), r"sim seeds must be one or more integers"),
    (dict(presets="cortex", seconds=5.0), r"sim preset seconds must be a number in \[10, 3600\]; got 5.0"),
    (dict(presets="cortex", decoders=["GRU"]), r"sim decoders must be one or more of \['KalmanFilter', 'WienerFilter'\]"),
])
def test_bad_input_is_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        decode_sim.score_sim_presets(**kw)


def test_run_decode_bench_refuses_a_bad_preset_before_running():
    with pytest.raises(ConfigError, match="sim presets must be one or more of"):
        run_decode_bench(datasets=[], sim_presets=["nope"], progress=False, gru_fit_target=False)


def test_cli_sim_preset_rows_only(capsys):
    from cortexlink.cli.main import main

    rc = main(["bench", "decode", "--sim-preset", "tiny", "--sim-channels", "8", "--sim-seeds", "0", "1",
               "--sim-seconds", "10", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["datasets"] == {} and "gru_fit_30000x1024" not in res    # only the preset rows were asked for
    assert [(r["dataset"], r["seed"], r["decoder"]) for r in res["sim_presets"]["rows"]] == [
        ("sim:tiny/8", 0, "KalmanFilter"), ("sim:tiny/8", 1, "KalmanFilter")]


def test_cli_refuses_an_unknown_preset(capsys):
    from cortexlink.cli.main import main

    rc = main(["bench", "decode", "--sim-preset", "nope", "--json"])
    assert rc != 0
    assert "sim presets must be one or more of" in capsys.readouterr().err
