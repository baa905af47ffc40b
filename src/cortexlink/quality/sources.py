"""Open a data set for the quality report: files and folders of EEG and implant recordings, split files.

:func:`open_dataset` takes one file or a folder (walked recursively, in sorted order) and returns
lazily opened :class:`~cortexlink.quality.model.Recording` objects:

=====================================  ============================================================
what                                   read through
=====================================  ============================================================
EDF / EDF+ (``.edf``), BDF (``.bdf``)  MNE (``preload=False``); the EDF header's patient and
                                       recording fields through edfio; annotations through
                                       ``mne.read_annotations`` (also those past the end)
BrainVision (``.vhdr``)                MNE (its ``.vmrk`` / ``.eeg`` are part of it)
FIF (``.fif``, ``.fif.gz``)            MNE
a BIDS folder (with                    mne-bids: subject / session / task / run from the BIDS
``dataset_description.json``)          entities, the sidecars' text (``*_eeg.json``,
                                       ``channels.tsv``, the subject's ``participants.tsv`` row)
                                       in ``header_text``, electrode positions when present
a cortexlink session folder            :class:`~cortexlink.io.session_log.SessionReader` (raw,
(``manifest.json``)                    features, intended velocity, task events, provenance)
NWB (``.nwb``)                         h5py: the largest acquisition ``ElectricalSeries``, sliced
=====================================  ============================================================

A file that cannot be opened becomes a ``missing_samples`` finding (severity ``error``) naming
the reason; it is never skipped silently. Files of no recognised format become an ``info``
finding. Sidecar files (``.event`` next to an EDF, ``.vmrk``/``.eeg`` of BrainVision, files
inside BIDS and session folders) and documentation (``README``, ``.md``, ``.txt``, checksums,
split and intended-use files) are not recordings and are passed over.

:func:`load_split` reads the train / validation / test membership file.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

from cortexlink.core.errors import ConfigError
from cortexlink.quality.model import Finding, Recording, relname

logger = logging.getLogger(__name__)

#: Split names a split file may use.
SPLITS: tuple[str, ...] = ("train", "validation", "test")

_EEG_EXT = {".edf": "edf", ".bdf": "bdf", ".vhdr": "brainvision", ".fif": "fif"}
#: Not recordings: documentation, checksums, configuration (passed over without a finding).
_NOT_DATA_EXT = {".md", ".txt", ".rst", ".html", ".pdf", ".png", ".jpg", ".svg", ".yaml", ".yml", ".json",
                 ".csv", ".tsv", ".py", ".sh", ".log", ".sha256", ".md5"}
_NOT_DATA_NAMES = {"readme", "sha256sums", "md5sums", "license", "changes", "checksums"}


_FIF_PART = re.compile(r"-\d+\.fif(\.gz)?$", re.I)


def _fmt_of(path: Path) -> str | None:
    n = path.name.lower()
    if n.endswith(".fif.gz"):
        return "fif"
    if path.suffix.lower() == ".nwb":
        return "nwb"
    return _EEG_EXT.get(path.suffix.lower())


def _is_sidecar(path: Path) -> bool:
    """A file that belongs to a recording of another file (read with it, not on its own)."""
    n = path.name.lower()
    suf = path.suffix.lower()
    if suf == ".event" and path.with_suffix("").suffix.lower() in (".edf", ".bdf"):
        return True
    m = _FIF_PART.search(path.name)
    if m and (path.parent / (path.name[:m.start()] + ".fif" + (m.group(1) or ""))).is_file():
        return True                      # a split FIF's continuation: MNE reads it with the first part
    if suf in (".vmrk", ".eeg", ".dat"):
        return any(p.suffix.lower() == ".vhdr" for p in path.parent.iterdir())
    return n.endswith(".edf.event")


def _is_documentation(path: Path) -> bool:
    return (path.suffix.lower() in _NOT_DATA_EXT or path.stem.lower() in _NOT_DATA_NAMES
            or path.name.lower() in _NOT_DATA_NAMES or path.name.startswith("."))


def _unreadable(name: str, reason: str) -> Finding:
    return Finding(check="missing_samples", characteristic="completeness", severity="error", file=name,
                   detail=f"cannot be opened: {reason}")


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    """``("bids" | "session" | "file", path)`` under ``folder``, sorted, not descending into
    BIDS or session folders (read as a whole)."""
    from cortexlink.quality._implant import is_session

    if (folder / "dataset_description.json").is_file():
        yield "bids", folder
        return
    if is_session(folder):
        yield "session", folder
        return
    for p in sorted(folder.iterdir(), key=lambda q: q.name):
        if p.is_dir():
            yield from _walk(p)
        elif p.is_file():
            yield "file", p


def open_recording(path: Path, name: str) -> Recording:
    """Open one file or session folder; raises whatever its reader raises when it cannot."""
    from cortexlink.quality import _eeg, _implant, _nwb

    if path.is_dir():
        if _implant.is_session(path):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rec = _implant.open_session(path, name)
            rec.problems.extend(_eeg.problems_from(list(caught)))
            return rec
        raise ValueError("a folder that is neither a cortexlink session nor a BIDS data set")
    fmt = _fmt_of(path)
    if fmt == "nwb":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rec = _nwb.open_nwb(path, name)
        rec.problems.extend(_eeg.problems_from(list(caught)))
        return rec
    if fmt is None:
        raise ValueError(f"not a recognised recording format ({path.suffix or 'no extension'})")
    return _eeg.open_mne(path, name, fmt)


def open_dataset(path: str | Path, *, progress: bool = False) -> tuple[list[Recording], list[Finding]]:
    """Open every recording under ``path`` (a file, a session folder, a BIDS folder or any folder).

    Parameters
    ----------
    path : path
        A recording file, or a folder walked recursively in sorted order (deterministic).
    progress : bool
        Show a progress bar (tqdm, on stderr) while opening.

    Returns
    -------
    recordings : list of Recording
        Headers and events read, samples left on disk; names relative to ``path`` (the file's
        own name when ``path`` is a file).
    findings : list of Finding
        One ``missing_samples`` error per file that could not be opened (with the reason), one
        ``info`` per file of no recognised format.

    Raises
    ------
    ConfigError
        When ``path`` does not exist.
    """
    from cortexlink.quality import _eeg

    root = Path(path)
    if not root.exists():
        raise ConfigError(f"path must be an existing file or folder; got {str(path)!r} (not found)")
    base = root if root.is_dir() else root.parent
    items = list(_walk(root)) if root.is_dir() else [("file", root)]
    recs: list[Recording] = []
    findings: list[Finding] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(items), desc="opening", unit="item", leave=False)
    for kind, p in items:
        name = relname(p, base) if p != base else p.name
        try:
            if kind == "bids":
                got, failed = _eeg.open_bids(p, lambda q: relname(q, base))
                recs.extend(got)
                findings.extend(_unreadable(relname(q, base), why) for q, why in failed)
            elif kind == "session":
                recs.append(open_recording(p, name))
            elif _fmt_of(p) is not None and not _is_sidecar(p):
                recs.append(open_recording(p, name))
            elif not (_is_sidecar(p) or _is_documentation(p)):
                what = p.suffix or "no extension"
                findings.append(Finding(check="missing_samples", characteristic="completeness", severity="info",
                                        file=name, detail=f"not a recognised recording format ({what}); not "
                                        "checked (EDF, BDF, BrainVision .vhdr, FIF, NWB, BIDS and cortexlink "
                                        "session folders are)"))
        except Exception as exc:          # any reader failure is a finding, never a crash nor a silent skip
            logger.info("%s: cannot be opened: %s", p, exc)
            findings.append(_unreadable(name, f"{type(exc).__name__}: {exc}"))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return recs, findings


# --------------------------------------------------------------------------------------------
# split files


def _read_split_file(path: Path) -> dict[str, list[str]]:
    suf = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suf == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            raise ConfigError(f"split file {path}: empty; expected a header 'file,split' or 'subject,split'")
        head = [h.strip().lower() for h in rows[0]]
        if head and head[0] == "recording":            # an accepted synonym of 'file'
            head = ["file"] + head[1:]
        if head not in (["file", "split"], ["subject", "split"]):
            raise ConfigError(f"split file {path}: header must be 'file,split' (or 'recording,split') or "
                              f"'subject,split'; got "
                              f"{','.join(rows[0])!r}")
        out: dict[str, list[str]] = {}
        for i, r in enumerate(rows[1:], start=2):
            if not r or all(not c.strip() for c in r):
                continue
            if len(r) != 2:
                raise ConfigError(f"split file {path}, line {i}: expected 2 columns ({','.join(head)}); got {r!r}")
            entry = r[0].strip() if head[0] == "file" else f"subject:{r[0].strip()}"
            out.setdefault(r[1].strip(), []).append(entry)
        return out
    if suf in (".yaml", ".yml"):
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"split file {path}: not valid YAML ({exc})") from None
    elif suf == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"split file {path}: not valid JSON ({exc})") from None
    else:
        raise ConfigError(f"split file must be .yaml, .yml, .json or .csv; got {path.name!r}")
    if not isinstance(data, dict):
        raise ConfigError(f"split file {path}: must map split names {list(SPLITS)} to lists of recording names, "
                          f"glob patterns or 'subject:<id>'; got {type(data).__name__}")
    out = {}
    for k, v in data.items():
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(e, (str, int)) for e in v):
            raise ConfigError(f"split file {path}: {k!r} must be a list of recording names, glob patterns or "
                              f"'subject:<id>'; got {v!r:.80}")
        out[str(k)] = [str(e) for e in v]
    return out


def load_split(path: str | Path, recordings: list[Recording]) -> dict[str, str]:
    """Read a split file: which recordings (or subjects) are train, validation or test.

    Parameters
    ----------
    path : path
        YAML or JSON ``{train: [...], validation: [...], test: [...]}`` whose entries are
        recording names (relative to the data-set root, as in findings), glob patterns over them
        (``"S001R0[3-6].edf"``, ``"sub-01/*"``) or ``"subject:<id>"``; or a CSV with the header
        ``file,split`` (names or patterns; ``recording,split`` is the same) or ``subject,split``.
    recordings : list of Recording
        The data set the names and patterns are resolved against.

    Returns
    -------
    dict
        Recording name -> split for every recording a name or pattern matched, and
        ``"subject:<id>"`` -> split as given (see :meth:`DatasetContext.split_of`).

    Raises
    ------
    ConfigError
        The file is missing or malformed, a split name is not one of train / validation / test,
        an entry matches no recording (or no subject), or a recording is put in two splits.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"split file must be an existing file; got {str(path)!r} (not found)")
    spec = _read_split_file(p)
    names = [r.name for r in recordings]
    subjects = {r.subject for r in recordings if r.subject is not None}
    out: dict[str, str] = {}
    for split, entries in spec.items():
        if split not in SPLITS:
            raise ConfigError(f"split file {p}: split names must be {list(SPLITS)}; got {split!r}")
        for e in entries:
            if e.startswith("subject:"):
                sid = e[len("subject:"):].strip()
                if sid not in subjects:
                    raise ConfigError(f"split file {p}: entry {e!r} ({split}) names no subject of the data set; "
                                      f"subjects: {sorted(subjects)[:20]}")
                key = f"subject:{sid}"
                if out.get(key, split) != split:
                    raise ConfigError(f"split file {p}: entry {e!r} is in both {out[key]!r} and {split!r}")
                out[key] = split
                continue
            hits = [n for n in names if n == e or fnmatch.fnmatchcase(n, e)]
            if not hits:
                raise ConfigError(f"split file {p}: entry {e!r} ({split}) matches no recording; recordings: "
                                  f"{names[:10]}{' ...' if len(names) > 10 else ''}")
            for n in hits:
                if out.get(n, split) != split:
                    raise ConfigError(f"split file {p}: recording {n!r} (entry {e!r}) is in both {out[n]!r} "
                                      f"and {split!r}")
                out[n] = split
    return out


def describe(rec: Recording) -> dict[str, Any]:
    """A JSON-able summary of a recording (for the report's table of inputs)."""
    return {"name": rec.name, "kind": rec.kind, "format": rec.fmt, "fs_hz": rec.fs_hz,
            "n_channels": rec.n_channels, "n_samples": rec.n_samples, "duration_s": round(rec.duration_s, 3),
            "subject": rec.subject, "session": rec.session, "site": rec.site, "device": rec.device,
            "n_events": len(rec.events), "positions_present": rec.positions_present,
            "problems": [list(p) for p in rec.problems],
            "n_feature_bins": rec.features.n_bins if rec.features is not None else 0}
