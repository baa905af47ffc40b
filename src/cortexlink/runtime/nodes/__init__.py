"""Built-in nodes: sources, feature extraction, decoder, participant, cursor/task, recorder, UI, LSL.

================  ==========================================  =========================  =======================
kind              does                                        inputs                     outputs
================  ==========================================  =========================  =======================
``sim_source``    a :class:`~cortexlink.sim.SimulatedImplant`  ``intent`` (participant)   ``raw`` (Chunk)
                  read in ``chunk_ms`` chunks
``replay_source`` a ``.npy`` array (samples x channels) played  --                         ``raw``
                  in chunks, optionally looped
``lsl_source``    an LSL stream (:class:`~cortexlink.io.lsl.    --                         ``raw``
                  LSLInlet`)
``raw_link``      raw chunks through the codec (lossless or     ``raw``                    ``raw``
                  near-lossless) and back, as a link would
``dsp``           :class:`~cortexlink.dsp.FeatureExtractor`,    ``raw``, ``operator``      ``features``
                  one message per bin, decoder columns selected
``decoder``       a velocity decoder (+ click decoder), loaded  ``features``, ``labels``,  ``intent``
                  or calibrated in session                      ``control``
``participant``   a :class:`~cortexlink.sim.SimulatedParticipant` ``cursor`` (feedback)    ``intent``
``cursor``        :class:`~cortexlink.tasks.CursorEffector` +   ``intent``,                ``state``, ``control``,
                  a block schedule of tasks (or the operator's  ``participant``,           ``gate``, ``events``,
                  commands); the watchdog gate, the E-STOP      ``operator``               ``bins``
``recorder``      :class:`~cortexlink.io.session_log.           any of ``raw``,            --
                  SessionRecorder` (never blocks); idle until   ``features``, ...,
                  ``record_start`` with ``operator``            ``operator``
``ui_feed``       latest values, rate-limited snapshots; with   any (latest value),        --
                  ``operator: true`` the operator page's parts  ``activity``
``lsl_outlet``    features or intent as an LSL stream           ``data``                   --
``sink``          counts messages, end-to-end latency           ``data``                   --
``trace``         each block's bins as a BlockTrace             ``bins``, ``events``,      --
                                                                ``features``
``bin_clock``     one tick per bin (no implant: the perfect     ``after`` (ordering)       ``tick``
                  decoder's ceiling)
================  ==========================================  =========================  =======================

Message payloads are typed (:mod:`cortexlink.core.messages`; each port declares its kind —
``chunk``, ``features``, ``decoded_intent``, ... — in :mod:`cortexlink.runtime.messages`, and the
graph refuses an edge between different kinds when it loads):

* ``raw``: a :class:`~cortexlink.core.types.Chunk`; ``sample`` = its first sample.
* ``features`` (dsp): a :class:`~cortexlink.core.messages.FeatureBin` (``bin``, ``bin_start``, ``x``
  the float32 decoder features or None until the extractor is calibrated, ``valid``, optional
  ``raster`` and ``row``); ``sample`` = bin end.
* ``intent`` (decoder, and a ``bin_clock``'s ``tick``): a :class:`~cortexlink.core.types.Intent`
  (``bin``, ``velocity`` (NaN when not decoding), ``click`` (onset), ``proba``, ``ready`` (fitted
  and decoding in closed mode), ``features_valid``, ``version`` (fit count), ``decode_us``, ``n_jobs``).
* ``intent`` (participant): a :class:`~cortexlink.core.messages.ParticipantIntent` (``velocity``
  and ``click`` intended, ``neural`` for the implant, ``active``).
* ``state`` (cursor): a :class:`~cortexlink.core.messages.CursorState` (the next ``bin``, ``xy``,
  ``halted``, ``block``, ``mode``, ``begin``, ``target``, ``op`` in interactive mode, ...).
* ``bins`` (cursor): a :class:`~cortexlink.core.messages.BinRow` per bin of a block, one row of a
  :class:`~cortexlink.tasks.trace.BlockTrace`.
* ``control`` (cursor → decoder): a :class:`~cortexlink.core.messages.Control` (``begin`` / ``end``
  / ``fit`` / ``refit``).
* ``gate`` (cursor): a :class:`~cortexlink.core.messages.Gate` (``halted``, ``velocity`` (0, 0)
  while halted, ``faults``).
* ``events`` (cursor) and ``faults``: plain records (``kind`` and the fields of that kind).
* the speech loop's ``cue``, ``speech``, ``control``, ``frames`` and ``text``: the types of
  :mod:`cortexlink.core.speech_messages` (``speech_task``, ``speaking_participant``,
  ``phoneme_decoder``, ``word_decoder``; see :mod:`cortexlink.runtime.speech_session`).
* stimulation's ``plan`` (encoders → ``stim_interlock``), ``command`` (interlock → ``sim_source``:
  command frames), ``stim`` (``sim_source``: the pulses delivered) and ``status`` (the interlock):
  dicts of plain arrays (:mod:`cortexlink.runtime.messages`, :mod:`cortexlink.runtime.nodes.stim`).

Operator commands arrive on the built-in topic ``operator.commands`` (an ``operator`` input:
cursor, dsp, recorder) and are answered on ``operator.replies``; see
:mod:`cortexlink.runtime.nodes._operator` and :meth:`~cortexlink.runtime.runner.GraphRunner.send_command`.

One module per family: :mod:`~cortexlink.runtime.nodes.sources`, :mod:`~cortexlink.runtime.nodes.dsp`,
:mod:`~cortexlink.runtime.nodes.decoder`, :mod:`~cortexlink.runtime.nodes.participant`,
:mod:`~cortexlink.runtime.nodes.cursor`, :mod:`~cortexlink.runtime.nodes.recorder`,
:mod:`~cortexlink.runtime.nodes.outputs`, :mod:`~cortexlink.runtime.nodes.trace`,
:mod:`~cortexlink.runtime.nodes.link`, :mod:`~cortexlink.runtime.nodes.speech`,
:mod:`~cortexlink.runtime.nodes.speech_decoders` and :mod:`~cortexlink.runtime.nodes.stim`. Importing this package registers every built-in kind;
:func:`cortexlink.runtime.node.node_class` imports only the module of the kind it is asked for.
"""

from __future__ import annotations

from cortexlink.runtime.nodes.sources import BinClock, SimSource, ReplaySource, LSLSource, stream_info
from cortexlink.runtime.nodes.dsp import DspNode
from cortexlink.runtime.nodes.link import RawLinkNode
from cortexlink.runtime.nodes.decoder import DecoderNode
from cortexlink.runtime.nodes.participant import ParticipantNode
from cortexlink.runtime.nodes.cursor import CursorNode
from cortexlink.runtime.nodes.recorder import RecorderNode
from cortexlink.runtime.nodes.outputs import UiFeedNode, LSLOutletNode, SinkNode
from cortexlink.runtime.nodes.trace import TraceNode
from cortexlink.runtime.nodes.speech import SpeechTaskNode, SpeakingParticipantNode
from cortexlink.runtime.nodes.speech_decoders import PhonemeDecoderNode, WordDecoderNode
from cortexlink.runtime.nodes.stim import AudioEncoderNode, StimInterlockNode, TouchEncoderNode

__all__ = ["SimSource", "ReplaySource", "LSLSource", "DspNode", "DecoderNode", "ParticipantNode",
           "CursorNode", "RecorderNode", "UiFeedNode", "LSLOutletNode", "SinkNode", "TraceNode", "BinClock",
           "RawLinkNode", "SpeechTaskNode", "SpeakingParticipantNode", "PhonemeDecoderNode", "WordDecoderNode",
           "TouchEncoderNode", "AudioEncoderNode", "StimInterlockNode", "stream_info"]
