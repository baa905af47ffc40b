"""Reading a session folder's ``manifest.json``: every field the code reads is checked for its
type when the manifest is read, so a damaged or hand-edited manifest is refused with one
message naming the field, not a ``KeyError`` or ``TypeError`` somewhere later.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

from cortexlink.io.session_log.format import FORMAT_VERSION, CorruptSessionError

__all__ = ["read_manifest", "check_manifest"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_STR = (lambda v: isinstance(v, str), "a string")
_OPT_STR = (_opt(lambda v: isinstance(v, str)), "a string or null")
_OPT_DICT = (_opt(lambda v: isinstance(v, dict)), "a JSON object or null")
_OPT_POS = (_opt(lambda v: _is_num(v) and v > 0), "a positive number or null")
_OPT_NONNEG = (_opt(lambda v: _is_num(v) and v >= 0), "a number >= 0 or null")
_COUNT = (lambda v: _is_int(v) and v >= 0, "a whole number >= 0")
_OPT_INT = (_opt(_is_int), "a whole number or null")
_SHA = (lambda v: isinstance(v, str) and bool(_SHA256.match(v)), "a SHA-256 (64 lower-case hex digits)")

#: top-level fields: (check, what it must be)
_TOP = {
    "session_id": _STR, "participant_id": _STR, "state": _STR,
    "format_version": (_is_int, "a whole number"),
    "started_utc": _OPT_STR, "closed_utc": _OPT_STR, "recovered_utc": _OPT_STR, "stopped_reason": _OPT_STR,
    "fs_hz": _OPT_POS, "expected_seconds": _OPT_NONNEG,
    "channel_map": _OPT_DICT, "config": _OPT_DICT, "seeds": _OPT_DICT, "provenance": _OPT_DICT,
    "writer": _OPT_DICT, "dsp": _OPT_DICT, "loop": _OPT_DICT, "dropped": _OPT_DICT, "recovery": _OPT_DICT,
    "streams": (lambda v: isinstance(v, dict), "a JSON object (stream name -> description)"),
    "files": _OPT_DICT, "decoders": _OPT_DICT,
    "simulated": (lambda v: isinstance(v, bool), "true or false"),
}
_REQUIRED = ("session_id", "participant_id", "state", "streams")
_STREAM = {
    "kind": (lambda v: v in ("array", "json"), "'array' or 'json'"), "dtype": _OPT_STR, "name": _STR,
    "n_columns": _COUNT, "records": _COUNT, "rows": _COUNT, "bytes": _COUNT, "sha256": _SHA,
    "rate_hz": _OPT_POS, "first_sample": _OPT_INT, "last_sample": _OPT_INT,
    "bin_width_samples": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "header": _OPT_DICT,
}
_FILE = {"bytes": _COUNT, "sha256": _SHA}


def _fail(mpath: Path, field: str, what: str, got: Any) -> CorruptSessionError:
    shown = repr(got)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CorruptSessionError(f"{mpath}: field {field} must be {what}; got {shown} ({type(got).__name__}); the "
                               "manifest was damaged or edited - restore it from a copy or correct that field")


def _check_fields(mpath: Path, prefix: str, obj: dict[str, Any], spec: dict[str, Any]) -> None:
    for key, (ok, what) in spec.items():
        if key in obj and not ok(obj[key]):
            raise _fail(mpath, f"{prefix}{key}", what, obj[key])


def check_manifest(m: Any, mpath: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a parsed manifest's fields; return it, or raise :class:`CorruptSessionError` naming
    the first field of the wrong type (``streams.raw.bytes``, ``channel_map``, ...)."""
    mpath = Path(mpath)
    if not isinstance(m, dict):
        raise CorruptSessionError(f"{mpath}: not a cortexlink session manifest (a JSON {type(m).__name__}, "
                                  "not an object)")
    if m.get("format") != "cortexlink-session":
        raise CorruptSessionError(f"{mpath}: not a cortexlink session manifest (format {m.get('format')!r})")
    for key in _REQUIRED:
        if key not in m:
            raise CorruptSessionError(f"{mpath}: field {key} is missing; the manifest was damaged or edited - "
                                      "restore it from a copy")
    _check_fields(mpath, "", m, _TOP)
    if m.get("format_version", 1) > FORMAT_VERSION:
        raise CorruptSessionError(f"{mpath}: session format version {m['format_version']} is newer than this "
                                  f"cortexlink reads ({FORMAT_VERSION}); upgrade cortexlink")
    for name, st in m["streams"].items():
        if not isinstance(st, dict):
            raise _fail(mpath, f"streams.{name}", "a JSON object", st)
        _check_fields(mpath, f"streams.{name}.", st, _STREAM)
    for rel, f in (m.get("files") or {}).items():
        if not isinstance(f, dict):
            raise _fail(mpath, f"files.{rel}", "a JSON object with bytes and sha256", f)
        for key in _FILE:
            if key not in f:
                raise CorruptSessionError(f"{mpath}: field files.{rel}.{key} is missing; the manifest was damaged "
                                          "or edited - restore it from a copy")
        _check_fields(mpath, f"files.{rel}.", f, _FILE)
    for name, d in (m.get("decoders") or {}).items():
        if not isinstance(d, dict):
            raise _fail(mpath, f"decoders.{name}", "a JSON object with file and sha256", d)
        _check_fields(mpath, f"decoders.{name}.", d, {"file": _STR, "sha256": _SHA, "bytes": _COUNT})
    cm = m.get("channel_map")
    if cm is not None:
        from cortexlink.core.types import ChannelMap
        missing = [k for k in ("channel_ids", "positions_um", "gain_uv", "offset_uv", "bad") if k not in cm]
        if missing:
            raise CorruptSessionError(f"{mpath}: field channel_map lacks {', '.join(missing)}; the manifest was "
                                      "damaged or edited - restore it from a copy")
        try:
            ChannelMap.from_dict(cm)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise CorruptSessionError(f"{mpath}: field channel_map is not a valid channel map ({exc}); the "
                                      "manifest was damaged or edited - restore it from a copy") from None
    return m


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``<folder>/manifest.json``; :class:`CorruptSessionError` naming the problem
    (missing, not JSON, not a session manifest, a field of the wrong type) otherwise."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not folder.is_dir():
        raise CorruptSessionError(f"{folder}: not a folder; a cortexlink session is a folder with manifest.json")
    if not mpath.is_file():
        raise CorruptSessionError(f"{folder}: no manifest.json; not a cortexlink session folder (if it was one, "
                                  f"`cortexlink recover {folder}` rebuilds the manifest from the stream files)")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptSessionError(f"{mpath}: not valid JSON ({exc}); the manifest is written atomically, so it "
                                  "was damaged after the fact - restore it from a copy") from None
    except OSError as exc:
        raise CorruptSessionError(f"{mpath}: cannot be read ({exc.strerror or exc})") from None
    return check_manifest(m, mpath)
