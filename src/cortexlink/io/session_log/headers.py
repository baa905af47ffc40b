"""What ``recover`` does with stream headers: decide whether a header can be trusted, rebuild a
damaged one from the manifest's copy of it (or, for format-1 files, from the manifest's stream
description and the channel map), and rebuild a lost manifest from the stream headers.

A header is rebuilt only when the records after it decode with the rebuilt one; otherwise the
file is left as it is and reported, so that no intact record is ever discarded because of a
damaged header.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cortexlink.io.session_log.format import (
    FORMAT_VERSION, STREAM_COLUMNS, DamagedHeaderError, HeaderCheck, _encode_file_header, _find_next,
    check_header_info, scan_stream,
)

#: keys of a manifest stream entry that describe the file, not its header
SUMMARY_KEYS = frozenset({"records", "rows", "first_sample", "last_sample", "bytes", "sha256", "n_columns",
                          "header", "header_problem", "moved_aside", "file_missing"})
#: the header fields a format-1 header must agree on with the manifest
_CORE = ("kind", "dtype", "rate_hz")


def expected_header(name: str, manifest: dict[str, Any], file_info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The header stream ``name`` should have according to the manifest, or None when the manifest
    does not say enough (no copy of the header, and the column names cannot be known)."""
    st = (manifest.get("streams") or {}).get(name)
    if not isinstance(st, dict):
        return None
    copy = st.get("header")
    if isinstance(copy, dict):
        try:
            return check_header_info(dict(copy), Path("manifest.json"))
        except DamagedHeaderError:
            return None
    hdr = {k: v for k, v in st.items() if k not in SUMMARY_KEYS}
    if hdr.get("kind") == "array":
        n = st.get("n_columns")
        cm = manifest.get("channel_map") or {}
        if name == "raw" and cm.get("channel_ids") and len(cm["channel_ids"]) == n:
            cols = list(cm["channel_ids"])
        elif name in STREAM_COLUMNS and len(STREAM_COLUMNS[name]) == n:
            cols = list(STREAM_COLUMNS[name])
        elif file_info and isinstance(file_info.get("columns"), list) and len(file_info["columns"]) == n:
            cols = list(file_info["columns"])
        else:
            return None
        hdr["columns"] = cols
    try:
        return check_header_info(hdr, Path("manifest.json"))
    except DamagedHeaderError:
        return None


def header_disagrees(h: HeaderCheck, expected: dict[str, Any] | None) -> str | None:
    """For an intact-looking format-1 header (no checksum of its own): the first field on which it
    disagrees with the manifest, or None."""
    if expected is None or h.info is None or (h.version or 0) >= 2:
        return None
    for k in _CORE:
        if k in expected and h.info.get(k) != expected[k]:
            return f"{k} {h.info.get(k)!r}, but the manifest says {expected[k]!r}"
    if h.info.get("kind") == "array" and len(h.info.get("columns") or ()) != len(expected.get("columns") or ()):
        return f"{len(h.info.get('columns') or ())} columns, but the manifest says {len(expected['columns'])}"
    return None


def rebuild_header(p: Path, header: dict[str, Any], corrupt: Path) -> dict[str, Any] | None:
    """Write ``header`` (format 2) in place of stream file ``p``'s header, keeping every byte from its
    first intact record on; the old header bytes go to ``corrupt/``. Returns ``{"kept_from",
    "saved"}`` or None (file untouched) when the records do not decode with ``header``."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        start = _find_next(f, 0, size)             # from 0: a file that lost its whole header starts at a record
    start = size if start is None else start
    tmp = p.with_name(p.name + ".rebuild")
    with open(p, "rb") as src, open(tmp, "wb") as dst:
        dst.write(_encode_file_header(header))
        src.seek(start)
        while True:
            buf = src.read(1 << 22)
            if not buf:
                break
            dst.write(buf)
        dst.flush()
        os.fsync(dst.fileno())
    try:
        # records that do not decode with ``header``; in a compressed stream not those that only
        # depend on a record lost with the damaged header (they say nothing about the header)
        undecodable = sum(1 for kind, item in scan_stream(tmp, salvage=True)
                          if kind == "damage" and "does not decode" in item["reason"]
                          and "depends on a damaged or missing record" not in item["reason"])
    except Exception:                                    # noqa: BLE001 - any failure: keep the original
        undecodable = -1
    if undecodable:
        tmp.unlink()
        return None
    corrupt.mkdir(exist_ok=True)
    saved = corrupt / f"{p.stem}.header.{int(time.time())}.bin"
    with open(p, "rb") as f:
        saved.write_bytes(f.read(min(start, 64 << 20)))
    os.replace(tmp, p)
    return {"kept_from": start, "saved": str(saved)}


def rebuild_manifest(path: Path) -> tuple[dict[str, Any], list[str]]:
    """A manifest rebuilt from the stream headers (session id, participant, rate, channel map,
    streams) when ``manifest.json`` is lost; returns it and what could not be rebuilt."""
    from cortexlink.io.session_log.format import CorruptSessionError, inspect_header

    infos = {}
    for p in sorted((path / "streams").glob("*.clog")):
        h = inspect_header(p)
        if h.info is not None:
            infos[p.stem] = h.info
    if not infos:
        raise CorruptSessionError(f"{path}: no manifest.json and no stream file with a readable header; not a "
                                  "cortexlink session folder (nothing to recover)")
    sids = sorted({str(i.get("session_id")) for i in infos.values() if i.get("session_id")})
    pids = sorted({str(i.get("participant_id")) for i in infos.values() if i.get("participant_id")})
    rates = sorted({float(i["rate_hz"]) for i in infos.values() if i.get("rate_hz")})
    raw = infos.get("raw") or {}
    fs = raw.get("rate_hz") or (rates[0] if len(rates) == 1 else None)
    lost = ["config", "seeds", "provenance", "extractor settings (dsp)"]
    if not raw.get("channel_map"):
        lost.insert(0, "channel_map")
    if len(pids) != 1:
        lost.insert(0, "participant_id")
    decoders = {}
    if "events" in infos:                    # the decoders' checksums, as recorded when they went live
        for kind, rec in scan_stream(path / "streams" / "events.clog", salvage=True):
            e = rec.data if kind == "record" else None
            if isinstance(e, dict) and e.get("kind") == "decoder" and isinstance(e.get("file"), str) \
                    and isinstance(e.get("sha256"), str):
                decoders[e["file"]] = {"file": e["file"], "sha256": e["sha256"]}
    m = {"format": "cortexlink-session", "format_version": FORMAT_VERSION,
         "session_id": sids[0] if len(sids) == 1 else path.name,
         "participant_id": pids[0] if len(pids) == 1 else "unknown", "state": "recording",
         "fs_hz": fs, "channel_map": raw.get("channel_map"), "config": {}, "seeds": {},
         "decoders": decoders, "streams": {n: {**{k: v for k, v in i.items() if k not in ("columns", "channel_map")},
                         "n_columns": len(i.get("columns") or ()), "header": i} for n, i in infos.items()},
         "manifest_rebuilt": {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "from": "stream headers", "lost": lost}}
    return m, lost
