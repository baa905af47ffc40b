"""Finalize and recover a session folder: per-stream counts and SHA-256 checksums in the
manifest, damaged headers rebuilt, torn tails cut off, damaged records moved aside (verifying is
:mod:`~cortexlink.io.session_log.verify`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cortexlink.core.errors import ValidationError
from cortexlink.io._common import sha256_file
from cortexlink.io.session_log.format import (
    REC_HEADER_BYTES, _REC_HDR, CorruptSessionError, _atomic_write_json, _find_next, inspect_header, read_file_header,
    scan_stream,
)
from cortexlink.io.session_log.headers import expected_header, header_disagrees, rebuild_header, rebuild_manifest
from cortexlink.io.session_log.lock import LOCK_NAME, SessionLock
from cortexlink.io.session_log.manifest import check_manifest, read_manifest
from cortexlink.io.session_log.verify import verify_session

logger = logging.getLogger("cortexlink.io.session_log")


def _register(path: Path, catalogue: Any) -> str | None:
    """Register the folder in the catalogue (if any); returns what was done, in words."""
    if catalogue is False:
        return None
    if catalogue is None:
        catalogue = os.environ.get("CORTEXLINK_CATALOGUE")
        if not catalogue:
            return None
    from cortexlink.io.catalogue import Catalogue
    try:
        with Catalogue(catalogue) as cat:
            return str(cat.registration(path)["message"])
    except ValidationError as exc:       # e.g. a copy of a catalogued session: the folder itself is fine
        logger.warning("%s: not registered in the catalogue: %s", path, exc)
        return f"not registered in the catalogue {catalogue}: {exc}"


def _stream_summary(path: Path) -> dict[str, Any]:
    h = inspect_header(path)
    if h.info is None:                       # a damaged header recover could not rebuild: no counts
        return {"header_problem": h.problem, "bytes": path.stat().st_size}
    info = h.info
    n_rec = n_rows = 0
    first = last = None
    for kind, item in scan_stream(path, salvage=True, decode=False):    # counts: no need to decode samples
        if kind == "record":
            n_rec += 1
            n_rows += item.data.shape[0] if isinstance(item.data, np.ndarray) else 1
            if first is None:
                first = item.sample
            last = item.sample
    return {"kind": info["kind"], "records": n_rec, "rows": n_rows, "first_sample": first, "last_sample": last,
            "bytes": path.stat().st_size, "sha256": sha256_file(path), "header_problem": None,
            "dtype": info.get("dtype"), "n_columns": len(info.get("columns", ())), "rate_hz": info.get("rate_hz")}


def finalize(path: str | os.PathLike[str], *, state: str, extra: dict[str, Any] | None = None,
             keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scan every stream, write per-stream counts and SHA-256 checksums into the manifest.

    ``keep`` maps a file's relative path to the ``{"bytes", "sha256"}`` entry to keep for it in
    place of a new one (a file found damaged that could not be repaired: its checksum as recorded
    stays, so that verifying keeps naming it).
    """
    path = Path(path)
    manifest = read_manifest(path)
    keep = keep or {}
    streams = dict(manifest.get("streams") or {})
    for p in sorted((path / "streams").glob("*.clog")):
        s = _stream_summary(p)
        prev = {k: v for k, v in (streams.get(p.stem) or {}).items() if k not in ("moved_aside", "file_missing")}
        if s.get("header_problem") is None:
            s.pop("header_problem", None)
            prev.pop("header_problem", None)
        streams[p.stem] = {**prev, **s}
    for name, st in streams.items():
        if not (path / "streams" / f"{name}.clog").exists() and isinstance(st, dict):
            moved = (extra or {}).get("recovery", {}).get("streams", {}).get(name, {}).get("moved_aside")
            if moved or st.get("records") or st.get("file_missing"):     # not a stream declared, never written
                st["file_missing"] = f"moved to corrupt/ by recover ({moved})" if moved else st.get("file_missing", True)
    files = {}
    for p in sorted(path.rglob("*")):
        if (p.is_file() and p.name not in ("manifest.json", LOCK_NAME) and not p.name.endswith((".tmp", ".rebuild",
                ".repair")) and "corrupt" not in p.relative_to(path).parts):
            rel = str(p.relative_to(path))
            if rel in keep:
                files[rel] = keep[rel]
            elif (streams.get(p.stem) or {}).get("header_problem") and p.parent.name == "streams":
                continue                     # unreadable: no checksum is blessed on it
            else:
                files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    for rel, meta in keep.items():           # kept entries of files that are gone: verify names them missing
        files.setdefault(rel, meta)
        name = Path(rel).stem
        if Path(rel).parent.name == "streams" and name in streams:
            streams[name].update(bytes=meta["bytes"], sha256=meta["sha256"])
    manifest.update({"state": state, "streams": streams, "files": files,
                     "closed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if extra:
        manifest.update({k: v for k, v in extra.items() if v is not None})
    _atomic_write_json(path / "manifest.json", manifest)
    return manifest


def recover(path: str | os.PathLike[str], *, catalogue: Any = None) -> dict[str, Any]:
    """Make a session folder consistent after a crash or damage, never discarding an intact record.

    Takes the folder's lock first (:class:`SessionBusy` while a live process records into it).
    A lost ``manifest.json`` is rebuilt from the stream headers. For every stream file: a damaged
    header is rebuilt from the manifest's copy of it (the records after it are kept as they are;
    the old header bytes go to ``corrupt/``); where it cannot be rebuilt the file is left as it is
    and reported. Then a torn tail is cut off and damaged records in the middle are moved to
    ``corrupt/`` while every intact record is kept, in order. Checksums and counts are written to
    the manifest (state ``"recovered"``) — recomputed only for files recover repaired itself or
    that had none; a file whose recorded SHA-256 no longer matches and that recover could not
    repair (a decoder ``.npz``, a stream changed where no record CRC covers it) keeps its recorded
    checksum, so that verifying still names it. A folder that was closed and verifies is left as
    it is.

    Returns
    -------
    dict
        ``{"state", "changed", "streams": {name: {"records", "rows", "cut_bytes", "damaged_regions",
        "header", ...}}, "files": {relpath: what was found}, "actions": [str, ...], "manifest"}``;
        ``actions`` says in words what was found and done.
    """
    path = Path(path)
    if not path.is_dir():
        raise CorruptSessionError(f"{path}: not a folder")
    lock = SessionLock(path, "recover")
    try:
        lock.acquire()
    except OSError as exc:
        raise CorruptSessionError(f"{path}: cannot write in the folder ({exc.strerror or exc}); recover must rewrite "
                                  "the manifest - run it where the folder is writable, as a user who may write "
                                  "there") from None
    try:
        return _recover_locked(path, catalogue)
    finally:
        lock.release()


def _load_or_rebuild_manifest(path: Path, actions: list[str]) -> dict[str, Any]:
    mpath = path / "manifest.json"
    if mpath.exists():
        return read_manifest(path)
    tmp = mpath.with_name("manifest.json.tmp")
    if tmp.exists():
        try:
            check_manifest(json.loads(tmp.read_text(encoding="utf-8")), tmp)
        except (ValueError, CorruptSessionError):
            pass
        else:
            os.replace(tmp, mpath)
            actions.append("manifest.json was missing; its last complete update (manifest.json.tmp) put in place")
            return read_manifest(path)
    m, lost = rebuild_manifest(path)
    _atomic_write_json(mpath, m)
    actions.append(f"manifest.json was missing; rebuilt from the stream headers (lost: {', '.join(lost)})")
    return m


def _recover_locked(path: Path, catalogue: Any) -> dict[str, Any]:
    for p in sorted((path / "streams").glob("*.clog")):
        problem = inspect_header(p).problem or ""
        if "newer than" in problem:
            raise CorruptSessionError(f"{p}: {problem}; recover changed nothing")
    actions: list[str] = []
    manifest = _load_or_rebuild_manifest(path, actions)
    rebuilt = bool(actions)
    if (not actions and manifest.get("state") in ("closed", "stopped", "recovered")
            and not verify_session(path, check_lock=False)["problems"]):
        return {"state": manifest["state"], "streams": {}, "files": {}, "actions": [], "manifest": manifest,
                "changed": False}
    old_files = manifest.get("files") or {}
    report: dict[str, Any] = {}
    repaired: set[str] = set()
    corrupt = path / "corrupt"
    for p in sorted((path / "streams").glob("*.clog")):
        rel = str(p.relative_to(path))
        st, ok = _fix_header(p, manifest, old_files.get(rel), corrupt, actions)
        if ok:
            st.update(_repair_stream(p, path))
            if st["damaged_regions"]:
                actions.append(f"{p.stem}: cut {st['cut_bytes']} damaged bytes in {st['damaged_regions']} "
                               f"region(s) (kept in corrupt/); {st['records']} intact records kept")
            had = (manifest.get("streams") or {}).get(p.stem, {}).get("records")
            if isinstance(had, int) and st["records"] < had and old_files.get(rel):
                # a file cut short (at a record boundary or not): what is left is intact, the rest is lost
                st["records_lost"] = had - st["records"]
                actions.append(f"{p.stem}: {had - st['records']} record(s) fewer than the manifest recorded at "
                               "close; they are lost (the file was cut short)")
        if ok and (st["header"] != "intact" or st["damaged_regions"] or st.get("records_lost")):
            repaired.add(rel)
        report[p.stem] = st
    for name in sorted(set(manifest.get("streams") or {}) - set(report)):
        rel = f"streams/{name}.clog"
        if rel in old_files and not (path / rel).exists():
            actions.append(f"{name}: listed in the manifest but its file {rel} is missing")
    keep, file_report = _check_other_files(path, manifest, old_files, repaired, actions)
    modified = rebuilt or repaired or any("moved_aside" in st for st in report.values())
    if not modified and manifest.get("state") in ("closed", "stopped", "recovered"):
        # nothing recover can repair (e.g. a damaged decoder): the folder and its manifest stay as they are
        return {"state": manifest["state"], "streams": report, "files": file_report, "actions": actions,
                "manifest": manifest, "changed": False}
    manifest = finalize(path, state="recovered", keep=keep, extra={
        "recovered_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recovery": {"streams": report, "files": file_report, "actions": actions}})
    cat = _register(path, catalogue)
    if cat:
        actions.append(cat)
    return {"state": "recovered", "streams": report, "files": file_report, "actions": actions,
            "manifest": manifest, "changed": True}


def _fix_header(p: Path, manifest: dict[str, Any], old: dict[str, Any] | None, corrupt: Path,
                actions: list[str]) -> tuple[dict[str, Any], bool]:
    """Check stream ``p``'s header and rebuild it where damaged; ``(report, readable)``."""
    h = inspect_header(p)
    exp = expected_header(p.stem, manifest, h.info)
    problem = h.problem
    if problem is None:
        why = header_disagrees(h, exp)
        if why is None or (old is not None and sha256_file(p) == old.get("sha256")):
            return {"header": "intact"}, True
        problem = f"format-1 header disagrees with the manifest ({why})"
    empty = {"records": 0, "rows": 0, "cut_bytes": 0, "damaged_regions": 0}
    if h.foreign and _has_no_record(p):
        corrupt.mkdir(exist_ok=True)
        os.replace(p, corrupt / p.name)
        actions.append(f"{p.stem}: {p.name} is not a cortexlink stream file and holds no record (its data are "
                       f"lost); moved to corrupt/{p.name}")
        return {**empty, "header": f"foreign file ({problem})", "moved_aside": problem}, False
    if exp is not None:
        done = rebuild_header(p, exp, corrupt)
        if done is not None:
            actions.append(f"{p.stem}: {_damaged(problem)}; rebuilt from the manifest's copy, every record after "
                           f"it kept (old header bytes in corrupt/{Path(done['saved']).name})")
            return {**empty, "header": f"rebuilt from the manifest ({problem})"}, True
        why = "the records do not decode with the manifest's description"
    else:
        why = "the manifest holds no copy of it"
    actions.append(f"{p.stem}: {_damaged(problem)} and not rebuilt ({why}); the file is left as it is, unreadable "
                   "until repaired")
    return {**empty, "header": f"damaged, left as it is ({problem}; {why})"}, False


def _damaged(problem: str) -> str:
    return problem if problem.startswith("stream header") else f"stream header damaged ({problem})"


def _has_no_record(p: Path) -> bool:
    with open(p, "rb") as f:
        return _find_next(f, 0, p.stat().st_size) is None


def _check_other_files(path: Path, manifest: dict[str, Any], old_files: dict[str, Any], repaired: set[str],
                       actions: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Files whose recorded checksum no longer matches and that recover did not repair keep it."""
    expected = {rel: meta for rel, meta in old_files.items() if rel not in repaired}
    for meta in (manifest.get("decoders") or {}).values():
        expected.setdefault(meta["file"], meta)
    keep: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for rel, meta in sorted(expected.items()):
        p = path / rel
        if not p.is_file():
            keep[rel] = {"bytes": meta.get("bytes", 0), "sha256": meta["sha256"]}
            out[rel] = "missing"
            actions.append(f"{rel}: missing (was listed with a checksum)")
        elif sha256_file(p) != meta["sha256"]:
            keep[rel] = {"bytes": meta.get("bytes", p.stat().st_size), "sha256": meta["sha256"]}
            out[rel] = "damaged: SHA-256 does not match the recorded one; left as it is"
            actions.append(f"{rel}: SHA-256 does not match the one recorded for it and recover cannot repair it; "
                           "left as it is, its recorded checksum kept (verify keeps naming it)")
    for rel in sorted(repaired):
        out[rel] = "repaired; checksum recomputed"
    return keep, out


def _repair_stream(p: Path, session: Path) -> dict[str, Any]:
    info, first_off = read_file_header(p)
    good: list[tuple[int, int]] = []      # (offset, length) of intact records
    damage: list[dict[str, Any]] = []
    rows = 0
    for kind, item in scan_stream(p, salvage=True):
        if kind == "record":
            good.append((item.offset, REC_HEADER_BYTES + item.payload_bytes))
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
    logger.info("%s: removed %d damaged region(s), %d bytes (kept in %s); %d intact records kept",
                   p, len(damage), cut, dest, len(good))
    return {"records": len(good), "rows": rows, "cut_bytes": cut, "damaged_regions": len(damage)}
