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
import inspect
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

from cortexlink.core.errors import ConfigError, ValidationError

logger = logging.getLogger(__name__)

__all__ = ["SORTERS", "available_sorters", "default_sorter", "run_sorter", "preprocess_recording", "limit_threads",
           "library_warnings", "matching_overrides", "resolve_matching", "MATCHING_DEFAULTS",
           "SORTER_DEFAULTS", "cache_params", "check_memory_share"]

#: Sorters cortexlink runs, best first: Kilosort4 when installed (GPU or CPU, never required),
#: then SpikeInterface's own tridesclous2 and spykingcircus2, then mountainsort5; last
#: SpikeInterface's internal ``simple`` (detection + SVD + HDBSCAN, no template matching: fast,
#: finds few units) and ``lupin`` (spykingcircus2's successor components), never the default
#: while another one runs. tridesclous2 comes first of the CPU sorters because it was measured
#: best here (README, "Spike sorting"): on 384 channels x 300 s with drift it detected 46 of 55
#: units with SNR >= 5 well (84 %, matching ``auto``) against spykingcircus2's 36 (65 %), in
#: about half the time per channel-hour.
SORTERS: tuple[str, ...] = ("kilosort4", "tridesclous2", "spykingcircus2", "mountainsort5", "simple", "lupin")

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
#: what :func:`preprocess_recording` already filtered; tridesclous2 draws its peaks and clusters
#: with a fresh random seed unless given one (spykingcircus2's own default is 42), so the same
#: recording gave other units on each run (44 and 48 of 55 well detected on the same 5-minute
#: ``sim_drift`` recording with the same settings): a fixed seed makes a sort repeatable.
SORTER_DEFAULTS: dict[str, dict[str, Any]] = {"mountainsort5": {"filter": False}, "tridesclous2": {"seed": 0}}

JOB_KWARGS: dict[str, Any] = {"n_jobs": 1, "chunk_duration": "1s", "progress_bar": False}

#: The template-matching step of each sorter that has one, and what cortexlink can set in it:
#: ``min_amplitude``, the lowest amplitude (relative to the unit's template) at which a spike is
#: still assigned to the unit (the keyword holding it, the sorter's own floor and its upper
#: limit), and ``detect_threshold``, the detection threshold of tridesclous2's peeler (in noise
#: SDs; its fast peak detector and its matched-filter pass both use it).
_MATCHING: dict[str, tuple[str, dict[str, tuple]]] = {
    "tridesclous2": ("tdc-peeler", {"min_amplitude": ("amplitude_limits", 0.7, 1.4),
                                    "detect_threshold": ("detect_threshold", 5.0)}),
    "spykingcircus2": ("circus-omp", {"min_amplitude": ("amplitudes", 0.6, float("inf"))}),
}

#: cortexlink's template-matching settings (``matching="auto"``), over the sorter's own; a sorter
#: not listed runs with its own. Chosen on the 5-minute ``sim_drift`` run at the preset's drift
#: rate (README, "Spike sorting"): with seed 0, tridesclous2 found 40 of 55 SNR >= 5 units with
#: its own settings and 46 with these (44 and 48 in two unseeded runs; 43 with the floor alone).
#: Its clusters are still built from peaks over 5 SDs (its ``detect_threshold`` parameter); only
#: the matching of the known templates looks lower. spykingcircus2 keeps its own: not measured.
MATCHING_DEFAULTS: dict[str, dict[str, float]] = {"tridesclous2": {"min_amplitude": 0.5, "detect_threshold": 4.0}}

#: Every matching setting cortexlink knows, whichever sorter takes it.
_SETTINGS = ("min_amplitude", "detect_threshold")


def _matching_number(key: str, value: Any) -> float:
    lo, hi = (0.0, 1.0) if key == "min_amplitude" else (2.0, 20.0)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < float(value) < hi:
        raise ConfigError(f"matching {key} must be a number in ({lo:g}, {hi:g}); got {value!r}")
    return float(value)


def resolve_matching(sorter: str, matching: Any = "auto", *, strict: bool = True) -> dict[str, float]:
    """The template-matching settings ``sorter`` runs with (see :func:`matching_overrides`).

    Parameters
    ----------
    sorter : str
        The sorter.
    matching : "auto", "own", None, dict or str
        ``"auto"``: :data:`MATCHING_DEFAULTS` for the sorter; ``"own"`` or None: the sorter's
        own; a dict: exactly these settings; a string ``"min_amplitude=0.45,detect_threshold=own"``
        (the command line's): these over ``"auto"``, a value ``own`` dropping that setting. A
        setting the sorter's matching does not have is refused (``strict``; else left out: one
        setting for several sorters), as is a value out of range.

    Returns
    -------
    dict
        ``{setting: value}`` (empty: the sorter's own).
    """
    if matching is None or (isinstance(matching, str) and matching.strip().lower() in ("own", "none")):
        return {}
    base = dict(MATCHING_DEFAULTS.get(sorter, {}))
    if isinstance(matching, str) and matching.strip().lower() == "auto":
        return base
    if isinstance(matching, str):
        pairs = [p for p in matching.split(",") if p.strip()]
        if not pairs or not all("=" in p for p in pairs):
            raise ConfigError(f"matching must be 'auto', 'own' or KEY=VALUE[,KEY=VALUE] "
                              f"(keys: {', '.join(_SETTINGS)}); got {matching!r}")
        matching = {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}
    elif isinstance(matching, dict):
        base = {}
    if not isinstance(matching, dict):
        raise ConfigError(f"matching must be 'auto', 'own', a dict or KEY=VALUE[,KEY=VALUE]; got {matching!r}")
    known = _MATCHING.get(sorter, ("", {}))[1]
    for key, value in matching.items():
        if key not in known and not strict and key in _SETTINGS:
            continue
        if key not in known:
            what = f"its matching takes {sorted(known)}" if known else "it has no template matching"
            raise ConfigError(f"{sorter} has no matching setting {key!r}: {what}")
        if isinstance(value, str) and value.strip().lower() == "own":
            base.pop(key, None)
        else:
            base[key] = _matching_number(key, value)
    return base


@contextlib.contextmanager
def matching_overrides(sorter: str, settings: dict[str, float] | None) -> Iterator[None]:
    """Inside the block, ``sorter``'s template matching runs with ``settings`` (from
    :func:`resolve_matching`; empty or None: the sorter's own; no effect on a sorter without
    template matching).

    Why: a neuron's later spikes in a burst are smaller (in the simulator 20 % per spike,
    recovering over 20 ms), and a bursting unit's template is their mean. tridesclous2's peeler
    keeps a spike only when its fitted amplitude is 0.7-1.4 of the template, and detects with a
    threshold of 5 noise SDs, and so found only 57-77 % of the spikes of the bursting units of SNR 6-12 it
    missed on the 5-minute ``sim_drift`` run (precision 1.00; of one SNR 11.5 unit's spikes at
    0.4-0.5 of its nominal amplitude, 11 % were found). ``min_amplitude`` lowers the amplitude
    floor (the upper limit stays the sorter's), ``detect_threshold`` the peeler's detection threshold.
    Neither sorter exposes these as parameters, so the block passes them to the matching call the
    sorter makes (``spikeinterface.sortingcomponents.matching.find_spikes_from_templates``, which
    both import when they run), and restores it after.
    """
    if not settings or sorter not in _MATCHING:
        yield
        return
    import spikeinterface.sortingcomponents.matching as matching

    name, known = _MATCHING[sorter]
    own = matching.find_spikes_from_templates
    if list(inspect.signature(own).parameters)[:4] != ["recording", "templates", "method", "method_kwargs"]:
        raise ConfigError("this SpikeInterface's find_spikes_from_templates has another signature "  # pragma: no cover
                          "(recording, templates, method, method_kwargs expected); run with matching='own'")
    settings = {k: _matching_number(k, v) for k, v in settings.items()}

    def with_settings(recording: Any, templates: Any, method: Any = None, method_kwargs: dict | None = None,
                      **kwargs: Any) -> Any:
        kw = dict(method_kwargs or {})
        if method == name:
            for key, value in settings.items():
                spec = known[key]
                if key == "min_amplitude":
                    high = float(kw[spec[0]][1]) if spec[0] in kw else spec[2]   # the sorter's upper limit stays
                    kw[spec[0]] = (value, high) if name == "tdc-peeler" else [value, high]
                else:
                    kw[spec[0]] = value
        return own(recording, templates, method, kw, **kwargs)

    matching.find_spikes_from_templates = with_settings
    try:
        yield
    finally:
        matching.find_spikes_from_templates = own


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


def check_memory_share(share: Any) -> float:
    """``share`` (of free memory, for :func:`cache_params`) as a float in (0, 1], or ConfigError."""
    if not (isinstance(share, (int, float)) and not isinstance(share, bool) and 0 < share <= 1):
        raise ConfigError(f"memory_share must be a number in (0, 1]; got {share!r}")
    return float(share)


def cache_params(known: dict, recording: Any, share: float) -> dict:
    """The cache settings that keep a sorter's in-RAM copy of the preprocessed recording within
    ``share`` of half the free memory (the sorters' own limit is half of it, checked by each
    process for itself: two sessions started at once in a data set build both took 9.2 GB of
    a 24 GB machine for 256 channels x 300 s, and Ray's memory monitor killed both workers).

    ``known``: the sorter's default parameters. tridesclous2 and lupin (``cache_preprocessing_mode``)
    get ``"memory"`` when the float32 copy fits, else ``"folder"`` (a disk cache in the sort folder,
    their own fallback); spykingcircus2 (``cache_preprocessing``) gets its ``memory_limit`` scaled
    (it streams the recording when the copy does not fit). Other sorters: nothing.
    """
    import psutil

    if "cache_preprocessing_mode" in known:
        need = 4.0 * recording.get_num_channels() * recording.get_total_samples()
        fits = need < 0.5 * share * psutil.virtual_memory().available
        return {"cache_preprocessing_mode": "memory" if fits else "folder"}
    own = known.get("cache_preprocessing")
    if isinstance(own, dict) and "memory_limit" in own:
        return {"cache_preprocessing": dict(own, memory_limit=float(own["memory_limit"]) * share)}
    return {}


def run_sorter(recording: Any, sorter: str, folder: str | Path, *, params: dict | None = None,
               preprocess: bool = True, motion: bool = False, n_jobs: int = 1, progress: bool = True,
               threads: int | None = 1, warnings_sink: list[str] | None = None,
               matching: Any = "auto", memory_share: float = 1.0) -> Any:
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
    matching : "auto", "own", dict or str
        Template-matching settings over the sorter's own (:func:`resolve_matching`; "auto":
        :data:`MATCHING_DEFAULTS`, a lower amplitude floor and peak threshold for tridesclous2).
    memory_share : float
        The share of the machine's free memory this sort may count on (``1 / sessions at once``
        in a data set build): the in-RAM cache of the preprocessed recording is sized against it
        (:func:`cache_params`) unless ``params`` sets the cache.

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
    memory_share = check_memory_share(memory_share)
    settings = resolve_matching(sorter, matching)
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
    kw: dict[str, Any] = dict(SORTER_DEFAULTS.get(sorter, {}))
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
    if memory_share < 1 and not {"cache_preprocessing", "cache_preprocessing_mode"} & set(user):
        kw.update(cache_params(known, rec, memory_share))
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
                library_warnings(warnings_sink), matching_overrides(sorter, settings):
            sorting = ss.run_sorter(sorter, rec, folder=str(folder), remove_existing_folder=True, verbose=False,
                                    raise_error=True, **kw)
    finally:
        si.set_global_job_kwargs(**before)
    return sorting
