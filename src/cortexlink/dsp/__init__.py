"""Causal, stateful feature extraction for high-channel-count recordings.

``FeatureExtractor`` is the full chain (scale → band-pass → reference → threshold
crossings, spike-band power, optional LFP power → bins), fused in one numba pass per
chunk (``backend="numba"``) or written with numpy/scipy (``backend="numpy"``,
``ReferenceFeatureExtractor``). Its parameters are a frozen, validated ``FeatureConfig``.
``scipy_chain`` is the unfused whole-array baseline.

Importing this package does not import numba: the kernels load on first use.
"""

from cortexlink.dsp.calibration import Calibration, apply_lrr, fit_lrr
from cortexlink.dsp.config import FeatureConfig
from cortexlink.dsp.crossings import CrossingEvents
from cortexlink.dsp.detect import detect_crossings
from cortexlink.dsp.features import FeatureExtractor
from cortexlink.dsp.filters import SOSFilter, design_bandpass
from cortexlink.dsp.reference import ReferenceFeatureExtractor, scipy_chain

__all__ = [
    "FeatureExtractor",
    "FeatureConfig",
    "ReferenceFeatureExtractor",
    "CrossingEvents",
    "Calibration",
    "SOSFilter",
    "design_bandpass",
    "detect_crossings",
    "scipy_chain",
    "fit_lrr",
    "apply_lrr",
]
