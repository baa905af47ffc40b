"""Spike sorters through SpikeInterface: which run here, and one call that runs any of them.

:data:`SORTERS` lists the sorters cortexlink knows, best first (the default is the first one
:func:`available_sorters` says can run). :func:`run_sorter` preprocesses a SpikeInterface
recording (bandpass 300-6000 Hz and a common median reference, SpikeInterface's), corrects
drift where asked (the sorter's own motion correction where it has one, SpikeInterface's
``correct_motion`` otherwise) and runs the sorter in a folder, lazily and chunk by chunk
(``chunk_duration="1s"``), so a long, wide recording is never loaded whole.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

from cortexlink.core.errors import ConfigError, ValidationError

logger = logging.getLogger(__name__)

__all__ = ["SORTERS", "available_sorters", "default_sorter", "run_sorter", "preprocess_recording", "limit_threads",
           "library_warnings"]

#: Sorters cortexlink runs, best first: Kilosort4 when installed (GPU or CPU, never required),
#: then SpikeInterface's own spykingcircus2 and tridesclous2, then mountainsort5; last
#: SpikeInterface's internal ``simple`` (detection + SVD + HDBSCAN, no template matching: fast,
#: finds few units) and ``lupin`` (spykingcircus2's successor components), never the default
#: while another one runs.
SORTERS: tuple[str, ...] = ("kilosort4", "spykingcircus2", "tridesclous2", "mountainsort5", "simple", "lupin")

#: The Python packages each sorter needs (import names) and what to install for them.
_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "kilosort4": (("kilosort", "kilosort>=4"), ("torch", "torch")),
    "spykingcircus2": (("numba", "numba"), ("hdbscan", "hdbscan"), ("sklearn", "scikit-learn")),
    "tridesclous2": (("numba", "numba"), ("hdbscan", "hdbscan"), ("sklearn", "scikit-learn")),
    "mountainsort5": (("mountainsort5", "mountainsort5"), ("isosplit6", "isosplit6")),
    "simple": (("numba", "numba"), ("hdbscan", "hdbscan"), ("sklearn", "scikit-learn")),
    "lupin": (("numba", "numba"), ("hdbscan", "hdbscan"), ("sklearn", "scikit-learn"), ("torch", "torch")),
}

#: Sorters that correct drift themselves (the parameter that switches it on).
_OWN_MOTION: dict[str, str] = {"spykingcircus2": "apply_motion_correction", "tridesclous2": "apply_motion_correction",
                                "lupin": "apply_motion_correction"}

#: Parameters cortexlink sets unless the caller overrides them: mountainsort5 would filter again
#: what :func:`preprocess_recording` already filtered.
_DEFAULTS: dict[str, dict[str, Any]] = {"mountainsort5": {"filter": False}}

JOB_KWARGS: dict[str, Any] = {"n_jobs": 1, "chunk_duration": "1s", "progress_bar": False}


@contextlib.contextmanager
def library_warnings(sink: list[str] | None = None) -> Iterator[list[str]]:
    """Collect the warnings SpikeInterface, the sorters and their libraries raise inside the
    block: logged once each (logger ``cortexlink.sorting``) and appended to ``sink`` (distinct
    messages), never raised nor printed (a sorter must not fail on a deprecation notice)."""
    sink = [] if sink is None else sink
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield sink
        finally:
            for w in caught:
                msg = f"{w.category.__name__}: {w.message}"
                if msg not in sink:
                    sink.append(msg)
                    logger.info("library warning: %s", msg)


def limit_threads(threads: int | None) -> Any:
    """A context that caps BLAS/OpenMP threads at ``threads`` (None: no cap).

    Measured here (2 cores, shared): the PCA fit of a 16-channel analyzer takes 7.4 s with the
    default thread pools and 0.9 s with one thread; oversubscribed BLAS threads are the cost.
    """
    if threads is None:
        return contextlib.nullcontext()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1 or None; got {threads!r}")
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=threads)


def available_sorters() -> dict[str, str | None]:
    """Every sorter of :data:`SORTERS`: None when it runs here, else the reason it does not.

    Returns
    -------
    dict
        ``{name: None | reason}`` in :data:`SORTERS` order; a reason names what to install.
    """
    out: dict[str, str | None] = {}
    for name in SORTERS:
        missing = [pip for mod, pip in _NEEDS[name] if importlib.util.find_spec(mod) is None]
        if missing:
            out[name] = f"needs {', '.join(missing)} (pip install {' '.join(missing)})"
            continue
        try:
            from spikeinterface.sorters.sorterlist import sorter_dict
            cls = sorter_dict.get(name)
        except ImportError as exc:                 # pragma: no cover - spikeinterface is a dependency
            out[name] = f"spikeinterface is not importable ({exc})"
            continue
        if cls is None:
            out[name] = "this spikeinterface version does not know it"
        elif not cls.is_installed():
            out[name] = "spikeinterface says it is not installed"
        else:
            out[name] = None
    return out


def default_sorter() -> str:
    """The best sorter of :data:`SORTERS` that runs here.

    Raises
    ------
    ConfigError
        When none runs; the message lists each sorter's reason.
    """
    av = available_sorters()
    for name in SORTERS:
        if av[name] is None:
            return name
    raise ConfigError("no spike sorter can run here: " + "; ".join(f"{k}: {v}" for k, v in av.items()))


def _check_sorter(sorter: str) -> None:
    if sorter not in SORTERS:
        raise ConfigError(f"sorter must be one of {', '.join(SORTERS)}; got {sorter!r}")
    why = available_sorters()[sorter]
    if why is not None:
        raise ConfigError(f"sorter {sorter!r} cannot run here: {why}")


def preprocess_recording(recording: Any, *, motion: bool = False, n_jobs: int = 1, progress: bool = False,
                         folder: str | Path | None = None) -> Any:
    """Bandpass 300-6000 Hz and common median reference (SpikeInterface's, lazy), then, with
    ``motion``, SpikeInterface's ``correct_motion`` (preset ``dredge_fast``; its estimate kept
    in ``folder`` when given). Below 8 channels (a tetrode) there is no common reference: the
    median of 4 wires is largely the spike itself (measured on the locust hybrid: mountainsort5's
    matched units 0.93 / 0.83 accuracy with it, 0.996 / 0.996 without)."""
    import spikeinterface.preprocessing as spre

    rec = spre.bandpass_filter(recording, freq_min=300.0, freq_max=6000.0, dtype="float32")
    if rec.get_num_channels() >= 8:
        rec = spre.common_reference(rec, reference="global", operator="median")
    if motion:
        kw = dict(JOB_KWARGS, n_jobs=n_jobs, progress_bar=progress)
        rec = spre.correct_motion(rec, preset="dredge_fast", folder=None if folder is None else Path(folder),
                                  **kw)
    return rec


def run_sorter(recording: Any, sorter: str, folder: str | Path, *, params: dict | None = None,
               preprocess: bool = True, motion: bool = False, n_jobs: int = 1, progress: bool = True,
               threads: int | None = 1, warnings_sink: list[str] | None = None) -> Any:
    """Sort ``recording`` with ``sorter`` in ``folder`` and return the SpikeInterface sorting.

    Parameters
    ----------
    recording : spikeinterface BaseRecording
        In µV, with a probe attached (:func:`cortexlink.sorting.recording.to_si_recording`).
    sorter : str
        One of :data:`SORTERS` that :func:`available_sorters` says runs here.
    folder : path
        The sorter's working folder (replaced if it exists); the sorting is saved in it.
    params : dict, optional
        The sorter's own parameters (SpikeInterface names), over cortexlink's defaults.
    preprocess : bool
        Bandpass 300-6000 Hz + common median reference first (:func:`preprocess_recording`).
    motion : bool
        Correct drift: the sorter's own correction (spykingcircus2, tridesclous2) or
        SpikeInterface's ``correct_motion`` before the others. False turns the sorter's own off.
    n_jobs : int
        Worker processes for chunked steps (1 or 2 keep memory low).
    progress : bool
        SpikeInterface progress bars.
    threads : int or None
        BLAS/OpenMP threads per process (:func:`limit_threads`; None: the libraries' default).
    warnings_sink : list, optional
        Receives the libraries' warnings (:func:`library_warnings`).

    Returns
    -------
    spikeinterface BaseSorting
    """
    import spikeinterface.core as si
    import spikeinterface.sorters as ss

    _check_sorter(sorter)
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs < 1:
        raise ConfigError(f"n_jobs must be an integer >= 1; got {n_jobs!r}")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"params must be a dict of {sorter} parameters; got {type(params).__name__}")
    if not (hasattr(recording, "has_probe") and recording.has_probe()):
        raise ValidationError("recording must have a probe attached (positions in µm); "
                              "use cortexlink.sorting.recording.to_si_recording")
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    from spikeinterface.sorters.sorterlist import sorter_dict
    known = sorter_dict[sorter].default_params()
    user = dict(params or {})
    unknown = sorted(set(user) - set(known))
    if unknown:
        raise ConfigError(f"{sorter} has no parameter(s) {unknown}; its parameters: {sorted(known)}")
    kw: dict[str, Any] = dict(_DEFAULTS.get(sorter, {}))
    own_motion = _OWN_MOTION.get(sorter)
    if own_motion is not None:
        kw[own_motion] = bool(motion)
    job = dict(JOB_KWARGS, n_jobs=n_jobs, progress_bar=progress)
    if "job_kwargs" in known:
        kw["job_kwargs"] = dict(job)
    for k in ("n_jobs", "chunk_duration", "progress_bar"):
        if k in known:
            kw[k] = job[k]
    kw.update(user)
    rec = recording
    if preprocess:
        rec = preprocess_recording(rec, motion=motion and own_motion is None, n_jobs=n_jobs, progress=progress,
                                   folder=folder.parent / f"{folder.name}_motion")
    elif motion and own_motion is None:
        import spikeinterface.preprocessing as spre
        rec = spre.correct_motion(rec, preset="dredge_fast", **job)
    before = si.get_global_job_kwargs()
    si.set_global_job_kwargs(**job)
    logger.info("sorting %d channels x %.1f s with %s in %s", rec.get_num_channels(), rec.get_total_duration(),
                sorter, folder)
    log = folder.parent / f"{folder.name}_stdout.log"
    try:                       # some sorters print as they go: into a log file, never our stdout
        with open(log, "w") as f, contextlib.redirect_stdout(f), limit_threads(threads), \
                library_warnings(warnings_sink):
            sorting = ss.run_sorter(sorter, rec, folder=str(folder), remove_existing_folder=True, verbose=False,
                                    raise_error=True, **kw)
    finally:
        si.set_global_job_kwargs(**before)
    return sorting
