"""What the LSL outlet and inlet share: stream-type constants, the liblsl configuration
(:func:`use_loopback_only`), the import of pylsl, the XML channel-description helpers and the
bounded stream resolver. Public names are re-exported by :mod:`cortexlink.io.lsl`."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, CortexlinkError

logger = logging.getLogger("cortexlink.io.lsl")  # the name this code logged under before the split

#: LSL content type of the binned-feature stream (LSL types are free-form).
FEATURES_STREAM_TYPE = "Features"
#: LSL content type of the decoded-intent stream (a control signal).
INTENT_STREAM_TYPE = "Control"
#: Unit of each feature kind (the part of a feature name after the last "/"): threshold
#: crossings per bin, spike-band power as mean |x| in µV, LFP power as mean square in µV².
FEATURE_UNITS = {"tx": "counts", "sbp": "uV", "lfp": "uV^2"}
#: Channels and units of the intent stream (screen units per second, probability).
INTENT_CHANNELS = (("vx", "screen/s", "velocity"), ("vy", "screen/s", "velocity"),
                   ("click", "probability", "click"))

#: lsl_api.cfg content that keeps discovery on this machine (see the :mod:`cortexlink.io.lsl` docstring).
LOOPBACK_CONFIG = """\
[ports]
IPv6 = disable
[multicast]
ResolveScope = machine
Interfaces = {127.0.0.1}
[log]
level = -1
"""

_DTYPE_TO_LSL = {"float32": "float32", "float64": "double64", "int8": "int8", "int16": "int16",
                 "int32": "int32", "int64": "int64"}
_LSL_TO_DTYPE = {1: np.float32, 2: np.float64, 4: np.int32, 5: np.int16, 6: np.int8, 7: np.int64}

_state = {"used": False, "configured": None}


class LSLStreamNotFound(CortexlinkError, LookupError):
    """No LSL stream matching the query was found within the timeout."""


def _pylsl() -> Any:
    """Import pylsl; apply the loopback config first if the environment asks for it."""
    import pylsl

    if not _state["used"]:
        if os.environ.get("CORTEXLINK_LSL_LOOPBACK", "").strip().lower() in ("1", "true", "yes"):
            if _state["configured"] is None:
                pylsl.set_config_content(LOOPBACK_CONFIG)
                _state["configured"] = "loopback (CORTEXLINK_LSL_LOOPBACK)"
        _state["used"] = True
    return pylsl


def use_loopback_only() -> bool:
    """Configure liblsl for discovery on this machine only (127.0.0.1).

    Must run before any other LSL call in the process, because liblsl reads its
    configuration once, at first use.

    Returns
    -------
    bool
        True if the configuration was handed to liblsl before this module made
        any LSL call; False if this module had already used LSL (the call then
        has no effect and a warning is logged). LSL use by other code in the
        process cannot be detected.
    """
    import pylsl

    if _state["configured"] is not None:
        return _state["configured"].startswith("loopback")
    if _state["used"]:
        logger.warning("use_loopback_only() called after LSL was first used in this process; "
                       "liblsl keeps the configuration it loaded then")
        return False
    pylsl.set_config_content(LOOPBACK_CONFIG)
    _state["configured"] = "loopback (use_loopback_only)"
    return True


# -- XML description helpers -----------------------------------------------------------

def _write_channels(desc: Any, labels: Sequence[str], units: Sequence[str], types: Sequence[str]) -> None:
    chans = desc.append_child("channels")
    for label, unit, typ in zip(labels, units, types):
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", typ)


def _read_channels(desc: Any, n_channels: int) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Labels, units and types from desc/channels/channel (None where absent)."""
    labels: list[str | None] = []
    units: list[str | None] = []
    types: list[str | None] = []
    ch = desc.child("channels").child("channel")
    while not ch.empty() and len(labels) < n_channels:
        for out, key in ((labels, "label"), (units, "unit"), (types, "type")):
            v = ch.child_value(key)
            out.append(v if v else None)
        ch = ch.next_sibling("channel")
    pad = n_channels - len(labels)
    return labels + [None] * pad, units + [None] * pad, types + [None] * pad


def _str_list(name: str, value: Any, n: int | None = None) -> list[str]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ConfigError(f"{name} must be a sequence of strings; got {value!r}")
    out = [str(v) for v in value]
    if n is not None and len(out) != n:
        raise ConfigError(f"{name} must have {n} entries (one per channel); got {len(out)}")
    return out


def _xpath_literal(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string; got {value!r}")
    if "'" in value:
        raise ConfigError(f"{name} must not contain a single quote (it goes into an XPath query); "
                          f"got {value!r}")
    return f"'{value}'"


def _resolve(pylsl: Any, query: str, deadline: float, poll_s: float = 0.02) -> list:
    """Streams matching the XPath ``query``, polled until found or ``deadline`` (monotonic s).

    A continuous resolver polled from here keeps the bound: liblsl 1.18's
    one-shot ``resolve_bypred(..., timeout)`` and its resolver teardown can
    overrun by a resolve attempt's RTT budget (seen here: 0.5 s -> 5.5 s) when
    the end coincides with the start of a new query wave.
    """
    holder = [pylsl.ContinuousResolver(pred=query, forget_after=5.0)]
    try:
        while True:
            found = holder[0].results()
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            time.sleep(min(poll_s, left))
    finally:
        # Destroying the resolver joins its IO thread, which can take seconds when a query
        # wave starts as it is cancelled; do that off this thread (ctypes releases the GIL).
        t = threading.Thread(target=holder.clear, name="lsl-resolver-teardown", daemon=True)
        t.start()
        t.join(0.1)
