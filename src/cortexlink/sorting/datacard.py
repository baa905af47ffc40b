"""The exports of a data set (:func:`export_dataset`, called by
:func:`cortexlink.sorting.dataset.build_dataset` after every session is sorted): unit tracking
per participant, one NWB file per session with a ``tracked_id`` column, the units index
(Parquet), SHA256SUMS and the data card (JSON + HTML with the SNR and firing-rate plots).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cortexlink.io._common import sha256_file
from cortexlink.sorting._dataset_tasks import read_done

logger = logging.getLogger(__name__)

__all__ = ["export_dataset", "write_sha256sums", "verify_sha256sums", "CARD_FORMAT"]

CARD_FORMAT = "cortexlink-datacard"
_LIBS = ("numpy", "scipy", "spikeinterface", "pynwb", "hdmf", "ray", "pyarrow", "pandas", "sklearn", "numba",
         "probeinterface", "hdbscan", "mountainsort5")


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    names = {"sklearn": "scikit-learn"}
    out: dict[str, str | None] = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = version(names.get(lib, lib))
        except PackageNotFoundError:
            out[lib] = None
    return out


# ---------------------------------------------------------------------------------- tracking
def track(out: Path, recs: list[dict]) -> tuple[Any, dict]:
    """Units (good and mua) tracked across each participant's sessions, in day order
    (:func:`cortexlink.sorting.tracking.track_units`): the table (session, unit_id, tracked_id,
    confidence, ...) written to ``OUT/tracking/``, and what was done. A session without a known
    participant is a group of its own (never matched to another session)."""
    try:
        from cortexlink.sorting.tracking import load_session_units, track_units, write_tracking
    except ImportError as exc:
        return None, {"available": False, "reason": f"cortexlink.sorting.tracking is not importable ({exc})"}
    units = []
    for r in recs:
        su = load_session_units(out / "sessions" / r["session_id"])
        su.session = r["session_id"]
        su.participant = r.get("participant") or f"~{r['session_id']}"
        su.order_key = r.get("day")
        units.append(su)
    if not units:
        return None, {"available": True, "n_tracked_units": 0}
    table = track_units(units)
    def real(p: Any) -> Any:          # the stand-in participant of a session without one is None again
        return None if str(p).startswith("~") else p

    table["participant"] = [real(p) for p in table["participant"]]
    table.attrs["sessions"] = [{**o, "participant": real(o.get("participant"))}
                               for o in table.attrs.get("sessions", [])]
    tdir = out / "tracking"
    if tdir.exists():
        shutil.rmtree(tdir)
    info = write_tracking(tdir, table, units)
    return table, {"available": True, "units_tracked": "good and mua (noise units get no tracked_id)",
                   "n_tracked_units": int(table["tracked_id"].nunique()),
                   "params": table.attrs.get("params"), "summary": {k: v for k, v in (info or {}).items()
                                                                   if isinstance(v, (int, float, str))}}


# --------------------------------------------------------------------------------- NWB export
def _export_nwb(src: Path, dst: Path, by_unit: dict[str, tuple[str, float]]) -> None:
    """Copy ``src`` (units.nwb) to ``dst`` with ``tracked_id`` and ``tracking_confidence`` columns
    appended to its Units table (rows matched by ``sorter_unit_id``), read it back, then move it
    into place."""
    from pynwb import NWBHDF5IO

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tracked: list[str] = []
    with NWBHDF5IO(str(tmp), "a") as io_:
        nwb = io_.read()
        if nwb.units is not None and len(nwb.units.id):
            uids = [str(u) for u in nwb.units["sorter_unit_id"][:]]
            tracked = [by_unit.get(u, ("", math.nan))[0] for u in uids]
            conf = [by_unit.get(u, ("", math.nan))[1] for u in uids]
            nwb.units.add_column(name="tracked_id", description="unit id stable across this participant's sessions "
                                 "(cortexlink dataset build; empty: a noise unit, not tracked)", data=tracked)
            nwb.units.add_column(name="tracking_confidence", description="probability that the unit is the neuron "
                                 "of the earlier session it was matched to (NaN: first seen here)",
                                 data=np.asarray(conf, np.float64))
            io_.write(nwb)
    with NWBHDF5IO(str(tmp), "r") as io_:                      # it must read back
        nwb = io_.read()
        if tracked and [str(t) for t in nwb.units["tracked_id"][:]] != tracked:
            raise OSError(f"{dst}: tracked_id did not read back")
    os.replace(tmp, dst)


# ---------------------------------------------------------------------------------- checksums
_NOT_SUMMED = {"SHA256SUMS", ".build.lock"}


def write_sha256sums(out: Path) -> int:
    """``OUT/SHA256SUMS`` of every file under ``out`` (``sha256sum -c`` format), but the lock and
    the temporary ``work/`` folder; returns the number of files."""
    lines = []
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not p.is_file() or rel.parts[0] == "work" or str(rel) in _NOT_SUMMED:
            continue
        lines.append(f"{sha256_file(p)}  {rel.as_posix()}")
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return len(lines)


def verify_sha256sums(out: str | Path) -> list[str]:
    """The files of ``OUT/SHA256SUMS`` that are missing or differ (empty: all verify)."""
    out = Path(out)
    bad = []
    for ln in (out / "SHA256SUMS").read_text().splitlines():
        digest, _, rel = ln.partition("  ")
        p = out / rel
        if not p.is_file() or sha256_file(p) != digest:
            bad.append(rel)
    return bad


# ---------------------------------------------------------------------------------- the index
def _units_index(out: Path, recs: list[dict], table: Any) -> Any:
    import pandas as pd

    frames = []
    for r in recs:
        f = out / "sessions" / r["session_id"] / "metrics.csv"
        df = pd.read_csv(f, dtype={"unit_id": str, "main_channel": str}) if f.is_file() else pd.DataFrame()
        if not len(df):
            continue
        df.insert(0, "participant", r.get("participant"))
        df.insert(1, "session", r["session_id"])
        df.insert(2, "day", r.get("day"))
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["participant", "session", "day", "unit_id", "tracked_id", "tracking_confidence",
                                     "main_channel", "x_um", "y_um", "label"])
    idx = pd.concat(frames, ignore_index=True)
    idx["unit_id"] = idx["unit_id"].astype(str)
    if table is not None and len(table):
        t = table[["session", "unit_id", "tracked_id", "confidence"]].copy()
        t["unit_id"] = t["unit_id"].astype(str)
        t["session"] = t["session"].astype(str)
        idx = idx.merge(t.rename(columns={"session": "session", "confidence": "tracking_confidence"}),
                        on=["session", "unit_id"], how="left")
    else:
        idx["tracked_id"] = None
        idx["tracking_confidence"] = np.nan
    idx["tracked_id"] = [t if isinstance(t, str) else "" for t in idx["tracked_id"]]
    idx["tracking_confidence"] = idx["tracking_confidence"].astype(float)
    front = ["participant", "session", "day", "unit_id", "tracked_id", "tracking_confidence", "main_channel",
             "x_um", "y_um", "label", "label_reason"]
    return idx[[c for c in front if c in idx] + [c for c in idx.columns if c not in front]]


def _dist(x: Any, bins: int = 30) -> dict:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"n": 0}
    q = np.quantile(x, [0.0, 0.1, 0.5, 0.9, 1.0])
    counts, edges = np.histogram(x, bins=bins)
    return {"n": int(len(x)), "min": float(q[0]), "p10": float(q[1]), "median": float(q[2]), "p90": float(q[3]),
            "max": float(q[4]), "mean": float(x.mean()), "hist_counts": counts.tolist(),
            "hist_edges": [round(float(e), 4) for e in edges]}


def _days(recs: list[dict]) -> dict:
    by: dict[str, list[float]] = {}
    for r in recs:
        if r.get("day") is not None:
            by.setdefault(str(r.get("participant")), []).append(float(r["day"]))
    out = {}
    for p, ds in sorted(by.items()):
        ds = sorted(ds)
        out[p] = {"first": ds[0], "last": ds[-1], "span_days": round(ds[-1] - ds[0], 4),
                  "n_distinct_days": len({math.floor(d) for d in ds}), "n_sessions": len(ds)}
    return out


def export_dataset(out: Path, inputs: Sequence[Any], records: dict, excluded: list[dict], *, build: dict,
                   sorter: str, params: dict | None, rules: dict, licence: str, name: str, config_hash: str) -> dict:
    """Tracking, NWB files, units.parquet, SHA256SUMS and the data card of the sessions of
    ``inputs`` that are done (``OUT/sessions/<sid>/done.json`` with ``config_hash``)."""
    from cortexlink.io.session_log.provenance import provenance

    recs = []
    for i in inputs:
        d = read_done(out / "sessions" / i.session_id)
        if d is not None and d.get("config_hash") == config_hash and d.get("fingerprint") == i.fingerprint:
            recs.append(d)
    done_ids = {r["session_id"] for r in recs}
    excluded = [e for e in excluded if e["session_id"] not in done_ids]
    missing = [i.session_id for i in inputs if i.session_id not in done_ids
               and i.session_id not in {e["session_id"] for e in excluded}]
    excluded += [{"session_id": s, "reason": "no finished sort with this configuration (not run)", "attempts": 0}
                 for s in missing]
    table, tracking = track(out, recs)
    idx = _units_index(out, recs, table)
    nwb_dir = out / "nwb"
    keep = set()
    for r in recs:
        sid = r["session_id"]
        rows = idx[idx["session"] == sid]
        dst = nwb_dir / (r.get("participant") or "unknown") / f"{sid}.nwb"
        by_unit = {str(u): (t, float(c)) for u, t, c in zip(rows["unit_id"], rows["tracked_id"],
                                                            rows["tracking_confidence"])}
        _export_nwb(out / "sessions" / sid / "units.nwb", dst, by_unit)
        keep.add(dst)
    if nwb_dir.is_dir():
        for p in nwb_dir.rglob("*.nwb"):
            if p not in keep:
                p.unlink()
    idx.to_parquet(out / "units.parquet", index=False)
    card = _card(out, recs, idx, excluded, tracking, build, sorter, params, rules, licence, name, config_hash,
                 provenance())
    (out / "datacard.json").write_text(json.dumps(card, indent=1, default=str))
    from cortexlink.sorting._datacard_html import write_html
    write_html(out / "datacard.html", card, idx)
    card["n_files_checksummed"] = write_sha256sums(out)
    return card


def _card(out: Path, recs: list[dict], idx: Any, excluded: list[dict], tracking: dict, build: dict, sorter: str,
          params: dict | None, rules: dict, licence: str, name: str, cfg: str, prov: dict) -> dict:
    labels = {k: int((idx["label"] == k).sum()) if len(idx) else 0 for k in ("good", "mua", "noise")}
    ch_h = sum(r["n_channels"] * r["duration_s"] for r in recs) / 3600.0
    sorted_now = [r for r in recs if r.get("worker_pid") is not None and r["session_id"] in build.get("sorted_ids", ())]
    wall_s = time.perf_counter() - build["t0_perf"]         # the whole build: sorting, tracking, exports
    wall_h = wall_s / 3600.0
    n_sorted = build["n_sorted"]
    ch_h_now = sum(r["n_channels"] * r["duration_s"] for r in recs
                   if r["session_id"] in build.get("sorted_ids", ())) / 3600.0
    reasons: dict[str, int] = {}
    if len(idx):
        for why in idx.loc[idx["label"] == "noise", "label_reason"].astype(str):
            for part in why.split("; "):
                key = part.split(" ")[0]
                reasons[key] = reasons.get(key, 0) + 1
    tracked = idx.loc[idx["tracked_id"] != "", "tracked_id"] if len(idx) else []
    multi = int((idx.loc[idx["tracked_id"] != ""].groupby("tracked_id")["session"].nunique() > 1).sum()) \
        if len(idx) else 0
    return {
        "format": CARD_FORMAT, "name": name, "licence": licence,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "counts": {"sessions": len(recs), "sessions_input": len(recs) + len(excluded),
                   "participants": len({r.get("participant") for r in recs}), "units": int(len(idx)),
                   "units_by_label": labels, "channels_total": int(sum(r["n_channels"] for r in recs)),
                   "channels_per_session": sorted({int(r["n_channels"]) for r in recs}),
                   "recorded_s": round(sum(r["duration_s"] for r in recs), 3), "channel_hours": round(ch_h, 4),
                   "tracked_units": int(len(set(tracked))) if len(idx) else 0,
                   "tracked_units_in_several_sessions": multi},
        "distributions": {"snr": _dist(idx["snr"]) if "snr" in idx else {"n": 0},
                          "firing_rate_hz": _dist(idx["firing_rate"]) if "firing_rate" in idx else {"n": 0}},
        "days": _days(recs),
        "sessions": [{k: r.get(k) for k in ("session_id", "participant", "day", "n_channels", "duration_s", "n_units",
                                            "n_units_by_label", "wall_s", "peak_rss_mb", "finished_utc")}
                     for r in recs],
        "excluded": {"sessions": excluded,
                     "units": {"noise": labels["noise"], "noise_reasons": reasons,
                               "note": "every unit is in units.parquet with its label; noise units fail a noise "
                                       "rule of the curation (reasons counted by metric)"}},
        "tracking": tracking,
        "provenance": {"cortexlink_version": prov.get("cortexlink_version"), "git_commit": prov.get("git_hash"),
                       "sorter": sorter, "sorter_params": params or {}, "curation_rules": rules, "config_hash": cfg,
                       "versions": _versions(), "platform": prov.get("platform")},
        "build": dict({k: v for k, v in build.items() if k not in ("sorted_ids", "t0_perf")}, wall_s=round(wall_s, 3),
                      sessions_per_hour=round(n_sorted / wall_h, 3) if n_sorted and wall_h > 0 else None,
                      channel_hours_per_hour=round(ch_h_now / wall_h, 4) if n_sorted and wall_h > 0 else None,
                      session_wall_s_median=float(np.median([r["wall_s"] for r in sorted_now])) if sorted_now
                      else None,
                      peak_rss_mb_max=max((float((r.get("peak_rss_mb") or {}).get("self", 0)) for r in sorted_now),
                                          default=None)),
        "files": {"nwb": "nwb/<participant>/<session>.nwb", "units_index": "units.parquet",
                  "checksums": "SHA256SUMS", "sessions": "sessions/<session>/", "tracking": "tracking/"},
    }

