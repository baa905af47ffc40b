"""The ``raw_link`` node: a session's raw chunks through the codec (lossless or near-lossless)
before the dsp, as one node of the graph."""

import copy

import numpy as np
import pytest

from cortexlink import ConfigError
from cortexlink.runtime.session import load_session, run_session, session_to_graph

QUICK = {
    "name": "link", "seed": 2,
    "implant": {"preset": "tiny", "n_channels": 32, "n_dead": 1, "n_saturating": 0},
    "decoder": {"kind": "kalman"},
    "click_decoder": {"enabled": False},
    "blocks": [{"kind": "calibration", "task": "webgrid", "seconds": 8, "task_params": {"n": 8}},
               {"kind": "fit"},
               {"kind": "evaluation", "task": "webgrid", "seconds": 4, "task_params": {"n": 8}}],
}


def _with_link(**link):
    s = copy.deepcopy(QUICK)
    s["loop"] = {"link": link}
    return s


def test_the_link_sits_between_implant_and_dsp():
    g = session_to_graph(_with_link(codec="lms", max_error_uv=5))
    assert g["nodes"]["link"]["kind"] == "raw_link"
    assert g["nodes"]["link"]["inputs"]["raw"] == "implant.raw"
    assert g["nodes"]["dsp"]["inputs"]["raw"] == "link.raw"
    assert g["nodes"]["link"]["params"] == {"codec": "lms", "max_error_uv": 5.0, "resync_frames": 100}
    assert "link" not in session_to_graph(QUICK)["nodes"]


def test_a_lossless_link_changes_nothing_downstream():
    plain = run_session(QUICK, progress=False)
    linked = run_session(_with_link(codec="rice"), progress=False)
    link = linked["summary"]["link"]
    assert link["max_error_counts"] == 0 and link["n_samples"] > 0
    assert 0 < link["bits_per_sample"] < 16
    a, b = plain["traces"][-1], linked["traces"][-1]
    np.testing.assert_array_equal(a.cursor_xy, b.cursor_xy)    # the same samples reached the dsp


def test_a_near_lossless_link_keeps_its_bound_and_sends_fewer_bits():
    from cortexlink.sim import SimulatedImplant

    lossless = run_session(_with_link(codec="range"), progress=False)["summary"]["link"]
    near = run_session(_with_link(codec="range", max_error_uv=20), progress=False)["summary"]["link"]
    gain = np.abs(SimulatedImplant.from_preset("tiny", n_channels=32, seed=2).channel_map.gain_uv).min()
    assert 0 < near["max_error_counts"] * gain <= 20 + 1e-9
    assert near["bits_per_sample"] < lossless["bits_per_sample"] - 1


@pytest.mark.parametrize("link, match", [
    ({"codec": "zip"}, r"session\.loop\.link\.codec must be one of"),
    ({"max_error_uv": -1}, r"session\.loop\.link\.max_error_uv must be a number >= 0"),
    ({"max_error_uv": float("nan")}, r"session\.loop\.link\.max_error_uv"),
    ({"resync_frames": 0}, r"session\.loop\.link\.resync_frames must be an integer >= 1"),
    ({"bandwidth": 3}, r"bandwidth"),
])
def test_bad_link_settings_are_named(link, match):
    with pytest.raises(ConfigError, match=match):
        load_session(_with_link(**link))
