"""Blackrock NSx files (``blackrock``)."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.types import ChannelMap
from cortexlink.io.importers._base import (
    Recording, _MemmapRecording, _describe_content, _fail, _grid_positions, _head, _per_channel, _truncation,
    _unique_ids, _uv_per_unit, logger,
)
from cortexlink.io.importers.neo import _check_index, _open_neo


_NSX_BASIC = struct.Struct("<8sBBI16s256sII8HI")  # NEURALCD basic header, 314 bytes
_NSX_EXT = np.dtype([("type", "S2"), ("electrode_id", "<u2"), ("label", "S16"), ("connector", "u1"), ("pin", "u1"),
                     ("min_digital", "<i2"), ("max_digital", "<i2"), ("min_analog", "<i2"), ("max_analog", "<i2"),
                     ("units", "S16"), ("hi_corner", "<u4"), ("hi_order", "<u4"), ("hi_type", "<u2"),
                     ("lo_corner", "<u4"), ("lo_order", "<u4"), ("lo_type", "<u2")])  # 66 bytes


def _nsx_preflight(path: Path) -> dict:
    """Parse an NSx header and walk its data packets; report the damage instead of raising on it.

    Layout (Blackrock NEV/NSx file specification): NEURALCD basic header of 314 bytes with
    ``bytes_in_headers``, ``period`` (rate = 30 kHz / period) and ``channel_count``; one
    66-byte "CC" extended header per channel; then packets of 0x01, a timestamp (uint32, or
    uint64 from spec 3.0), uint32 ``n_points`` and ``n_points x channel_count`` int16.
    NEURALSG (2.1): 8-byte id, 16-byte label, uint32 period, uint32 channel_count, a uint32
    electrode id per channel, then interleaved int16 without packets.
    """
    size = path.stat().st_size
    head = _head(path, _NSX_BASIC.size)
    file_id = head[:8]
    if file_id == b"NEURALSG":
        if len(head) < 32:
            raise _fail(path, f"the NSx 2.1 header is truncated ({size} bytes)")
        period, n_ch = struct.unpack("<II", head[24:32])
        if n_ch < 1:
            raise _fail(path, f"channel_count must be >= 1; got {n_ch}")
        if period < 1:
            raise _fail(path, f"period (rate = 30000 Hz / period) must be >= 1; got {period}")
        hdr = 32 + 4 * n_ch
        if size < hdr:
            raise _fail(path, f"the NSx 2.1 header is truncated ({size} bytes, {hdr} needed for {n_ch} channels)")
        ids = np.fromfile(path, dtype="<u4", count=n_ch, offset=32)
        n, rem = divmod(size - hdr, 2 * n_ch)
        return dict(spec="2.1", period=period, n_ch=n_ch, ids=ids.tolist(), ext=None, ptp=False,
                    blocks=[(hdr, n, n, 0)], problem=f"ends {rem} bytes into a sample" if rem else None)
    if file_id not in (b"NEURALCD", b"BRSMPGRP"):
        raise _fail(path, f"not a Blackrock NSx file: it is {_describe_content(head)}; an NSx file starts with "
                          "'NEURALCD', 'BRSMPGRP' or 'NEURALSG'")
    if len(head) < _NSX_BASIC.size:
        raise _fail(path, f"the NSx basic header is truncated ({size} of {_NSX_BASIC.size} bytes)")
    f = _NSX_BASIC.unpack(head)
    major, minor, bih, period, ts_res, n_ch = f[1], f[2], f[3], f[6], f[7], f[16]
    spec = f"{major}.{minor}"
    if major not in (2, 3):
        raise _fail(path, f"file spec must be 2.2, 2.3 or 3.0; got {spec}")
    if n_ch < 1:
        raise _fail(path, f"channel_count must be >= 1; got {n_ch}")
    if period < 1:
        raise _fail(path, f"period (rate = 30000 Hz / period) must be >= 1; got {period}")
    if bih != _NSX_BASIC.size + _NSX_EXT.itemsize * n_ch:
        raise _fail(path, f"bytes_in_headers ({bih}) disagrees with channel_count ({n_ch}): expected "
                          f"{_NSX_BASIC.size} + 66 x {n_ch} = {_NSX_BASIC.size + _NSX_EXT.itemsize * n_ch}")
    if size < bih:
        raise _fail(path, f"the NSx headers are truncated ({size} of {bih} bytes)")
    ext = np.fromfile(path, dtype=_NSX_EXT, count=n_ch, offset=_NSX_BASIC.size)
    bad = np.flatnonzero(ext["type"] != b"CC")
    if bad.size:
        raise _fail(path, f"extended header {int(bad[0])} must start with 'CC'; got {bytes(ext['type'][bad[0]])!r}")
    if np.any(ext["max_digital"] == ext["min_digital"]):
        raise _fail(path, "min_digital and max_digital must differ on every channel (they define the scale); "
                          f"electrode {int(ext['electrode_id'][np.argmax(ext['max_digital'] == ext['min_digital'])])} "
                          "has equal values")
    for u, e in zip(ext["units"], ext["electrode_id"]):
        _uv_per_unit(bytes(u).decode("latin-1").rstrip("\x00"), path=path, field=f"units of electrode {int(e)}")
    ptp = major >= 3 and ts_res == 1_000_000_000
    frame = 2 * n_ch
    if ptp:  # one packet per sample: reserved u8, u64 timestamp, u32 n_points, samples
        packet = 1 + 8 + 4 + frame
        n, rem = divmod(size - bih, packet)
        return dict(spec=spec, period=period, n_ch=n_ch, ext=ext, ptp=True, blocks=[(bih, n, n, 0)],
                    problem=f"ends {rem} bytes into a PTP packet" if rem else None)
    hlen = 1 + (8 if major >= 3 else 4) + 4
    blocks, problem, offset = [], None, bih
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            ph = fh.read(hlen)
            if len(ph) < hlen:
                problem = f"ends inside the header of data packet {len(blocks)} (byte {offset})"
                break
            if ph[0] != 1:
                problem = (f"data packet {len(blocks)} at byte {offset} starts with {ph[0]:#04x}, "
                           "expected 0x01 (corrupt)")
                break
            ts = struct.unpack("<Q" if major >= 3 else "<I", ph[1:-4])[0]
            npts = struct.unpack("<I", ph[-4:])[0]
            data_off = offset + hlen
            avail = (size - data_off) // frame
            if npts == 0 and data_off < size and not _nsx_packet_follows(fh, data_off, size, hlen, frame):
                blocks.append((data_off, None, avail, ts))
                problem = f"data packet {len(blocks) - 1} declares 0 samples (file never closed); read to the end"
                break
            if npts > avail:
                blocks.append((data_off, npts, avail, ts))
                problem = f"data packet {len(blocks) - 1} declares {npts} samples, {avail} are complete"
                break
            blocks.append((data_off, npts, npts, ts))
            offset = data_off + npts * frame
    return dict(spec=spec, period=period, n_ch=n_ch, ext=ext, ptp=False, blocks=blocks, problem=problem)


def _nsx_packet_follows(fh: Any, offset: int, size: int, hlen: int, frame: int) -> bool:
    """Whether a plausible packet header (0x01 and a size that fits the file) sits at ``offset``."""
    fh.seek(offset)
    ph = fh.read(hlen)
    if len(ph) < hlen or ph[0] != 1:
        return False
    return offset + hlen + struct.unpack("<I", ph[-4:])[0] * frame <= size


def _open_blackrock(path: Path, *, stream: str | None = None, segment: int = 0, gain_uv: Any = None) -> Recording:
    from neo.rawio import BlackrockRawIO

    nsx_re = re.compile(r"\.ns([1-6])$", re.IGNORECASE)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if nsx_re.search(p.name))
        bases = sorted({p.with_suffix("").name for p in files})
        if len(bases) != 1:
            raise _fail(path, f"a Blackrock folder must hold the .nsX files of one recording; got {bases or 'none'}: "
                              "pass one file")
        base = path / bases[0]
    elif path.suffix.lower() == ".nev" or nsx_re.search(path.name):
        base = path.with_suffix("")
    else:
        raise _fail(path, "a Blackrock path must be a .ns1-.ns6 (or .nev) file or a folder holding them; got "
                          f"{_describe_content(_head(path))}")
    available = {int(m.group(1)): p for p in base.parent.glob(base.name + ".*")
                 if (m := nsx_re.search(p.name)) and p.with_suffix("").name == base.name}
    if not available:
        raise _fail(path, f"no .ns1-.ns6 file named {base.name}.nsX beside it (a .nev alone holds no continuous data)")
    if nsx_re.search(path.name) and path.is_file():
        nb = int(nsx_re.search(path.name).group(1))
        if stream is not None and stream not in (f"ns{nb}", f"nsx{nb}", str(nb)):
            raise _fail(path, f"stream must be 'ns{nb}' for this file; got {stream!r}")
    elif stream is not None:
        m = re.fullmatch(r"(?:nsx?)?([1-6])", stream.lower())
        if not m or int(m.group(1)) not in available:
            raise _fail(path, f"stream must be one of {[f'ns{k}' for k in sorted(available)]}; got {stream!r}")
        nb = int(m.group(1))
    else:  # the highest rate; ties go to the higher file number (ns6 is unfiltered)
        nb = max(available, key=lambda k: (-_nsx_preflight(available[k])["period"], k))
    nsx = available[nb]
    pre = _nsx_preflight(nsx)
    fs = 30000.0 / pre["period"]
    meta: dict[str, Any] = {"files": [nsx.name], "nsx": nb, "file_spec": pre["spec"], "ptp": pre["ptp"],
                            "streams": [f"nsx{k}" for k in sorted(available)]}
    if pre["spec"] != "2.1" and pre["problem"] is None:
        reader = BlackrockRawIO(filename=str(base), nsx_to_load=nb, load_nev=False)
        return _open_neo(path, "blackrock", reader, stream=None, block=0, segment=segment, metadata=meta,
                         gain_uv=gain_uv, prefer=lambda names: 0)
    if pre["ptp"]:
        raise _fail(nsx, f"{pre['problem']}; truncated PTP (spec 3.0, one packet per sample) files are not salvaged")
    # NEURALSG, or a damaged NEURALCD: map the complete samples of the selected packet
    segs = [b for b in pre["blocks"] if b[2] >= (1 if pre["spec"] == "2.1" else 2)]  # neo drops < 2-sample packets
    if not segs:
        raise _fail(nsx, f"holds no complete sample ({pre['problem'] or 'no data'})")
    segment = _check_index(path, "segment", segment, len(segs))
    data_off, declared, n, ts = segs[segment]
    if pre["problem"]:
        if segment == len(segs) - 1:  # the damage is at or right after this packet
            _truncation(meta, nsx, n, declared if declared != n else None, pre["problem"])
        else:
            meta.update(damage=pre["problem"])
            logger.warning("%s: %s; segment %d before it is intact", nsx, pre["problem"], segment)
    n_ch = pre["n_ch"]
    if pre["spec"] == "2.1":
        ids = [f"chan{e}" if e < 129 else f"ainp{e - 128}" for e in pre["ids"]]
        if gain_uv is None:
            logger.warning("%s: NSx 2.1 files carry no scale (it is in the .nev); gain_uv=1 (counts)", nsx)
            gain, units = np.ones(n_ch), "counts (NSx 2.1 has no scale; pass gain_uv=)"
            meta["scaled"] = False
        else:
            gain, units = _per_channel(gain_uv, n_ch, path=path, field="gain_uv"), "uV (gain_uv given)"
        offset = np.zeros(n_ch)
    else:
        ext = pre["ext"]
        ids = _unique_ids([bytes(x).decode("latin-1").rstrip("\x00") for x in ext["label"]],
                          [str(e) for e in ext["electrode_id"]])
        dig = ext["max_digital"].astype(np.float64) - ext["min_digital"]
        ana = ext["max_analog"].astype(np.float64) - ext["min_analog"]
        if np.any(dig == 0):
            raise _fail(nsx, "min_digital and max_digital must differ on every channel (they define the scale)")
        unit_names = [bytes(u).decode("latin-1").rstrip("\x00") for u in ext["units"]]
        if gain_uv is not None:
            gain, units = _per_channel(gain_uv, n_ch, path=path, field="gain_uv"), "uV (gain_uv given)"
            offset = np.zeros(n_ch)
        else:
            scale = np.array([_uv_per_unit(u, path=nsx, field=f"units of electrode {int(e)}")
                              for u, e in zip(unit_names, ext["electrode_id"])])
            gain = ana / dig * scale
            offset = (ext["min_analog"] - ext["min_digital"] * ana / dig) * scale
            units = sorted(set(unit_names))
    meta.update(stream=f"nsx{nb}", segment=segment, n_segments=len(segs), original_units=units,
                positions_source="grid", reader="cortexlink memmap", timestamp=int(ts))
    cmap = ChannelMap(ids, _grid_positions(n_ch), gain, offset)
    return _MemmapRecording(path, fmt="blackrock", data_path=nsx, offset=data_off, file_dtype="<i2",
                            frame_channels=n_ch, channel_map=cmap, fs_hz=fs, n_samples=n, metadata=meta)

