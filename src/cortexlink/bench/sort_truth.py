"""Ground truth for spike sorting: SpikeInterface (recording, sorting) pairs where every spike of
the true units is known.

* :func:`simulated_pair` -- a :class:`~cortexlink.sim.SimulatedImplant` written chunk by chunk to
  an int16 binary file (memory bounded whatever the duration), opened lazily by SpikeInterface in
  µV with the implant's electrode positions as a probe, and the implant's ground truth as a
  sorting (spike at the waveform's trough; unit properties ``gt_channel``, ``gt_x_um``,
  ``gt_y_um``, ``snr``, ``bursting``).
* :func:`hybrid_pair` -- real recordings with known units injected: the N1 broadband WAVs (one
  electrode per file, stacked as channels) and the locust tetrode, opened with
  :func:`cortexlink.io.importers.open_recording`; templates are the simulator's waveform shapes
  scaled to a chosen SNR over the channel's measured noise (MAD of the 300-6000 Hz band), spike
  trains from SpikeInterface's ``generate_sorting``, injected with its ``InjectTemplatesRecording``.
  The ground truth covers the injected units only (the real units are unknown), so false
  positives cannot be counted there.

Only ``bench`` builds these: ``sorting`` may not import ``sim`` (tests/test_architecture.py).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexlink.core.errors import ConfigError, ValidationError

__all__ = ["TruthPair", "simulated_pair", "hybrid_pair", "load_n1", "load_locust", "SNR_BANDS"]

logger = logging.getLogger(__name__)

#: SNR bands reported by ``bench sort`` (lower bound inclusive, upper exclusive).
SNR_BANDS: tuple[tuple[float, float], ...] = ((0.0, 3.0), (3.0, 5.0), (5.0, 10.0), (10.0, float("inf")))


@dataclass
class TruthPair:
    """A recording (SpikeInterface, µV, probe attached) and the sorting of its true units.

    Attributes
    ----------
    name : str
        Data set name (``sim``, ``sim_drift``, ``n1_hybrid``, ``locust_hybrid``).
    recording, gt_sorting
        SpikeInterface ``BaseRecording`` and ``BaseSorting``.
    unit_snr : ndarray (n_units,)
        SNR of each true unit on its main channel (in ``gt_sorting.unit_ids`` order).
    exhaustive : bool
        True when every unit in the recording is in the ground truth (false positives countable).
    info : dict
        What was built (channels, seconds, drift span, where the data came from).
    templates : ndarray (n_units, n_samples, n_channels) or None
        The injected waveforms (µV) of a hybrid pair, trough at ``nbefore``.
    """

    name: str
    recording: Any
    gt_sorting: Any
    unit_snr: np.ndarray
    exhaustive: bool
    info: dict = field(default_factory=dict)
    templates: np.ndarray | None = None
    nbefore: int = 0


def _with_probe(rec: Any, positions_um: np.ndarray) -> Any:
    rec.set_probe(_probe_from_positions(positions_um))  # in place since SpikeInterface 0.105
    return rec


def _probe_from_positions(positions_um: np.ndarray, radius_um: float = 6.0) -> Any:
    from probeinterface import Probe

    probe = Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=np.asarray(positions_um, float), shapes="circle",
                       shape_params={"radius": radius_um})
    probe.set_device_channel_indices(np.arange(len(positions_um)))
    return probe


def simulated_pair(implant: Any, seconds: float, folder: str | Path, *, name: str = "sim",
                   chunk_s: float = 1.0) -> TruthPair:
    """Write ``seconds`` of ``implant`` to ``folder/traces.int16`` in chunks and pair it with its
    ground truth.

    Parameters
    ----------
    implant : SimulatedImplant
        A fresh implant (read from sample 0; it is read ``seconds`` further).
    seconds : float
        Duration (> 0).
    folder : path
        Created if missing; holds ``traces.int16`` and ``truth.json``.
    chunk_s : float
        Seconds generated and written at a time (memory: ``chunk_s * fs * n_channels * 2`` bytes).

    Returns
    -------
    TruthPair
        Exhaustive ground truth (every single unit of the simulator is in it).
    """
    import spikeinterface.core as si

    if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0):
        raise ConfigError(f"seconds must be a number > 0; got {seconds!r}")
    if implant.sample_index != 0:
        raise ValidationError(f"implant must be fresh (sample_index 0) so the truth starts at sample 0; "
                              f"got sample_index {implant.sample_index}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fs = implant.fs_hz
    n_total = int(round(seconds * fs))
    step = max(1, int(round(chunk_s * fs)))
    path = folder / "traces.int16"
    # written beside and renamed into place: a sorter still reading the file of an earlier run in
    # the same work folder keeps reading that one (its own inode) instead of a truncated file
    part = folder / f".traces.int16.{os.getpid()}.part"
    try:
        with open(part, "wb") as fh:
            done = 0
            while done < n_total:
                n = min(step, n_total - done)
                fh.write(np.ascontiguousarray(implant.read(n).data).tobytes())
                done += n
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    cmap = implant.channel_map
    rec = si.read_binary(path, sampling_frequency=fs, dtype="int16", num_channels=implant.n_channels,
                         gain_to_uV=np.asarray(cmap.gain_uv, float), offset_to_uV=np.asarray(cmap.offset_uv, float),
                         is_filtered=False)
    rec = _with_probe(rec, cmap.positions_um)
    gt = implant.ground_truth(n_total)
    sorting = gt_to_sorting(gt)
    drift = gt.drift_offset_um(np.arange(0, n_total, max(1, int(fs))))
    info = dict(source="simulator", channels=implant.n_channels, seconds=n_total / fs, fs_hz=fs,
                n_units=gt.n_units, n_spikes=int(len(gt.spike_samples)), seed=implant.config.seed,
                footprint_um=implant.config.footprint_um, probe_drift_um=implant.config.probe_drift_um,
                probe_drift_period_s=implant.config.probe_drift_period_s,
                drift_span_um=float(np.ptp(drift)) if len(drift) else 0.0)
    (folder / "truth.json").write_text(json.dumps(info, indent=1))
    return TruthPair(name, rec, sorting, np.asarray(gt.unit_snr, float), True, info)


def gt_to_sorting(gt: Any) -> Any:
    """A SpikeInterface ``NumpySorting`` of a :class:`~cortexlink.sim.GroundTruth` (unit ids
    ``0..n_units-1``, spikes at the trough sample) with each unit's main channel, rest position,
    SNR and bursting as properties. Units without spikes are kept (they count as missed)."""
    import spikeinterface.core as si

    ids = np.arange(gt.n_units)
    sorting = si.NumpySorting.from_samples_and_labels([np.asarray(gt.spike_samples, np.int64)],
                                                      [np.asarray(gt.spike_units, np.int64)], gt.fs_hz,
                                                      unit_ids=ids)
    sorting.set_property("gt_channel", np.asarray(gt.unit_channel, np.int64))
    pos = gt.unit_position_um if len(gt.unit_position_um) == gt.n_units else np.zeros((gt.n_units, 2))
    sorting.set_property("gt_x_um", np.asarray(pos[:, 0], float))
    sorting.set_property("gt_y_um", np.asarray(pos[:, 1], float))
    sorting.set_property("snr", np.asarray(gt.unit_snr, float))
    bursting = gt.unit_bursting if len(gt.unit_bursting) == gt.n_units else np.zeros(gt.n_units, bool)
    sorting.set_property("bursting", np.asarray(bursting, bool))
    return sorting


# ---------------------------------------------------------------------- real data, hybrid
def _to_si(rec: Any, positions_um: np.ndarray | None = None) -> Any:
    """An in-memory float32 µV SpikeInterface recording of a (short) cortexlink importer Recording."""
    import spikeinterface.core as si

    raw = rec.read(0, None)
    data = raw.astype(np.float32)
    if np.issubdtype(raw.dtype, np.integer):  # counts: scale to µV with the channel map
        data = data * np.asarray(rec.channel_map.gain_uv, np.float32) + np.asarray(rec.channel_map.offset_uv,
                                                                                    np.float32)
    out = si.NumpyRecording([data], sampling_frequency=float(rec.fs_hz))
    pos = rec.channel_map.positions_um if positions_um is None else positions_um
    return _with_probe(out, pos)


def load_n1(data_dir: str | Path, n_channels: int = 8, *, pitch_um: float = 200.0) -> Any:
    """The first ``n_channels`` N1 broadband WAVs (sorted by name) stacked as channels of one
    recording (cut to the shortest), on a line ``pitch_um`` apart (independent electrodes)."""
    from cortexlink.io.importers import open_recording

    files = sorted(Path(data_dir).glob("*.wav"))[:n_channels]
    if len(files) < n_channels:
        raise ValidationError(f"{data_dir}: needs {n_channels} WAV files for n_channels={n_channels}; "
                              f"found {len(files)}")
    cols, fs = [], None
    for f in files:
        with open_recording(f, "wav") as r:
            x = np.asarray(r.read(0, None), np.float32)[:, 0] * float(r.channel_map.gain_uv[0])
            fs = r.fs_hz if fs is None else fs
            if r.fs_hz != fs:
                raise ValidationError(f"{f}: sampling rate must match the other files ({fs} Hz); got {r.fs_hz}")
        cols.append(x)
    n = min(len(c) for c in cols)
    import spikeinterface.core as si

    data = np.stack([c[:n] for c in cols], axis=1)
    rec = si.NumpyRecording([data], sampling_frequency=float(fs))
    pos = np.stack([np.zeros(n_channels), np.arange(n_channels) * pitch_um], axis=1)
    return _with_probe(rec, pos)


def load_locust(data_dir: str | Path, trial: int = 1) -> Any:
    """One trial of the locust tetrode (4 channels, 15 kHz) opened with the raw importer; the four
    wires placed on a 25 µm square (a tetrode's geometry, approximately)."""
    from cortexlink.io.importers import open_recording

    path = Path(data_dir) / f"locust_trial_{trial:02d}.raw"
    with open_recording(path, "raw") as r:
        pos = np.array([[0.0, 0.0], [25.0, 0.0], [0.0, 25.0], [25.0, 25.0]])[:r.n_channels]
        return _to_si(r, pos)


def _noise_uv(rec: Any, seed: int) -> np.ndarray:
    import spikeinterface.core as si
    import spikeinterface.preprocessing as spre

    hi = min(6000.0, 0.45 * rec.sampling_frequency)
    filt = spre.bandpass_filter(rec, freq_min=300.0, freq_max=hi)
    return np.asarray(si.get_noise_levels(filt, return_in_uV=False, method="mad", progress_bar=False,
                                          random_slices_kwargs=dict(num_chunks_per_segment=10, chunk_size=5000,
                                                                    seed=seed)),
                      float)


def hybrid_pair(recording: Any, *, name: str, n_units: int = 8, snr_range: Sequence[float] = (4.0, 15.0),
                rate_hz: float = 8.0, seed: int = 0, spread: bool = False) -> TruthPair:
    """Inject ``n_units`` known units into a real recording.

    Each unit gets a simulator waveform shape (:func:`cortexlink.sim.waveforms.unit_templates`),
    a main channel (round robin), an SNR drawn log-uniformly in ``snr_range`` (trough after the
    recording's 300-6000 Hz MAD noise) and a Poisson train at ``rate_hz`` (4 ms refractory). With
    ``spread`` (tetrodes) the other channels see 0.2-0.7 of the waveform.

    Returns
    -------
    TruthPair
        Not exhaustive: the recording's own units are not in the ground truth.
    """
    import spikeinterface.core as si
    from spikeinterface.generation import InjectTemplatesRecording

    from cortexlink.sim.waveforms import unit_templates

    if not (isinstance(n_units, int) and n_units >= 1):
        raise ConfigError(f"n_units must be an integer >= 1; got {n_units!r}")
    rng = np.random.default_rng(seed)
    fs, C = recording.sampling_frequency, recording.get_num_channels()
    shapes, pre = unit_templates(rng, n_units, fs)
    noise = _noise_uv(recording, seed)
    lo, hi = (float(v) for v in snr_range)
    snr = np.exp(rng.uniform(np.log(lo), np.log(hi), n_units))
    main = np.arange(n_units) % C
    gains = np.zeros((n_units, C))
    gains[np.arange(n_units), main] = 1.0
    if spread:
        other = rng.uniform(0.2, 0.7, (n_units, C))
        gains = np.where(gains > 0, 1.0, other)
    # the template's trough on its main channel is snr x noise after the band-pass: scale the raw
    # shape up by what a 300-6000 Hz filter takes off it
    from cortexlink.sim._implant_structure import _bandpassed_trough_fraction

    frac = _bandpassed_trough_fraction(shapes, fs)
    amp = snr * noise[main] / frac
    templates = (shapes[:, :, None] * (amp[:, None, None] * gains[:, None, :])).astype(np.float32)
    n_samples = recording.get_num_samples()
    sorting = si.generate_sorting(num_units=n_units, sampling_frequency=fs, durations=[n_samples / fs],
                                  firing_rates=rate_hz, refractory_period_ms=4.0, seed=seed)
    # keep each whole waveform inside the recording (exactly the injected spikes are in the truth)
    n_t = shapes.shape[1]
    sv = sorting.to_spike_vector()
    keep = (sv["sample_index"] >= pre) & (sv["sample_index"] < n_samples - (n_t - pre))
    sorting = si.NumpySorting.from_samples_and_labels([sv["sample_index"][keep]],
                                                      [sorting.unit_ids[sv["unit_index"][keep]]], fs,
                                                      unit_ids=sorting.unit_ids)
    sorting.set_property("gt_channel", main.astype(np.int64))
    sorting.set_property("snr", snr)
    parent = recording if recording.get_dtype() == np.float32 else _as_float32(recording)
    hybrid = InjectTemplatesRecording(sorting, templates, nbefore=pre, parent_recording=parent)
    info = dict(source=name, channels=C, seconds=n_samples / fs, fs_hz=fs, n_units=n_units,
                n_spikes=int(keep.sum()), snr_range=[lo, hi], noise_uv_median=float(np.median(noise)))
    return TruthPair(name, hybrid, sorting, snr, False, info, templates, pre)


def _as_float32(rec: Any) -> Any:
    import spikeinterface.preprocessing as spre

    return spre.astype(rec, "float32")
