import numpy as np
import pytest

import cortexlink
from cortexlink import BinnedFeatures, ChannelMap, Chunk, ConfigError, ValidationError
from cortexlink.core.validation import check_array, check_choice, check_positive


def test_errors_inherit_builtins():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(cortexlink.NotFittedError, AttributeError)
    assert issubclass(cortexlink.DeviceDisconnected, ConnectionError)
    assert issubclass(cortexlink.DeadlineMissed, TimeoutError)


def test_channel_map_is_immutable_and_with_bad_returns_new():
    cm = ChannelMap.grid(16)
    assert cm.n_channels == 16 and cm.positions_um.shape == (16, 2)
    with pytest.raises(ValueError):
        cm.positions_um[0, 0] = 1.0
    cm2 = cm.with_bad([3, 5])
    assert cm.bad.sum() == 0 and list(np.flatnonzero(cm2.bad)) == [3, 5]
    assert ChannelMap.from_dict(cm2.to_dict()) == cm2
    assert len(cm2.good_idx) == 14


def test_channel_map_rejects_bad_input():
    with pytest.raises(ValidationError, match="unique"):
        ChannelMap(["a", "a"])
    with pytest.raises(ValidationError, match="positions_um must have shape"):
        ChannelMap(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="n_channels"):
        ChannelMap.grid(0)


def test_chunk_is_readonly_and_times_derive_from_samples():
    data = np.zeros((30, 4), np.int16)
    c = Chunk(data, 30000.0, start_sample=2**40)
    assert c.end_sample == 2**40 + 30 and not c.data.flags.writeable
    assert c.times_s()[1] == (2**40 + 1) / 30000.0
    with pytest.raises(ValidationError, match="data must have 2 dimensions"):
        Chunk(np.zeros(5), 30000.0, 0)
    with pytest.raises(ConfigError, match="fs_hz"):
        Chunk(data, -1.0, 0)


def test_binned_features_select_and_concat():
    names = ("ch0/tx", "ch1/tx", "ch0/sbp", "ch1/sbp")
    bf = BinnedFeatures(np.arange(8, dtype=np.float32).reshape(2, 4), [0, 600], 600, 30000.0, names)
    tx = bf.select("tx")
    assert tx.feature_names == ("ch0/tx", "ch1/tx") and tx.data.shape == (2, 2)
    both = BinnedFeatures.concat([bf, bf])
    assert both.n_bins == 4 and both.bin_width_s == pytest.approx(0.02)
    with pytest.raises(ValidationError, match="kind must be one of"):
        bf.select("lfp")
    with pytest.raises(ValidationError, match="feature_names must have 4"):
        BinnedFeatures(np.zeros((2, 4), np.float32), [0, 600], 600, 30000.0, names[:3])


def test_validation_helpers_name_the_parameter():
    with pytest.raises(ConfigError, match=r"bin_ms must be a finite number > 0; got -2"):
        check_positive("bin_ms", -2)
    with pytest.raises(ConfigError, match=r"reference must be one of \('car', 'none'\); got 'x'"):
        check_choice("reference", "x", ("car", "none"))
    with pytest.raises(ValidationError, match="chunk must have dtype int16"):
        check_array("chunk", np.zeros((2, 2), np.float64), dtype=np.int16)


def test_import_is_light():
    import subprocess
    import sys
    code = "import cortexlink, sys; bad=[m for m in ('numba','torch','scipy','matplotlib','spikeinterface') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
