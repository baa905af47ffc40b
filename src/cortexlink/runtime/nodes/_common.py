"""Helpers shared by several node families."""

from __future__ import annotations

import logging
import math

#: One logger for all built-in nodes (``cortexlink.runtime.nodes``), as before the split.
logger = logging.getLogger(__package__)

_NAN2 = (math.nan, math.nan)
