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
    "features": "one bin of features: a core.messages.FeatureBin (bin, bin_start, x, valid, raster, row)",
    "decoded_intent": "one bin's decoder output: a core.types.Intent (bin, velocity, click, proba, ready, "
                      "features_valid, version, decode_us, n_jobs)",
    "participant_intent": "one bin's simulated intent: a core.messages.ParticipantIntent (bin, velocity, click, "
                          "neural, active)",
    "cursor_state": "the cursor after a bin: a core.messages.CursorState (bin (next), t_s, xy, velocity, clicked, "
                    "halted, block, mode, begin, target, done, op)",
    "control": "cursor -> decoder: a core.messages.Control (cmd begin, end, fit, refit and its fields)",
    "gate": "the watchdog gate: a core.messages.Gate (halted, velocity, click_suppressed, faults)",
    "events": "block_start / block_end / task events of the schedule (plain records: kind and its fields)",
    "bin_row": "one row of a tasks.trace.BlockTrace: a core.messages.BinRow",
    "fault": "a fault event of runtime.faults: kind, severity, node, message, sample",
    "operator_command": "an operator command of operator.commands: id, cmd and its fields",
    "speech_cue": "speech task -> participant: a core.speech_messages.SpeechCue (bin, phase, trial, sentence, "
                  "block, begin)",
    "speech_intent": "speaking participant -> implant, speech task: a core.speech_messages.SpeechIntent (bin, "
                     "trial, articulators, speaking, done)",
    "speech_control": "speech task -> phoneme and word decoders: a core.speech_messages.SpeechControl "
                      "(trial_begin, trial_end, fit)",
    "phoneme_frame": "phoneme decoder -> word decoder, recorder: a core.speech_messages.PhonemeFrame (bin, trial, "
                     "logprobs (n x 41), ready, step_us)",
    "speech_text": "word decoder -> speech task, UI: a core.speech_messages.SpeechText (bin, trial, text, final, "
                   "text_no_lm, finish_ms, n_best, ready)",
    "stim_plan": "stimulation encoder -> interlock: a dict (source, seq, t_start_s, t_end_s and one array per "
                 "pulse field of core.pulses.PULSE_DTYPE; see runtime.nodes.stim.plan_message)",
    "stim_command": "interlock (host driver) -> stimulator: a dict (frame: uint8 array, one frame of the command "
                    "format stim.command v1; now_s)",
    "stim_pulses": "stimulator -> dsp, recorder, UI: the pulses delivered in a chunk (now_s and one array per "
                   "pulse field)",
    "stim_status": "interlock -> UI, recorder: a dict (now_s, estop, policy, limits_sha256, n_plans, n_pulses, "
                   "n_approved, n_refused, n_clamped, reasons, last_refused)",
}


def accepts(wanted: str | tuple[str, ...] | None, sent: str | None) -> bool:
    """True when an input port declaring ``wanted`` (None: any) takes messages of kind ``sent``
    (None: not declared)."""
    if wanted is None or sent is None:
        return True
    return sent in ((wanted,) if isinstance(wanted, str) else wanted)
