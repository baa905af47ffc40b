"""One session of a data set as one Ray task: sort and curate it into a temporary folder, then
rename that folder atomically into place (:func:`sort_session`, run by
:func:`cortexlink.sorting.dataset.build_dataset`).

Layout inside the data set folder ``OUT``::

    OUT/work/<sid>.<uuid>/        a session being sorted (removed when the attempt fails)
    OUT/work/<sid>.<uuid>.src/    what a RecordingSource materialised (removed after sorting)
    OUT/sessions/<sid>/           a finished session: sort_recording's outputs + done.json
    OUT/logs/<sid>.jsonl          one line per attempt event: start (with the worker's pid), done, error,
                                  each with the id of the build that ran it

A session is done when ``OUT/sessions/<sid>/done.json`` holds the input's fingerprint and the
build configuration's hash; only then is it skipped. Everything here runs inside the Ray worker
(no Ray import: the function is wrapped with ``ray.remote`` by the driver).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DONE_FORMAT = "cortexlink-dataset-session"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def config_hash(sorter: str, params: dict | None, rules: dict, extra: dict | None = None) -> str:
    """The hash of what decides a session's sorting: sorter, its parameters, curation rules."""
    blob = json.dumps({"sorter": sorter, "params": params or {}, "rules": rules, "extra": extra or {}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def path_fingerprint(path: str | Path) -> str:
    """Identity of an input on disk: its resolved path and every file's relative path, size and
    modification time (a folder is walked; contents are not read, so this is cheap)."""
    p = Path(path).resolve()
    h = hashlib.sha256(str(p).encode())
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        st = f.stat()
        h.update(f"\0{f.relative_to(p) if f != p else ''}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def read_done(folder: Path) -> dict | None:
    """``folder/done.json`` when it is a finished session's record, else None."""
    try:
        d = json.loads((folder / "done.json").read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("format") == DONE_FORMAT else None


def is_done(out: Path, session_id: str, fingerprint: str, cfg_hash: str) -> dict | None:
    d = read_done(out / "sessions" / session_id)
    if d is not None and d.get("fingerprint") == fingerprint and d.get("config_hash") == cfg_hash:
        return d
    return None


def _log(out: Path, session_id: str, event: str, **kw: Any) -> None:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rec = {"event": event, "session_id": session_id, "pid": os.getpid(), "utc": utc_now(), **kw}
    with open(logs / f"{session_id}.jsonl", "a") as f:
        f.write(json.dumps(rec, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _limit_numba() -> None:
    try:
        import numba
        numba.set_num_threads(1)
    except Exception:                                   # pragma: no cover - numba is a dependency  # nosec B110
        pass


def memory_share() -> float:
    """1 / the sessions this Ray node sorts at once (its CPUs: each session task takes one), the
    share of free memory each may size its cache against; 1.0 outside Ray."""
    import ray

    if not ray.is_initialized():
        return 1.0
    node = ray.get_runtime_context().get_node_id()
    cpus = [n.get("Resources", {}).get("CPU", 1.0) for n in ray.nodes() if n.get("NodeID") == node]
    return 1.0 / max(1.0, float(cpus[0])) if cpus else 1.0


def _install(tmp: Path, final: Path, work: Path, session_id: str) -> None:
    """Rename the finished ``tmp`` to ``final``, moving an older ``final`` away first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = work / f"{session_id}.old.{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, final)


def sort_session(inp: Any, out: str, sorter: str, params: dict | None, rules: dict, cfg_hash: str,
                 pca_metrics: bool = True, build_id: str = "") -> dict:
    """Sort one :class:`~cortexlink.sorting.dataset.SessionInput` into ``out/sessions/<sid>/``.

    Skips (returns the existing record) when the session is already done with this
    fingerprint and configuration. Raises whatever the sort raised, after removing its
    temporary folders, so that Ray retries it.
    """
    from cortexlink.sorting.curation import CurationRules
    from cortexlink.sorting.pipeline import peak_rss_mb, sort_recording

    out_p = Path(out)
    sid = inp.session_id
    done = is_done(out_p, sid, inp.fingerprint, cfg_hash)
    if done is not None:
        return dict(done, status="skipped")
    _limit_numba()      # BLAS: THREAD_ENV in the workers' runtime_env and sort_recording(threads=1)
    work = out_p / "work"
    work.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = work / f"{sid}.{tag}"
    src_dir = work / f"{sid}.{tag}.src"
    _log(out_p, sid, "start", work=tmp.name, build=build_id)
    t0 = time.perf_counter()
    try:
        source = inp.source
        if hasattr(source, "materialize"):
            src_dir.mkdir(parents=True)
            source = source.materialize(src_dir)
        t_src = time.perf_counter() - t0
        share = memory_share()
        summary = sort_recording(source, tmp, sorter=sorter, params=params, rules=CurationRules.from_dict(rules),
                                 progress=False, report=False, pca_metrics=pca_metrics, threads=1, n_jobs=1,
                                 memory_share=share)
        rec = summary["recording"]
        record = {"format": DONE_FORMAT, "session_id": sid, "participant": inp.participant, "day": inp.day,
                  "fingerprint": inp.fingerprint, "config_hash": cfg_hash, "sorter": sorter,
                  "source": str(getattr(inp.source, "describe", lambda: inp.source)()),
                  "n_channels": rec["n_channels"], "fs_hz": rec["fs_hz"], "duration_s": rec["duration_s"],
                  "n_units": summary["n_units"], "n_units_by_label": summary["n_units_by_label"],
                  "timings_s": dict(summary["timings_s"], materialize_s=round(t_src, 3)),
                  "wall_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": peak_rss_mb(), "memory_share": share,
                  "worker_pid": os.getpid(), "finished_utc": utc_now()}
        (tmp / "done.json").write_text(json.dumps(record, indent=1, default=str))
        _install(tmp, out_p / "sessions" / sid, work, sid)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _log(out_p, sid, "error", error=f"{type(exc).__name__}: {exc}", build=build_id)
        raise
    finally:
        shutil.rmtree(src_dir, ignore_errors=True)
    _log(out_p, sid, "done", wall_s=record["wall_s"], build=build_id)
    return dict(record, status="sorted")
