"""``cortexlink compress`` / ``decompress`` beyond WAV: raw int16 files with a JSON sidecar, and
session folders (every file byte-identical, the raw stream's samples coded by the codec); and
their refusals."""

import io
import json
import os
import struct
import zlib

import numpy as np
import pytest

from cortexlink.codec import _fileio, folders
from cortexlink.codec.files import compress_path, decompress_path
from cortexlink.core.errors import ConfigError, ValidationError
from cortexlink.core.types import ChannelMap, Chunk
from cortexlink.io.session_log import SessionRecorder, verify

FS = 30000.0


def _raw(tmp_path, data, sidecar=None, name="rec.bin", extra=b""):
    data = np.asarray(data, np.int16)
    (tmp_path / name).write_bytes(data.astype("<i2").tobytes() + extra)
    side = sidecar if sidecar is not None else {"channels": data.shape[1], "rate_hz": FS, "dtype": "int16"}
    text = side if isinstance(side, bytes) else json.dumps(side, indent=1).encode()
    (tmp_path / name).with_suffix(".json").write_bytes(text)
    return tmp_path / name


def _walk_bytes(root):
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------- raw + sidecar

@pytest.mark.req("SR-42")
@pytest.mark.parametrize("nch,extra", [(1, b""), (5, b""), (3, b"\x01\x02\x03")])
def test_raw_file_and_sidecar_round_trip_byte_identical(tmp_path, nch, extra):
    rng = np.random.default_rng(nch)
    x = (np.cumsum(rng.integers(-40, 41, (4000, nch)), axis=0) % 60000 - 30000).astype(np.int16)
    x[:3] = [[-32768] * nch, [32767] * nch, [0] * nch]
    side = {"channels": nch, "rate_hz": 19531.25, "dtype": "<i2", "probe": "np2", "gain_uv": [0.195] * nch}
    src = _raw(tmp_path, x, side, extra=extra)
    s = compress_path(src, tmp_path / "rec.clz")
    assert s["files"] == 1 and s["original_bytes"] == src.stat().st_size + src.with_suffix(".json").stat().st_size
    out = tmp_path / "back" / "copy.bin"
    decompress_path(tmp_path / "rec.clz", out)
    assert out.read_bytes() == src.read_bytes()
    assert out.with_suffix(".json").read_bytes() == src.with_suffix(".json").read_bytes()


def test_raw_file_of_sparse_values_compresses(tmp_path):
    walk = np.cumsum(np.random.default_rng(2).integers(-3, 4, (20000, 2)), axis=0) % 1024 - 512
    src = _raw(tmp_path, (walk * 64 + 33).astype(np.int16))
    assert compress_path(src, tmp_path / "r.clz")["ratio"] > 3


def test_raw_refusals(tmp_path):
    x = np.zeros((10, 2), np.int16)
    (tmp_path / "lonely.bin").write_bytes(x.tobytes())
    with pytest.raises(ValidationError, match=r"not a WAV file, and has no sidecar .*lonely\.json"):
        compress_path(tmp_path / "lonely.bin", tmp_path / "o.clz")
    for side, needle in [(b"{not json", "is not a JSON file"), ({"channels": 2, "rate_hz": FS}, "lacks dtype"),
                         ({"channels": 0, "rate_hz": FS, "dtype": "int16"}, "channels must be an integer"),
                         ({"channels": 2, "rate_hz": -1, "dtype": "int16"}, "rate_hz must be a number > 0"),
                         ({"channels": 2, "rate_hz": FS, "dtype": "float32"}, 'dtype must be "int16"'),
                         ({"channels": 2, "rate_hz": FS, "dtype": "int16", "byte_order": "big"}, "byte_order"),
                         ([2, FS], "must hold a JSON object")]:
        src = _raw(tmp_path, x, side)
        with pytest.raises(ValidationError, match=needle):
            compress_path(src, tmp_path / "o.clz")
        assert not (tmp_path / "o.clz").exists()
    src = _raw(tmp_path, x)
    with pytest.raises(ValidationError, match="is a .json file"):
        compress_path(src.with_suffix(".json"), tmp_path / "o.clz")
    compress_path(src, tmp_path / "o.clz")
    with pytest.raises(ConfigError, match="not ending in .json"):
        decompress_path(tmp_path / "o.clz", tmp_path / "out.json")
    (tmp_path / "taken.json").write_text("{}")
    with pytest.raises(ConfigError, match="taken.json exists"):
        decompress_path(tmp_path / "o.clz", tmp_path / "taken.bin")
    assert not (tmp_path / "taken.bin").exists()


def test_raw_decompress_overwrites_only_a_raw_file_with_its_sidecar(tmp_path):
    x = np.arange(40, dtype=np.int16).reshape(20, 2)
    src = _raw(tmp_path, x)
    compress_path(src, tmp_path / "o.clz")
    decompress_path(tmp_path / "o.clz", tmp_path / "a.bin")
    decompress_path(tmp_path / "o.clz", tmp_path / "a.bin", overwrite=True)     # ours: replaced
    assert (tmp_path / "a.bin").read_bytes() == src.read_bytes()
    (tmp_path / "b.bin").write_bytes(b"someone else's")
    with pytest.raises(ConfigError, match="is not a raw file with a sidecar"):
        decompress_path(tmp_path / "o.clz", tmp_path / "b.bin", overwrite=True)
    assert (tmp_path / "b.bin").read_bytes() == b"someone else's"


# ----------------------------------------------------------------------------- session folders

def _session(path, n_ch=6, n_chunks=40, raw_codec="none"):
    cm = ChannelMap.grid(n_ch)
    rec = SessionRecorder(path, channel_map=cm, fs_hz=FS, config={"x": 1}, seeds={"seed": 3}, catalogue=False,
                          raw_codec=raw_codec)
    rng = np.random.default_rng(0)
    walk = np.zeros(n_ch)
    for i in range(n_chunks):
        walk = walk + rng.normal(0, 30, (30, n_ch)).cumsum(axis=0)
        rec.write_raw(Chunk(np.clip(walk, -32768, 32767).astype(np.int16), FS, i * 30, 0, i))
        rec.write_row("cursor", (i + 1) * 30, {"x": i / 10, "y": 0.5})
        walk = walk[-1]
    rec.event("block_start", sample=0, name="b1")
    rec.close()
    return path


@pytest.mark.req("SR-42")
def test_session_folder_round_trip_every_file_byte_identical(tmp_path):
    src = _session(tmp_path / "s")
    (src / "decoders").mkdir(exist_ok=True)
    (src / "notes").mkdir()                       # an empty folder comes back too
    before = _walk_bytes(src)
    s = compress_path(src, tmp_path / "s.clzs")
    assert s["coded_streams"] == ["streams/raw.clog"]
    assert s["original_bytes"] == sum(len(b) for b in before.values() if b is not None)
    raw_bytes = (src / "streams" / "raw.clog").stat().st_size
    assert s["compressed_bytes"] < raw_bytes            # the samples were coded, not stored
    d = decompress_path(tmp_path / "s.clzs", tmp_path / "back")
    assert d["files"] == s["files"]
    assert _walk_bytes(tmp_path / "back") == before
    assert verify(tmp_path / "back")["ok"]


def test_session_with_torn_raw_tail_and_codec_coded_raw_stream(tmp_path):
    src = _session(tmp_path / "s")
    raw = src / "streams" / "raw.clog"
    with open(raw, "ab") as f:                        # a torn last record, as after a crash
        f.write(b"REC0" + struct.pack("<I", 360) + b"\x07" * 50)
    buf = bytearray(raw.read_bytes())
    buf[400] ^= 0xFF                                   # and a damaged record in the middle
    raw.write_bytes(bytes(buf))
    before = _walk_bytes(src)
    compress_path(src, tmp_path / "s.clzs")
    decompress_path(tmp_path / "s.clzs", tmp_path / "back")
    assert _walk_bytes(tmp_path / "back") == before
    coded = _session(tmp_path / "c", raw_codec="rice")     # stream format 3: stored, still identical
    before = _walk_bytes(coded)
    s = compress_path(coded, tmp_path / "c.clzs")
    assert s["coded_streams"] == []
    decompress_path(tmp_path / "c.clzs", tmp_path / "cback")
    assert _walk_bytes(tmp_path / "cback") == before


def test_int16_stream_records_found_and_stop_at_damage(tmp_path):
    src = _session(tmp_path / "s", n_ch=3, n_chunks=5)
    buf = memoryview((src / "streams" / "raw.clog").read_bytes())
    nch, hlen = folders._int16_stream_info(buf)
    offsets = [off for off, _ in folders._records(buf, nch, hlen)]
    assert nch == 3 and len(offsets) == 5 and offsets[0] == hlen
    assert folders._int16_stream_info(memoryview((src / "manifest.json").read_bytes())) is None
    assert folders._int16_stream_info(memoryview((src / "streams" / "cursor.clog").read_bytes())) is None
    cut = memoryview(bytes(buf[:offsets[3]]) + b"REC1" + bytes(buf[offsets[3] + 4:]))
    assert [off for off, _ in folders._records(cut, nch, hlen)] == offsets[:3]


def test_session_archive_streams_in_frames_and_large_files(tmp_path, monkeypatch):
    """Small blocks and frames: a raw stream coded in many frames (of two records each), every
    file read and written in many blocks, a file past the in-memory size LZMA'd as it streams."""
    monkeypatch.setattr(folders, "_BLOCK", 1000)
    monkeypatch.setattr(_fileio, "BLOCK", 700)
    monkeypatch.setattr(folders, "_SMALL", 3000)
    monkeypatch.setattr(folders, "_MAX_FRAME_VALUES", 6 * 47)
    src = _session(tmp_path / "s", n_ch=6, n_chunks=30)
    (src / "notes.txt").write_bytes(b"note " * 2000)
    before = _walk_bytes(src)
    compress_path(src, tmp_path / "s.clzs")
    decompress_path(tmp_path / "s.clzs", tmp_path / "back")
    assert _walk_bytes(tmp_path / "back") == before


def test_session_archive_refusals(tmp_path):
    src = _session(tmp_path / "s", n_chunks=5)
    with pytest.raises(ConfigError, match="session folder"):
        compress_path(src, src / "inside.clzs")
    compress_path(src, tmp_path / "a.clzs")
    with pytest.raises(ConfigError, match="exists"):
        compress_path(src, tmp_path / "a.clzs")
    compress_path(src, tmp_path / "a.clzs", overwrite=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        decompress_path(tmp_path / "a.clzs", tmp_path / "full")
    good = (tmp_path / "a.clzs").read_bytes()
    for i, pos in enumerate([5, 40, len(good) // 2, len(good) - 3]):
        bad = bytearray(good)
        bad[pos] ^= 0x10
        (tmp_path / f"bad{i}.clzs").write_bytes(bytes(bad))
        with pytest.raises(ValidationError, match="CRC-32 mismatch|not supported|damaged|does not restore"):
            decompress_path(tmp_path / f"bad{i}.clzs", tmp_path / f"out{i}")
        assert not (tmp_path / f"out{i}").exists()
    (tmp_path / "short.clzs").write_bytes(good[:len(good) - 100])
    with pytest.raises(ValidationError, match="truncated"):
        decompress_path(tmp_path / "short.clzs", tmp_path / "out")
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_session_archive_refuses_a_path_that_leaves_the_folder_and_symlinks(tmp_path):
    f = io.BytesIO()
    top = folders._TOP.pack(folders.ARCHIVE_MAGIC, 1, b"\0\0\0", 1)
    f.write(top + struct.pack("<I", zlib.crc32(top)))
    folders._write_entry(f, folders.KIND_STORED, "../escape", 1, zlib.crc32(b"x"), lambda sink: sink.write(b"x"))
    (tmp_path / "evil.clzs").write_bytes(f.getvalue())
    with pytest.raises(ValidationError, match="would leave the output folder"):
        decompress_path(tmp_path / "evil.clzs", tmp_path / "out")
    assert not (tmp_path / "escape").exists()
    src = _session(tmp_path / "s", n_chunks=2)
    os.symlink(src / "manifest.json", src / "link.json")
    with pytest.raises(ValidationError, match="symbolic link"):
        compress_path(src, tmp_path / "l.clzs")


def test_cli_session_folder_and_raw_round_trip_and_refusal(tmp_path, capsys):
    from cortexlink.cli.main import main

    src = _session(tmp_path / "s", n_chunks=10)
    before = _walk_bytes(src)
    assert main(["compress", str(src), str(tmp_path / "s.clzs"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "compress" and summary["coded_streams"] == ["streams/raw.clog"]
    assert main(["decompress", str(tmp_path / "s.clzs"), str(tmp_path / "back")]) == 0
    assert "cortexlink decompress:" in capsys.readouterr().out
    assert _walk_bytes(tmp_path / "back") == before
    (tmp_path / "lonely.bin").write_bytes(b"\0" * 8)
    assert main(["compress", str(tmp_path / "lonely.bin"), str(tmp_path / "l.clz")]) == 2
    err = capsys.readouterr().err
    assert "has no sidecar" in err and "Traceback" not in err


def test_wav_whose_header_is_longer_than_the_parsed_prefix(tmp_path, monkeypatch):
    """The WAV header is parsed from the file's first bytes; a longer header (a big chunk before
    ``data``) falls back to the whole file, and the file still comes back byte for byte."""
    from cortexlink.codec import files

    x = (np.arange(6000, dtype=np.int16) * 7).reshape(3000, 2)
    body = x.astype("<i2").tobytes()
    junk = b"JUNK" + struct.pack("<I", 400) + b"\x05" * 400
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, 19531, 19531 * 4, 4, 16)
    riff = b"WAVE" + fmt + junk + b"data" + struct.pack("<I", len(body)) + body
    (tmp_path / "a.wav").write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    monkeypatch.setattr(files, "_WAV_PREFIX", 64)
    s = compress_path(tmp_path / "a.wav", tmp_path / "a.clz")
    assert s["original_bytes"] == (tmp_path / "a.wav").stat().st_size
    decompress_path(tmp_path / "a.clz", tmp_path / "b.wav")
    assert (tmp_path / "b.wav").read_bytes() == (tmp_path / "a.wav").read_bytes()
    assert np.array_equal(files.read_wav((tmp_path / "a.wav").read_bytes())[2], x)


def test_folder_decompress_gives_a_raw_clz_back_as_bin_and_json(tmp_path):
    x = np.arange(200, dtype=np.int16).reshape(100, 2)
    src = _raw(tmp_path, x, name="probe.dat")
    (tmp_path / "clz").mkdir()
    compress_path(src, tmp_path / "clz" / "probe.clz")
    s = decompress_path(tmp_path / "clz", tmp_path / "back")
    assert s["files"] == 1
    assert (tmp_path / "back" / "probe.bin").read_bytes() == src.read_bytes()
    assert (tmp_path / "back" / "probe.json").read_bytes() == src.with_suffix(".json").read_bytes()
    assert not (tmp_path / "back" / "probe.wav").exists()
    decompress_path(tmp_path / "clz", tmp_path / "back", overwrite=True)     # its own output: replaced
