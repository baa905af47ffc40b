"""cortexlink: an open software stack for high-channel-count implantable BCIs.

``import cortexlink`` stays light: only numpy-based core types are imported here.
Heavy dependencies (numba, torch, pynwb, spikeinterface) load inside the modules
that need them.
"""

import logging

from cortexlink.core.errors import (
    CortexlinkError,
    ConfigError,
    ValidationError,
    NotFittedError,
    DeviceDisconnected,
    DeadlineMissed,
)
from cortexlink.core.types import ChannelMap, Chunk, BinnedFeatures, Intent, LoopMode

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CortexlinkError",
    "ConfigError",
    "ValidationError",
    "NotFittedError",
    "DeviceDisconnected",
    "DeadlineMissed",
    "ChannelMap",
    "Chunk",
    "BinnedFeatures",
    "Intent",
    "LoopMode",
    "__version__",
]
