"""The kinds of message that travel on a graph's edges.

Every output port of a built-in node declares the kind it sends and every input port the kind (or
kinds) it takes; :func:`~cortexlink.runtime.graph.load_graph` refuses an edge whose kinds differ,
naming both ends, so a miswired graph fails when it loads rather than mid-run. The payloads are
documented here (and in :mod:`cortexlink.runtime.nodes`); the loop modes they carry are
:class:`~cortexlink.core.types.LoopMode` values.
"""

from __future__ import annotations

__all__ = ["MESSAGE_KINDS", "accepts"]

#: kind -> what its payload holds
MESSAGE_KINDS: dict[str, str] = {
    "chunk": "raw samples: a core.types.Chunk (samples x channels, start_sample, fs_hz, host_time_ns)",
    "features": "one bin: bin, bin_start, x (decoder features or None), valid; optional raster, row",
    "decoded_intent": "one bin's decoder output: bin, v (vx, vy), click (onset), proba, ready, "
                      "features_valid, version, decode_us",
    "participant_intent": "one bin's simulated intent: bin, v, click (intent), neural (vx, vy, click), active",
    "cursor_state": "the cursor after a bin: bin (next), t_s, xy, velocity, clicked, halted, block, mode, "
                    "begin, target, done",
    "control": "cursor -> decoder: cmd (begin, end, fit, refit) and its fields",
    "gate": "the watchdog gate: halted, velocity, click_suppressed, faults",
    "events": "block_start / block_end / task events of the schedule",
    "bin_row": "one row of a tasks.trace.BlockTrace (block, n, bin, sample, cursor, intents, target, latencies)",
    "fault": "a fault event of runtime.faults: kind, severity, node, message, sample",
    "operator_command": "an operator command of operator.commands: id, cmd and its fields",
}


def accepts(wanted: str | tuple[str, ...] | None, sent: str | None) -> bool:
    """True when an input port declaring ``wanted`` (None: any) takes messages of kind ``sent``
    (None: not declared)."""
    if wanted is None or sent is None:
        return True
    return sent in ((wanted,) if isinstance(wanted, str) else wanted)
