"""NWB export of a session folder, and reading the NWB file back for replay (pynwb/hdmf).

:func:`export_nwb` turns a session folder written by
:class:`~cortexlink.io.session_log.SessionRecorder` into one NWB 2 file:

==========================================  ================================================
what                                        where in the file
==========================================  ================================================
electrode array (positions µm, gain,        ``general/devices``, ``general/extracellular_ephys``
bad channels, channel ids)                  (group + electrodes table: ``rel_x``/``rel_y`` µm,
                                            ``channel_id``, ``bad``, ``gain_uv``, ``offset_uv``)
raw int16 counts                            ``acquisition/ElectricalSeries`` (chunked,
                                            compressed, ``conversion``/``channel_conversion`` to
                                            volts, ``starting_time`` + ``rate``; no timestamps)
threshold crossings, spike-band power       ``processing/ecephys``: ``ThresholdCrossings``
(LFP power when recorded)                   (TimeSeries, counts per bin), ``SpikeBandPower``
                                            (ElectricalSeries, µV -> V), ``FeatureColumns`` table
cursor, clicks, decoder, simulated intent   ``processing/behavior``: ``CursorPosition``
                                            (Position/SpatialSeries), ``cursor_velocity``,
                                            ``decoded_velocity``, ``decoded_click_probability``,
                                            ``intended_velocity_simulated``, ...
trials (target, outcome), blocks            ``intervals/trials``, ``intervals/epochs``
speech sessions: phoneme log-probabilities,  ``processing/behavior/phoneme_logprobs``,
sentences, decoded text, block metrics      ``intervals/speech_trials``, ``intervals/speech_blocks``
                                            (:mod:`cortexlink.io.nwb._speech`)
stimulation: delivered pulses, interlock    ``intervals/stimulation_pulses``,
decisions, refused pulses, E-STOPs, totals, ``intervals/stimulation_decisions``,
the audit log and limits                    ``intervals/stimulation_refused_pulses``,
                                            ``intervals/stimulation_estops``,
                                            ``processing/misc/interlock_totals``,
                                            ``scratch/cortexlink_stim_audit``,
                                            ``scratch/cortexlink_stim_limits``
                                            (:mod:`cortexlink.io.nwb._stim`)
clicks, task events                         ``events/clicks``, ``events/task_events``
holes, gaps, dropped items                  ``intervals/invalid_times`` (with a ``reason``)
every event and the manifest (lossless)     ``scratch/cortexlink_events``,
                                            ``scratch/cortexlink_manifest`` (JSON)
de-identified subject                       ``general/subject`` (pseudonymous id, species,
                                            sex ``"U"``, age range; no name, no birth date)
==========================================  ================================================

Times are seconds from ``session_start_time`` (the manifest's ``started_utc``), derived from
the integer sample indices of the source clock (``sample / fs_hz``); every series with a
regular clock is written with ``starting_time`` and ``rate`` instead of timestamps.

Raw samples are streamed from the stream file to HDF5 through an hdmf
:class:`~hdmf.data_utils.AbstractDataChunkIterator`: one buffer of ``chunk_seconds`` is in
memory at a time, whatever the length of the recording. Samples missing from the raw stream
(dropped items, damaged records removed by ``cortexlink recover``) are written as zeros and
listed in ``invalid_times``. The file is written to ``FILE.part.nwb`` and renamed when complete.

:func:`read_nwb_streams` returns what a replay needs (rate, channel map, features, cursor,
decoder, intent, events, trials); :func:`iter_nwb_chunks` yields the raw samples as
:class:`~cortexlink.core.types.Chunk` objects, lazily (h5py), with the recorded holes left out
so that ``start_sample`` jumps where the recording had a gap.

pynwb, hdmf and h5py are imported inside the functions of this package only.
"""

# GZIP_LEVEL, RAW_SERIES and _peak_rss_mb (used by the export benchmark) are importable from here as before
from cortexlink.io.nwb._common import (  # noqa: F401
    COMPRESSIONS, DEFAULT_COMPRESSION, GZIP_LEVEL, RAW_SERIES, SIMULATED_SPECIES, NWBFileError, _peak_rss_mb,
)
from cortexlink.io.nwb.export import export_nwb
from cortexlink.io.nwb.read import check_nwb, iter_nwb_chunks, read_nwb_streams

__all__ = ["export_nwb", "read_nwb_streams", "iter_nwb_chunks", "check_nwb", "NWBFileError",
           "DEFAULT_COMPRESSION", "COMPRESSIONS", "SIMULATED_SPECIES"]
