"""Lab Streaming Layer (LSL) interop through pylsl.

* :class:`LSLOutlet` publishes features or decoded intent so that LabRecorder,
  other BCI software or a task computer can record or consume them;
  :meth:`LSLOutlet.features_outlet` and :meth:`LSLOutlet.intent_outlet` build the
  two standard cortexlink streams.
* :class:`LSLInlet` reads any regular-rate numeric LSL stream as a cortexlink
  source of :class:`~cortexlink.core.types.Chunk` objects.

Metadata follow the XDF meta-data conventions that LabRecorder and XDF readers
(pyxdf, MNE, EEGLAB) read: ``desc/channels/channel/{label,unit,type}``, plus
``desc/acquisition/manufacturer`` and a ``desc/cortexlink`` node.

Discovery
---------
liblsl finds streams with UDP multicast/broadcast queries on every interface
(ResolveScope ``site`` by default). Where that is undesired or blocked (sandboxes,
CI, a laptop on a hostile network), call :func:`use_loopback_only` before any
other LSL call in the process: it hands liblsl an ``lsl_api.cfg`` with
``ResolveScope = machine`` (queries go to 127.0.0.1 only, TTL 0),
``Interfaces = {127.0.0.1}`` and IPv6 off. ``KnownPeers = {127.0.0.1}`` is left
out on purpose: with machine scope the query already goes to 127.0.0.1, and the
extra unicast query waves it adds made liblsl 1.18's resolver teardown overrun
by ``UnicastMaxRTT`` (5 s) about every other time. Setting the
environment variable ``CORTEXLINK_LSL_LOOPBACK=1`` does the same automatically
on the first outlet, inlet or resolve made through this module. liblsl reads its
configuration once per process, so either must happen before the first LSL
call; ``LSLAPICFG=/path/lsl_api.cfg`` is liblsl's own way to do the same.

Time
----
Outlet timestamps are in LSL's clock (``pylsl.local_clock()``); a chunk's
timestamp is that of its *last* sample and LSL derives the others from the
nominal rate. On the inlet, :attr:`Chunk.start_sample` counts samples received
(the source's clock as far as we can know it) and lost samples are detected from
the LSL timestamps: each gap is counted, logged (rate-limited) and listed in
:attr:`LSLInlet.gaps`; with ``on_gap="advance"`` chunks are also split at gaps and
``start_sample`` skips the estimated number of missing samples, so downstream
gap handling sees the hole.

The code lives in :mod:`cortexlink.io._lsl_common` (constants, configuration, description
helpers, resolver), :mod:`cortexlink.io._lsl_outlet` and :mod:`cortexlink.io._lsl_inlet`; this
module is the public entry point. ``pylsl`` is imported by those modules only, never from a
package ``__init__``.
"""

from __future__ import annotations

from cortexlink.io._lsl_common import (
    FEATURE_UNITS,
    FEATURES_STREAM_TYPE,
    INTENT_STREAM_TYPE,
    LOOPBACK_CONFIG,
    LSLStreamNotFound,
    use_loopback_only,
)
from cortexlink.io._lsl_inlet import LSLInlet
from cortexlink.io._lsl_outlet import LSLOutlet

__all__ = [
    "FEATURES_STREAM_TYPE",
    "FEATURE_UNITS",
    "INTENT_STREAM_TYPE",
    "LOOPBACK_CONFIG",
    "LSLInlet",
    "LSLOutlet",
    "LSLStreamNotFound",
    "use_loopback_only",
]
