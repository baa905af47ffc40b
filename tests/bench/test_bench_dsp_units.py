"""``cortexlink bench dsp --peers cortexlink_units``: the chain with the sorted-unit matcher, side by side."""

import pytest

from cortexlink.bench import dsp
from cortexlink.core.errors import ConfigError


def test_units_peer_runs_beside_the_chain_with_the_same_crossings():
    res = dsp.run(channels=[64], seconds=1.5, peers=["cortexlink", "cortexlink_units"], progress=False)
    plain = res["implementations"]["cortexlink"]["64"]
    units = res["implementations"]["cortexlink_units"]["64"]
    assert "error" not in units, units
    fitted = res["units"]["64"]
    assert 0 < fitted["n_units_fitted"] <= fitted["n_units_sim"] and units["n_units"] == fitted["n_units_fitted"]
    assert units["unit_spikes"] > 0
    assert units["realtime_channels"] > 0 and "cortexlink_vs_cortexlink_units" in res["ratios"]["64"]
    # the matcher adds columns, it does not change the extractor's crossings
    assert res["detection_by_channels"]["cortexlink_units"]["64"] == res["detection_by_channels"]["cortexlink"]["64"]
    assert plain["features_sha256"] != units["features_sha256"]


def test_units_peer_needs_the_simulator():
    with pytest.raises(ConfigError, match="cortexlink_units needs the simulator"):
        dsp.run_real("/nonexistent", peers=["cortexlink_units"], progress=False)
    with pytest.raises(ConfigError, match="peers must be among"):
        dsp.run(channels=[8], seconds=1.0, peers=["units"], progress=False)
