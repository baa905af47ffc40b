"""Importers: every format round-trips bit-exact, scales to µV, streams as contiguous Chunks,
and refuses or salvages bad input as documented in cortexlink.io.importers."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from _shared_data import need
from _imp_writers import (png_bytes, ramp, spikeglx_np1_gain_uv, write_intan_rhd, write_nsx, write_nsx21, write_nwb,
                          write_openephys_binary, write_openephys_legacy, write_raw, write_spikeglx, write_wav)

from cortexlink import ConfigError, ValidationError
from cortexlink.io import importers as imp
from cortexlink.io.importers import FORMATS, Recording, detect_format, open_recording

NSX_GAIN_UV = (8191 - -8191) / (32764 - -32764)  # (max_analog - min_analog) / (max_digital - min_digital)
INTAN_GAIN_UV, INTAN_OFFSET_UV = 0.195, -32768 * 0.195


def check_roundtrip(rec: Recording, expected: np.ndarray, *, fs_hz: float, gain_uv, offset_uv=0.0) -> None:
    """Bit-exact values, µV scale, rate, chunk streams equal to read(), JSON-able metadata."""
    assert isinstance(rec, Recording)
    assert rec.fs_hz == pytest.approx(fs_hz)
    assert (rec.n_samples, rec.n_channels) == expected.shape
    x = rec.read()
    assert x.dtype == expected.dtype and x.dtype == rec.dtype
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(rec.read(3, 11), expected[3:11])
    np.testing.assert_allclose(rec.channel_map.gain_uv, np.broadcast_to(gain_uv, (rec.n_channels,)), rtol=1e-9)
    np.testing.assert_allclose(rec.channel_map.offset_uv, np.broadcast_to(offset_uv, (rec.n_channels,)), rtol=1e-9,
                               atol=1e-9)
    uv = rec.channel_map.to_uv(x)
    np.testing.assert_allclose(uv, expected.astype(np.float64) * gain_uv + offset_uv, rtol=1e-5, atol=1e-3)
    for chunk in (1, 7, 1000):
        chunks = list(rec.iter_chunks(chunk))
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        starts = [c.start_sample for c in chunks]
        assert starts == list(range(0, rec.n_samples, chunk))
        assert all(c.fs_hz == rec.fs_hz and c.n_channels == rec.n_channels for c in chunks)
        np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), x)
    assert json.loads(json.dumps(rec.metadata))["format"] == rec.format
    assert rec.metadata["truncated"] is False


def assert_salvaged(rec: Recording, expected_prefix: np.ndarray, caplog, *, n_expected=None) -> None:
    n = expected_prefix.shape[0]
    assert rec.n_samples == n
    np.testing.assert_array_equal(rec.read(), expected_prefix)
    np.testing.assert_array_equal(np.concatenate([c.data for c in rec.iter_chunks(64)]), expected_prefix)
    assert rec.metadata["truncated"] is True
    assert rec.metadata["n_samples_salvaged"] == n
    assert rec.metadata["n_samples_expected"] == n_expected
    assert rec.metadata["truncation"]
    json.dumps(rec.metadata)
    assert any("truncated" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def cut(path: Path, n_bytes: int) -> None:
    """Drop the last ``n_bytes`` of ``path``."""
    b = path.read_bytes()
    path.write_bytes(b[:-n_bytes])


# =============================================================================================
# SpikeGLX


@pytest.fixture
def sglx(tmp_path):
    data = ramp(300, 9)  # 8 AP channels + SY0
    bin_path, meta_path = write_spikeglx(tmp_path / "sglx", data)
    return data, bin_path, meta_path


def test_spikeglx_roundtrip_gain_positions(sglx):
    data, bin_path, meta_path = sglx
    for path in (bin_path.parent, bin_path, meta_path):
        assert detect_format(path) == "spikeglx"
        with open_recording(path) as rec:
            check_roundtrip(rec, data[:, :8], fs_hz=30000.0, gain_uv=spikeglx_np1_gain_uv(500))
            assert rec.format == "spikeglx" and rec.metadata["stream"] == "imec0.ap"
            assert rec.channel_map.channel_ids[:2] == ("AP0", "AP1")  # sync word SY0 left out
            assert rec.metadata["positions_source"].startswith("probe")
            pos = rec.channel_map.positions_um
            assert len({tuple(p) for p in pos}) == 8 and pos[:, 1].max() > 0  # NP1.0 staggered rows
            assert rec.metadata["reader"] == "neo.rawio.SpikeGLXRawIO"


def test_spikeglx_truncated_salvages_complete_samples(sglx, caplog):
    data, bin_path, _ = sglx
    cut(bin_path, 9 * 2 * 20 + 5)  # 20 samples and 5 bytes (mid-sample, odd) short
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        rec = open_recording(bin_path.parent)
    with rec:
        assert_salvaged(rec, data[:279, :8], caplog, n_expected=300)
        assert rec.channel_map.gain_uv[0] == pytest.approx(spikeglx_np1_gain_uv(500))
        assert "fileSizeBytes" in rec.metadata["truncation"]


def test_spikeglx_streams_and_a_damaged_neighbour(tmp_path, caplog):
    ap, lf = ramp(300, 9), ramp(40, 9, seed=2)
    write_spikeglx(tmp_path / "s", ap)
    lf_bin, _ = write_spikeglx(tmp_path / "s", lf, kind="lf", fs_hz=2500.0, lf_gain=250)
    with open_recording(tmp_path / "s", stream="imec0.lf") as rec:
        check_roundtrip(rec, lf[:, :8], fs_hz=2500.0, gain_uv=spikeglx_np1_gain_uv(250))
        assert rec.metadata["streams"][:2] == ["imec0.ap", "imec0.lf"]
    with pytest.raises(ValidationError, match=r"stream must be one of .*'imec0.ap'.*; got 'imec1.ap'"):
        open_recording(tmp_path / "s", stream="imec1.ap")
    cut(lf_bin, 9 * 2 * 5)  # the LF file loses 5 samples: neo would refuse the whole folder
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        with open_recording(tmp_path / "s") as rec:  # the intact AP stream is still read, directly
            check_roundtrip(rec, ap[:, :8], fs_hz=30000.0, gain_uv=spikeglx_np1_gain_uv(500))
            assert rec.metadata["damaged_neighbours"] == [lf_bin.name]
            assert rec.metadata["positions_source"].startswith("probe")
        rec = open_recording(lf_bin)
    with rec:
        assert_salvaged(rec, lf[:35, :8], caplog, n_expected=40)


def test_spikeglx_file_path_reads_that_file_among_runs(tmp_path):
    a, b = ramp(100, 5), ramp(60, 5, seed=3)
    write_spikeglx(tmp_path / "s", a, run="first")
    bin_b, _ = write_spikeglx(tmp_path / "s", b, run="second")
    with open_recording(bin_b) as rec:
        check_roundtrip(rec, b[:, :4], fs_hz=30000.0, gain_uv=spikeglx_np1_gain_uv(500))
        assert rec.metadata["files"][0].endswith("second_g0_t0.imec0.ap.bin")


@pytest.mark.req("SR-52")
@pytest.mark.parametrize("edit, match", [
    ({"nSavedChans": "10"}, "snsChanMap lists 9 channels but nSavedChans is 10"),
    ({"imSampRate": "0"}, "imSampRate must be a finite number > 0; got '0'"),
    ({"imSampRate": "-30000"}, "imSampRate must be a finite number > 0"),
    ({"fileSizeBytes": "5401"}, "fileSizeBytes \\(5401\\) must be a multiple of nSavedChans x 2 = 18"),
    ({"fileSizeBytes": "3600"}, "holds 5400 bytes but fileSizeBytes in .* says 3600"),
])
def test_spikeglx_meta_disagreeing_with_data_is_refused(tmp_path, edit, match):
    bin_path, _ = write_spikeglx(tmp_path / "s", ramp(300, 9), extra_meta=edit)
    with pytest.raises(ValidationError, match=match):
        open_recording(bin_path)


@pytest.mark.req("SR-52")
def test_spikeglx_foreign_meta_is_refused(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "x.bin").write_bytes(bytes(64))
    (folder / "x.meta").write_bytes(png_bytes())
    with pytest.raises(ValidationError, match=r"x\.meta: not a SpikeGLX \.meta file: it is a PNG image"):
        open_recording(folder, "spikeglx")
    (folder / "x.meta").write_text("hello=world\nthis is a note\n")
    with pytest.raises(ValidationError, match="not a SpikeGLX .meta file, or a damaged one: nSavedChans is missing"):
        open_recording(folder / "x.bin", "spikeglx")


# =============================================================================================
# Open Ephys


def test_openephys_binary_roundtrip(tmp_path):
    data = ramp(200, 5)
    rec_dir = write_openephys_binary(tmp_path / "oe", data, bit_volts=0.195)
    for path in (tmp_path / "oe", rec_dir, rec_dir / "structure.oebin"):
        assert detect_format(path) == "openephys"
        with open_recording(path) as rec:
            check_roundtrip(rec, data, fs_hz=30000.0, gain_uv=0.195)
            assert rec.metadata["stream"] == "Record Node 101#Acquisition_Board-100.Rhythm Data"
            assert rec.channel_map.channel_ids == ("CH1", "CH2", "CH3", "CH4", "CH5")


def test_openephys_binary_units_scale_to_uv(tmp_path):
    data = ramp(50, 2)
    write_openephys_binary(tmp_path / "oe", data, bit_volts=0.5, units="mV")
    with open_recording(tmp_path / "oe") as rec:
        check_roundtrip(rec, data, fs_hz=30000.0, gain_uv=500.0)


def test_openephys_binary_truncated_salvages(tmp_path, caplog):
    data = ramp(200, 5)
    rec_dir = write_openephys_binary(tmp_path / "oe", data)
    dat = next(rec_dir.rglob("continuous.dat"))
    cut(dat, 5 * 2 * 30 + 3)  # mid-sample; sample_numbers.npy still lists 200
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        rec = open_recording(dat)
    with rec:
        assert_salvaged(rec, data[:169], caplog, n_expected=200)
        assert rec.channel_map.gain_uv[0] == pytest.approx(0.195)
        assert rec.metadata["stream"] == "Record Node 101#Acquisition_Board-100.Rhythm Data"


def test_openephys_segments_and_a_damaged_neighbour(tmp_path, caplog):
    d1, d2 = ramp(120, 3), ramp(90, 3, seed=7)
    write_openephys_binary(tmp_path / "oe", d1, recording=1)
    rec2 = write_openephys_binary(tmp_path / "oe", d2, recording=2)
    for seg, want in ((0, d1), (1, d2)):
        with open_recording(tmp_path / "oe", segment=seg) as rec:
            check_roundtrip(rec, want, fs_hz=30000.0, gain_uv=0.195)
            assert rec.metadata["n_segments"] == 2 and rec.metadata["reader"].startswith("neo")
    cut(next(rec2.rglob("continuous.dat")), 3 * 2 * 10)
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        with open_recording(tmp_path / "oe", segment=0) as rec:
            check_roundtrip(rec, d1, fs_hz=30000.0, gain_uv=0.195)
            assert len(rec.metadata["damaged_neighbours"]) == 1
        rec = open_recording(tmp_path / "oe", segment=1)
    with rec:
        assert_salvaged(rec, d2[:80], caplog, n_expected=90)


@pytest.mark.req("SR-52")
@pytest.mark.parametrize("kw, match", [
    ({"num_channels": 7}, r"num_channels \(7\) disagrees with the 5 entries of channels"),
    ({"fs_hz": -1.0}, "sample_rate must be a finite number > 0; got -1.0"),
    ({"units": "furlong"}, "units of channel 'CH1' must be a voltage unit .*; got 'furlong'"),
    ({"bit_volts": 0.0}, "bit_volts of channel 'CH1' must be a non-zero number; got 0.0"),
])
def test_openephys_metadata_disagreeing_is_refused(tmp_path, kw, match):
    write_openephys_binary(tmp_path / "oe", ramp(20, 5), **kw)
    with pytest.raises(ValidationError, match=match):
        open_recording(tmp_path / "oe")


@pytest.mark.req("SR-52")
def test_openephys_foreign_oebin_is_refused(tmp_path):
    rec_dir = write_openephys_binary(tmp_path / "oe", ramp(20, 2))
    (rec_dir / "structure.oebin").write_bytes(png_bytes())
    with pytest.raises(ValidationError, match="structure.oebin: not an Open Ephys structure.oebin .*it is a PNG image"):
        open_recording(tmp_path / "oe")


def test_openephys_legacy_roundtrip_and_partial_record(tmp_path, caplog):
    data = ramp(2048, 3)
    write_openephys_legacy(tmp_path / "leg", data, bit_volts=0.195)
    assert detect_format(tmp_path / "leg") == "openephys"
    with open_recording(tmp_path / "leg") as rec:
        check_roundtrip(rec, data, fs_hz=30000.0, gain_uv=0.195)
        assert rec.metadata["variant"] == "legacy .continuous"
    for f in sorted((tmp_path / "leg").glob("*.continuous")):
        cut(f, 700)  # the second record is cut short in every file
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        rec = open_recording(tmp_path / "leg" / "100_CH1.continuous")
    with rec:
        assert_salvaged(rec, data[:1024], caplog)
    (tmp_path / "leg" / "100_CH2.continuous").write_text("not a recording\n" * 80)
    with pytest.raises(ValidationError, match="100_CH2.continuous: not an Open Ephys .continuous file: it is text"):
        open_recording(tmp_path / "leg")


# =============================================================================================
# Intan


def test_intan_rhd_roundtrip(tmp_path):
    amp = ramp(384, 4, dtype=np.uint16)
    path = write_intan_rhd(tmp_path / "a.rhd", amp, fs_hz=20000.0)
    assert detect_format(path) == "intan"
    with open_recording(path) as rec:
        check_roundtrip(rec, amp, fs_hz=20000.0, gain_uv=INTAN_GAIN_UV, offset_uv=INTAN_OFFSET_UV)
        assert rec.metadata["stream"] == "RHD2000 amplifier channel"
        assert rec.channel_map.channel_ids == ("A-000", "A-001", "A-002", "A-003")
        # offset binary: 32768 counts is 0 µV
        assert rec.channel_map.to_uv(np.full((1, 4), 32768, np.uint16))[0, 0] == pytest.approx(0.0, abs=1e-3)


def test_intan_rhd_v1_blocks_of_60(tmp_path):
    amp = ramp(180, 2, dtype=np.uint16, seed=3)
    path = write_intan_rhd(tmp_path / "old.rhd", amp, version=(1, 3), fs_hz=25000.0)
    with open_recording(path) as rec:
        check_roundtrip(rec, amp, fs_hz=25000.0, gain_uv=INTAN_GAIN_UV, offset_uv=INTAN_OFFSET_UV)


def test_intan_truncated_mid_block_salvages_complete_blocks(tmp_path, caplog):
    amp = ramp(384, 4, dtype=np.uint16)
    path = write_intan_rhd(tmp_path / "a.rhd", amp)
    cut(path, 500)  # the third 128-sample block loses its last 500 bytes
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        rec = open_recording(path)
    with rec:
        assert_salvaged(rec, amp[:256], caplog)
        assert rec.dtype == np.uint16
        np.testing.assert_allclose(rec.channel_map.offset_uv, INTAN_OFFSET_UV)
        np.testing.assert_array_equal(rec.read(100, 200), amp[100:200])  # across a block boundary
        assert "data block 2" in rec.metadata["truncation"]


@pytest.mark.req("SR-52")
def test_intan_bad_input(tmp_path):
    (tmp_path / "png.rhd").write_bytes(png_bytes())
    with pytest.raises(ValidationError, match=r"png\.rhd: not an Intan RHD file: it is a PNG image"):
        open_recording(tmp_path / "png.rhd")
    (tmp_path / "notes.rhd").write_text("amplifier channels A-000..A-031\n")
    with pytest.raises(ValidationError, match=r"notes\.rhd: not an Intan RHD file: it is text"):
        open_recording(tmp_path / "notes.rhd")
    path = write_intan_rhd(tmp_path / "a.rhd", ramp(128, 2, dtype=np.uint16))
    (tmp_path / "head.rhd").write_bytes(path.read_bytes()[:150])  # cut inside the channel headers
    with pytest.raises(ValidationError, match=r"head\.rhd: the Intan header is truncated or corrupt"):
        open_recording(tmp_path / "head.rhd")
    (tmp_path / "empty.rhd").write_bytes(path.read_bytes()[:-128 * 4 - 128 * 2 * 2])  # header only
    with pytest.raises(ValidationError, match="holds no complete data block"):
        open_recording(tmp_path / "empty.rhd")
    write_intan_rhd(tmp_path / "zero.rhd", ramp(128, 2, dtype=np.uint16), fs_hz=0.0)
    with pytest.raises(ValidationError, match="sampling_rate in the header must be a finite number > 0; got 0.0"):
        open_recording(tmp_path / "zero.rhd")


# =============================================================================================
# Blackrock


def test_blackrock_nsx_roundtrip_and_segments(tmp_path):
    b1, b2 = ramp(100, 3), ramp(50, 3, seed=1)
    path = write_nsx(tmp_path / "f.ns5", [b1])
    assert detect_format(path) == "blackrock"
    with open_recording(path) as rec:
        check_roundtrip(rec, b1, fs_hz=30000.0, gain_uv=NSX_GAIN_UV)
        assert rec.channel_map.channel_ids == ("elec1", "elec2", "elec3")
    path = write_nsx(tmp_path / "g.ns6", [b1, b2], spec="3.0", timestamps=[0, 30000])
    for seg, want in ((0, b1), (1, b2)):
        with open_recording(path, segment=seg) as rec:
            check_roundtrip(rec, want, fs_hz=30000.0, gain_uv=NSX_GAIN_UV)
            assert rec.metadata["n_segments"] == 2
    with pytest.raises(ValidationError, match=r"segment must be an integer in \[0, 1\]"):
        open_recording(path, segment=2)


def test_blackrock_units_offset_and_stream_choice(tmp_path):
    lo = ramp(40, 2, seed=4)
    write_nsx(tmp_path / "s.ns2", [lo], period=30, units="mV", min_dig=-1000, max_dig=1000, min_ana=-5, max_ana=5)
    hi = ramp(60, 2, seed=5)
    write_nsx(tmp_path / "s.ns5", [hi], min_dig=0, max_dig=1000, min_ana=-500, max_ana=500)
    with open_recording(tmp_path / "s.ns2") as rec:  # mV: 10 mV / 2000 counts = 5 µV per count
        check_roundtrip(rec, lo, fs_hz=1000.0, gain_uv=5.0)
    with open_recording(tmp_path) as rec:  # the folder: highest rate wins
        check_roundtrip(rec, hi, fs_hz=30000.0, gain_uv=1.0, offset_uv=-500.0)
        assert rec.metadata["streams"] == ["nsx2", "nsx5"]
    with open_recording(tmp_path / "s.ns5", stream="ns5") as rec:
        assert rec.metadata["nsx"] == 5
    with open_recording(tmp_path, "blackrock", stream="2") as rec:
        assert rec.fs_hz == 1000.0
    with pytest.raises(ValidationError, match=r"stream must be one of \['ns2', 'ns5'\]; got 'ns3'"):
        open_recording(tmp_path, "blackrock", stream="ns3")


def test_blackrock_truncated_packet_salvages(tmp_path, caplog):
    b1, b2 = ramp(100, 3), ramp(80, 3, seed=1)
    path = write_nsx(tmp_path / "f.ns5", [b1, b2], timestamps=[0, 9000])
    cut(path, 3 * 2 * 30 + 1)
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        rec = open_recording(path, segment=1)
    with rec:
        assert_salvaged(rec, b2[:49], caplog, n_expected=80)
        assert rec.channel_map.gain_uv[0] == pytest.approx(NSX_GAIN_UV)
    with open_recording(path, segment=0) as rec:  # the packet before the damage is intact
        np.testing.assert_array_equal(rec.read(), b1)
        assert rec.metadata["truncated"] is False and "declares 80 samples" in rec.metadata["damage"]


def test_blackrock_unclosed_packet_and_corrupt_header(tmp_path, caplog):
    b1 = ramp(100, 3)
    path = write_nsx(tmp_path / "open.ns5", [b1])
    raw = bytearray(path.read_bytes())
    raw[314 + 66 * 3 + 5:314 + 66 * 3 + 9] = struct.pack("<I", 0)  # n_points never written
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        rec = open_recording(path)
    with rec:
        assert_salvaged(rec, b1, caplog)
        assert "declares 0 samples" in rec.metadata["truncation"]
    b2 = ramp(30, 3, seed=2)
    path = write_nsx(tmp_path / "bad.ns5", [b1, b2])
    raw = bytearray(path.read_bytes())
    raw[314 + 66 * 3 + 9 + 100 * 6] = 0x7F  # second packet header byte is not 0x01
    path.write_bytes(bytes(raw))
    with open_recording(path) as rec:
        np.testing.assert_array_equal(rec.read(), b1)
        assert rec.metadata["truncated"] is True and "starts with 0x7f" in rec.metadata["truncation"]


@pytest.mark.req("SR-52")
@pytest.mark.parametrize("kw, match", [
    ({"bytes_in_headers": 314 + 66 * 2}, r"bytes_in_headers \(446\) disagrees with channel_count \(3\)"),
    ({"period": 0}, r"period \(rate = 30000 Hz / period\) must be >= 1; got 0"),
    ({"units": "furlong"}, "units of electrode 1 must be a voltage unit .*; got 'furlong'"),
    ({"min_dig": 5, "max_dig": 5}, "min_digital and max_digital must differ"),
])
def test_blackrock_header_disagreeing_is_refused(tmp_path, kw, match):
    path = write_nsx(tmp_path / "f.ns5", [ramp(20, 3)], **kw)
    with pytest.raises(ValidationError, match=match):
        open_recording(path)


@pytest.mark.req("SR-52")
def test_blackrock_foreign_file_is_refused(tmp_path):
    (tmp_path / "img.ns5").write_bytes(png_bytes())
    with pytest.raises(ValidationError, match=r"img\.ns5: not a Blackrock NSx file: it is a PNG image; an NSx file "
                                              "starts with 'NEURALCD'"):
        open_recording(tmp_path / "img.ns5")
    (tmp_path / "short.ns5").write_bytes(b"NEURALCD\x02\x03" + bytes(40))
    with pytest.raises(ValidationError, match="the NSx basic header is truncated"):
        open_recording(tmp_path / "short.ns5")


def test_blackrock_nsx21(tmp_path, caplog):
    d = ramp(100, 3)
    path = write_nsx21(tmp_path / "old.ns4", d, period=3)
    with open_recording(path, gain_uv=0.25) as rec:
        check_roundtrip(rec, d, fs_hz=10000.0, gain_uv=0.25)
        assert rec.channel_map.channel_ids == ("chan1", "chan2", "chan3")
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        with open_recording(path) as rec:
            assert rec.metadata["scaled"] is False and rec.channel_map.gain_uv[0] == 1.0
    assert any("carry no scale" in r.getMessage() for r in caplog.records)
    cut(path, 3)
    with open_recording(path, gain_uv=0.25) as rec:
        assert_salvaged(rec, d[:99], caplog)


# =============================================================================================
# NWB


@pytest.fixture
def nwb_file(tmp_path):
    data = ramp(300, 6)
    cc = np.linspace(1.0, 2.0, 6)
    rel = np.stack([np.arange(6) * 16.0, np.arange(6) * 20.0], axis=1)
    path = write_nwb(tmp_path / "x.nwb", data, conversion=2.5e-7, offset=1e-6, channel_conversion=cc, rel_xy=rel,
                     extra_series={"LFP": ramp(20, 2, seed=9)})
    return path, data, cc, rel


def test_nwb_roundtrip_gain_positions_stream(nwb_file):
    path, data, cc, rel = nwb_file
    assert detect_format(path) == "nwb"
    with pytest.raises(ValidationError, match=r"holds 2 ElectricalSeries; stream must name one of "
                                              r"\['ElectricalSeries', 'LFP'\]"):
        open_recording(path)
    with open_recording(path, stream="ElectricalSeries") as rec:
        check_roundtrip(rec, data, fs_hz=30000.0, gain_uv=2.5e-7 * cc * 1e6, offset_uv=1.0)
        np.testing.assert_array_equal(rec.channel_map.positions_um, rel)
        assert rec.metadata["positions_source"] == "electrodes rel_x/rel_y"
    with open_recording(path, stream="LFP") as rec:
        check_roundtrip(rec, ramp(20, 2, seed=9), fs_hz=1000.0, gain_uv=1e6)
    with pytest.raises(ValidationError, match="stream must name one ElectricalSeries of .*; got 'AP'"):
        open_recording(path, stream="AP")


def _nwb_edit(path: Path, fn) -> None:
    with h5py.File(path, "r+") as f:
        fn(f["acquisition/ElectricalSeries"])


def _replace_dataset(group, name, values):
    attrs = dict(group[name].attrs)
    del group[name]
    group[name] = values
    for k, v in attrs.items():
        group[name].attrs[k] = v


@pytest.mark.req("SR-52")
@pytest.mark.parametrize("edit, match", [
    (lambda es: es["starting_time"].attrs.__setitem__("rate", -5.0), "rate"),
    (lambda es: es["data"].attrs.__setitem__("unit", "furlongs"), "unit must be a voltage unit .*; got 'furlongs'"),
    (lambda es: _replace_dataset(es, "channel_conversion", np.ones(4, np.float32)),
     "channel_conversion has 4 values but data has 6 channels"),
    (lambda es: _replace_dataset(es, "electrodes", np.arange(5)), "electrodes lists 5 electrodes but data has 6"),
])
def test_nwb_metadata_disagreeing_is_refused(nwb_file, edit, match):
    path = nwb_file[0]
    _nwb_edit(path, edit)
    with pytest.raises(ValidationError, match=match) as e:
        open_recording(path, stream="ElectricalSeries")
    assert "x.nwb" in str(e.value)


@pytest.mark.req("SR-52")
def test_nwb_truncated_and_foreign_are_refused(tmp_path, nwb_file):
    path = nwb_file[0]
    cut(path, path.stat().st_size // 2)
    with pytest.raises(ValidationError, match=r"x\.nwb: could not be read as NWB: .*truncated"):
        open_recording(path)
    (tmp_path / "img.nwb").write_bytes(png_bytes())
    with pytest.raises(ValidationError, match=r"img\.nwb: not an NWB \(HDF5\) file: it is a PNG image"):
        open_recording(tmp_path / "img.nwb")


# =============================================================================================
# WAV


def test_wav_single_file_roundtrip(tmp_path):
    d = ramp(500, 2)
    path = write_wav(tmp_path / "s.wav", d, 19531)
    assert detect_format(path) == "wav"
    with open_recording(path) as rec:
        check_roundtrip(rec, d, fs_hz=19531.0, gain_uv=1.0)
        assert rec.metadata["scaled"] is False
    f = (ramp(100, 3).astype(np.float32) / 7)
    with open_recording(write_wav(tmp_path / "f.wav", f, 1000), gain_uv=2.0) as rec:
        check_roundtrip(rec, f, fs_hz=1000.0, gain_uv=2.0)


def test_wav_folder_uses_shortest_and_refuses_mixed_rates(tmp_path):
    folder = tmp_path / "elec"
    folder.mkdir()
    d = ramp(400, 3)
    lengths = (400, 350, 380)
    for c, n in enumerate(lengths):
        write_wav(folder / f"e{c}.wav", d[:n, c])
    assert detect_format(folder) == "wav"
    with open_recording(folder, gain_uv=[1.0, 2.0, 3.0]) as rec:
        check_roundtrip(rec, d[:350], fs_hz=19531.0, gain_uv=np.array([1.0, 2.0, 3.0]))
        assert rec.channel_map.channel_ids == ("e0", "e1", "e2")
        assert rec.metadata["length_policy"] == "shortest"
        assert rec.metadata["n_samples_per_file"] == {"min": 350, "max": 400}
    write_wav(folder / "e3.wav", d[:, 0], 30000)
    with pytest.raises(ValidationError, match=r"every WAV file must have the same sample rate; got \[19531, 30000\]"):
        open_recording(folder)
    write_wav(folder / "e3.wav", d[:, :2], 19531)
    with pytest.raises(ValidationError, match="e3.wav: a folder of WAV files must hold one mono file per electrode"):
        open_recording(folder)


def test_wav_truncated_salvages_and_foreign_is_refused(tmp_path, caplog):
    d = ramp(500, 2)
    path = write_wav(tmp_path / "s.wav", d)
    cut(path, 4 * 100 + 3)
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        rec = open_recording(path)
    with rec:
        assert_salvaged(rec, d[:399], caplog, n_expected=500)
    (tmp_path / "img.wav").write_bytes(png_bytes())
    with pytest.raises(ValidationError, match=r"img\.wav: not a WAV file: it is a PNG image"):
        open_recording(tmp_path / "img.wav")
    raw = bytearray(write_wav(tmp_path / "r.wav", d).read_bytes())
    raw[24:28] = struct.pack("<I", 0)  # sample rate 0 in the fmt chunk
    (tmp_path / "r.wav").write_bytes(bytes(raw))
    with pytest.raises(ValidationError, match="sample rate in the 'fmt ' chunk must be a finite number > 0; got 0"):
        open_recording(tmp_path / "r.wav")


def test_wav_real_n1_broadband(shared_data):
    from scipy.io import wavfile

    folder = need(shared_data / "n1_broadband", "the N1 broadband recordings", glob="*.wav")
    files = sorted(folder.glob("*.wav"))
    with open_recording(folder) as rec:
        assert rec.format == "wav" and rec.n_channels == len(files) == 120
        assert rec.fs_hz == 19531.0 and rec.dtype == np.int16
        lengths = [wavfile.read(f, mmap=True)[1].shape[0] for f in files]
        assert rec.n_samples == min(lengths)
        assert rec.metadata["n_samples_per_file"]["max"] == max(lengths)
        x = rec.read(1000, 3000)
        for c in (0, 57, 119):
            _, ref = wavfile.read(files[c])
            np.testing.assert_array_equal(x[:, c], ref[1000:3000])
        assert rec.channel_map.channel_ids[0] == files[0].stem
        chunks = list(rec.iter_chunks(600, start=500, stop=2500))
        assert [c.start_sample for c in chunks] == [500, 1100, 1700, 2300]
        np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), rec.read(500, 2500))


# =============================================================================================
# raw + sidecar


def test_raw_locust_style_sidecar_roundtrip(tmp_path):
    d = ramp(300, 4)
    path = write_raw(tmp_path / "trial_01.raw", d, {"sample_rate": 15000.0, "shape": [-1, 4], "dtype": "int16"},
                     sidecar_name="info.json")
    assert detect_format(path) == "raw"
    with open_recording(path) as rec:
        check_roundtrip(rec, d, fs_hz=15000.0, gain_uv=1.0)
        assert rec.metadata["sidecar"].endswith("info.json")
    write_raw(tmp_path / "trial_02.raw", d[::-1], None)
    with pytest.raises(ValidationError, match=r"holds 2 raw data files; stream must name one of \['trial_01.raw', "
                                              r"'trial_02.raw'\]"):
        open_recording(tmp_path, "raw")
    with open_recording(tmp_path, stream="trial_02.raw") as rec:
        np.testing.assert_array_equal(rec.read(), d[::-1])


def test_raw_minimal_schema_gain_units_header(tmp_path):
    d = ramp(100, 3).astype(">i2")  # big-endian on disk, returned native
    sc = {"dtype": ">i2", "n_channels": 3, "fs_hz": 2000, "gain": [1.0, 2.0, 3.0], "units": "mV", "offset": 0.5,
          "header_bytes": 16, "channel_ids": ["a", "b", "c"], "positions_um": [[0, 0], [0, 10], [0, 20]]}
    path = tmp_path / "x.dat"
    path.write_bytes(b"H" * 16 + d.tobytes())
    (tmp_path / "x.json").write_text(json.dumps(sc))
    with open_recording(path) as rec:
        check_roundtrip(rec, d.astype(np.int16), fs_hz=2000.0, gain_uv=np.array([1e3, 2e3, 3e3]), offset_uv=500.0)
        assert rec.channel_map.channel_ids == ("a", "b", "c")
        assert rec.channel_map.positions_um[2, 1] == 20.0
    with open_recording(path, sidecar={"dtype": "int16", "n_channels": 1, "fs_hz": 10.0, "header_bytes": 16}) as rec:
        assert rec.n_channels == 1 and rec.n_samples == 300


@pytest.mark.req("SR-52")
@pytest.mark.parametrize("sidecar, match", [
    ({"dtype": "int16", "n_channels": 7, "fs_hz": 1000.0},
     r"size \(2400 bytes\) must be a multiple of n_channels x itemsize = 7 x 2 = 14 bytes; got 171 samples and 6 "
     "bytes over: n_channels or dtype in .*x.json disagrees with the data"),
    ({"dtype": "complex64", "n_channels": 4, "fs_hz": 1000.0}, "dtype must be one of int8, .*; got 'complex64'"),
    ({"dtype": "int17", "n_channels": 4, "fs_hz": 1000.0}, "dtype must be one of .*; got 'int17'"),
    ({"dtype": "int16", "n_channels": 4, "fs_hz": 0}, "fs_hz must be a finite number > 0; got 0"),
    ({"dtype": "int16", "n_channels": 4, "sample_rate": -15000.0}, "sample_rate must be a finite number > 0"),
    ({"dtype": "int16", "n_channels": 3, "shape": [-1, 4], "fs_hz": 1.0}, r"n_channels \(3\) disagrees with shape"),
    ({"dtype": "int16", "shape": [4, -1], "fs_hz": 1.0}, r"shape must be \[-1, n_channels\]"),
    ({"dtype": "int16", "n_channels": 4, "fs_hz": 1.0, "gain": 1.0, "units": "parsecs"},
     "units must be a voltage unit .*; got 'parsecs'"),
    ({"dtype": "int16", "n_channels": 4, "fs_hz": 1.0, "gain_uv": [1.0, 2.0]},
     r"gain_uv must be a number or a list of 4 numbers \(one per channel\); got 2 values"),
    ({"dtype": "int16", "n_channels": 4}, "fs_hz \\(or sample_rate\\) is required"),
    ({"n_channels": 4, "fs_hz": 1.0}, "dtype is required"),
])
def test_raw_sidecar_disagreeing_is_refused(tmp_path, sidecar, match):
    path = write_raw(tmp_path / "x.raw", ramp(300, 4), sidecar)
    with pytest.raises(ValidationError, match=match) as e:
        open_recording(path)
    assert "x.json" in str(e.value) or "x.raw" in str(e.value)


@pytest.mark.req("SR-52")
def test_raw_truncated_refused_unless_allowed(tmp_path, caplog):
    d = ramp(300, 4)
    path = write_raw(tmp_path / "x.raw", d, {"dtype": "int16", "n_channels": 4, "fs_hz": 1000.0})
    cut(path, 8 * 10 + 3)
    with pytest.raises(ValidationError, match="disagrees with the data, or the file is truncated "
                                              r"\(allow_truncated=True salvages the 289 complete samples\)"):
        open_recording(path)
    with caplog.at_level(logging.WARNING, logger="cortexlink.io.importers"):
        rec = open_recording(path, allow_truncated=True)
    with rec:
        assert_salvaged(rec, d[:289], caplog)


@pytest.mark.req("SR-52")
def test_raw_without_sidecar_or_with_broken_sidecar(tmp_path):
    path = tmp_path / "x.raw"
    ramp(10, 2).tofile(path)
    with pytest.raises(ValidationError, match=r"x\.raw: a raw file needs a JSON sidecar .* none found at"):
        open_recording(path, "raw")
    (tmp_path / "x.json").write_bytes(png_bytes())
    with pytest.raises(ValidationError, match=r"x\.json: sidecar must be a JSON object; could not parse it"):
        open_recording(path, "raw")


def test_raw_real_locust_tetrode(shared_data):
    path = need(shared_data / "locust_tetrode" / "locust_trial_01.raw", "the locust tetrode recording")
    ref = np.fromfile(path, dtype=np.int16).reshape(-1, 4)
    assert detect_format(path) == "raw"
    with open_recording(path) as rec:
        assert (rec.n_samples, rec.n_channels, rec.fs_hz) == (ref.shape[0], 4, 15000.0)
        np.testing.assert_array_equal(rec.read(), ref)
        chunks = rec.iter_chunks(30, start=15000, stop=15300)
        got = np.concatenate([c.data for c in chunks])
        np.testing.assert_array_equal(got, ref[15000:15300])
    with pytest.raises(ValidationError, match=r"holds 2 raw data files; stream must name one"):
        open_recording(shared_data / "locust_tetrode")
    with open_recording(shared_data / "locust_tetrode", stream="locust_trial_02") as rec:
        assert rec.metadata["data_file"].endswith("locust_trial_02.raw")


# =============================================================================================
# detection, options and the Recording API


@pytest.mark.req("SR-52")
def test_detection_of_unknown_input_names_path_and_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("session notes\n")
    with pytest.raises(ValidationError) as e:
        open_recording(tmp_path / "notes.txt")
    msg = str(e.value)
    assert "notes.txt" in msg and "text" in msg and all(f in msg for f in FORMATS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match=r"empty: could not detect the format \(a folder of 0 entries\); tried"):
        open_recording(tmp_path / "empty")
    with pytest.raises(ValidationError, match="path must exist"):
        open_recording(tmp_path / "missing.ns5")
    with pytest.raises(ConfigError, match=r"format must be one of .*; got 'edf'"):
        open_recording(tmp_path / "notes.txt", "edf")
    with pytest.raises(ConfigError, match=r"options for format 'wav' must be among \['gain_uv'\]; got \['segment'\]"):
        open_recording(tmp_path / "notes.txt", "wav", segment=1)
    (tmp_path / "img.ns5").write_bytes(png_bytes())  # detected by suffix, refused by content
    with pytest.raises(ValidationError, match="not a Blackrock NSx file: it is a PNG image"):
        open_recording(tmp_path / "img.ns5")


def test_read_range_close_and_iter_chunks_bounds(tmp_path):
    d = ramp(100, 2)
    path = write_raw(tmp_path / "x.raw", d, {"dtype": "int16", "n_channels": 2, "fs_hz": 1000.0})
    rec = open_recording(path)
    assert rec.read(10, 10).shape == (0, 2)
    with pytest.raises(ConfigError, match=r"stop must be in \[start=10, 100\] \(n_samples\); got 101"):
        rec.read(10, 101)
    with pytest.raises(ConfigError, match=r"start must be in \[0, 100\] \(n_samples\); got -1"):
        rec.read(-1)
    with pytest.raises(ConfigError, match="start must be an integer sample index; got 1.5"):
        rec.read(1.5)
    with pytest.raises(ConfigError, match="chunk_samples must be an integer > 0; got 0"):
        rec.iter_chunks(0)
    chunks = list(rec.iter_chunks(30, start=25, stop=95))
    assert [(c.start_sample, c.n_samples) for c in chunks] == [(25, 30), (55, 30), (85, 10)]
    out = rec.read()
    out[0, 0] += 1  # a fresh, writable copy, not a view of the file
    assert rec.read(0, 1)[0, 0] == d[0, 0]
    with rec:
        pass
    assert rec.closed
    with pytest.raises(ValidationError, match="the recording is closed"):
        rec.read()
    rec.close()  # twice is harmless


def test_iter_chunks_reads_in_bounded_blocks(tmp_path, monkeypatch):
    d = ramp(5000, 4)
    path = write_raw(tmp_path / "x.raw", d, {"dtype": "int16", "n_channels": 4, "fs_hz": 1000.0})
    monkeypatch.setattr(imp._base, "_BLOCK_BYTES", 4 * 2 * 1000)  # 1000 samples per block
    with open_recording(path) as rec:
        spans = []
        real = rec._read
        monkeypatch.setattr(rec, "_read", lambda a, b: spans.append(b - a) or real(a, b))
        got = np.concatenate([c.data for c in rec.iter_chunks(30)])
    np.testing.assert_array_equal(got, d)
    assert max(spans) <= 1000 and sum(spans) == 5000


def test_progress_bar_option(tmp_path):
    path = write_raw(tmp_path / "x.raw", ramp(100, 2), {"dtype": "int16", "n_channels": 2, "fs_hz": 1000.0})
    with open_recording(path) as rec:
        assert sum(c.n_samples for c in rec.iter_chunks(30, progress=True)) == 100


def test_import_cortexlink_stays_light():
    import subprocess
    import sys

    code = ("import sys, cortexlink, cortexlink.io; "
            "print(sorted(m for m in ('neo', 'pynwb', 'scipy.io', 'h5py', 'cortexlink.io.importers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
