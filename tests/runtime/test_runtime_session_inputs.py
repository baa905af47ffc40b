"""Hostile and malformed session files: refused with a ConfigError naming the problem, quickly and
in bounded memory; `session check` refuses what `session run` would; defaults fit small implants."""

import copy
import resource

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortexlink import ConfigError
from cortexlink.cli.main import main
from cortexlink.runtime.session import DEFAULT_SESSION, load_session

SMALL = {"name": "small", "implant": {"preset": "default", "n_channels": 16},
         "blocks": [{"kind": "calibration", "task": "centre_out", "seconds": 5, "task_params": {"click": True}},
                    {"kind": "fit"},
                    {"kind": "evaluation", "task": "webgrid", "seconds": 5, "task_params": {"n": 4}}]}


def test_alias_bomb_in_the_name_is_refused_at_once(tmp_path, capsys):
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i, n in enumerate("bcdefghi"):
        text += f"{n}: &{n} [" + ",".join([f"*{'abcdefghi'[i]}"] * 9) + "]\n"
    p = tmp_path / "bomb.yaml"
    p.write_text(text.replace("a: &a", "x: &a", 1).replace("*a", "*a") + "name: *i\nblocks: []\n")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["session", "check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "anchors and aliases expand it" in err and len(err) < 500
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200_000     # KiB: nothing expanded


def test_a_name_that_is_not_short_text_is_refused_briefly():
    for name in (["a"] * 100000, "x" * 10000, {"a": 1}):
        with pytest.raises(ConfigError, match=r"session\.name must be a short text") as ei:
            load_session({**copy.deepcopy(SMALL), "name": name})
        assert len(str(ei.value)) < 300


def test_huge_and_binary_files_are_refused(tmp_path):
    p = tmp_path / "huge.yaml"
    with open(p, "wb") as fh:
        fh.write(b"name: huge\n")
        fh.truncate(50_000_000)
    with pytest.raises(ConfigError, match=r"session file .*huge.yaml is 50,000,000 bytes; at most 1,000,000"):
        load_session(p)
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ConfigError, match=r"session file .* (is not UTF-8 text|holds a character|is not valid YAML)"):
        load_session(p)
    p.write_bytes("name: séance\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_session(p)


def test_durations_in_exponent_form_are_numbers_and_absurd_ones_refused():
    text = "name: e\nblocks:\n  - {kind: calibration, task: centre_out, seconds: %s}\n"
    assert load_session(text % "1e3")["blocks"][0]["seconds"] == 1000.0
    with pytest.raises(ConfigError, match=r"session\.blocks\[0\]\.seconds must be at most 86400 s \(24 h\); got 1e\+12"):
        load_session(text % "1e12")
    with pytest.raises(ConfigError, match=r"session\.blocks\[0\]\.max_seconds must be at most"):
        load_session(text.replace("}", ", max_seconds: 1e9}") % "10")
    with pytest.raises(ConfigError, match=r"session\.loop\.dt_s must be a number in \(0, 1\]"):
        load_session({**copy.deepcopy(SMALL), "loop": {"dt_s": 1e6}})


@pytest.mark.parametrize("kind, params, match", [
    ("refit_kalman", {"max_iter": -3}, "max_iter must be an integer >= 1"),
    ("kalman", {"obs_shrinkage": "lots"}, "obs_shrinkage must be a number in"),
    ("wiener", {"n_lags": 0}, "n_lags must be an integer >= 1"),
    ("wiener", {"alphas": []}, "alphas must hold at least one value"),
    ("gru", {"hidden_size": 0}, "hidden_size must be an integer >= 1"),
])
def test_session_check_refuses_decoder_params_that_fitting_refuses(kind, params, match):
    from cortexlink.decoders.fitting import make_decoder

    cfg = copy.deepcopy(SMALL)
    cfg["decoder"] = {"kind": kind, "params": params}
    with pytest.raises(ConfigError, match=rf"session\.decoder\.params is invalid for {kind}: {match}"):
        load_session(cfg)
    # the same values refused by the decoder's own fit (what `session run` does)
    dec = make_decoder(kind, {})
    dec.set_params(**params)
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=match):
        dec.fit(rng.normal(size=(200, 4)), rng.normal(size=(200, 2)))


@pytest.mark.parametrize("params, match", [
    ({"depth": 3}, r"unknown parameter\(s\) \['depth'\] for ClickDecoder"),
    ({"method": "svm"}, "method must be one of"),
    ({"on_threshold": 0.2, "off_threshold": 0.5}, "off_threshold must be <= on_threshold"),
])
def test_session_check_refuses_click_params(params, match, tmp_path, capsys):
    import yaml

    cfg = copy.deepcopy(SMALL)
    cfg["click_decoder"] = {"enabled": True, "params": params}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["session", "check", str(p)]) == 2
    assert "session.click_decoder.params is invalid: " in capsys.readouterr().err
    with pytest.raises(ConfigError, match=match):
        load_session(cfg)


def test_small_implants_get_fewer_bad_channels_unless_the_session_sets_them():
    cfg = copy.deepcopy(SMALL)
    for n, dead, sat in ((4, 0, 0), (8, 0, 0), (32, None, None), (1024, None, None)):
        cfg["implant"] = {"preset": "default", "n_channels": n}
        imp = load_session(cfg)["implant"]
        assert imp.get("n_dead") == dead and imp.get("n_saturating") == sat, (n, imp)
    cfg["implant"] = {"preset": "default", "n_channels": 4, "n_dead": 3, "n_saturating": 2}
    with pytest.raises(ConfigError, match=r"n_dead \+ n_saturating must be <= n_channels \(4\)"):
        load_session(cfg)


def test_block_names_name_files_and_are_unique():
    for name in ("../x", "a/b", "", "x" * 65, ".."):
        cfg = copy.deepcopy(SMALL)
        cfg["blocks"][0]["name"] = name
        with pytest.raises(ConfigError, match=r"session\.blocks\[0\]\.name must be 1 to 64 printable characters"):
            load_session(cfg)
    cfg = copy.deepcopy(SMALL)
    cfg["blocks"][2]["name"] = "00-calibration"
    with pytest.raises(ConfigError, match=r"session\.blocks\[2\]\.name '00-calibration' is the name of an earlier"):
        load_session(cfg)


# ------------------------------------------------------------------------------------------ properties
_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                       lambda kids: st.lists(kids, max_size=3)
                       | st.dictionaries(st.text(max_size=8) | st.integers(), kids, max_size=3), max_leaves=12)
_paths = st.sampled_from([("name",), ("seed",), ("implant",), ("implant", "preset"), ("implant", "n_channels"),
                          ("implant", "n_dead"), ("participant",), ("participant", "noise"), ("loop",),
                          ("loop", "dt_s"), ("loop", "feature_kinds"), ("effector",), ("effector", "gain"),
                          ("decoder",), ("decoder", "kind"), ("decoder", "params"), ("click_decoder",),
                          ("click_decoder", "enabled"), ("click_decoder", "params"), ("blocks",),
                          ("blocks", 0), ("blocks", 0, "seconds"), ("blocks", 0, "task"), ("blocks", 0, "name"),
                          ("blocks", 2, "task_params"), ("blocks", 2, "kind"), (7,), ("bogus",)])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_paths, _values), min_size=1, max_size=3))
def test_any_value_anywhere_gives_a_session_or_a_config_error(changes):
    cfg = copy.deepcopy(SMALL)
    for path, value in changes:
        node = cfg
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        out = load_session(cfg)
    except ConfigError as exc:
        assert str(exc).startswith("session") and len(str(exc)) < 2000, str(exc)[:3000]
    else:
        assert isinstance(out["name"], str) and out["blocks"]


def test_default_session_still_loads():
    assert load_session(copy.deepcopy(DEFAULT_SESSION))["name"] == "demo"
