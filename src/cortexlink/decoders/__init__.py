"""Decoders: scikit-learn estimators with streaming ``step``, saved without pickle.

Continuous decoders (``fit(X, y)`` with X bins x features and y bins x outputs):
:class:`WienerFilter`, :class:`KalmanFilter`, :class:`ReFITKalmanFilter`,
:class:`GRUDecoder`. Discrete: :class:`ClickDecoder`. Speech: :class:`PhonemeDecoder` (trials of
bins -> per-frame CTC log-probabilities over the 41 phoneme classes). Features:
:class:`FeaturePreprocessor`. Persistence: ``decoder.save(path)`` and :func:`load`.
Metrics and blocked cross-validation: :mod:`cortexlink.decoders.metrics`. Real data:
:mod:`cortexlink.decoders.datasets`.

``torch`` is imported only when a :class:`GRUDecoder` or :class:`PhonemeDecoder` is fitted or
run offline; their ``step`` is numpy.
"""

from cortexlink.decoders._base import (
    SCHEMA_VERSION,
    DecoderNotFittedError,
    IncompatibleDecoderError,
    load,
)
from cortexlink.decoders.linear import WienerFilter
from cortexlink.decoders.kalman import KalmanFilter, ReFITKalmanFilter, intended_velocity
from cortexlink.decoders.gru import GRUDecoder
from cortexlink.decoders.phoneme_ctc import PhonemeDecoder
from cortexlink.decoders.click import ClickDecoder, ClickStep
from cortexlink.decoders.preprocessing import FeaturePreprocessor, StreamingPipeline

__all__ = [
    "WienerFilter",
    "KalmanFilter",
    "ReFITKalmanFilter",
    "GRUDecoder",
    "PhonemeDecoder",
    "ClickDecoder",
    "ClickStep",
    "FeaturePreprocessor",
    "StreamingPipeline",
    "intended_velocity",
    "load",
    "SCHEMA_VERSION",
    "IncompatibleDecoderError",
    "DecoderNotFittedError",
]
