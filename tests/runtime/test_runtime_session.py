"""Session files: validation names the field; a short session runs end to end and writes a run folder."""

import json

import numpy as np
import pytest

from cortexlink import ConfigError, CortexlinkError
from cortexlink.runtime.session import DEFAULT_SESSION, load_session, run_session

QUICK = """
name: quick
seed: 1
implant: {preset: tiny, n_channels: 48, n_dead: 1, n_saturating: 0}
decoder: {kind: refit_kalman}
blocks:
  - {kind: calibration, task: webgrid, seconds: 20, task_params: {n: 8}}
  - {kind: fit}
  - {kind: closed_loop, task: webgrid, seconds: 6, task_params: {n: 8}}
  - {kind: refit}
  - {kind: evaluation, task: webgrid, seconds: 6, task_params: {n: 8}}
"""


def test_default_session_is_valid_and_matches_the_issue():
    cfg = load_session(None)
    kinds = [b["kind"] for b in cfg["blocks"]]
    assert kinds == ["calibration", "fit", "closed_loop", "refit", "evaluation", "evaluation"]
    assert cfg["implant"]["n_channels"] == 1024 and cfg["decoder"]["kind"] == "refit_kalman"
    web = cfg["blocks"][4]
    assert web["task"] == "webgrid" and web["seconds"] == 120 and web["task_params"]["n"] == 30
    assert cfg["blocks"][5]["task_params"]["max_moves"] == 10
    # calibrated on the grid it is evaluated on, not on the same targets (the operator UI's calibrate
    # follows it)
    assert DEFAULT_SESSION["blocks"][0]["task"] == "webgrid" and cfg["blocks"][0]["task_params"]["n"] == 30
    assert cfg["blocks"][0]["task_params"]["seed"] != cfg["blocks"][4]["task_params"].get("seed", cfg["seed"])


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c["blocks"][0].update(task="pong"), r"session\.blocks\[0\]\.task must be one of"),
    (lambda c: c["blocks"][0].update(kind="warmup"), r"session\.blocks\[0\]\.kind must be one of"),
    (lambda c: c["blocks"][0].update(seconds=-3), r"session\.blocks\[0\]\.seconds must be > 0; got -3"),
    (lambda c: c["blocks"][0].pop("seconds"), r"session\.blocks\[0\]\.seconds is required"),
    (lambda c: c["blocks"][0].update(colour="red"), r"session\.blocks\[0\] has unknown key\(s\) \['colour'\]"),
    (lambda c: c["blocks"].pop(1), r"session\.blocks\[1\]\.kind is 'closed_loop' but no 'fit' block"),
    (lambda c: c["blocks"].pop(2), r"session\.blocks\[2\]\.kind is 'refit' but no 'closed_loop'"),
    (lambda c: c["decoder"].update(kind="lstm"), r"session\.decoder\.kind must be one of"),
    (lambda c: c["decoder"].update(params={"depth": 3}), r"session\.decoder\.params is invalid for refit_kalman"),
    (lambda c: c["implant"].update(preset="utah1000"), r"session\.implant\.preset must be one of"),
    (lambda c: c["implant"].update(n_channels=0), r"session\.implant is invalid"),
    (lambda c: c["implant"].update(wires=3), r"session\.implant has unknown field\(s\) \['wires'\]"),
    (lambda c: c.update(seed=-1), r"session\.seed must be an integer >= 0"),
    (lambda c: c["loop"].update(feature_kinds=["lfp"]), r"session\.loop\.feature_kinds must be"),
    (lambda c: c.update(blocks=[]), r"session\.blocks must be a non-empty list"),
    (lambda c: c["blocks"][4]["task_params"].update(n=1), r"session\.blocks\[4\]\.task_params is invalid for webgrid"),
])
def test_bad_session_fields_are_named(mutate, match):
    import copy

    cfg = copy.deepcopy(DEFAULT_SESSION)
    mutate(cfg)
    with pytest.raises(ConfigError, match=match):
        load_session(cfg)


def test_refit_needs_refit_kalman():
    import copy

    cfg = copy.deepcopy(DEFAULT_SESSION)
    cfg["decoder"] = {"kind": "kalman"}
    with pytest.raises(ConfigError, match=r"'refit' needs decoder\.kind 'refit_kalman'; got 'kalman'"):
        load_session(cfg)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("blocks: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_session(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_session(tmp_path / "missing.yaml")


def test_quick_session_runs_and_writes_a_run_folder(tmp_path):
    from cortexlink.tasks.report import write_run_folder

    res = run_session(QUICK, progress=False)
    s = res["summary"]
    assert [b["kind"] for b in s["blocks"]] == ["calibration", "fit", "closed_loop", "refit", "evaluation"]
    assert s["blocks"][1]["n_bins"] > 500 and s["blocks"][3]["n_bins"] > 100
    assert s["blocks"][3]["n_prior_bins"] == s["blocks"][1]["n_bins"]      # ReFIT refits on the calibration too
    assert res["decoder"].n_refits_ == 1
    ev = res["traces"][-1]
    assert ev.mode == "closed" and ev.n_bins == 300
    # the decoder really drove the cursor: the cursor moved by the decoded velocity
    step = np.diff(ev.cursor_xy, axis=0)
    assert np.isfinite(ev.decoded_velocity).all() and np.abs(step).sum() > 0
    assert ev.features.shape == (300, res["decoder"].n_features_in_)
    assert np.isfinite(ev.decode_latency_us).all() and (ev.decode_latency_us > 0).all()
    out = write_run_folder(res, tmp_path / "run")
    for name in ("session.yaml", "summary.json", "events.jsonl", "report.html", "traces/04-evaluation.npz",
                 "figures/cursor_trajectories.png", "figures/webgrid_bitrate.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["session"] == "quick"
    assert load_session(out / "session.yaml") == res["config"]
    html = (out / "report.html").read_text()
    assert "bits per second" in html and "figures/webgrid_bitrate.png" in html


def test_same_seed_same_session():
    a = run_session(QUICK, progress=False)["traces"][-1]
    b = run_session(QUICK, progress=False)["traces"][-1]
    np.testing.assert_array_equal(a.cursor_xy, b.cursor_xy)


@pytest.mark.req("SR-31")
def test_a_calibration_without_click_intent_cannot_fit_a_click_decoder():
    cfg = load_session(QUICK)
    cfg["blocks"][0] = {"kind": "calibration", "task": "centre_out", "seconds": 10.0, "task_params": {"click": False}}
    with pytest.raises(CortexlinkError, match="no click intent"):
        run_session(cfg, progress=False)
    cfg["click_decoder"]["enabled"] = False                     # without click decoding it runs
    res = run_session(cfg, progress=False)
    assert res["click_decoder"] is None and res["traces"][-1].n_bins == 300


def test_the_session_graph_command_prints_a_loadable_graph(capsys, tmp_path):
    import yaml

    from cortexlink.cli.main import main
    from cortexlink.runtime.graph import load_graph

    path = tmp_path / "q.yaml"
    path.write_text(QUICK)
    assert main(["session", "graph", str(path)]) == 0
    g = load_graph(yaml.safe_load(capsys.readouterr().out))
    assert {"participant", "implant", "dsp", "decoder", "cursor", "trace"} <= set(g["nodes"])
    assert g["nodes"]["cursor"]["params"]["blocks"][0]["task"] == "webgrid"
    assert g["seconds"] >= 32.0                                  # bounded by the schedule


def test_a_session_runs_the_same_across_processes_over_redis(redis_server):
    # lock step across processes costs a Redis round trip per bin: a short session
    short = load_session(QUICK)
    for b, secs in zip(short["blocks"], (6.0, None, 2.0, None, 2.0)):
        if secs is not None:
            b["seconds"] = secs
    one = run_session(short, progress=False)
    two = run_session(short, progress=False, redis=redis_server.url)
    assert two["run"]["bus"] == "redis" and two["run"]["nodes"]["dsp"]["process"] != "main"
    assert [b.get("metrics") for b in two["summary"]["blocks"]] == [b.get("metrics") for b in one["summary"]["blocks"]]
    np.testing.assert_array_equal(two["traces"][-1].cursor_xy, one["traces"][-1].cursor_xy)
    np.testing.assert_array_equal(two["traces"][-1].features, one["traces"][-1].features)
    assert two["decoder"] is None                               # it was fitted in the other process
