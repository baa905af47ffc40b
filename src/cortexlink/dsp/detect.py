"""Threshold crossings of a whole array in one call (offline): :func:`detect_crossings`."""

from __future__ import annotations

from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.dsp.crossings import CrossingEvents
from cortexlink.dsp.features import FeatureExtractor

__all__ = ["detect_crossings"]


def detect_crossings(data: Any, channel_map: ChannelMap | None = None, fs_hz: float = 30000.0,
                     **kwargs: Any) -> CrossingEvents:
    """Threshold-crossing events of ``data`` with the same kernel as :class:`FeatureExtractor`.

    Parameters
    ----------
    data : ndarray (n_samples, n_channels) int16/float32, Chunk or iterable of Chunk
    channel_map : ChannelMap, optional
        Defaults to a grid with unit gain (int16 counts taken as µV).
    fs_hz : float
    **kwargs
        Further :class:`FeatureExtractor` parameters (``threshold_rms``, ``reference``,
        ``calibration_s``, ``backend``...).

    Returns
    -------
    CrossingEvents
        Crossings after the calibration window (``calibration_s``; none inside it, since
        thresholds are not known yet).
    """
    if channel_map is None:
        if isinstance(data, np.ndarray) and data.ndim == 2:
            n = data.shape[1]
        elif isinstance(data, Chunk):
            n = data.n_channels
        else:
            raise ValidationError("channel_map is required when data is not an array or a Chunk")
        channel_map = ChannelMap.grid(n, gain_uv=1.0)

    kwargs["keep_events"] = True
    fx = FeatureExtractor(channel_map, fs_hz, **kwargs)
    fx.apply(data)
    return fx.events_
