"""The intended-use YAML of ``cortexlink quality --intended-use FILE``: its schema, and the task
grouping the data-set checks share.

Every key is optional; an empty file means "no claims". Keys:

``intended_use``          text: what the algorithm trained on these data is for.
``classes``               list of labels that are trials (e.g. ``[T1, T2]``).
``rest_labels``           list of labels that are rest / baseline, never trials (e.g. ``[T0]``).
``tasks``                 ``{task name: [glob patterns of recording names]}``; the label and
                          baseline checks run per (subject, task). A pattern matches the
                          recording's relative name or its file name.
``window_s``              ``[start, end]`` seconds after event onset of a trial window.
``min_trials_per_class``  whole number >= 1.
``min_subjects``          whole number >= 1.
``sampling_rate_hz_min``  number > 0.
``channels_required``     list of channel names (matched ignoring case, spaces and trailing dots).
``subjects``              list of subject ids the data set is claimed to hold.
``sites`` / ``devices``   lists of the recording sites / devices claimed.
``sexes``                 list of ``F`` / ``M`` / ``O`` (``female``, ``male``, ``other`` accepted).
``age_range``             ``[min, max]`` years the data set is claimed to cover.

Without ``tasks`` all recordings form one task; without ``classes`` every label with at least
:data:`MIN_EVENTS_FOR_CLASS` events, except the rest labels, is a class.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from cortexlink.core.errors import ConfigError

__all__ = ["load_intended_use", "validate_intended_use", "INTENDED_USE_KEYS", "group_by_task",
           "trial_classes", "norm_label", "norm_channel", "MIN_EVENTS_FOR_CLASS", "subject_of"]

#: Without ``classes``, a label needs this many events to count as a class.
MIN_EVENTS_FOR_CLASS = 10

_SEXES = {"f": "F", "female": "F", "m": "M", "male": "M", "o": "O", "other": "O"}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shown(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _bad(src: str, key: str, allowed: str, got: Any) -> ConfigError:
    return ConfigError(f"{src}: intended-use key {key!r} must be {allowed}; got {_shown(got)} "
                       f"({type(got).__name__})")


def _labels(src: str, key: str, v: Any, *, non_empty: bool = False) -> list[str]:
    allowed = "a non-empty list of labels (strings)" if non_empty else "a list of strings"
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or (non_empty and not v):
        raise _bad(src, key, allowed, v)
    out: list[str] = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (str, int)) or not str(x).strip():
            raise _bad(src, key, allowed + " (each entry a non-blank string)", v)
        if str(x) in out:
            raise _bad(src, key, allowed + " without repeats", v)
        out.append(str(x))
    return out


def _pair(src: str, key: str, v: Any, *, lo: float = -math.inf) -> list[float]:
    allowed = f"a list of two numbers [low, high] with {'0 <= ' if lo == 0 else ''}low < high"
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_num(x) for x in v) \
            or not (v[0] < v[1]) or v[0] < lo:
        raise _bad(src, key, allowed, v)
    return [float(v[0]), float(v[1])]


def _tasks(src: str, v: Any) -> dict[str, list[str]]:
    allowed = "a mapping {task name: [glob patterns of recording names]}"
    if not isinstance(v, dict) or not v:
        raise _bad(src, "tasks", allowed, v)
    out: dict[str, list[str]] = {}
    for name, pats in v.items():
        if isinstance(pats, str):
            pats = [pats]
        if not isinstance(pats, list) or not pats or not all(isinstance(p, str) and p for p in pats):
            raise _bad(src, f"tasks.{name}", "a non-empty list of glob patterns (strings)", pats)
        out[str(name)] = list(pats)
    return out


def _positive_int(src: str, key: str, v: Any) -> int:
    if not _int(v) or v < 1:
        raise _bad(src, key, "a whole number >= 1", v)
    return int(v)


def validate_intended_use(data: Any, source: str = "intended use", *, strict: bool = True) -> dict[str, Any]:
    """Check a parsed intended-use mapping and return it normalised (labels as strings, sexes as
    ``F``/``M``/``O``, numbers as floats); raise :class:`ConfigError` naming the key, what is
    allowed and what was received. ``strict=False`` leaves out keys that are not intended-use
    keys (options a runner adds to the context) instead of refusing them."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the intended-use file must be a mapping of keys "
                          f"({', '.join(INTENDED_USE_KEYS)}); got {_shown(data)} ({type(data).__name__})")
    out: dict[str, Any] = {}
    for key, v in data.items():
        if key not in INTENDED_USE_KEYS:
            if not strict:
                continue
            raise ConfigError(f"{source}: unknown intended-use key {key!r}; allowed keys are "
                              f"{', '.join(INTENDED_USE_KEYS)}")
        if v is None:
            continue
        if key == "intended_use":
            if not isinstance(v, str):
                raise _bad(source, key, "a text (string)", v)
            out[key] = v
        elif key in ("classes",):
            out[key] = _labels(source, key, v, non_empty=True)
        elif key in ("rest_labels", "channels_required", "subjects", "sites", "devices"):
            out[key] = _labels(source, key, v)
        elif key == "tasks":
            out[key] = _tasks(source, v)
        elif key == "window_s":
            out[key] = _pair(source, key, v)
        elif key == "age_range":
            out[key] = _pair(source, key, v, lo=0)
        elif key in ("min_trials_per_class", "min_subjects"):
            out[key] = _positive_int(source, key, v)
        elif key == "sampling_rate_hz_min":
            if not _num(v) or v <= 0:
                raise _bad(source, key, "a number > 0 (Hz)", v)
            out[key] = float(v)
        elif key == "sexes":
            vals = _labels(source, key, v)
            bad = [s for s in vals if s.strip().lower() not in _SEXES]
            if bad:
                raise _bad(source, key, "a list of F, M or O (female, male, other)", v)
            out[key] = sorted({_SEXES[s.strip().lower()] for s in vals})
    both = set(out.get("classes", [])) & set(out.get("rest_labels", []))
    if both:
        raise ConfigError(f"{source}: labels {sorted(both)} are in both 'classes' and 'rest_labels'; "
                          "a label is either a trial class or rest")
    return out


#: The keys an intended-use file may hold.
INTENDED_USE_KEYS: tuple[str, ...] = (
    "intended_use", "classes", "rest_labels", "tasks", "window_s", "min_trials_per_class", "min_subjects",
    "sampling_rate_hz_min", "channels_required", "subjects", "sites", "devices", "sexes", "age_range")


def load_intended_use(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check an intended-use YAML file (see the module docstring for its keys).

    Returns
    -------
    dict
        The normalised claims (only the keys the file sets); ``{}`` for an empty file.

    Raises
    ------
    ConfigError
        The file is missing, is not YAML, or a key is unknown or of the wrong kind (the message
        names the key, what is allowed and what was received).
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"intended-use file {p}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"intended-use file {p}: not valid YAML ({exc})") from None
    return validate_intended_use(data, source=str(p))


def norm_label(label: str) -> str:
    """A label as compared across files: stripped and case-folded (``"t1 "`` == ``"T1"``)."""
    return str(label).strip().casefold()


def norm_channel(name: str) -> str:
    """A channel name as compared with a required one: no spaces or trailing dots, case-folded
    (EEGMMIDB writes ``"C3.."``, ``"Fc5."``)."""
    return str(name).strip().rstrip(".").replace(" ", "").casefold()


def _matches(name: str, patterns: list[str]) -> bool:
    base = PurePosixPath(name).name
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(base, p) for p in patterns)


def group_by_task(recordings: list, intended_use: dict[str, Any]) -> dict[str, list]:
    """Recordings per task: by the intended use's ``tasks`` globs (a recording matching none is
    left out; one matching several goes to the first), else all under task ``"all"``."""
    tasks = (intended_use or {}).get("tasks")
    if not tasks:
        return {"all": list(recordings)} if recordings else {}
    out: dict[str, list] = {name: [] for name in tasks}
    for rec in recordings:
        for name, pats in tasks.items():
            if _matches(rec.name, pats):
                out[name].append(rec)
                break
    return out


def trial_classes(recordings: list, intended_use: dict[str, Any]) -> list[str]:
    """The labels that are trial classes: the intended use's ``classes``, else every label with
    at least :data:`MIN_EVENTS_FOR_CLASS` events across ``recordings`` except ``rest_labels``."""
    iu = intended_use or {}
    if iu.get("classes"):
        return list(iu["classes"])
    rest = set(iu.get("rest_labels", []))
    counts = Counter(e.label for r in recordings for e in r.events if e.label.strip())
    return sorted(lab for lab, n in counts.items() if n >= MIN_EVENTS_FOR_CLASS and lab not in rest)


_SUBJECT_IN_NAME = re.compile(r"(?:^|[/_\-.])(?:sub|subj|subject|s)[-_]?(\d+)(?=[^\d]|$)", re.I)


def subject_of(rec: Any) -> tuple[str | None, bool]:
    """A recording's subject: as declared, else read from its name (BIDS ``sub-01``,
    EEGMMIDB ``S001R03.edf``: ``"001"``); returns ``(subject, inferred_from_name)``."""
    if getattr(rec, "subject", None):
        return str(rec.subject), False
    for part in reversed(PurePosixPath(rec.name).parts):
        m = _SUBJECT_IN_NAME.search(part)
        if m:
            return m.group(1), True
    return None, False
