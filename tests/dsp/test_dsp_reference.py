import subprocess
import sys

import numpy as np

from cortexlink.dsp import FeatureExtractor, scipy_chain
from cortexlink.dsp.benchmark import measure_throughput

FS = 30000.0


def test_scipy_chain_computes_the_same_features(signal):
    data, cmap, _ = signal(16, 30000, spike_uv=100.0)
    ref = scipy_chain(data, FS, gain_uv=cmap.gain_uv, calibration_s=0.2)
    fx = FeatureExtractor(cmap, FS, calibration_s=0.2)
    out = fx.apply(data)
    assert ref.feature_names == out.feature_names and ref.n_bins == out.n_bins == 50
    np.testing.assert_array_equal(ref.valid, out.valid)
    v = out.valid
    # same filter, start-up and common average: same spike-band power
    np.testing.assert_allclose(ref.data[:, 16:][v[:, 16:]], out.data[:, 16:][v[:, 16:]], rtol=1e-4)
    # thresholds come from all vs decimated calibration samples: nearly the same counts
    tx_ref, tx = np.nansum(ref.data[:, :16], 0), np.nansum(out.data[:, :16], 0)
    np.testing.assert_allclose(tx, tx_ref, rtol=0.1, atol=2)


def test_import_cortexlink_dsp_does_not_import_numba():
    code = ("import sys, cortexlink, cortexlink.dsp; "
            "from cortexlink.dsp import FeatureExtractor, scipy_chain; "
            "assert 'numba' not in sys.modules, 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_measure_throughput_reports_peers():
    res = measure_throughput(8, 0.05, 10.0, repeats=1, peers=("scipy_chain", "numpy_backend"))
    for k in ("numba", "scipy_chain", "numpy_backend"):
        assert res[k]["samples_per_s"] > 0 and res[k]["realtime_channels"] > 0
    assert res["speedup_vs_scipy_chain"] > 0 and res["chunk_samples"] == 300
