"""Small ground-truth recordings for the sorting tests, written as cortexlink raw files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GAIN_UV = 0.195


def write_raw(folder: Path, n_channels: int = 8, seconds: float = 10.0, seed: int = 0, n_units: int = 4):
    """A SpikeInterface ground-truth recording written as int16 counts + a JSON sidecar (the
    cortexlink raw importer's format); returns (path, ground-truth sorting, µV traces)."""
    from spikeinterface.core import generate_ground_truth_recording

    rec, gt = generate_ground_truth_recording(
        durations=[seconds], sampling_frequency=30000.0, num_channels=n_channels, num_units=n_units, seed=seed,
        generate_probe_kwargs=dict(num_columns=2, xpitch=20, ypitch=20, contact_shapes="circle",
                                   contact_shape_params={"radius": 6}))
    counts = np.round(rec.get_traces() / GAIN_UV).astype(np.int16)
    path = Path(folder) / "rec.raw"
    counts.tofile(path)
    sidecar = {"dtype": "int16", "n_channels": n_channels, "fs_hz": 30000.0, "gain_uv": GAIN_UV,
               "positions_um": rec.get_channel_locations().tolist()}
    (Path(folder) / "rec.raw.json").write_text(json.dumps(sidecar))
    return path, gt, counts
