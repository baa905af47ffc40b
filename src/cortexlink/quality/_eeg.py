"""EEG recordings for the quality report, opened through MNE (and mne-bids for BIDS folders).

Samples stay on disk: each :class:`~cortexlink.quality.model.Recording` keeps an MNE ``Raw``
opened with ``preload=False`` and its reader calls ``raw.get_data(start=, stop=)``, scaled to
µV for channels whose unit is volts (stimulus and other channels keep their values). Every
warning MNE (or edfio) raises while opening becomes one of the recording's ``problems``.

mne, mne_bids and edfio are imported inside the functions.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cortexlink.io._common import sha256_file
from cortexlink.quality.model import Event, Recording

#: Channel types the model knows; other MNE types map to these (see :func:`_channel_type`).
_TYPES = ("eeg", "eog", "emg", "ecg", "stim", "misc")
_FIELD_POTENTIAL = ("seeg", "ecog", "dbs")          # µV-scale field potentials: checked as EEG
#: Warnings that mean the file holds fewer samples than its header declares.
_TRUNCATED = re.compile(r"file size|truncat|incomplete data record|file contains \d+ records", re.I)
_EDFIO_RECORDS = re.compile(r"indicates (\d+) data records, but file contains (\d+) records")
_OUTSIDE = re.compile(r"outside (the )?data range", re.I)


def problems_from(caught: list[Any]) -> list[tuple[str, str]]:
    """``(kind, message)`` for each caught warning: ``"truncated"``, ``"events_outside"`` or ``"warning"``."""
    out: list[tuple[str, str]] = []
    for w in caught:
        msg = str(w.message)
        kind = "truncated" if _TRUNCATED.search(msg) else "events_outside" if _OUTSIDE.search(msg) else "warning"
        if (kind, msg) not in out:
            out.append((kind, msg))
    return out


def _channel_type(t: str) -> str:
    if t in _TYPES:
        return t
    return "eeg" if t in _FIELD_POTENTIAL else "misc"


def _unit_of(ch: dict, orig: dict[str, str] | None) -> str | None:
    from mne.io.constants import FIFF

    if orig and ch["ch_name"] in orig and orig[ch["ch_name"]] not in ("", "NA", "n/a"):
        return str(orig[ch["ch_name"]])
    u = int(ch["unit"])
    return {int(FIFF.FIFF_UNIT_V): "V", int(FIFF.FIFF_UNIT_T): "T", int(FIFF.FIFF_UNIT_T_M): "T/m",
            int(FIFF.FIFF_UNIT_MOL): "mol", int(FIFF.FIFF_UNIT_CEL): "C"}.get(u)


def _scales(raw: Any) -> np.ndarray:
    """Per channel: 1e6 for channels in volts (to µV), 1 for the others (stim keeps its codes)."""
    from mne.io.constants import FIFF

    return np.array([1e6 if int(ch["unit"]) == int(FIFF.FIFF_UNIT_V) and int(ch["kind"]) != int(FIFF.FIFFV_STIM_CH)
                     else 1.0 for ch in raw.info["chs"]], dtype=np.float64)


def make_reader(raw: Any) -> Callable[[int, int], np.ndarray]:
    """``reader(start, stop)`` -> float64 channels × samples in µV, read from disk each call."""
    scale = _scales(raw)[:, None]

    def read(start: int, stop: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = raw.get_data(start=int(start), stop=int(stop))
        return np.asarray(x, dtype=np.float64) * scale
    return read


def _positions_present(raw: Any, types: list[str]) -> tuple[bool, int]:
    n_pos = 0
    n_eeg = 0
    for ch, t in zip(raw.info["chs"], types):
        if t != "eeg":
            continue
        n_eeg += 1
        loc = np.asarray(ch["loc"][:3], dtype=float)
        if np.all(np.isfinite(loc)) and np.any(loc != 0):
            n_pos += 1
    return (n_eeg > 0 and n_pos == n_eeg), n_pos


def _events(raw: Any, annotations: Any = None) -> list[Event]:
    """Annotations as events, onsets in seconds from the first sample."""
    ann = raw.annotations if annotations is None else annotations
    shift = raw.first_time if ann.orig_time is not None else 0.0
    return [Event(float(o) - shift, float(d), str(s)) for o, d, s in zip(ann.onset, ann.duration, ann.description)]


def _text(v: Any) -> str:
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _edf_header(path: Path, problems: list[tuple[str, str]]) -> dict[str, Any]:
    """The EDF header's free-text fields through edfio (patient, recording, equipment, declared records)."""
    out: dict[str, Any] = {}
    try:
        import edfio
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            edf = edfio.read_edf(path, lazy_load_data=True)
            out["patient"] = edf.local_patient_identification
            out["recording"] = edf.local_recording_identification
            try:
                out["equipment"] = edf.recording.equipment_code
                out["hospital_administration_code"] = edf.recording.hospital_administration_code
                out["investigator_technician_code"] = edf.recording.investigator_technician_code
            except Exception:              # not EDF+ compliant: the raw string is kept above  # nosec B110
                pass
            try:
                p = edf.patient
                out["patient_code"] = p.code
                out["patient_name"] = p.name
                out["patient_birthdate"] = p.birthdate
            except Exception:              # not EDF+ compliant: no patient subfields  # nosec B110
                pass
            out["data_record_duration_s"] = float(edf.data_record_duration)
        for w in caught:
            m = _EDFIO_RECORDS.search(str(w.message))
            if m:
                out["declared_records"] = int(m.group(1))
            elif _TRUNCATED.search(str(w.message)) and not any(k == "truncated" for k, _ in problems):
                problems.append(("truncated", f"edfio: {w.message}"))
    except Exception as exc:        # edfio is stricter than MNE: MNE's reading still stands
        problems.append(("header", f"EDF header fields not read by edfio: {type(exc).__name__}: {exc}"))
    return out


def _known(v: Any) -> str | None:
    """A header value, or None where EDF+ says unknown (``X``) or it is empty."""
    if v is None:
        return None
    s = str(v).strip()
    return None if s in ("", "X", "x", "n/a", "None") else s


def open_mne(path: Path, name: str, fmt: str, *, raw: Any = None, caught: list | None = None,
             bids: dict[str, Any] | None = None) -> Recording:
    """Open one EEG file (or a BIDS recording whose ``raw`` is given) as a lazy Recording."""
    import mne

    problems: list[tuple[str, str]] = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        if raw is None:
            if fmt in ("edf", "bdf"):
                raw = (mne.io.read_raw_edf if fmt == "edf" else mne.io.read_raw_bdf)(
                    path, preload=False, verbose="warning")
            elif fmt == "brainvision":
                raw = mne.io.read_raw_brainvision(path, preload=False, verbose="warning")
            elif fmt == "fif":
                raw = mne.io.read_raw_fif(path, preload=False, verbose="warning")
            else:
                raise ValueError(f"unknown EEG format {fmt!r}")
        annotations = None
        data_path = path          # the file named (BrainVision: the header; raw.filenames has the .eeg)
        if fmt in ("edf", "bdf", "brainvision"):
            # the file's own annotations: MNE's Raw drops those outside the data, the event_bounds
            # check wants them (BIDS: events.tsv as mne-bids read it, an "events_outside" problem)
            try:
                src = data_path.with_suffix(".vmrk") if fmt == "brainvision" else data_path
                if src.is_file():
                    annotations = mne.read_annotations(src)
            except Exception as exc:
                problems.append(("warning", f"annotations not read: {type(exc).__name__}: {exc}"))
    problems = problems_from(list(caught or []) + list(w)) + problems

    types = [_channel_type(t) for t in raw.get_channel_types()]
    orig = getattr(raw, "_orig_units", None) or None
    units = [_unit_of(ch, orig) for ch in raw.info["chs"]]
    present, n_pos = _positions_present(raw, types)
    si = raw.info.get("subject_info") or {}
    header_text: dict[str, str] = {}
    for k, v in dict(si).items():
        if v is not None and k != "id":
            header_text[f"subject_info.{k}"] = _text(v)
    for k in ("experimenter", "description", "proj_name"):
        if raw.info.get(k):
            header_text[k] = str(raw.info[k])
    extra: dict[str, Any] = {"n_channels_with_position": n_pos,
                             "mne_channel_types": list(raw.get_channel_types())}
    provenance: dict[str, Any] = {"reader": f"mne {mne.__version__}"}
    md = raw.info.get("meas_date")
    provenance["meas_date"] = md.isoformat() if md is not None else None
    device = None
    if raw.info.get("device_info"):
        di = raw.info["device_info"]
        device = _known(di.get("model") or di.get("type"))
        header_text.update({f"device_info.{k}": str(v) for k, v in di.items() if v})
    if (data_path.suffix.lower() == ".edf"):
        h = _edf_header(data_path, problems)
        for k in ("patient", "recording"):
            if h.get(k) is not None:
                header_text[f"edf.{k}"] = str(h[k])
        if _known(h.get("equipment")):
            device = device or _known(h.get("equipment"))
            provenance["equipment"] = h["equipment"]
        if "declared_records" in h:
            rec_s = h.get("data_record_duration_s") or float(raw._raw_extras[0]["record_length"][0])
            extra["declared_n_samples"] = int(round(h["declared_records"] * rec_s * raw.info["sfreq"]))
        subject = _known(si.get("his_id")) or _known(h.get("patient_code"))
    else:
        subject = _known(si.get("his_id"))
    n = int(raw.n_times)
    if "declared_n_samples" in extra and extra["declared_n_samples"] > n and \
            not any(k == "truncated" for k, _ in problems):
        problems.append(("truncated", f"header declares {extra['declared_n_samples']} samples per channel, "
                                      f"the file holds {n}"))
    session = site = None
    if bids:
        subject = bids.get("subject") or subject
        session = bids.get("session")
        extra.update({k: v for k, v in bids.items() if k not in ("subject", "session", "header_text", "files")})
        header_text.update(bids.get("header_text", {}))
    files = {data_path.name: data_path}
    for fn in raw.filenames or ():          # the data file(s) MNE reads (BrainVision's .eeg, split FIF parts)
        if fn and Path(fn).is_file():
            files.setdefault(Path(fn).name, Path(fn))
    if data_path.suffix.lower() == ".vhdr":
        for s in (".vmrk", ".eeg"):
            p = data_path.with_suffix(s)
            if p.is_file():
                files[p.name] = p
    if bids:
        files.update(bids.get("files", {}))
    provenance["file_bytes"] = int(data_path.stat().st_size)
    provenance["sha256"] = sha256_file(data_path)
    provenance["files"] = {k: {"bytes": int(p.stat().st_size), "sha256": sha256_file(p)
                               if p != data_path else provenance["sha256"]} for k, p in files.items()}
    events = _events(raw, annotations)
    fs = float(raw.info["sfreq"])
    return Recording(path=path, name=name, kind="eeg", fmt=fmt, fs_hz=fs if fs > 0 and math.isfinite(fs) else None,
                     n_samples=n, channel_names=list(raw.ch_names), channel_types=types, units=units,
                     positions_present=present, subject=subject, session=session, site=site, device=device,
                     events=events, header_text=header_text, provenance=provenance, problems=problems,
                     reader=make_reader(raw), extra=extra)


def open_bids(root: Path, rel: Callable[[Path], str]) -> tuple[list[Recording], list[tuple[Path, str]]]:
    """Every EEG recording of a BIDS folder; returns the recordings and ``(path, reason)`` for failures."""
    import mne_bids

    recs: list[Recording] = []
    failed: list[tuple[Path, str]] = []
    with warnings.catch_warnings(record=True) as w0:
        warnings.simplefilter("always")
        paths = mne_bids.find_matching_paths(root, datatypes="eeg", suffixes="eeg",
                                             extensions=[".edf", ".bdf", ".vhdr", ".fif", ".set"])
    seen: set[Path] = set()
    common = _bids_common(root)
    for bp in sorted(paths, key=lambda p: str(p.fpath)):
        fpath = Path(bp.fpath)
        if fpath in seen:
            continue
        seen.add(fpath)
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                raw = mne_bids.read_raw_bids(bp, verbose="warning")
            header_text = dict(common["header_text"])
            if bp.subject in common["participants"]:
                header_text["bids.participants.tsv"] = common["participants"][bp.subject]
            files = dict(common["files"])
            for side in sorted(fpath.parent.glob(fpath.name.rsplit("_", 1)[0] + "_*")):
                if side.suffix in (".json", ".tsv") and side.is_file():
                    files[side.name] = side
                    header_text[f"bids.{side.name}"] = side.read_text(encoding="utf-8", errors="replace")[:20000]
            info = {"subject": bp.subject, "session": bp.session, "task": bp.task, "run": bp.run,
                    "acquisition": bp.acquisition, "header_text": header_text, "files": files}
            fmt_of = {".edf": "edf", ".bdf": "bdf", ".vhdr": "brainvision", ".fif": "fif"}
            rec = open_mne(fpath, rel(fpath), "bids", raw=raw, caught=list(w0) + list(w), bids=info)
            rec.extra["file_format"] = fmt_of.get(fpath.suffix.lower(), fpath.suffix.lower().lstrip("."))
            recs.append(rec)
        except Exception as exc:
            failed.append((fpath, f"{type(exc).__name__}: {exc}"))
    return recs, failed


def _bids_common(root: Path) -> dict[str, Any]:
    header_text: dict[str, str] = {}
    files: dict[str, Path] = {}
    for name in ("dataset_description.json", "participants.json"):
        p = root / name
        if p.is_file():
            files[name] = p
            header_text[f"bids.{name}"] = p.read_text(encoding="utf-8", errors="replace")[:20000]
    rows: dict[str, str] = {}
    p = root / "participants.tsv"
    if p.is_file():
        files[p.name] = p
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        for line in lines[1:]:
            pid = line.split("\t", 1)[0].strip()
            rows[pid[4:] if pid.startswith("sub-") else pid] = (lines[0] + "\n" + line) if lines else line
    return {"header_text": header_text, "files": files, "participants": rows}
