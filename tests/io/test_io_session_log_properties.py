"""Property-based tests of the session log reader and recover (hypothesis).

On a small recorded session, arbitrary truncations, byte flips and appended garbage in any stream
file (header included) must: make the reader raise nothing but :class:`CorruptSessionError`; let
``recover`` keep every record whose bytes the damage did not touch, in order; and leave a folder
that ``verify_session`` passes — recover and verify agree. ``CORTEXLINK_PROPERTY_EXAMPLES`` sets
the number of examples (60 by default).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.io.session_log import (
    CorruptSessionError, SessionReader, SessionRecorder, inspect_header, recover, scan_stream, verify_session,
)

FS = 30000.0
STREAMS = ("raw", "cursor", "events")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    s = tmp_path_factory.mktemp("prop") / "s"
    rec = SessionRecorder(s, channel_map=ChannelMap.grid(3), fs_hz=FS, catalogue=False, participant_id="P-2")
    rng = np.random.default_rng(1)
    for i in range(12):
        rec.write_raw(Chunk(rng.integers(-500, 500, (10, 3)).astype(np.int16), FS, i * 10, 0, i))
        rec.write_row("cursor", i * 10 + 10, {"x": i / 10, "y": -i / 10})
        if i % 3 == 0:
            rec.event("tick", sample=i * 10, n=i)
    rec.close()
    return s


def _records(p: Path) -> list[tuple[int, int, int, bytes]]:
    """(offset, end, seq, content) of every record of an intact stream file."""
    out = []
    for kind, r in scan_stream(p):
        assert kind == "record"
        data = r.data.tobytes() if isinstance(r.data, np.ndarray) else repr(sorted(r.data.items())).encode()
        out.append((r.offset, 0, r.seq, data))
    ends = [o for o, *_ in out[1:]] + [p.stat().st_size]
    return [(o, e, seq, d) for (o, _e, seq, d), e in zip(out, ends)]


def _content(folder: Path, name: str) -> list[tuple[int, bytes]]:
    out = []
    for r in SessionReader(folder).records(name):
        data = r.data.tobytes() if isinstance(r.data, np.ndarray) else repr(sorted(r.data.items())).encode()
        out.append((r.seq, data))
    return out


damage = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.sampled_from(STREAMS), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
        st.tuples(st.just("truncate"), st.sampled_from(STREAMS), st.floats(0, 1), st.just(0)),
        st.tuples(st.just("append"), st.sampled_from(STREAMS), st.binary(min_size=1, max_size=300), st.just(0)),
    ),
    min_size=1, max_size=4)


def _apply(folder: Path, ops: list) -> dict[str, set[int]]:
    """Damage the files; return, per stream, the offsets of the original records the damage touched."""
    touched: dict[str, set[int]] = {n: set() for n in STREAMS}
    recs = {n: _records(folder / "streams" / f"{n}.clog") for n in STREAMS}
    for op, name, where, mask in ops:
        p = folder / "streams" / f"{name}.clog"
        b = bytearray(p.read_bytes())
        if op == "append":
            b += where
        elif op == "truncate":
            cut = int(where * len(b))
            del b[cut:]
            touched[name] |= {o for o, e, _s, _d in recs[name] if e > cut}
        elif b:
            i = int(where * len(b))
            b[i] ^= mask
            touched[name] |= {o for o, e, _s, _d in recs[name] if o <= i < e}
        p.write_bytes(bytes(b))
    return touched


@pytest.mark.req("SR-40", "SR-41")
@settings(max_examples=int(os.environ.get("CORTEXLINK_PROPERTY_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=damage)
def test_damage_never_loses_an_intact_record_and_recover_and_verify_agree(pristine, ops):
    with tempfile.TemporaryDirectory() as tmp:
        s = Path(tmp) / "s"
        shutil.copytree(pristine, s)
        want = {n: _records(s / "streams" / f"{n}.clog") for n in STREAMS}
        orig = {n: (s / "streams" / f"{n}.clog").read_bytes() for n in STREAMS}
        touched = _apply(s, ops)
        changed = any((s / "streams" / f"{n}.clog").read_bytes() != orig[n] for n in STREAMS)
        for salvage in (False, True):                   # reading: a documented error or records, never a crash
            try:
                r = SessionReader(s, salvage=salvage)
                for n in STREAMS:
                    if r.stream_info(n)["kind"] == "array":
                        r.read_array(n)
                    else:
                        list(r.records(n))
            except CorruptSessionError:
                pass
        assert verify_session(s)["ok"] is not changed   # every change is found
        rep = recover(s)                                # never raises for damage to stream files
        assert rep["state"] in ("recovered", "closed")
        after = verify_session(s)
        # recover and verify agree: all is sound, except a file so damaged that it holds no record and
        # is no stream file any more (moved to corrupt/), which verify keeps naming as missing
        gone = {n for n, r in rep["streams"].items() if "moved_aside" in r}
        assert all(any(f"{n}.clog: missing (moved to corrupt/" in x for n in gone) for x in after["problems"])
        assert after["ok"] is not gone, (ops, rep["actions"], after["problems"])
        assert len(after["problems"]) == len(gone)
        for n in STREAMS:
            if n in gone:
                assert touched[n] == {o for o, *_ in want[n]}      # it held no intact record
                continue
            got = _content(s, n)
            intact = [(seq, d) for o, _e, seq, d in want[n] if o not in touched[n]]
            assert [x for x in got if x in set(intact)] == intact, (n, ops, rep["actions"])
            assert set(got) <= {(seq, d) for _o, _e, seq, d in want[n]}       # nothing invented
            assert inspect_header(s / "streams" / f"{n}.clog").problem is None
