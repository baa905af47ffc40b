"""Open Ephys binary (``structure.oebin``) and legacy ``.continuous`` (``openephys``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.types import ChannelMap
from cortexlink.io.importers._base import (
    Recording, _MemmapRecording, _check_rate, _describe_content, _fail, _grid_positions, _head, _per_channel,
    _truncation, _unique_ids, _uv_per_unit, logger,
)
from cortexlink.io.importers.neo import _check_index, _open_neo


def _oe_units(unit: str, name: str) -> str:
    # the binary format leaves units empty for µV neural channels and V ADC channels (GUI docs)
    return unit if unit else ("V" if "ADC" in name else "uV")


def _openephys_entries(root: Path) -> list[dict]:
    """Every continuous stream of every structure.oebin under ``root``, validated."""
    out = []
    for oebin in sorted(root.rglob("structure.oebin")):
        head = _head(oebin, 64)
        try:
            doc = json.loads(oebin.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _fail(oebin, f"not an Open Ephys structure.oebin (JSON): it is {_describe_content(head)}; "
                               f"{type(e).__name__}: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("continuous"), list):
            raise _fail(oebin, "not an Open Ephys structure.oebin: no 'continuous' list")
        rec_dir = oebin.parent
        node = rec_dir.parents[1].name if len(rec_dir.parents) > 1 else ""
        node = node if node.startswith("Record") else ""
        m_exp = re.search(r"(\d+)$", rec_dir.parent.name)
        m_rec = re.search(r"(\d+)$", rec_dir.name)
        for k, c in enumerate(doc["continuous"]):
            where = f"{oebin} (continuous[{k}])"
            for key in ("folder_name", "sample_rate", "num_channels", "channels"):
                if key not in c:
                    raise _fail(where, f"{key} is missing")
            fs = _check_rate(where, c["sample_rate"], "sample_rate")
            chans = c["channels"]
            if c["num_channels"] != len(chans):
                raise _fail(where, f"num_channels ({c['num_channels']}) disagrees with the {len(chans)} entries "
                                   "of channels")
            for ch in chans:
                _uv_per_unit(_oe_units(ch.get("units", ""), ch.get("channel_name", "")), path=where,
                             field=f"units of channel {ch.get('channel_name')!r}")
                bv = ch.get("bit_volts")
                if not isinstance(bv, (int, float)) or not np.isfinite(bv) or bv == 0:
                    raise _fail(where, f"bit_volts of channel {ch.get('channel_name')!r} must be a non-zero "
                                       f"number; got {bv!r}")
            folder = c["folder_name"].strip("/").split("/")[0]
            sdir = rec_dir / "continuous" / c["folder_name"].strip("/")
            dat = sdir / "continuous.dat"
            if not sdir.is_dir():
                continue  # neo skips (with a warning) streams whose folder is missing
            if not dat.is_file():
                raise _fail(sdir, "continuous.dat is missing")
            n_ch = len(chans)
            size = dat.stat().st_size
            n_complete, rem = divmod(size, 2 * n_ch)
            problem, n_expected = None, None
            ts_file = sdir / "sample_numbers.npy"
            ts_file = ts_file if ts_file.is_file() else sdir / "timestamps.npy"
            try:
                n_ts = len(np.load(ts_file, mmap_mode="r"))
            except (OSError, ValueError, EOFError) as e:
                n_ts = None
                problem = f"{ts_file.name} unreadable ({type(e).__name__}: {e})"
            if n_ts is not None and n_ts > n_complete:
                problem, n_expected = f"{n_complete} samples in continuous.dat, {n_ts} in {ts_file.name}", n_ts
            if rem:
                problem = (problem + "; " if problem else "") + f"continuous.dat ends {rem} bytes into a sample"
            if n_ts is not None and n_ts < n_complete and not rem:
                logger.warning("%s: %s lists %d samples, continuous.dat holds %d", sdir, ts_file.name, n_ts,
                               n_complete)
            out.append(dict(oebin=oebin, rec_dir=rec_dir, node=node, stream=(node + "#" if node else "") + folder,
                            exp=int(m_exp.group(1)) if m_exp else 1, rec=int(m_rec.group(1)) if m_rec else 1,
                            fs=fs, channels=chans, dat=dat, n_complete=n_complete, n_expected=n_expected,
                            problem=problem))
    return out


def _oe_prefer(names: list[str]) -> int:
    for i, n in enumerate(names):
        if not n.endswith("_ADC") and "SYNC" not in n:
            return i
    return 0


def _open_openephys(path: Path, *, stream: str | None = None, block: int = 0, segment: int = 0,
                    gain_uv: Any = None) -> Recording:
    from neo.rawio import OpenEphysBinaryRawIO

    root = path
    if path.is_file():
        if path.suffix.lower() == ".continuous":
            return _open_openephys_legacy(path.parent, stream=stream, segment=segment, gain_uv=gain_uv)
        if path.name == "structure.oebin":
            root = path.parent
        elif path.name == "continuous.dat" and len(path.parents) > 2:
            root = path.parents[2]
        else:
            raise _fail(path, "an Open Ephys path must be a folder, a structure.oebin, a continuous.dat or a "
                              f".continuous file; got {_describe_content(_head(path))}")
    if not any(root.rglob("structure.oebin")):
        if any(root.glob("*.continuous")):
            return _open_openephys_legacy(root, stream=stream, segment=segment, gain_uv=gain_uv)
        raise _fail(path, "holds no Open Ephys recording (no structure.oebin below it, no .continuous files)")
    entries = _openephys_entries(root)
    if not entries:
        raise _fail(path, "holds no continuous stream (structure.oebin lists none, or their folders are missing)")
    meta: dict[str, Any] = {"oebin_files": sorted({str(e["oebin"]) for e in entries})}
    if path.is_file() and path.name == "continuous.dat" and stream is None:
        stream = next((e["stream"] for e in entries if e["dat"] == path), None)
    if not any(e["problem"] for e in entries):
        reader = OpenEphysBinaryRawIO(dirname=str(root))
        return _open_neo(path, "openephys", reader, stream=stream, block=block, segment=segment, metadata=meta,
                         gain_uv=gain_uv, prefer=_oe_prefer)
    # something under root is damaged (neo would refuse it all): map the selected stream directly
    names = sorted({e["stream"] for e in entries})
    want = stream if stream is not None else names[_oe_prefer(names)]
    adc = want.endswith("_ADC")
    base = want[:-4] if adc else want
    if base not in names:
        raise _fail(path, f"stream must be one of {names}; got {stream!r}")
    exps = sorted({e["exp"] for e in entries})
    block = _check_index(path, "block", block, len(exps))
    recs = sorted({e["rec"] for e in entries if e["exp"] == exps[block]})
    segment = _check_index(path, "segment", segment, len(recs))
    sel = next((e for e in entries if e["stream"] == base and e["exp"] == exps[block] and e["rec"] == recs[segment]),
               None)
    if sel is None:
        raise _fail(path, f"stream {base!r} is missing from block {block}, segment {segment}")
    if sel["problem"]:
        _truncation(meta, sel["dat"], sel["n_complete"], sel["n_expected"], sel["problem"])
    else:
        meta["damaged_neighbours"] = [str(e["dat"]) for e in entries if e["problem"]]
        logger.warning("%s: other Open Ephys streams are damaged (%s); reading this one directly", sel["dat"],
                       meta["damaged_neighbours"])
    cols = [i for i, ch in enumerate(sel["channels"])
            if ("ADC" in ch["channel_name"]) == adc and "SYNC" not in ch["channel_name"]]
    if not cols:
        raise _fail(path, f"stream {want!r} has no channels")
    chans = [sel["channels"][i] for i in cols]
    units = [_oe_units(ch.get("units", ""), ch["channel_name"]) for ch in chans]
    if gain_uv is not None:
        gain = _per_channel(gain_uv, len(cols), path=path, field="gain_uv")
    else:
        gain = np.array([ch["bit_volts"] * _uv_per_unit(u, path=sel["oebin"], field="units")
                         for ch, u in zip(chans, units)])
    cmap = ChannelMap(_unique_ids([ch["channel_name"] for ch in chans], [f"ch{i:04d}" for i in cols]),
                      _grid_positions(len(cols)), gain, 0.0)
    meta.update(stream=want, streams=names, block=block, segment=segment, n_blocks=len(exps), n_segments=len(recs),
                original_units=sorted(set(units)), positions_source="grid", files=[str(sel["dat"])],
                reader="cortexlink memmap")
    columns = slice(cols[0], cols[-1] + 1) if cols == list(range(cols[0], cols[-1] + 1)) else np.array(cols)
    return _MemmapRecording(path, fmt="openephys", data_path=sel["dat"], offset=0, file_dtype="<i2",
                            frame_channels=len(sel["channels"]), columns=columns, channel_map=cmap,
                            fs_hz=sel["fs"], n_samples=sel["n_complete"], metadata=meta)


_OE_LEGACY_HEADER = 1024
_OE_LEGACY_RECORD = 8 + 2 + 2 + 2 * 1024 + 10  # timestamp, n samples, recording number, samples, marker


def _open_openephys_legacy(folder: Path, *, stream: str | None, segment: int, gain_uv: Any) -> Recording:
    from neo.rawio import OpenEphysRawIO

    files = sorted(folder.glob("*.continuous"))
    meta: dict[str, Any] = {"variant": "legacy .continuous", "files": [f.name for f in files]}
    partial = []
    for f in files:
        head = _head(f, 1024)
        if b"Open Ephys Data Format" not in head:
            raise _fail(f, f"not an Open Ephys .continuous file: it is {_describe_content(head[:32])}; the "
                           "1024-byte text header must name 'Open Ephys Data Format'")
        body = f.stat().st_size - _OE_LEGACY_HEADER
        if body < _OE_LEGACY_RECORD:
            raise _fail(f, f"holds no complete 1024-sample record ({max(body, 0)} bytes after the header)")
        if body % _OE_LEGACY_RECORD:
            partial.append(f.name)
    reader = OpenEphysRawIO(dirname=str(folder))
    rec = _open_neo(folder, "openephys", reader, stream=stream, block=0, segment=segment, metadata=meta,
                    gain_uv=gain_uv, prefer=_oe_prefer)
    if partial:
        _truncation(rec.metadata, folder, rec.n_samples, None,
                    f"{len(partial)} file(s) end mid-record, complete records kept: {partial[:5]}")
    return rec

