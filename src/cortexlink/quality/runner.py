"""``run_quality``: open a data set, scan it once, run every check, write the report.

The pipeline (see :mod:`cortexlink.quality.model`):

1. :func:`cortexlink.quality.sources.open_dataset` opens every file lazily (headers and events);
2. :func:`cortexlink.quality.scan.summarise` makes one streaming pass over each recording (a
   progress bar on a terminal) and :func:`cortexlink.quality.epochs.extract_epochs` reads the
   trial windows the label and baseline checks need — only small summaries are kept, never a
   whole recording;
3. every function in the ``CHECKS`` list of each module of :data:`CHECK_MODULES` runs on the
   :class:`~cortexlink.quality.model.DatasetContext`; a check that raises becomes a result with
   no score and an ``error`` finding (``check failed: ...``), so one broken check never costs
   the rest of the report;
4. ``report.json``, ``report.html`` with its figures in ``figures/``, and ``report.pdf`` on
   request are written to the output folder.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from cortexlink.core.errors import ConfigError
from cortexlink.quality.model import (CHARACTERISTICS, CheckResult, DatasetContext, Finding, Recording,
                                      RecordingSummary, Report, severity_rank)

logger = logging.getLogger(__name__)

__all__ = ["CHECK_MODULES", "CHECK_CHARACTERISTIC", "run_quality", "write_report_json", "recording_rows",
           "fails", "DEFAULT_WINDOW_S"]

#: The check modules run, in this order (each exposes ``CHECKS``); ``fitness`` is left out with
#: ``baseline=False``.
CHECK_MODULES: tuple[str, ...] = ("checks_dataset", "checks_meta", "checks_signal", "checks_labels", "fitness")

#: Every check id of the report and the characteristic it belongs to (used to label a check that
#: failed before it could say so itself).
CHECK_CHARACTERISTIC: dict[str, str] = {
    **dict.fromkeys(("missing_channels", "missing_samples", "missing_annotations", "missing_metadata"),
                    "completeness"),
    **dict.fromkeys(("sampling_rate", "units", "channel_set", "label_vocabulary", "duplicates"), "consistency"),
    **dict.fromkeys(("event_bounds", "event_overlap", "event_timing", "label_disagreement"), "accuracy"),
    **dict.fromkeys(("flat_channels", "clipped_channels", "line_noise", "bad_channels", "artefacts", "snr",
                     "implant_noise"), "signal_quality"),
    **dict.fromkeys(("class_balance", "subjects_sessions", "coverage"), "diversity"),
    **dict.fromkeys(("split_leakage", "near_duplicates"), "independence"),
    "identifying_text": "deidentification",
    **dict.fromkeys(("provenance", "checksums"), "traceability"),
    "baseline_decoder": "fitness",
}
_MODULE_CHARACTERISTIC = {"checks_dataset": "completeness", "checks_meta": "traceability",
                          "checks_signal": "signal_quality", "checks_labels": "accuracy", "fitness": "fitness"}

#: Trial window after each event onset when the intended-use YAML gives none (seconds).
DEFAULT_WINDOW_S: tuple[float, float] = (0.5, 2.5)


def _quality_module(name: str):
    return importlib.import_module(f"cortexlink.quality.{name}")


def _check_name(fn: Callable) -> str:
    name = getattr(fn, "check", None) or getattr(fn, "__name__", None) or type(fn).__name__
    name = str(name)
    return name[len("check_"):] if name.startswith("check_") else name


def _characteristic_of(fn: Callable, name: str, module: str) -> str:
    c = getattr(fn, "characteristic", None)
    if c in CHARACTERISTICS:
        return c
    return CHECK_CHARACTERISTIC.get(name, _MODULE_CHARACTERISTIC.get(module, "completeness"))


def _failed(name: str, characteristic: str, exc: BaseException) -> CheckResult:
    msg = f"check failed: {type(exc).__name__}: {exc}"
    return CheckResult(check=name, characteristic=characteristic, score=None, summary=msg,
                       findings=[Finding(check=name, characteristic=characteristic, severity="error", detail=msg)])


def _call_check(fn: Callable, ctx: DatasetContext, options: dict[str, Any], module: str) -> list[CheckResult]:
    """Run one check; options it names as keyword parameters (e.g. ``n_permutations``) are passed."""
    name = _check_name(fn)
    try:
        params = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in options.items() if k in params}
    except (TypeError, ValueError):
        kwargs = {}
    try:
        out = fn(ctx, **kwargs)
        if isinstance(out, CheckResult):
            out = [out]
        results = list(out or [])
        bad = [r for r in results if not isinstance(r, CheckResult)]
        if bad:
            raise TypeError(f"returned {type(bad[0]).__name__}, not CheckResult")
        return results
    except Exception as exc:  # noqa: BLE001 - one broken check must not cost the rest of the report
        logger.error("quality check %s.%s failed", module, name, exc_info=True)
        return [_failed(name, _characteristic_of(fn, name, module), exc)]


def _progress(items: list, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="file", file=sys.stderr, leave=False)


def _summarise_all(recordings: list[Recording], intended_use: dict[str, Any], *, line_hz: float | None,
                   progress: bool) -> tuple[dict[str, RecordingSummary], list[Finding]]:
    """One streaming pass per recording, and its trial windows; failures become findings."""
    scan = _quality_module("scan")
    epochs_mod = _quality_module("epochs")
    if hasattr(epochs_mod, "trial_labels"):
        labels = [str(c) for c in epochs_mod.trial_labels(recordings, intended_use)]
        window_s = tuple(epochs_mod.window_of(intended_use))
    else:
        from cortexlink.quality.intended_use import trial_classes

        labels = [str(c) for c in trial_classes(recordings, intended_use)]
        window_s = tuple(intended_use.get("window_s") or DEFAULT_WINDOW_S)
    summaries: dict[str, RecordingSummary] = {}
    failures: list[Finding] = []
    for rec in _progress(recordings, "quality scan", progress):
        try:
            summ = scan.summarise(rec, line_hz=line_hz)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is a finding, not a crash
            logger.error("scanning %s failed", rec.name, exc_info=True)
            failures.append(Finding(check="missing_samples", characteristic="completeness", severity="error",
                                    file=rec.name, detail=f"reading the samples failed: {type(exc).__name__}: {exc}"))
            summ = RecordingSummary(name=rec.name, stats=None, content_hash=None, fingerprint=None,
                                    extra={"error": f"{type(exc).__name__}: {exc}"})
        if labels and rec.kind == "eeg" and rec.events and rec.reader is not None and rec.fs_hz:
            try:
                ep = dict(epochs_mod.extract_epochs(rec, labels, window_s))
                # RecordingSummary.epochs as the model describes it: data (trials x channels x
                # samples, the same array as X, no copy), labels and onsets_s as plain lists
                ep.setdefault("data", ep.get("X"))
                ep["labels"] = [str(v) for v in ep.get("y", [])]
                ep["onsets_s"] = [float(v) for v in ep.get("onsets_s", [])]
                summ.epochs = ep
            except Exception as exc:  # noqa: BLE001
                logger.error("trial windows of %s failed", rec.name, exc_info=True)
                failures.append(Finding(check="missing_samples", characteristic="completeness", severity="error",
                                        file=rec.name,
                                        detail=f"reading the trial windows failed: {type(exc).__name__}: {exc}"))
        summaries[rec.name] = summ
    return summaries, failures


def _reading_results(findings: list[Finding], n_recordings: int) -> list[CheckResult]:
    """Findings made while opening and reading the files, as results grouped by check.

    Score: the share of files that could be read (a file with an ``error`` or worse counts as
    unreadable; ``info`` notes such as a file of no known format do not); ``None`` when every
    file could be read."""
    err = severity_rank("error")
    opened_names: set[str] = set()
    by: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        by.setdefault((f.check, f.characteristic), []).append(f)
        if f.detail.startswith("reading the"):
            opened_names.add(f.file or "")
    unopened = {f.file for f in findings if f.file and severity_rank(f.severity) >= err
                and f.file not in opened_names}
    total = n_recordings + len(unopened)
    out = []
    for (check, ch), fs in by.items():
        bad = sorted({f.file for f in fs if f.file and severity_rank(f.severity) >= err})
        score = (total - len(bad)) / total if bad and total else None
        out.append(CheckResult(check=check, characteristic=ch, score=score, findings=fs,
                               summary=(f"{len(bad)} of {total} file(s) could not be read in full" if bad
                                        else f"{len(fs)} note(s) made while opening the files"),
                               metrics={"stage": "open_and_read", "unreadable_files": bad}))
    return out


def recording_rows(recordings: list[Recording], ctx: DatasetContext | None = None) -> list[dict[str, Any]]:
    """One JSON-able row per recording for the report's table."""
    rows = []
    for r in recordings:
        rows.append({"name": r.name, "kind": r.kind, "format": r.fmt,
                     "fs_hz": None if r.fs_hz is None else float(r.fs_hz), "channels": r.n_channels,
                     "duration_s": round(float(r.duration_s), 3), "subject": r.subject, "session": r.session,
                     "site": r.site, "device": r.device, "n_events": len(r.events),
                     "split": ctx.split_of(r) if ctx is not None else None,
                     "problems": [f"{k}: {m}" for k, m in r.problems]})
    return rows


def _software() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("cortexlink", "numpy", "scipy", "scikit-learn", "mne", "mne-bids", "pynwb", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _json_safe(v: Any) -> Any:
    """``jsonable(v, finite=True)``; a value with no JSON form (a check's odd metric) becomes its text."""
    from cortexlink.core.jsonutil import jsonable

    try:
        return jsonable(v, finite=True)
    except (TypeError, ValueError):
        if isinstance(v, dict):
            return {str(k): _json_safe(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, set, frozenset)):
            return [_json_safe(x) for x in v]
        return str(v)


def write_report_json(report: Report, path: Path) -> Path:
    """``report.to_dict()`` as strict JSON (NaN and infinities become null)."""
    text = json.dumps(_json_safe(report.to_dict()), indent=2, allow_nan=False)
    path = Path(path)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def fails(report: Report, fail_on: str | None) -> bool:
    """Whether any finding is at or above ``fail_on`` (``None``: never)."""
    if fail_on is None:
        return False
    limit = severity_rank(fail_on)
    return any(severity_rank(f.severity) >= limit for f in report.findings)


def _check_options(path: Any, out_dir: Any, split: Any, intended_use: Any, n_permutations: Any,
                   fail_on: Any, line_hz: Any) -> tuple[Path, Path]:
    from cortexlink.core.outpath import check_output_dir

    if path is None or str(path) == "":
        raise ConfigError("PATH must be a data-set file or folder; got nothing")
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"PATH {root} does not exist; give a data-set file or folder")
    for what, p in (("--split", split), ("--intended-use", intended_use)):
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{what} {p} is not a file; give the path of a YAML/JSON/CSV file")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise ConfigError(f"n_permutations (--permutations) must be an integer >= 1; got {n_permutations!r}")
    if fail_on is not None:
        severity_rank(fail_on)
    if line_hz is not None and (not isinstance(line_hz, (int, float)) or not 0 < float(line_hz) < 1000):
        raise ConfigError(f"line_hz must be a mains frequency in Hz (e.g. 50 or 60) or None; got {line_hz!r}")
    if out_dir is None or str(out_dir) == "":
        raise ConfigError("--out must be a folder for the report; got nothing")
    if Path(out_dir).resolve() == root.resolve():
        raise ConfigError(f"--out {out_dir} is the data set itself; choose another folder")
    check_output_dir(out_dir, what="--out", create=False)
    return root, Path(out_dir)


def run_quality(path: str | Path, out_dir: str | Path, *, split: str | Path | None = None,
                intended_use: str | Path | None = None, baseline: bool = True, n_permutations: int = 100,
                progress: bool = False, pdf: bool = False, fail_on: str | None = None,
                line_hz: float | None = None, figures: bool = True) -> Report:
    """Measure a data set's quality and write the report to ``out_dir``.

    Parameters
    ----------
    path : path
        A recording file or a folder (walked recursively) — EEG (EDF/BDF, BrainVision, FIF, BIDS),
        cortexlink session folders, NWB files.
    out_dir : path
        Folder for ``report.json``, ``report.html``, ``figures/*.png`` (and ``report.pdf``);
        created if needed, files in it replaced.
    split : path, optional
        The split file (train / validation / test membership; see
        :func:`cortexlink.quality.sources.load_split`).
    intended_use : path, optional
        The intended-use YAML (see :func:`cortexlink.quality.checks_meta.load_intended_use`).
    baseline : bool
        Run the fitness checks (baseline decoder against permutation chance).
    n_permutations : int
        Label permutations for the baseline's chance level (passed to checks that take it).
    progress : bool
        A progress bar on stderr (only when stderr is a terminal).
    pdf : bool
        Also write ``report.pdf`` (scores, findings and the figures).
    fail_on : str, optional
        Recorded in the options (the CLI exits 1 when a finding is at or above it, see :func:`fails`).
    line_hz : float, optional
        Mains frequency; ``None``: found per recording.
    figures : bool
        Draw the figures (PNG) for the HTML report.

    Returns
    -------
    Report
        Also written as ``out_dir/report.json`` (strict JSON: NaN as null).

    Raises
    ------
    ConfigError
        A path that does not exist, an output folder that may not be written, a bad option.
    """
    root, out = _check_options(path, out_dir, split, intended_use, n_permutations, fail_on, line_hz)
    t0 = time.perf_counter()
    options: dict[str, Any] = {"split": None if split is None else str(split),
                               "intended_use": None if intended_use is None else str(intended_use),
                               "baseline": bool(baseline), "n_permutations": int(n_permutations),
                               "pdf": bool(pdf), "fail_on": fail_on, "line_hz": line_hz}
    use: dict[str, Any] = {}
    if intended_use is not None:
        from cortexlink.quality.intended_use import load_intended_use

        use = dict(load_intended_use(Path(intended_use)) or {})
    from cortexlink.core.outpath import check_output_dir

    check_output_dir(out, what="--out")

    sources = _quality_module("sources")
    recordings, open_findings = sources.open_dataset(root, progress=bool(progress) and sys.stderr.isatty())
    recordings = list(recordings)
    split_map: dict[str, str] = {}
    if split is not None:
        split_map = dict(sources.load_split(Path(split), recordings) or {})

    show = bool(progress) and sys.stderr.isatty()
    t_scan = time.perf_counter()
    summaries, failures = _summarise_all(recordings, use, line_hz=line_hz, progress=show)
    results: list[CheckResult] = _reading_results(list(open_findings) + failures, len(recordings))
    scan_s = time.perf_counter() - t_scan
    use = {**use, "n_permutations": int(n_permutations)}    # read by the fitness checks
    ctx = DatasetContext(root=root, recordings=recordings, summaries=summaries, split=split_map, intended_use=use)

    check_opts = {"n_permutations": int(n_permutations), "progress": show}
    timings: dict[str, float] = {}
    for module in CHECK_MODULES:
        if module == "fitness" and not baseline:
            continue
        try:
            mod = _quality_module(module)
        except ImportError as exc:
            logger.error("quality module %s could not be imported", module, exc_info=True)
            results.append(_failed(module, _MODULE_CHARACTERISTIC[module], exc))
            continue
        tm = time.perf_counter()
        for fn in getattr(mod, "CHECKS", []):
            results += _call_check(fn, ctx, check_opts, module)
        timings[module] = round(time.perf_counter() - tm, 3)

    options["timings_s"] = {"scan": round(scan_s, 3), **timings}
    report = Report(root=root, results=results, recordings=recording_rows(recordings, ctx),
                    created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    software=_software(), options=options)
    _write_outputs(report, ctx, out, pdf=pdf, figures=figures)
    report.options["timings_s"]["total"] = round(time.perf_counter() - t0, 3)
    write_report_json(report, out / "report.json")
    return report


def _write_outputs(report: Report, ctx: DatasetContext, out: Path, *, pdf: bool, figures: bool) -> None:
    """Figures, HTML and PDF; a failing figure is logged and left out, never the whole report."""
    from cortexlink.quality import html, plots

    figs: dict[str, Any] = {}
    if figures:
        figs = plots.make_figures(report, ctx, out / "figures")
        report.figures = {k: str(Path(v).relative_to(out).as_posix()) for k, v in figs.items()}
    html.write_html(report, out / "report.html")
    if pdf:
        plots.write_pdf(report, ctx, out / "report.pdf")
