"""A data set from many sessions, built on Ray: what ``cortexlink dataset build`` runs (issue 15 §4).

:func:`build_dataset` sorts and curates every session (:func:`~cortexlink.sorting.pipeline.sort_recording`)
as one Ray task each, then tracks units across each participant's sessions
(:mod:`cortexlink.sorting.tracking`) and exports the data set (:mod:`cortexlink.sorting.datacard`)::

    OUT/sessions/<sid>/            each session's sort (units.nwb, sorting/, analyzer/, metrics.csv,
                                   summary.json) and done.json (input fingerprint + config hash)
    OUT/nwb/<participant>/<sid>.nwb  the Units table with a tracked_id column
    OUT/units.parquet              one row per unit: participant, session, day, unit_id, tracked_id, ...
    OUT/tracking/                  the tracking tables
    OUT/SHA256SUMS                 every file (``sha256sum -c SHA256SUMS`` in OUT verifies them)
    OUT/datacard.json, .html       counts, distributions, days, provenance, licence, exclusions, timings
    OUT/logs/<sid>.jsonl           each attempt: start (worker pid), done or error

A local Ray instance starts by itself (``workers`` CPUs, on 127.0.0.1, no dashboard) unless Ray is
already initialised in this process or ``ray_address`` names a cluster to join. A rerun skips every
session whose done.json matches; a session whose worker dies (killed, out of memory) or whose sort
raises is retried until it has failed ``max_failures`` times, then listed in the card's
``excluded`` with the reason.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.sorting._dataset_tasks import THREAD_ENV, config_hash, is_done, path_fingerprint

logger = logging.getLogger(__name__)

__all__ = ["SessionInput", "RecordingSource", "inputs_from_paths", "inputs_from_catalogue", "build_dataset",
           "DATASET_FORMAT"]

DATASET_FORMAT = "cortexlink-dataset"
_OURS = {"sessions", "nwb", "units.parquet", "tracking", "SHA256SUMS", "datacard.json", "datacard.html", "logs",
         "work", "dataset.json", ".build.lock"}


@runtime_checkable
class RecordingSource(Protocol):
    """An input that makes its recording inside the Ray task (picklable): ``materialize(folder)``
    writes what it needs into ``folder`` (removed after the sort) and returns what
    :func:`~cortexlink.sorting.pipeline.sort_recording` reads (a path or a SpikeInterface recording)."""

    def materialize(self, folder: Path) -> Any: ...


@dataclass(frozen=True)
class SessionInput:
    """One session of a data set.

    Attributes
    ----------
    session_id : str
        Unique within the data set (letters, digits, ``-_.~``); the session's folder name.
    participant : str or None
        Pseudonymous participant code; units are tracked within a participant only.
    day : float or None
        Recording day or start time (days since 1970 for a session's start time): the order
        of a participant's sessions.
    source : path or RecordingSource
        A path :func:`sort_recording` reads, or an object with ``materialize(folder)``.
    fingerprint : str
        The input's identity (path + sizes + modification times, or a simulation spec hash):
        a session is recomputed only when it changes.
    """

    session_id: str
    participant: str | None
    day: float | None
    source: Any
    fingerprint: str

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.~-]{0,127}",
                                                                     self.session_id):
            raise ConfigError("session_id must be 1-128 letters, digits or -_.~ (starting with a letter or digit); "
                              f"got {self.session_id!r}")
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise ConfigError(f"fingerprint must be a non-empty string; got {self.fingerprint!r}")
        if self.day is not None and not isinstance(self.day, (int, float)):
            raise ConfigError(f"day must be a number or None; got {self.day!r}")


def _days(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        t = _dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return round(t.timestamp() / 86400.0, 6)


def _safe_id(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.~-]", "_", name).lstrip("._-~") or "session"
    return s[:128]


def _session_input(p: Path) -> SessionInput:
    if p.is_dir() and (p / "manifest.json").is_file():
        try:
            m = json.loads((p / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValidationError(f"{p}: manifest.json unreadable ({exc})") from None
        sid = str(m.get("session_id") or p.name)
        return SessionInput(_safe_id(sid), m.get("participant_id") or None, _days(m.get("started_utc")), str(p),
                            path_fingerprint(p))
    participant, day = None, None
    if p.is_file() and p.suffix.lower() == ".nwb":
        participant, day = _nwb_meta(p)
    return SessionInput(_safe_id(p.stem if p.is_file() else p.name), participant, day, str(p), path_fingerprint(p))


def _nwb_meta(p: Path) -> tuple[str | None, float | None]:
    try:
        import h5py
        with h5py.File(p, "r") as f:
            sub = f.get("general/subject/subject_id")
            pid = sub[()].decode() if sub is not None and isinstance(sub[()], bytes) else (
                str(sub[()]) if sub is not None else None)
            st = f.get("session_start_time")
            start = st[()].decode() if st is not None and isinstance(st[()], bytes) else None
    except (OSError, KeyError, ValueError):
        return None, None
    return (pid if pid and pid != "unknown" else None), _days(start)


_FOLDER_FORMATS = ("openephys", "spikeglx")       # formats whose one recording is a folder


def _recording_like(p: Path) -> bool:
    """A session folder, a recording file, or a folder that is one recording (Open Ephys, SpikeGLX);
    a folder of single-file recordings is not one (its files are the recordings)."""
    if p.is_dir() and (p / "manifest.json").is_file():
        return True
    from cortexlink.io.importers import detect_format
    try:
        fmt = detect_format(p)
    except (ValidationError, OSError):
        return False
    return p.is_file() or fmt in _FOLDER_FORMATS


def inputs_from_paths(paths: Sequence[str | Path]) -> list[SessionInput]:
    """Sessions from paths: session folders, NWB files, recordings the importers read, or a
    folder holding any of these (one level). Participant and day come from a session's
    manifest (``participant_id``, ``started_utc``) or an NWB file's subject and start time.

    Raises
    ------
    ValidationError
        A missing path, a path that is no recording, a folder holding none, or two inputs with
        the same session id (all named).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[SessionInput] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ValidationError(f"{p}: input must be an existing session folder, recording or folder of them; "
                                  "got a missing path")
        if _recording_like(p):
            found.append(_session_input(p))
            continue
        if not p.is_dir():
            raise ValidationError(f"{p}: not a recording cortexlink reads (a session folder, NWB file or a format "
                                  "the importers know)")
        kids = [c for c in sorted(p.iterdir()) if not c.name.startswith(".") and _recording_like(c)]
        if not kids:
            raise ValidationError(f"{p}: the folder holds no session folder or recording")
        found.extend(_session_input(c) for c in kids)
    _check_unique(found)
    return found


def _check_unique(inputs: Sequence[SessionInput]) -> None:
    seen: dict[str, Any] = {}
    for i in inputs:
        if i.session_id in seen:
            raise ValidationError(f"session_id {i.session_id!r} appears twice ({seen[i.session_id]} and {i.source}); "
                                  "session ids must be unique in a data set")
        seen[i.session_id] = i.source


def inputs_from_catalogue(db: Any, participant: str | None = None) -> list[SessionInput]:
    """The sessions of a catalogue (:class:`cortexlink.io.catalogue.Catalogue` or its path), of one
    participant when given, in start-time order. A catalogued folder that is gone is refused."""
    from cortexlink.io.catalogue import Catalogue

    cat = db if isinstance(db, Catalogue) else Catalogue(db)
    try:
        rows = cat.sessions(participant)
    finally:
        if cat is not db:
            cat.close()
    if not rows:
        who = f" for participant {participant!r}" if participant else ""
        raise ValidationError(f"catalogue {getattr(cat, 'path', db)} has no sessions{who}")
    out = []
    for r in rows:
        p = Path(r["path"])
        if not p.is_dir():
            raise ValidationError(f"catalogue session {r['session_id']}: its folder {p} is missing")
        out.append(SessionInput(_safe_id(r["session_id"]), r["participant_id"], _days(r.get("started_utc")), str(p),
                                path_fingerprint(p)))
    _check_unique(out)
    return out


# ------------------------------------------------------------------------------------- the build
def _prepare_out(out: Path) -> Path:
    from cortexlink.core.outpath import check_output_dir

    marker = out / "dataset.json"
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads(marker.read_text()).get("format") == DATASET_FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ConfigError(f"--out {out} is not empty and is not a data set folder (no {marker.name} from "
                              "`cortexlink dataset build`); choose a new or empty folder")
        check_output_dir(out, what="--out", create=False)
        return out
    out = check_output_dir(out, what="--out", create=True)
    marker.write_text(json.dumps({"format": DATASET_FORMAT, "created_utc": _dt.datetime.now(
        _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}, indent=1))
    return out


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    f = open(out / ".build.lock", "w")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"--out {out}: another `cortexlink dataset build` is writing this folder") from None
        yield
    finally:
        f.close()


def _clean_work(out: Path) -> int:
    work = out / "work"
    n = 0
    if work.is_dir():
        for p in work.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            n += 1
    return n


@contextlib.contextmanager
def ray_session(workers: int | None, address: str | None) -> Iterator[dict]:
    """Ray for the build: the instance already initialised in this process, the cluster at
    ``address``, or a new local one (``workers`` CPUs, 127.0.0.1, no dashboard, Ray's token
    authentication without its notice, workers' BLAS/numba threads at 1 and their niceness at 0
    unless ``RAY_worker_niceness`` is set), shut down at the end."""
    import ray

    if ray.is_initialized():
        yield {"ray": "existing", "cpus": ray.cluster_resources().get("CPU")}
        return
    # usage statistics off; workers at the driver's priority: Ray's default worker niceness (15)
    # made 2 workers no faster than 1 here while other jobs kept the 2 cores busy (bench dataset,
    # 8 sessions x 64 ch x 30 s: 2-worker / 1-worker throughput 0.97)
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": os.environ.get("RAY_worker_niceness", "0")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # a new local cluster gets Ray's default, token authentication, whose notice (a warning of this
    # logger) would land on stderr; RAY_AUTH_MODE set by hand instead is read too late by Ray 2.60
    quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                                  runtime_env={"env_vars": dict(THREAD_ENV)})
        if address is None:
            kw.update(num_cpus=int(workers or os.cpu_count() or 1), _node_ip_address="127.0.0.1",
                      object_store_memory=256 * 1024 * 1024)
        else:
            kw.update(address=address)
        ray.init(**kw)
    finally:
        quiet.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield {"ray": "local" if address is None else address, "cpus": ray.cluster_resources().get("CPU")}
    finally:
        ray.shutdown()


def _attempts(out: Path, sid: str, build_id: str) -> int:
    """How many times this build started session ``sid`` (from ``OUT/logs/<sid>.jsonl``)."""
    n = 0
    try:
        lines = (out / "logs" / f"{sid}.jsonl").read_text().splitlines()
    except OSError:
        return 0
    for ln in lines:
        try:
            e = json.loads(ln)
        except ValueError:                       # a line cut short by a killed worker
            continue
        n += e.get("event") == "start" and e.get("build") == build_id
    return n


def _reason(exc: BaseException, max_failures: int) -> str:
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if cause is not None:
            return f"{type(cause).__name__}: {cause}"
        return str(exc).strip().splitlines()[-1]
    if isinstance(exc, (rex.WorkerCrashedError, rex.NodeDiedError)):
        return (f"its worker died {max_failures} times ({type(exc).__name__}: killed, out of memory or its node "
                "was lost)")
    return f"{type(exc).__name__}: {exc}"


def _check_args(inputs: Sequence[SessionInput], workers: int | None, max_failures: int) -> list[SessionInput]:
    inputs = list(inputs)
    if not inputs:
        raise ValidationError("inputs must hold at least one session; got none")
    for i in inputs:
        if not isinstance(i, SessionInput):
            raise ConfigError(f"inputs must be SessionInput objects; got {type(i).__name__}")
        if not hasattr(i.source, "materialize") and not Path(str(i.source)).exists():
            raise ValidationError(f"session {i.session_id}: input {i.source} is missing")
    _check_unique(inputs)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be an integer >= 1 or None; got {workers!r}")
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
        raise ConfigError(f"max_failures must be an integer >= 1; got {max_failures!r}")
    return inputs


def build_dataset(inputs: Sequence[SessionInput], out: str | Path, *, sorter: str | None = None,
                  params: dict | None = None, rules: Any = None, workers: int | None = None,
                  ray_address: str | None = None, max_failures: int = 3, progress: bool = True,
                  licence: str = "CC-BY-4.0", name: str | None = None, pca_metrics: bool = True) -> dict:
    """Sort, curate, track and export ``inputs`` into the data set folder ``out``.

    Parameters
    ----------
    inputs : sequence of SessionInput
        From :func:`inputs_from_paths`, :func:`inputs_from_catalogue` or built by hand.
    out : path
        A new or empty folder, or a data set folder a previous build wrote (resumed).
    sorter, params, rules
        As for :func:`~cortexlink.sorting.pipeline.sort_recording`; they make the configuration
        hash that decides whether a finished session is reused.
    workers : int, optional
        CPUs of the local Ray instance (one session per CPU); default all. With
        ``ray_address`` or an already initialised Ray: at most this many sessions in flight.
    ray_address : str, optional
        A Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``).
    max_failures : int
        Attempts per session (worker deaths and exceptions together) before it is excluded.
    progress : bool
        A progress bar (sessions done / total) on stderr.
    licence, name : str
        For the data card.
    pca_metrics : bool
        Also compute the PCA quality metrics.

    Returns
    -------
    dict
        The data card (``OUT/datacard.json``).
    """
    from cortexlink.sorting.curation import CurationRules
    from cortexlink.sorting.datacard import export_dataset
    from cortexlink.sorting.sorters import _check_sorter, default_sorter

    inputs = _check_args(inputs, workers, max_failures)
    rules = rules if rules is not None else CurationRules()
    if not isinstance(rules, CurationRules):
        raise ConfigError(f"rules must be a CurationRules; got {type(rules).__name__}")
    sorter = sorter or default_sorter()
    _check_sorter(sorter)
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"params must be a dict of {sorter} parameters; got {type(params).__name__}")
    params = _seeded(sorter, params)
    out = _prepare_out(Path(out))
    cfg = config_hash(sorter, params, rules.to_dict(), {"pca_metrics": bool(pca_metrics)})
    t0 = time.perf_counter()
    with _lock(out):
        cleaned = _clean_work(out)
        todo = [i for i in inputs if is_done(out, i.session_id, i.fingerprint, cfg) is None]
        records: dict[str, dict] = {}
        excluded: list[dict] = []
        ray_info: dict = {"ray": None}
        if todo:
            with ray_session(workers, ray_address) as ray_info:
                _run_tasks(todo, out, sorter, params, rules.to_dict(), cfg, pca_metrics, workers, max_failures,
                           progress, len(inputs), records, excluded)
        _clean_work(out)
        build = {"t0_perf": t0, "sort_wall_s": round(time.perf_counter() - t0, 3),
                 "workers": workers or ray_info.get("cpus"), "ray": ray_info,
                 "n_sorted": sum(1 for r in records.values() if r.get("status") == "sorted"),
                 "n_reused": len(inputs) - len(todo), "cleaned_temp_folders": cleaned, "config_hash": cfg,
                 "max_failures": max_failures,
                 "sorted_ids": [k for k, r in records.items() if r.get("status") == "sorted"]}
        return export_dataset(out, inputs, records, excluded, build=build, sorter=sorter, params=params,
                              rules=rules.to_dict(), licence=licence, name=name or out.name, config_hash=cfg)


def _seeded(sorter: str, params: dict | None) -> dict | None:
    """The sorter's parameters with ``seed=0`` when the sorter takes a seed and none was given:
    SpikeInterface's ``simple`` and ``lupin`` draw a new random seed each run otherwise (seen
    here: the same 32-channel session gave 2 units in one build and 10 in another), and a data
    set should be the same each time it is built."""
    from spikeinterface.sorters.sorterlist import sorter_dict

    known = sorter_dict[sorter].default_params()
    if "seed" in known and known["seed"] is None and "seed" not in (params or {}):
        return dict(params or {}, seed=0)
    return params


def _run_tasks(todo: list[SessionInput], out: Path, sorter: str, params: dict | None, rules: dict, cfg: str,
               pca_metrics: bool, workers: int | None, max_failures: int, progress: bool, total: int,
               records: dict, excluded: list) -> None:
    import ray
    from tqdm import tqdm

    from cortexlink.sorting._dataset_tasks import sort_session

    # workers are reused: a fresh process per session would pay ~25 s of imports and numba compilation
    # each time (measured here: simple on 8 ch x 4 s, 30.7 s in a new process, 3.2 s in a warm one)
    task = ray.remote(num_cpus=1, max_retries=max_failures - 1, retry_exceptions=True)(sort_session)
    cap = workers if workers is not None else len(todo)
    build_id = uuid.uuid4().hex[:12]
    queue = list(todo)
    running: dict[Any, SessionInput] = {}
    bar = tqdm(total=total, initial=total - len(todo), desc="sessions", unit="session", file=sys.stderr,
               disable=not progress, leave=True)
    try:
        while queue or running:
            while queue and len(running) < cap:
                inp = queue.pop(0)
                running[task.remote(inp, str(out), sorter, params, rules, cfg, pca_metrics, build_id)] = inp
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                inp = running.pop(ref)
                try:
                    records[inp.session_id] = ray.get(ref)
                except Exception as exc:         # noqa: BLE001 - every failure is reported, never dropped
                    why = _reason(exc, max_failures)
                    logger.warning("session %s excluded after %d attempts: %s", inp.session_id, max_failures, why)
                    excluded.append({"session_id": inp.session_id, "participant": inp.participant,
                                     "reason": why, "attempts": _attempts(out, inp.session_id, build_id)})
                bar.update(1)
    finally:
        bar.close()
