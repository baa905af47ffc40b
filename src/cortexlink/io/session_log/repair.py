"""Finalize, recover and verify a session folder: per-stream counts and SHA-256 checksums in
the manifest, torn tails cut off, damaged records moved aside, checksums re-checked.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.io._common import sha256_file
from cortexlink.io.session_log.format import (
    CorruptSessionError, REC_HEADER_BYTES, _REC_HDR, _atomic_write_json, read_file_header, scan_stream,
)

logger = logging.getLogger("cortexlink.io.session_log")


def _register(path: Path, catalogue: Any) -> None:
    if catalogue is False:
        return
    if catalogue is None:
        catalogue = os.environ.get("CORTEXLINK_CATALOGUE")
        if not catalogue:
            return
    from cortexlink.io.catalogue import Catalogue
    with Catalogue(catalogue) as cat:
        cat.register(path)


def _stream_summary(path: Path) -> dict:
    info, _ = read_file_header(path)
    n_rec = n_rows = 0
    first = last = None
    damage = []
    for kind, item in scan_stream(path, salvage=True):
        if kind == "record":
            n_rec += 1
            rows = item.data.shape[0] if isinstance(item.data, np.ndarray) else 1
            n_rows += rows
            if first is None:
                first = item.sample
            last = item.sample
        else:
            damage.append(item)
    return {"kind": info["kind"], "records": n_rec, "rows": n_rows, "first_sample": first, "last_sample": last,
            "bytes": path.stat().st_size, "sha256": sha256_file(path), "damage": damage,
            "dtype": info.get("dtype"), "n_columns": len(info.get("columns", ())), "rate_hz": info.get("rate_hz")}


def finalize(path: str | os.PathLike, *, state: str, extra: dict | None = None) -> dict:
    """Scan every stream, write per-stream counts and SHA-256 checksums into the manifest."""
    path = Path(path)
    mpath = path / "manifest.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    streams = {}
    for p in sorted((path / "streams").glob("*.clog")):
        s = _stream_summary(p)
        prev = manifest.get("streams", {}).get(p.stem, {})
        streams[p.stem] = {**prev, **{k: v for k, v in s.items() if k != "damage"}}
    files = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name != "manifest.json" and not p.name.endswith(".tmp") and "corrupt" not in p.parts:
            files[str(p.relative_to(path))] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    manifest.update({"state": state, "streams": streams, "files": files,
                     "closed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if extra:
        manifest.update({k: v for k, v in extra.items() if v is not None})
    _atomic_write_json(mpath, manifest)
    return manifest


def recover(path: str | os.PathLike, *, catalogue: Any = None) -> dict:
    """Make a session folder consistent after a crash.

    Every stream file is scanned; a torn tail is cut off and damaged records in the middle are
    moved aside (to ``corrupt/``) while every intact record is kept, in order. Then checksums
    and counts are written to the manifest (state ``"recovered"``). A folder that was closed
    cleanly is left as it is (its checksums are verified instead).

    Returns
    -------
    dict
        ``{"state", "streams": {name: {"records", "rows", "cut_bytes", "damaged_regions"}}, "manifest"}``
    """
    path = Path(path)
    mpath = path / "manifest.json"
    if not path.is_dir():
        raise CorruptSessionError(f"{path}: not a folder")
    if not mpath.exists():
        tmp = mpath.with_name("manifest.json.tmp")
        if tmp.exists():
            os.replace(tmp, mpath)
        else:
            raise CorruptSessionError(f"{path}: no manifest.json; not a cortexlink session folder (nothing to recover)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptSessionError(f"{mpath}: not valid JSON ({exc}); the manifest is written atomically, so this "
                                  "file was damaged after the fact") from None
    if manifest.get("state") in ("closed", "stopped", "recovered") and not verify(path)["problems"]:
        return {"state": manifest["state"], "streams": {}, "manifest": manifest, "changed": False}
    report: dict = {}
    for p in sorted((path / "streams").glob("*.clog")):
        try:
            read_file_header(p)
        except CorruptSessionError as exc:
            dest = path / "corrupt"
            dest.mkdir(exist_ok=True)
            os.replace(p, dest / p.name)
            report[p.stem] = {"records": 0, "rows": 0, "cut_bytes": 0, "damaged_regions": 1,
                              "moved_aside": str(exc)}
            continue
        report[p.stem] = _repair_stream(p, path)
    manifest = finalize(path, state="recovered", extra={"recovered_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                       "recovery": report})
    _register(path, catalogue)
    return {"state": "recovered", "streams": report, "manifest": manifest, "changed": True}


def _repair_stream(p: Path, session: Path) -> dict:
    info, first_off = read_file_header(p)
    good: list[tuple[int, int]] = []      # (offset, length) of intact records
    damage: list[dict] = []
    rows = 0
    for kind, item in scan_stream(p, salvage=True):
        if kind == "record":
            rec_len = REC_HEADER_BYTES + (item.data.nbytes if isinstance(item.data, np.ndarray)
                                          else len(json.dumps(item.data)))
            good.append((item.offset, rec_len))
            rows += item.data.shape[0] if isinstance(item.data, np.ndarray) else 1
        else:
            damage.append(item)
    size = p.stat().st_size
    if not damage:
        return {"records": len(good), "rows": rows, "cut_bytes": 0, "damaged_regions": 0}
    tail_only = len(damage) == 1 and damage[0]["offset"] + damage[0]["length"] >= size
    dest = session / "corrupt"
    dest.mkdir(exist_ok=True)
    with open(p, "rb") as f:
        for d in damage:
            f.seek(d["offset"])
            (dest / f"{p.stem}.{d['offset']}.bin").write_bytes(f.read(min(d["length"], 64 << 20)))
    if tail_only:
        with open(p, "r+b") as f:
            f.truncate(damage[0]["offset"])
            os.fsync(f.fileno())
    else:
        tmp = p.with_suffix(".clog.repair")
        with open(p, "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read(first_off))
            for off, _n in good:
                src.seek(off)
                hdr = src.read(REC_HEADER_BYTES)
                n = _REC_HDR.unpack_from(hdr)[1]
                dst.write(hdr)
                dst.write(src.read(n))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, p)
    cut = sum(min(d["length"], size - d["offset"]) for d in damage)
    logger.warning("%s: removed %d damaged region(s), %d bytes (kept in %s); %d intact records kept",
                   p, len(damage), cut, dest, len(good))
    return {"records": len(good), "rows": rows, "cut_bytes": cut, "damaged_regions": len(damage)}


def verify(path: str | os.PathLike) -> dict:
    """Re-check a session: every file's SHA-256 against the manifest and every record's CRC.

    Returns ``{"ok": bool, "problems": [str, ...], "files": n}``; problems name the file.
    """
    path = Path(path)
    mpath = path / "manifest.json"
    problems: list[str] = []
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return {"ok": False, "problems": [f"{mpath}: unreadable ({exc})"], "files": 0}
    files = manifest.get("files")
    if files is None:
        problems.append(f"{mpath}: no checksums (state {manifest.get('state')!r}); the session was not closed "
                        "- run `cortexlink recover`")
        files = {}
    for rel, meta in files.items():
        p = path / rel
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        if p.stat().st_size != meta["bytes"]:
            problems.append(f"{p}: size {p.stat().st_size} bytes, manifest says {meta['bytes']}")
            continue
        if sha256_file(p) != meta["sha256"]:
            problems.append(f"{p}: SHA-256 does not match the manifest")
    for p in sorted((path / "streams").glob("*.clog")):
        rel = str(p.relative_to(path))
        if files and rel not in files:
            problems.append(f"{p}: not listed in the manifest")
        try:
            for kind, item in scan_stream(p, salvage=True):
                if kind == "damage":
                    problems.append(f"{p}: damaged at byte {item['offset']} ({item['reason']})")
        except CorruptSessionError as exc:
            problems.append(str(exc))
    return {"ok": not problems, "problems": problems, "files": len(files)}

