"""Text patterns that identify a person, for the de-identification check.

:func:`scan_header` looks through a recording's header fields (EDF patient / recording fields,
MNE ``subject_info``, NWB subject fields, BIDS sidecars) and returns what it found per field,
with the value masked (``"John Smith"`` -> ``"J*** S****"``): the report must not repeat the
identifying text it warns about.

What is flagged: any value of a field named for a person's name (``first_name``,
``last_name``, ``patient_name``, a ``name`` column of ``participants.tsv``...), a birth date
(``birthday``, ``date_of_birth``...) or a record / national-ID number (``his_id``, ``mrn``,
``ssn``...); the EDF+ patient field's code, birth date and name sub-fields; in a non-EDF+ patient
field, capitalised name pairs (``John Smith``, ``Smith, John``); in any other free text, e-mail
addresses, phone and national-ID-like numbers, and dates that are not a measurement date. Fields
about the data set's makers (authors, experimenter, institution, manufacturer) are skipped.

EDF+ writes ``X`` for an unknown sub-field: ``X`` (and blanks, ``n/a``, ``unknown``) is never
flagged. Short subject codes (``S001``, ``sub-01``: at most four letters and four digits) are
pseudonyms, not record numbers.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Iterator

__all__ = ["mask", "scan_header", "scan_name", "dates_in", "measurement_dates"]

_UNKNOWN = {"", "x", "n/a", "na", "none", "null", "unknown", "-", "anonymous", "anon", "nan"}
_NAME_KEYS = {"first_name", "last_name", "middle_name", "patient_name", "subject_name", "full_name", "surname",
              "given_name", "family_name", "participant_name", "firstname", "lastname", "patientname"}
_ID_KEYS = {"his_id", "hospital_id", "patient_id", "patient_code", "mrn", "medical_record_number",
            "record_number", "hospital_record_number", "case_number"}
_NATIONAL_KEYS = {"ssn", "national_id", "nhs_number", "id_number", "social_security_number", "id_card"}
_BIRTH_KEYS = {"birthday", "date_of_birth", "dob", "birth_date", "birthdate", "patient_birthdate"}
#: keys about the data set's makers, not its participants
_SKIP_KEYS = {"authors", "funding", "referencesandlinks", "howtoacknowledge", "datasetdoi", "license",
              "acknowledgements", "ethicsapprovals", "generatedby", "sourcedatasets", "experimenter",
              "investigator_technician_code", "institutionname", "institutionaldepartmentname",
              "manufacturer", "manufacturersmodelname", "name", "bidsversion", "datasettype", "institution",
              "institutionaddress", "lab"}
_DATE_KEY = re.compile(r"date|time|start|created|meas|acquisition", re.I)
_PSEUDONYM = re.compile(r"^(sub-)?[A-Za-z]{0,4}[-_]?\d{1,4}$")

_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                           "oct", "nov", "dec"))}
_DATE_RES = (
    (re.compile(r"\b(\d{1,2})-([A-Za-z]{3})-(\d{4})\b"), "dmy_mon"),
    (re.compile(r"\b(\d{4})-(\d{2})-(\d{2})"), "ymd"),
    (re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b"), "dmy"),
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z])")
_PHONE = re.compile(r"(?<![\w.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}[\s.-]\d{3,4}[\s.-]\d{3,4}"
                    r"(?![\w-])|(?<!\w)\+\d{10,14}(?!\w)")
_NATIONAL = re.compile(r"\b\d{3}-\d{2}-\d{4}\b|\b\d{17}[\dXx]\b")
_PERSON = re.compile(r"\b[A-Z][a-z]+(?:[ _^][A-Z][a-z]+)+\b|\b[A-Z][a-z]+,\s*[A-Z][a-z]+\b"
                     r"|\b[A-Z]{2,},\s*[A-Z]{2,}\b")


def mask(value: str) -> str:
    """Keep the first character of each run of letters or digits, star the rest."""
    return re.sub(r"[^\W_]+", lambda m: m.group(0)[0] + "*" * (len(m.group(0)) - 1), str(value))


def _unknown(v: str) -> bool:
    return str(v).strip().casefold() in _UNKNOWN


def dates_in(text: str) -> Iterator[tuple[date, str]]:
    """Every calendar date written in ``text`` (``12-AUG-2009``, ``2009-08-12``, ``12.08.2009``)."""
    for rx, kind in _DATE_RES:
        for m in rx.finditer(str(text)):
            try:
                if kind == "dmy_mon":
                    mon = _MONTHS.get(m.group(2).casefold())
                    if mon is None:
                        continue
                    d = date(int(m.group(3)), mon, int(m.group(1)))
                elif kind == "ymd":
                    d = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                else:
                    d = date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
            except ValueError:
                continue
            yield d, m.group(0)


def _leaf(key: str) -> str:
    return re.split(r"[./:]", key)[-1].strip().casefold()


def _flatten(key: str, value: str) -> Iterator[tuple[str, str]]:
    """A BIDS sidecar (JSON or TSV text) as key/value pairs; other values as they are."""
    text = str(value)
    if key.casefold().endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            stack = [(key, data)]
            while stack:
                k, d = stack.pop()
                for kk, vv in d.items():
                    if isinstance(vv, dict):
                        stack.append((f"{k}:{kk}", vv))
                    elif isinstance(vv, list):
                        yield f"{k}:{kk}", " ; ".join(str(x) for x in vv)
                    elif isinstance(vv, str):
                        yield f"{k}:{kk}", vv
            return
    if key.casefold().endswith(".tsv") and "\t" in text:
        lines = text.splitlines()
        head = lines[0].split("\t")
        for line in lines[1:]:
            for col, cell in zip(head, line.split("\t")):
                yield f"{key}:{col.strip()}", cell
        return
    yield key, text


def _edf_plus(field: str, value: str) -> list[tuple[str, str, str]] | None:
    """The EDF+ patient field's sub-fields (code, sex, birth date, name), or None if not EDF+."""
    parts = str(value).split()
    if len(parts) < 4 or parts[1].upper() not in ("M", "F", "X"):
        return None
    out = []
    if not _unknown(parts[0]) and not _PSEUDONYM.match(parts[0]):
        out.append((f"{field} (patient code)", "a hospital record number", mask(parts[0])))
    if not _unknown(parts[2]):
        out.append((f"{field} (birth date)", "a birth date", mask(parts[2])))
    if not _unknown(parts[3]):
        out.append((f"{field} (name)", "a personal name", mask(parts[3].replace("_", " "))))
    out.extend(_free_text(f"{field} (additional)", " ".join(parts[4:]), set(), person=True))
    return out


def _free_text(field: str, text: str, known_dates: set[date], *, person: bool) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for rx, what in ((_EMAIL, "an e-mail address"), (_NATIONAL, "a national-ID-like number"),
                     (_PHONE, "a phone number")):
        for m in rx.finditer(text):
            if what == "a phone number" and (any(m.group(0) in s for _, s in dates_in(text))
                                             or any(s in m.group(0) for _, s in dates_in(text))):
                continue
            if not any(mask(m.group(0)) == o[2] for o in out):
                out.append((field, what, mask(m.group(0))))
    for d, s in dates_in(text):
        if d not in known_dates:
            out.append((field, "a date that is not the measurement date (a birth date?)", mask(s)))
    if person:
        for m in _PERSON.finditer(text):
            out.append((field, "a personal name", mask(m.group(0).replace("_", " ").replace("^", " "))))
    return out


def scan_header(header_text: dict[str, str], known_dates: set[date]) -> list[tuple[str, str, str]]:
    """``(field, what, masked value)`` for every identifying item in a recording's header fields.

    ``known_dates`` are the recording's measurement dates (never flagged); dates in fields named
    like a recording time (``meas_date``, ``*start*``, ``*created*``) join them.
    """
    known = set(known_dates)
    pairs = [kv for k, v in header_text.items() for kv in _flatten(k, v)]
    for k, v in pairs:
        leaf = _leaf(k)
        if leaf not in _BIRTH_KEYS and _DATE_KEY.search(leaf):
            known.update(d for d, _ in dates_in(v))
        if k.casefold().endswith("recording") and str(v).startswith("Startdate"):
            known.update(d for d, _ in dates_in(v))
    out: list[tuple[str, str, str]] = []
    for k, v in pairs:
        leaf, val = _leaf(k), str(v).strip()
        if _unknown(val):
            continue
        if leaf in _NAME_KEYS or (leaf == "name" and re.search(r"subject|patient|participant", k, re.I)):
            out.append((k, "a personal name", mask(val)))
        elif leaf in _BIRTH_KEYS:
            out.append((k, "a birth date", mask(val)))
        elif leaf in _ID_KEYS:
            if not _PSEUDONYM.match(val):
                out.append((k, "a hospital record number", mask(val)))
        elif leaf in _NATIONAL_KEYS:
            out.append((k, "a national-ID-like number", mask(val)))
        elif leaf in _SKIP_KEYS or _DATE_KEY.search(leaf):
            continue
        elif leaf == "patient":
            found = _edf_plus(k, val)
            out.extend(found if found is not None else _free_text(k, val, known, person=True))
        elif leaf == "recording" and val.startswith("Startdate"):
            out.extend(_free_text(k, " ".join(val.split()[2:]), known, person=False))
        else:      # free text: a capitalised pair ("Healthy Volunteer") is too often not a name
            out.extend(_free_text(k, val, known, person=False))
    return out


def scan_name(name: str) -> list[tuple[str, str]]:
    """``(what, masked)`` for e-mail addresses, phone or national-ID-like numbers in a file name."""
    return [(what, mask(v)) for _, what, v in _free_text("file name", name, set(), person=False)
            if what != "a date that is not the measurement date (a birth date?)"]


def measurement_dates(*values: object) -> set[date]:
    """The calendar dates in the given values (``datetime``, ``date`` or text)."""
    out: set[date] = set()
    for v in values:
        if isinstance(v, datetime):
            out.add(v.date())
        elif isinstance(v, date):
            out.add(v)
        elif v:
            out.update(d for d, _ in dates_in(str(v)))
    return out
