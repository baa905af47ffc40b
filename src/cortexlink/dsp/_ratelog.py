"""A logger wrapper that reports per-chunk events at most once per interval per key."""

from __future__ import annotations

import logging
import math
import time
from typing import Any


class _RateLimitedLog:
    """Log a message at most once per ``interval_s`` per key (for per-chunk events).

    Messages go to ``logger`` (the module logger of the component that owns this log).
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) >= self.interval_s:
            n = self._suppressed.pop(key, 0)
            suffix = f" ({n} similar messages suppressed)" if n else ""
            self.logger.warning(msg + suffix, *args)
            self._last[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
