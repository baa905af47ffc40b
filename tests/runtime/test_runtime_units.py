"""Sorted units in a session (issue 15 §5): ``loop.units`` wraps the dsp node's extractor in the
unit matcher and ``su`` columns reach the decoder."""

import copy

import pytest

from cortexlink import ConfigError
from cortexlink.runtime.session import load_session, run_session, session_to_graph

QUICK = {
    "name": "units", "seed": 4,
    "implant": {"preset": "tiny", "n_channels": 32, "n_dead": 1, "n_saturating": 0},
    "decoder": {"kind": "kalman"},
    "click_decoder": {"enabled": False},
    "blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 8, "task_params": {"n": 8}},
               {"kind": "fit"},
               {"kind": "evaluation", "task": "webgrid", "seconds": 4, "task_params": {"n": 8}}],
}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Templates of the session's own implant (same preset, channels and seed), perfect sorting."""
    from cortexlink.dsp import FeatureExtractor
    from cortexlink.dsp.units import fit_unit_templates, spikes_from_ground_truth
    from cortexlink.sim import SimulatedImplant

    imp = SimulatedImplant.from_preset("tiny", seed=4, n_channels=32, n_dead=1, n_saturating=0)
    x = imp.read_seconds(15.0).data
    spikes, chans = spikes_from_ground_truth(imp.ground_truth())
    t = fit_unit_templates(FeatureExtractor(imp.channel_map, imp.fs_hz), x, spikes, chans)
    return t, t.save(tmp_path_factory.mktemp("units") / "units.npz")


def test_session_decodes_from_sorted_units(templates):
    t, path = templates
    s = copy.deepcopy(QUICK)
    s["loop"] = {"units": str(path), "feature_kinds": ["su"]}
    g = session_to_graph(s)
    assert g["nodes"]["dsp"]["params"]["units"] == str(path)
    res = run_session(s, progress=False)
    n = res["summary"]["n_features"]
    assert t.n_units // 2 < n <= t.n_units                    # the decoder's columns are units only
    plain = run_session(QUICK, progress=False)["summary"]["n_features"]
    assert plain != n


@pytest.mark.parametrize("loop, match", [
    ({"feature_kinds": ["su"]}, r"session\.loop\.feature_kinds must be .*\(su: with loop\.units\)"),
    ({"units": "/nonexistent/units.npz"}, r"session\.loop\.units.*does not exist"),
    ({"units": 5}, r"session\.loop\.units must be the path of a unit templates file"),
])
def test_bad_units_settings_are_refused(loop, match):
    s = copy.deepcopy(QUICK)
    s["loop"] = loop
    with pytest.raises(ConfigError, match=match):
        load_session(s)


def test_templates_of_another_implant_are_refused(templates, tmp_path):
    _, path = templates
    s = copy.deepcopy(QUICK)
    s["implant"] = {**s["implant"], "n_channels": 48}
    s["loop"] = {"units": str(path), "feature_kinds": ["su"]}
    with pytest.raises(ConfigError, match="does not fit this stream"):
        run_session(s, progress=False)
