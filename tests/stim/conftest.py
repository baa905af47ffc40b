"""Fixtures for the stimulation tests: spoken test audio made with espeak-ng."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cortexlink.stim import audio as _audio


@pytest.fixture(scope="session")
def espeak_executable() -> str:
    """Path of espeak-ng; skips the test without one, fails it under CI=true."""
    exe = _audio.find_espeak()
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{_audio.ESPEAK_MISSING}; CI=true requires it", pytrace=False)
        pytest.skip(_audio.ESPEAK_MISSING)
    return exe


@pytest.fixture(scope="session")
def sentence_16k(espeak_executable: str) -> np.ndarray:
    """A Harvard sentence spoken by espeak-ng, mono float at 16 kHz, peak 0.5 (about 2.7 s)."""
    return _audio.speak("The birch canoe slid on the smooth planks.", 16000.0)
