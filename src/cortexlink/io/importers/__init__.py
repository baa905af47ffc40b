"""Lab-format importers: open a recording file or folder and stream it as :class:`Chunk` objects.

Usage
-----
>>> from cortexlink.io.importers import open_recording
>>> with open_recording("session/run_g0_t0.imec0.ap.bin") as rec:      # format detected
...     print(rec.format, rec.fs_hz, rec.n_samples, rec.n_channels, rec.dtype)
...     x = rec.read(0, 30000)                     # (samples, channels), raw int16 counts
...     uv = rec.channel_map.to_uv(x)              # µV through the file's own gains
...     for chunk in rec.iter_chunks(30):          # Chunk.start_sample = index in the file
...         ...                                    # (never loads the whole file)
>>> open_recording("n1_broadband/", "wav")                         # folder of mono WAVs
>>> open_recording("locust_trial_01.raw")                          # + info.json sidecar
>>> open_recording("sub-01.nwb", stream="ElectricalSeriesAP")      # pick an ElectricalSeries

Formats (``FORMATS``) and what each reads
-----------------------------------------
``blackrock``
    NSx files (``.ns1``-``.ns6``). NEURALCD/BRSMPGRP (spec 2.2, 2.3, 3.0) through
    ``neo.rawio.BlackrockRawIO``; every data packet is a segment (``segment=``). NEURALSG
    (spec 2.1) is mapped directly (neo drops its last sample and cannot scale it without the
    ``.nev``): its gain comes from ``gain_uv=``, else 1 (counts) with a warning.
    ``stream``: ``"ns5"``, ``"nsx5"`` or ``"5"``; default the highest rate present.
``intan``
    ``.rhd``/``.rhs`` through ``neo.rawio.IntanRawIO``. ``stream``: a neo stream name such as
    ``"RHD2000 amplifier channel"`` (the default). Amplifier data are uint16 offset binary
    (0.195 µV per count, offset -6389.76 µV).
``openephys``
    Binary format (``structure.oebin`` + ``continuous.dat``) through
    ``neo.rawio.OpenEphysBinaryRawIO``; legacy ``.continuous`` folders through
    ``neo.rawio.OpenEphysRawIO``. ``stream``: a neo stream name (folder name of the
    continuous stream, prefixed ``"Record Node N#"``); ``block=`` experiment, ``segment=``
    recording.
``spikeglx``
    ``.bin`` + ``.meta`` through ``neo.rawio.SpikeGLXRawIO``. ``stream``: ``"imec0.ap"``
    (default: the first AP stream), ``"imec0.lf"``, ``"nidq"``; the SY0 sync channel is left
    out of the neural streams (as neo does). Positions from the probe (probeinterface).
``nwb``
    An ``ElectricalSeries`` read lazily with pynwb/h5py; ``stream`` names it (default: the only
    one, or the only one in ``acquisition``). Gains from ``conversion``,
    ``channel_conversion``, ``offset`` and ``unit``; positions from ``rel_x``/``rel_y``.
``wav``
    One WAV file (PCM 8/16/32-bit or float; channels interleaved), or a folder of mono WAV
    files, one per electrode (channel ids = file stems, sorted). Files of different lengths are
    cut to the shortest (``metadata["length_policy"]``); different rates or sample types are
    refused. WAV carries no physical scale: ``gain_uv=`` (default 1, counts).
``raw``
    Interleaved samples (samples x channels) with a JSON sidecar found as ``<file>.json``,
    ``<stem>.json`` or ``info.json`` in the same folder (or passed as ``sidecar=``, a path or a
    dict). Minimal sidecar schema::

        {"dtype": "int16",        # numpy dtype name ("int16", "<i2", "float32", ...)
         "n_channels": 4,         # or "shape": [-1, 4] (samples x channels)
         "fs_hz": 15000.0,        # or "sample_rate" / "sampling_rate"
         "gain_uv": 0.195,        # optional: µV per count, scalar or one per channel (default 1)
         "offset_uv": 0.0,        # optional: µV, scalar or per channel (default 0)
         "header_bytes": 0,       # optional: bytes to skip at the start of the file
         "channel_ids": [...], "positions_um": [[x, y], ...]}   # optional

    ``"gain"``/``"offset"`` with ``"units"`` (``"uV"``, ``"mV"``, ``"V"``, ``"nV"``) may replace
    ``gain_uv``/``offset_uv``. A folder with several data files needs ``stream=`` (a file name).

Bad input
---------
Every problem is a :class:`~cortexlink.core.errors.ValidationError` whose message names the
file and what is wrong ("X must be ...; got ...").

* Foreign or corrupt files (a PNG renamed ``.ns5``, a text file, a broken header): refused;
  the message says what the file looks like instead (PNG, HDF5, text, ...).
* Metadata that disagrees with the data (channel count, rate, units, declared sizes, dtype):
  refused, naming the field and both values. Refused too: rates <= 0, unknown units, a raw
  file whose size is not a multiple of ``n_channels x itemsize`` (unless
  ``allow_truncated=True``), NSx ``bytes_in_headers`` that does not match ``channel_count``,
  an Open Ephys ``num_channels`` that does not match its channel list, a SpikeGLX ``.bin``
  longer than ``fileSizeBytes``, an NWB series whose electrodes or ``channel_conversion``
  do not match its data columns.
* Truncated files (a recording cut off mid-record), per format:

  - ``spikeglx``, ``openephys`` (binary), ``wav``: every complete sample is salvaged
    (``.bin`` shorter than ``fileSizeBytes`` or ending mid-sample; ``continuous.dat`` ending
    mid-sample or shorter than its ``sample_numbers.npy``; a WAV ``data`` chunk cut short or
    never finalised). The samples are mapped directly, since neo refuses such files.
  - ``intan`` (header-attached): every complete data block is salvaged (the amplifier, aux,
    supply and ADC streams; digital and stim streams are refused).
  - ``blackrock``: every complete sample of every data packet up to the damage is salvaged
    (a packet cut short, a packet header declaring 0 samples because the file was never
    closed, a corrupt packet header); packets before the damage stay readable as their own
    segments. NEURALSG files cut mid-sample keep their complete samples. Damaged PTP files
    (spec 3.0 with nanosecond timestamps, one packet per sample) are refused.
  - ``raw``: no declared length, so a size that is not a whole number of samples is refused
    unless ``allow_truncated=True``, which salvages the complete samples.
  - ``nwb``: HDF5 keeps its metadata throughout the file, so a truncated file is refused.
  - legacy Open Ephys ``.continuous``: neo keeps the complete 1024-sample records.

  A salvaged recording logs a warning and sets ``metadata["truncated"] = True``,
  ``metadata["n_samples_salvaged"]``, ``metadata["n_samples_expected"]`` (None when the file
  does not say) and ``metadata["truncation"]`` (what was found). Intact files have
  ``metadata["truncated"] = False``.

Intact files of the neo-backed formats are read through neo. Neo refuses a damaged file (and,
for SpikeGLX and Open Ephys, the whole folder around it), so the pre-flight checks here, which
read the vendors' documented headers, decide: a damaged file is memory-mapped directly, with
the same channel names, gains and stream/segment numbering neo would give
(``metadata["reader"]`` says which path was taken; ``metadata["damaged_neighbours"]`` lists
damaged files next to an intact selected one).

Channel maps: ``gain_uv``/``offset_uv`` always convert to µV when the file has a scale;
WAV, raw without a gain and NSx 2.1 have none, so their gain is 1 (counts) and
``metadata["scaled"]`` is False. Positions come from the probe (SpikeGLX imec AP streams,
through probeinterface) or the electrode table (NWB ``rel_x``/``rel_y``), else a 50 µm grid;
``metadata["positions_source"]`` says which.

Warnings raised by neo/pynwb while a file is opened are not lost and not printed: they are
logged (logger ``cortexlink.io.importers``) and kept in ``metadata["reader_warnings"]``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.io.importers._base import Recording, _describe_content, _head, _wrap_parse_errors, logger
from cortexlink.io.importers.blackrock import _open_blackrock
from cortexlink.io.importers.intan import _open_intan
from cortexlink.io.importers.nwb import _open_nwb
from cortexlink.io.importers.openephys import _open_openephys
from cortexlink.io.importers.raw import _RAW_SUFFIXES, _find_sidecar, _open_raw
from cortexlink.io.importers.spikeglx import _open_spikeglx
from cortexlink.io.importers.wav import _open_wav


FORMATS = ("blackrock", "intan", "openephys", "spikeglx", "nwb", "wav", "raw")

__all__ = ["FORMATS", "Recording", "open_recording", "detect_format"]


_SUFFIX_FORMAT = {**{f".ns{k}": "blackrock" for k in range(1, 7)}, ".nev": "blackrock", ".rhd": "intan",
                  ".rhs": "intan", ".oebin": "openephys", ".continuous": "openephys", ".nwb": "nwb", ".wav": "wav",
                  ".meta": "spikeglx"}


def detect_format(path: str | Path) -> str:
    """The format of ``path`` from its suffix or, for a folder, the files in it.

    Raises
    ------
    ValidationError
        When no format matches; the message names the path and the formats tried.
    """
    p = Path(path)
    if not p.exists():
        raise ValidationError(f"{p}: path must exist; got a missing path")
    if p.is_file():
        suf = p.suffix.lower()
        if suf in _SUFFIX_FORMAT:
            return _SUFFIX_FORMAT[suf]
        if p.name == "continuous.dat" and len(p.parents) > 2 and (p.parents[2] / "structure.oebin").is_file():
            return "openephys"
        if suf == ".bin" and p.with_suffix(".meta").is_file():
            return "spikeglx"
        if _find_sidecar(p) is not None:
            return "raw"
        what = _describe_content(_head(p))
    else:
        children = [c for c in p.iterdir()]
        sufs = {c.suffix.lower() for c in children if c.is_file()}
        if (p / "structure.oebin").is_file() or any(p.rglob("structure.oebin")):
            return "openephys"
        if ".continuous" in sufs:
            return "openephys"
        if any(m.with_suffix(".bin").is_file() for m in p.rglob("*.meta")):
            return "spikeglx"
        for suf in (".ns6", ".ns5", ".ns4", ".ns3", ".ns2", ".ns1", ".rhd", ".rhs", ".nwb", ".wav"):
            if suf in sufs:
                return _SUFFIX_FORMAT[suf]
        if any(c.suffix.lower() in _RAW_SUFFIXES and _find_sidecar(c) for c in children if c.is_file()):
            return "raw"
        what = f"a folder of {len(children)} entries"
    raise ValidationError(f"{p}: could not detect the format ({what}); tried {', '.join(FORMATS)} by file suffix "
                          "and folder contents; pass format= explicitly")


_OPENERS: dict[str, Callable[..., Recording]] = {
    "blackrock": _open_blackrock, "intan": _open_intan, "openephys": _open_openephys, "spikeglx": _open_spikeglx,
    "nwb": _open_nwb, "wav": _open_wav, "raw": _open_raw,
}


def open_recording(path: str | Path, format: str | None = None, *, stream: str | None = None,
                   **kw: Any) -> Recording:
    """Open a recording file or folder in one of :data:`FORMATS`.

    Parameters
    ----------
    path : str or Path
        File or folder (see the module docstring for what each format accepts).
    format : str, optional
        One of :data:`FORMATS`; detected from the path when omitted.
    stream : str, optional
        Which signal stream: a neo stream name (spikeglx, openephys, intan), ``"ns5"``
        (blackrock), an ElectricalSeries name (nwb), a data file name (raw folder).
    **kw
        Format options: ``segment`` (blackrock, openephys, spikeglx), ``block`` (openephys),
        ``gain_uv`` (all; overrides or supplies the scale), ``sidecar`` and
        ``allow_truncated`` (raw), ``ignore_integrity_checks`` (intan).

    Returns
    -------
    Recording
        Use as a context manager, or call ``close()``.

    Raises
    ------
    ValidationError
        Unknown, foreign, corrupt or self-contradicting input; the message names the file and
        what is wrong. Truncated files are salvaged where the format allows (module docstring).
    ConfigError
        An unknown ``format`` name or a bad option value.
    """
    p = Path(path).expanduser()
    if format is None:
        fmt = detect_format(p)
    else:
        fmt = str(format).lower()
        if fmt not in FORMATS:
            raise ConfigError(f"format must be one of {FORMATS}; got {format!r}")
        if not p.exists():
            raise ValidationError(f"{p}: path must exist; got a missing path")
    opener = _OPENERS[fmt]
    try:
        inspect.signature(opener).bind(p, stream=stream, **kw)
    except TypeError:
        opts = [n for n in inspect.signature(opener).parameters if n not in ("path", "stream")]
        raise ConfigError(f"options for format {fmt!r} must be among {opts}; got {sorted(kw)}") from None
    with _wrap_parse_errors(p, fmt):
        rec = opener(p, stream=stream, **kw)
    logger.debug("opened %r", rec)
    return rec

