"""Audio input for the auditory encoder: WAV files (resampled) and spoken test sentences (espeak-ng).

Audio in cortexlink is mono float64, full scale ±1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal
from scipy.io import wavfile

from cortexlink.core.errors import ConfigError, ValidationError

__all__ = ["read_wav", "resample", "find_espeak", "speak", "ESPEAK_MISSING"]

#: Why a spoken test sentence cannot be made on this machine (for skip messages).
ESPEAK_MISSING = ("espeak-ng not found on PATH or in /usr/bin, /usr/local/bin "
                  "(Debian/Ubuntu: apt-get install espeak-ng)")


def resample(audio: Any, fs_in_hz: float, fs_out_hz: float) -> np.ndarray:
    """Resample mono audio with a polyphase filter (:func:`scipy.signal.resample_poly`).

    Raises
    ------
    ConfigError
        For a non-positive rate.
    """
    if not (fs_in_hz > 0 and fs_out_hz > 0):
        raise ConfigError(f"sampling rates must be > 0; got fs_in_hz={fs_in_hz!r}, fs_out_hz={fs_out_hz!r}")
    x = np.asarray(audio, float)
    if fs_in_hz == fs_out_hz:
        return x.copy()
    ratio = Fraction(fs_out_hz / fs_in_hz).limit_denominator(10_000)
    out: np.ndarray = signal.resample_poly(x, ratio.numerator, ratio.denominator)
    return out


def read_wav(path: str | os.PathLike[str], fs_hz: float | None = None) -> tuple[np.ndarray, float]:
    """Read a WAV file as mono float64 (full scale ±1), resampled to ``fs_hz`` if given.

    Integer PCM is scaled by its full scale (int16: 32768), unsigned 8-bit is centred, several
    channels are averaged.

    Returns
    -------
    audio : ndarray, shape (n_samples,)
    fs_hz : float
        The rate of ``audio`` (``fs_hz`` if given, else the file's).

    Raises
    ------
    ValidationError
        If the file cannot be read as WAV.
    """
    try:
        fs_file, data = wavfile.read(os.fspath(path))
    except (ValueError, OSError) as exc:
        raise ValidationError(f"cannot read WAV file {os.fspath(path)!r}: {exc}") from None
    if data.dtype == np.uint8:
        x = (data.astype(float) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(float) / float(-np.iinfo(data.dtype).min)
    else:
        x = data.astype(float)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if fs_hz is None:
        return x, float(fs_file)
    return resample(x, float(fs_file), float(fs_hz)), float(fs_hz)


def find_espeak() -> str | None:
    """Path of the ``espeak-ng`` executable, or None."""
    exe = shutil.which("espeak-ng")
    if exe:
        return exe
    for d in ("/usr/bin", "/usr/local/bin"):
        p = Path(d) / "espeak-ng"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def speak(text: str, fs_hz: float = 16000.0, *, voice: str = "en-us", words_per_min: int = 160,
          peak: float = 0.5, timeout_s: float = 30.0) -> np.ndarray:
    """A sentence spoken by espeak-ng as mono float64 at ``fs_hz``, peak-normalised to ``peak``.

    Deterministic for a given espeak-ng version (formant synthesis, no randomness).

    Raises
    ------
    ConfigError
        If espeak-ng is not installed (see :data:`ESPEAK_MISSING`) or the text is empty.
    ValidationError
        If espeak-ng fails.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"text must be a non-empty string; got {text!r}")
    exe = find_espeak()
    if exe is None:
        raise ConfigError(ESPEAK_MISSING)
    with tempfile.TemporaryDirectory(prefix="cortexlink-espeak-") as tmp:
        out = Path(tmp) / "speech.wav"
        proc = subprocess.run([exe, "-v", voice, "-s", str(int(words_per_min)), "-w", str(out), text],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
        if proc.returncode != 0 or not out.is_file():
            raise ValidationError(f"espeak-ng failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
        x, _ = read_wav(out, fs_hz)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (peak / top) if top > 0 else x
