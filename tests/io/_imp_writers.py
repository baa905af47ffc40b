"""Writers of tiny, spec-valid lab-format files for the importer tests.

No network is available in the tests, so the vendors' sample files cannot be fetched. Each
writer here lays a file out as its vendor documents it (field order and sizes checked against
the vendors' format documents and the neo readers installed in the virtualenv); none copies
code from them. Every writer returns what it wrote, so a test can compare bit for bit.

- SpikeGLX: ``<run>_g0_t0.imec0.ap.bin`` (int16, interleaved, sync word last) + ``.meta``
  (``key=value`` lines; ``~imroTbl``/``~snsChanMap`` lists).
- Open Ephys binary (GUI >= 0.6): ``Record Node 101/experiment1/recording1/structure.oebin``
  (JSON) + ``continuous/<stream>/continuous.dat`` (int16 interleaved) + ``sample_numbers.npy``.
- Intan RHD2000 (.rhd, header attached): little-endian header of fixed fields and QStrings,
  then data blocks of 128 samples (v2+): int32 timestamps, then per amplifier channel 128
  uint16 (offset binary, 0.195 µV per count).
- Blackrock NSx, NEURALCD (2.2/2.3/3.0): 314-byte basic header, 66 bytes per channel
  ("CC" extended headers), then data packets (0x01, timestamp, n_points, int16 interleaved);
  NEURALSG (2.1): 32-byte header, one uint32 electrode id per channel, int16 interleaved.
- NWB through pynwb; WAV through scipy.io.wavfile; raw int16 + JSON sidecar with numpy/json.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


def ramp(n_samples: int, n_channels: int, *, seed: int = 0, dtype=np.int16) -> np.ndarray:
    """Deterministic test samples covering the int16 range, distinct per channel."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, int(info.max) + 1, size=(n_samples, n_channels), dtype=np.int64)
    x[0] = np.arange(n_channels)  # an easy first row to eyeball
    return x.astype(dtype)


# ---------------------------------------------------------------------------------------------
# SpikeGLX

def write_spikeglx(folder: Path, data: np.ndarray, *, fs_hz: float = 30000.0, ap_gain: int = 500,
                   lf_gain: int = 250, kind: str = "ap", run: str = "run", extra_meta: dict | None = None,
                   drop_meta: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Neuropixels 1.0 AP (or LF) stream: ``data`` is (samples, n + 1); the last column is SY0.

    Writes ``snsSaveChanSubset`` so that the saved channels are electrodes 0..n-1 of a
    384-channel IMRO table (the table itself must always list 384 entries for NP1.0); LF
    channels are numbered 384 + electrode in the channel map, as SpikeGLX does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(data, dtype=np.int16)
    n_saved = data.shape[1]
    n_ap = n_saved - 1
    stem = f"{run}_g0_t0.imec0.{kind}"
    first = 0 if kind == "ap" else 384
    label = kind.upper()
    bin_path = folder / f"{stem}.bin"
    meta_path = folder / f"{stem}.meta"
    data.tofile(bin_path)
    imro = "(0,384)" + "".join(f"({c} 0 0 {ap_gain} {lf_gain} 1)" for c in range(384))
    counts = f"{n_ap},0,1" if kind == "ap" else f"0,{n_ap},1"
    chan_map = (f"({counts})" + "".join(f"({label}{c};{first + c}:{first + c})" for c in range(n_ap))
                + "(SY0;768:768)")
    meta = {
        "acqApLfSy": "384,384,1",
        "appVersion": "20230425",
        "fileName": f"D:/data/{stem}.bin",
        "fileSizeBytes": str(data.nbytes),
        "fileTimeSecs": f"{data.shape[0] / fs_hz:.6f}",
        "firstSample": "0",
        "imAiRangeMax": "0.6",
        "imAiRangeMin": "-0.6",
        "imDatPrb_pn": "NP1000",
        "imDatPrb_sn": "18005117852",
        "imDatPrb_type": "0",
        "imMaxInt": "512",
        "imSampRate": repr(float(fs_hz)),
        "nSavedChans": str(n_saved),
        "snsApLfSy": counts,
        "snsSaveChanSubset": f"{first}:{first + n_ap - 1},768",
        "typeThis": "imec",
        "~imroTbl": imro,
        "~snsChanMap": chan_map,
    }
    meta.update(extra_meta or {})
    for k in drop_meta:
        meta.pop(k, None)
    meta_path.write_text("".join(f"{k}={v}\n" for k, v in meta.items()))
    return bin_path, meta_path


def spikeglx_np1_gain_uv(gain: int = 500) -> float:
    """µV per count of a Neuropixels 1.0 channel: 0.6 V / 512 / gain (SpikeGLX metadata guide)."""
    return 0.6 / 512 / gain * 1e6


# ---------------------------------------------------------------------------------------------
# Open Ephys binary

def write_openephys_binary(root: Path, data: np.ndarray, *, fs_hz: float = 30000.0,
                           bit_volts: float = 0.195, units: str = "uV",
                           stream: str = "Acquisition_Board-100.Rhythm Data",
                           first_sample: int = 1000, num_channels: int | None = None,
                           channel_names: list[str] | None = None, recording: int = 1) -> Path:
    """One node, one experiment, recording ``recording``, one continuous stream. Returns the recording folder."""
    rec = root / "Record Node 101" / "experiment1" / f"recording{recording}"
    cont = rec / "continuous" / stream
    cont.mkdir(parents=True, exist_ok=True)
    (rec / "events").mkdir(exist_ok=True)
    data = np.ascontiguousarray(data, dtype=np.int16)
    n_ch = data.shape[1]
    names = channel_names or [f"CH{i + 1}" for i in range(n_ch)]
    oebin = {
        "GUI version": "0.6.7",
        "continuous": [{
            "folder_name": stream + "/",
            "sample_rate": fs_hz,
            "source_processor_name": "Acquisition Board",
            "source_processor_id": 100,
            "stream_name": stream.split(".")[-1],
            "recorded_processor": "Record Node",
            "recorded_processor_id": 101,
            "num_channels": n_ch if num_channels is None else num_channels,
            "channels": [{"channel_name": nm, "description": "headstage data", "identifier": "genericdata.continuous",
                          "history": "Acquisition Board -> Record Node", "bit_volts": bit_volts, "units": units,
                          "source_processor_index": i, "recorded_processor_index": i}
                         for i, nm in enumerate(names)],
        }],
        "events": [],
        "spikes": [],
    }
    (rec / "structure.oebin").write_text(json.dumps(oebin, indent=2))
    data.tofile(cont / "continuous.dat")
    samples = np.arange(first_sample, first_sample + data.shape[0], dtype=np.int64)
    np.save(cont / "sample_numbers.npy", samples)
    np.save(cont / "timestamps.npy", samples / fs_hz)
    return rec


def write_openephys_legacy(folder: Path, data: np.ndarray, *, fs_hz: float = 30000.0, bit_volts: float = 0.195,
                           processor: str = "100", first_timestamp: int = 0) -> list[Path]:
    """Legacy format: one ``<processor>_CH<n>.continuous`` per channel; ``data`` must fill whole records.

    Each file: a 1024-byte text header of ``header.key = value;`` lines, then records of an
    int64 timestamp, uint16 sample count (1024), uint16 recording number, 1024 big-endian int16
    samples and the 10-byte marker 0..8, 255 (Open Ephys GUI documentation).
    """
    folder.mkdir(parents=True, exist_ok=True)
    n, n_ch = data.shape
    if n % 1024:
        raise ValueError("samples must be a multiple of 1024")
    rec = np.dtype([("timestamp", "<i8"), ("n", "<u2"), ("rec", "<u2"), ("samples", ">i2", 1024), ("marker", "u1", 10)])
    paths = []
    for c in range(n_ch):
        header = (f"header.format = 'Open Ephys Data Format'; \nheader.version = 0.4;\nheader.header_bytes = 1024;\n"
                  f"header.description = 'each record contains one 64-bit timestamp and 1024 samples';\n"
                  f"header.date_created = '1-Jan-2024 120000';\nheader.channel = 'CH{c + 1}';\n"
                  f"header.channelType = 'Continuous';\nheader.sampleRate = {int(fs_hz)};\n"
                  f"header.blockLength = 1024;\nheader.bufferSize = 1024;\nheader.bitVolts = {bit_volts!r};\n")
        records = np.zeros(n // 1024, dtype=rec)
        records["timestamp"] = first_timestamp + 1024 * np.arange(n // 1024)
        records["n"] = 1024
        records["samples"] = data[:, c].reshape(-1, 1024)
        records["marker"] = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 255], dtype=np.uint8)
        path = folder / f"{processor}_CH{c + 1}.continuous"
        path.write_bytes(header.encode().ljust(1024, b" ") + records.tobytes())
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Intan RHD2000

def _qstring(s: str | None) -> bytes:
    if s is None:
        return struct.pack("<I", 0xFFFFFFFF)
    b = s.encode("utf-16-le")
    return struct.pack("<I", len(b)) + b


def write_intan_rhd(path: Path, amp: np.ndarray, *, fs_hz: float = 20000.0, version: tuple[int, int] = (3, 0),
                    magic: int = 0xC6912702, first_timestamp: int = 0) -> Path:
    """Header-attached RHD file with one enabled signal group of amplifier channels.

    ``amp`` is (samples, channels) uint16 (offset binary, 0.195 µV per count); the number of
    samples must be a multiple of the block size (128 for v2+, 60 before).
    """
    major, minor = version
    block = 128 if major >= 2 else 60
    amp = np.asarray(amp, dtype=np.uint16)
    n, n_ch = amp.shape
    if n % block:
        raise ValueError(f"samples must be a multiple of {block}")
    h = bytearray()
    h += struct.pack("<Ihh", magic, major, minor)
    h += struct.pack("<fhfff", fs_hz, 1, 1.0, 0.1, 7500.0)  # rate, dsp on, actual dsp/lower/upper
    h += struct.pack("<fff", 1.0, 0.1, 7500.0)  # desired dsp/lower/upper
    h += struct.pack("<hff", 0, 1000.0, 1000.0)  # notch mode, impedance test freq desired/actual
    h += _qstring("cortexlink test") + _qstring(None) + _qstring(None)
    if (major, minor) >= (1, 1):
        h += struct.pack("<h", 0)  # temperature sensor channels
    if (major, minor) >= (1, 3):
        h += struct.pack("<h", 0)  # eval board mode
    if major >= 2:
        h += _qstring("hardware")  # reference channel
    h += struct.pack("<h", 1)  # one signal group
    h += _qstring("Port A") + _qstring("A") + struct.pack("<hhh", 1, n_ch, n_ch)
    for c in range(n_ch):
        name = f"A-{c:03d}"
        h += _qstring(name) + _qstring(name)
        # native order, custom order, signal type 0 (amplifier), enabled, chip channel, board stream
        h += struct.pack("<hhhhhh", c, c, 0, 1, c, 0)
        h += struct.pack("<hhhh", 0, 0, 0, 0)  # spike scope trigger settings
        h += struct.pack("<ff", 1.0e5, -45.0)  # impedance magnitude, phase
    ts_dtype = "<i4" if (major, minor) >= (1, 2) else "<u4"
    with open(path, "wb") as f:
        f.write(bytes(h))
        for b in range(n // block):
            ts = np.arange(first_timestamp + b * block, first_timestamp + (b + 1) * block).astype(ts_dtype)
            f.write(ts.tobytes())
            f.write(np.ascontiguousarray(amp[b * block:(b + 1) * block].T).astype("<u2").tobytes())
    return path


# ---------------------------------------------------------------------------------------------
# Blackrock NSx

def _nsx_ext_header(n_ch: int, *, min_dig=-32764, max_dig=32764, min_ana=-8191, max_ana=8191, units="uV") -> bytes:
    out = bytearray()
    for c in range(n_ch):
        out += b"CC" + struct.pack("<H", c + 1) + f"elec{c + 1}".encode().ljust(16, b"\0")
        out += struct.pack("<BBhhhh", 1, c + 1, min_dig, max_dig, min_ana, max_ana)
        out += units.encode().ljust(16, b"\0")
        out += struct.pack("<IIHIIH", 7500000, 3, 1, 300, 1, 1)  # hi/lo filter corners (mHz), orders, types
    assert len(out) == 66 * n_ch
    return bytes(out)


def write_nsx(path: Path, blocks: list[np.ndarray], *, spec: str = "2.3", period: int = 1,
              timestamps: list[int] | None = None, units: str = "uV", bytes_in_headers: int | None = None,
              min_dig=-32764, max_dig=32764, min_ana=-8191, max_ana=8191) -> Path:
    """NEURALCD file (spec 2.2, 2.3 or 3.0) with one data packet per array in ``blocks``."""
    n_ch = blocks[0].shape[1]
    major, minor = (int(v) for v in spec.split("."))
    bih = 314 + 66 * n_ch if bytes_in_headers is None else bytes_in_headers
    h = b"NEURALCD" + struct.pack("<BBI", major, minor, bih)
    h += b"cortexlink".ljust(16, b"\0") + b"test file".ljust(256, b"\0")
    h += struct.pack("<II", period, 30000)
    h += struct.pack("<8H", 2024, 1, 1, 1, 12, 0, 0, 0)
    h += struct.pack("<I", n_ch)
    assert len(h) == 314
    h += _nsx_ext_header(n_ch, min_dig=min_dig, max_dig=max_dig, min_ana=min_ana, max_ana=max_ana, units=units)
    ts_fmt = "<Q" if major >= 3 else "<I"
    timestamps = timestamps or [0] * len(blocks)
    with open(path, "wb") as f:
        f.write(h)
        for ts, blk in zip(timestamps, blocks):
            blk = np.ascontiguousarray(blk, dtype="<i2")
            f.write(b"\x01" + struct.pack(ts_fmt, ts) + struct.pack("<I", blk.shape[0]))
            f.write(blk.tobytes())
    return path


def write_nsx21(path: Path, data: np.ndarray, *, period: int = 3) -> Path:
    """NEURALSG (spec 2.1) file: no per-channel scaling, no packet headers."""
    data = np.ascontiguousarray(data, dtype="<i2")
    n_ch = data.shape[1]
    h = b"NEURALSG" + b"10 kS/s".ljust(16, b"\0") + struct.pack("<II", period, n_ch)
    h += np.arange(1, n_ch + 1, dtype="<u4").tobytes()
    path.write_bytes(h + data.tobytes())
    return path


# ---------------------------------------------------------------------------------------------
# NWB

def write_nwb(path: Path, data: np.ndarray, *, fs_hz: float = 30000.0, conversion: float = 2.5e-7,
              offset: float = 0.0, channel_conversion: np.ndarray | None = None, name: str = "ElectricalSeries",
              extra_series: dict[str, np.ndarray] | None = None, rel_xy: np.ndarray | None = None) -> Path:
    """An NWB file with ElectricalSeries ``name`` (and optional extra series) over one electrode table."""
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ecephys import ElectricalSeries

    n_ch = data.shape[1]
    nwb = NWBFile(session_description="cortexlink importer test", identifier="cortexlink-test",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
    dev = nwb.create_device(name="array")
    grp = nwb.create_electrode_group(name="shank0", description="test shank", location="M1", device=dev)
    if rel_xy is None:
        rel_xy = np.stack([np.arange(n_ch) * 0.0, np.arange(n_ch) * 20.0], axis=1)
    for c in range(n_ch):
        nwb.add_electrode(group=grp, location="M1", rel_x=float(rel_xy[c, 0]), rel_y=float(rel_xy[c, 1]))
    region = nwb.create_electrode_table_region(list(range(n_ch)), "all electrodes")
    es = ElectricalSeries(name=name, data=data, electrodes=region, rate=fs_hz, starting_time=0.0,
                          conversion=conversion, offset=offset, channel_conversion=channel_conversion)
    nwb.add_acquisition(es)
    for nm, d in (extra_series or {}).items():
        reg = nwb.create_electrode_table_region(list(range(d.shape[1])), f"{nm} electrodes")
        nwb.add_acquisition(ElectricalSeries(name=nm, data=d, electrodes=reg, rate=fs_hz / 30, starting_time=0.0))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


# ---------------------------------------------------------------------------------------------
# WAV and raw

def write_wav(path: Path, data: np.ndarray, fs_hz: int = 19531) -> Path:
    from scipy.io import wavfile

    wavfile.write(path, fs_hz, data)
    return path


def write_raw(path: Path, data: np.ndarray, sidecar: dict | None, *, sidecar_name: str | None = None) -> Path:
    """``data`` interleaved to ``path``; ``sidecar`` as JSON next to it (``<name>.json`` by default)."""
    np.ascontiguousarray(data).tofile(path)
    if sidecar is not None:
        (path.parent / (sidecar_name or (path.stem + ".json"))).write_text(json.dumps(sidecar))
    return path


def png_bytes() -> bytes:
    """The first bytes of a PNG image (signature + IHDR), to disguise as a recording."""
    ihdr = struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + ihdr + bytes(600)
