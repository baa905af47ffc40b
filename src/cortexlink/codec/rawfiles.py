"""Raw binary sample files with a JSON sidecar, for ``cortexlink compress`` / ``decompress``.

A *raw file* holds int16 samples, little-endian, interleaved (sample 0 of every channel, then
sample 1, …: samples x channels in C order) and nothing else, as SpikeGLX's ``.bin``, Open
Ephys' ``continuous.dat`` or a plain ``numpy.ndarray.tofile`` write. Its *sidecar* is a small
JSON file of the same name with the suffix ``.json`` (``rec.bin`` → ``rec.json``) describing it:

.. code-block:: json

    {"channels": 384, "rate_hz": 30000, "dtype": "int16"}

=============== =========================================================================
key             value
=============== =========================================================================
``channels``    channel count, an integer in 1..65535 (required)
``rate_hz``     sampling rate in Hz, a number > 0 (required; non-integer rates are kept)
``dtype``       ``"int16"`` (or numpy's spellings ``"<i2"``, ``"i2"``; required). Other
                sample types are refused: the codec codes int16 samples
``byte_order``  ``"little"`` (optional; the only one accepted)
=============== =========================================================================

Any other key (gain, channel names, a SpikeGLX-style ``meta`` block …) is allowed and kept:
``compress`` stores the sidecar's bytes verbatim in the ``.clz`` file and ``decompress`` writes
them back next to the raw file, so both files come back byte-identical. A raw file whose size is
not a whole number of samples x channels (a recording cut short mid-sample) is accepted: the
incomplete last bytes are kept verbatim too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from cortexlink.core.errors import ValidationError

__all__ = ["SIDECAR_SUFFIX", "sidecar_path", "parse_sidecar", "split_raw"]

SIDECAR_SUFFIX = ".json"
_DTYPES = ("int16", "<i2", "i2")


def sidecar_path(raw: Path) -> Path:
    """The sidecar of the raw file ``raw``: the same path with the suffix ``.json``."""
    return Path(raw).with_suffix(SIDECAR_SUFFIX)


def parse_sidecar(text: bytes, name: str = "sidecar") -> tuple[int, float]:
    """Check a sidecar's bytes; return ``(channels, rate_hz)``.

    Raises
    ------
    ValidationError
        Not a JSON object, or a key missing or out of range (named, with what is allowed).
    """
    try:
        info = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{name} is not a JSON file ({exc}); a raw file's sidecar is JSON such as "
                              '{"channels": 384, "rate_hz": 30000, "dtype": "int16"}') from None
    if not isinstance(info, dict):
        raise ValidationError(f"{name} must hold a JSON object with channels, rate_hz and dtype; got "
                              f"{type(info).__name__}")
    missing = [k for k in ("channels", "rate_hz", "dtype") if k not in info]
    if missing:
        raise ValidationError(f"{name} lacks {', '.join(missing)}; a raw file's sidecar gives channels, "
                              'rate_hz and dtype, e.g. {"channels": 384, "rate_hz": 30000, "dtype": "int16"}')
    nch, rate, dtype = info["channels"], info["rate_hz"], info["dtype"]
    if isinstance(nch, bool) or not isinstance(nch, int) or not 1 <= nch <= 65535:
        raise ValidationError(f"{name}: channels must be an integer in [1, 65535]; got {nch!r}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0 \
            or rate >= 2 ** 32:
        raise ValidationError(f"{name}: rate_hz must be a number > 0 (Hz); got {rate!r}")
    if dtype not in _DTYPES:
        raise ValidationError(f"{name}: dtype must be \"int16\" (little-endian 16-bit integers; the codec codes "
                              f"int16 samples only); got {dtype!r}")
    order = info.get("byte_order", "little")
    if order != "little":
        raise ValidationError(f"{name}: byte_order must be \"little\"; got {order!r}")
    return nch, float(rate)


def split_raw(raw: bytes, n_channels: int) -> tuple[np.ndarray, bytes]:
    """The raw file's whole samples (samples x channels int16) and its incomplete last bytes."""
    frame = 2 * n_channels
    n = len(raw) // frame
    samples = np.frombuffer(raw, "<i2", count=n * n_channels).reshape(n, n_channels).astype(np.int16, copy=False)
    return samples, raw[n * frame:]
