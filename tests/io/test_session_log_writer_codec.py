"""The session recorder's compressed raw stream: int16 only, and a lossless round trip.

Apart from :mod:`test_session_log_writer_unit` because the codec's first use loads (or compiles)
its numba kernels, which takes seconds: too slow to run for every mutant of the writer.
"""

from __future__ import annotations

import numpy as np
import pytest

from cortexlink.core.errors import ValidationError
from cortexlink.core.types import Chunk
from cortexlink.io.session_log import SessionReader, SessionRecorder, verify_session

FS = 1000.0


@pytest.mark.req("SR-41", "SR-42")
def test_a_compressed_raw_stream_needs_int16_and_round_trips(tmp_path):
    rec = SessionRecorder(tmp_path / "s", catalogue=False, raw_codec="rice", raw_codec_resync_records=2)
    with pytest.raises(ValidationError, match="raw_codec='rice' stores int16 samples; the raw chunks are float32"):
        rec.write_raw(Chunk(np.zeros((2, 2), np.float32), FS, 0, 0, 0))
    rng = np.random.default_rng(1)
    chunks = [rng.integers(-300, 300, (20, 3)).astype(np.int16) for _ in range(5)]
    for i, c in enumerate(chunks):
        rec.write_raw(Chunk(c, FS, 20 * i, 0, i))
    m = rec.close()
    assert m["writer"]["raw_codec"] == "rice"
    r = SessionReader(tmp_path / "s")
    assert r.stream_info("raw")["codec"]["resync_records"] == 2
    np.testing.assert_array_equal(r.read_array("raw")[1], np.concatenate(chunks))
    assert verify_session(tmp_path / "s")["ok"]
