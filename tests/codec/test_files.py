"""``cortexlink compress`` / ``decompress``: WAV files and folders to ``.clz`` and back, byte for
byte, through the functions and through the command in a child process; and every refusal."""

import json
import struct
import subprocess
import sys
import wave

import numpy as np
import pytest

from cortexlink.codec.files import (CLZ_HEADER_SIZE, compress_file, compress_path, decompress_file,
                                    decompress_path, read_wav)
from cortexlink.core.errors import ConfigError, ValidationError


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cortexlink.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def _wav(path, data, rate=19531):
    data = np.asarray(data, np.int16)
    if data.ndim == 1:
        data = data[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())
    return data


def _samples(path):
    with wave.open(str(path), "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
        return x, w.getframerate(), w.getnchannels()


def _random(n, nch, seed=0):
    return np.random.default_rng(seed).integers(-32768, 32768, size=(n, nch)).astype(np.int16)


def _sparse(n, nch, seed=1):
    """A 10-bit ADC scaled into int16, as the N1 files: few, widely spaced values."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.integers(-3, 4, size=(n, nch)), axis=0) % 1024 - 512
    return (walk * 64 + 33).astype(np.int16)


def _clean(proc, *needles):
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    for n in needles:
        assert n in text, text


@pytest.mark.req("SR-42")
@pytest.mark.parametrize("nch", [1, 4])
@pytest.mark.parametrize("kind", ["random", "sparse"])
@pytest.mark.parametrize("entropy", ["range", "rice", "lms", "lms-fast"])
def test_file_round_trip_is_byte_identical(tmp_path, nch, kind, entropy):
    x = (_random if kind == "random" else _sparse)(50_000, nch)
    src = tmp_path / "a.wav"
    _wav(src, x, rate=30000)
    s = compress_file(src, tmp_path / "a.clz", resync_frames=2, entropy=entropy)
    assert s["files"] == 1 and s["original_bytes"] == src.stat().st_size
    assert s["compressed_bytes"] == (tmp_path / "a.clz").stat().st_size
    if kind == "sparse":
        assert s["ratio"] > 1.5
    decompress_file(tmp_path / "a.clz", tmp_path / "b.wav")
    y, rate, c = _samples(tmp_path / "b.wav")
    assert rate == 30000 and c == nch and np.array_equal(y, x)
    assert (tmp_path / "b.wav").read_bytes() == src.read_bytes()  # standard 44-byte header: whole file


@pytest.mark.req("SR-42")
def test_extra_chunks_and_odd_tail_come_back_byte_identical(tmp_path):
    """A WAV with a LIST chunk before ``data`` and a chunk after it (non-PCM metadata) is kept verbatim."""
    x = _sparse(1001, 3)
    pcm = x.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 3, 8000, 8000 * 6, 6, 16)
    info = b"INFOISFT\x06\x00\x00\x00cortex"
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", len(info)) + info
            + b"data" + struct.pack("<I", len(pcm)) + pcm + b"note" + struct.pack("<I", 3) + b"abc\x00")
    src = tmp_path / "meta.wav"
    src.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    compress_file(src, tmp_path / "meta.clz")
    decompress_file(tmp_path / "meta.clz", tmp_path / "back.wav")
    assert (tmp_path / "back.wav").read_bytes() == src.read_bytes()
    assert np.array_equal(read_wav(src.read_bytes())[2], x)


def test_empty_wav_round_trip(tmp_path):
    _wav(tmp_path / "e.wav", np.zeros((0, 2), np.int16))
    compress_file(tmp_path / "e.wav", tmp_path / "e.clz")
    decompress_file(tmp_path / "e.clz", tmp_path / "f.wav")
    assert (tmp_path / "f.wav").read_bytes() == (tmp_path / "e.wav").read_bytes()


def test_folder_round_trip_functions(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    arrays = {"m.wav": _sparse(7000, 1), "q.wav": _random(3000, 4), "s4.wav": _sparse(20000, 4, seed=5)}
    for name, x in arrays.items():
        _wav(src / name, x)
    (src / "notes.txt").write_text("not a wav")
    (src / "sub").mkdir()
    _wav(src / "sub" / "deep.wav", _random(10, 1))  # not recursive
    seen = []
    s = compress_path(src, tmp_path / "clz", progress=lambda done, total, name: seen.append((done, total)))
    assert s["files"] == 3 and seen[-1] == (3, 3)
    assert sorted(p.name for p in (tmp_path / "clz").iterdir()) == ["m.clz", "q.clz", "s4.clz"]
    assert s["original_bytes"] == sum((src / n).stat().st_size for n in arrays)
    d = decompress_path(tmp_path / "clz", tmp_path / "out")
    assert d["files"] == 3 and d["original_bytes"] == s["original_bytes"]
    for name in arrays:
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()


def test_cli_file_and_folder_round_trip(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    x1, x4 = _wav(src / "one.wav", _sparse(9000, 1)), _wav(src / "four.wav", _random(5000, 4), rate=30000)
    p = _cli("compress", src / "four.wav", tmp_path / "four.clz", "--resync-frames", "1", "--entropy", "rice")
    _clean(p, "1 file(s)", "ratio")
    assert p.returncode == 0
    p = _cli("decompress", tmp_path / "four.clz", tmp_path / "four.wav")
    assert p.returncode == 0, p.stderr
    y, rate, c = _samples(tmp_path / "four.wav")
    assert (rate, c) == (30000, 4) and np.array_equal(y, x4)

    p = _cli("compress", src, tmp_path / "clz", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["files"] == 2 and s["mode"] == "compress" and s["ratio"] == pytest.approx(
        s["original_bytes"] / s["compressed_bytes"], rel=1e-3)
    p = _cli("decompress", tmp_path / "clz", tmp_path / "back", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["files"] == 2
    assert np.array_equal(_samples(tmp_path / "back" / "one.wav")[0], x1)
    for n in ("one.wav", "four.wav"):
        assert (tmp_path / "back" / n).read_bytes() == (src / n).read_bytes()


def _float_wav(path):
    """An IEEE-float WAV (format 3), written by hand: the wave module cannot write one."""
    pcm = np.zeros(100, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_refusals_functions(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        compress_path(tmp_path / "missing.wav", tmp_path / "x.clz")
    (tmp_path / "text.wav").write_text("hello, not a wav file at all")
    with pytest.raises(ValidationError, match="not a WAV"):
        compress_path(tmp_path / "text.wav", tmp_path / "x.clz")
    with wave.open(str(tmp_path / "24.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01\x02" * 50)
    with pytest.raises(ValidationError, match="24-bit"):
        compress_path(tmp_path / "24.wav", tmp_path / "x.clz")
    _float_wav(tmp_path / "float.wav")
    with pytest.raises(ValidationError, match="16-bit"):
        compress_path(tmp_path / "float.wav", tmp_path / "x.clz")
    assert not (tmp_path / "x.clz").exists()

    _wav(tmp_path / "a.wav", _sparse(3000, 2))
    compress_path(tmp_path / "a.wav", tmp_path / "a.clz")
    with pytest.raises(ConfigError, match="exists"):
        compress_path(tmp_path / "a.wav", tmp_path / "a.clz")
    compress_path(tmp_path / "a.wav", tmp_path / "a.clz", overwrite=True)
    with pytest.raises(ConfigError, match="not a .clz file"):  # overwrite replaces only our own files
        compress_path(tmp_path / "a.wav", tmp_path / "text.wav", overwrite=True)
    with pytest.raises(ValidationError, match="not a .clz"):
        decompress_path(tmp_path / "a.wav", tmp_path / "b.wav")

    raw = bytearray((tmp_path / "a.clz").read_bytes())
    for pos in (CLZ_HEADER_SIZE + 10, len(raw) - 5):  # the kept WAV header, a codec frame's payload
        bad = bytearray(raw)
        bad[pos] ^= 0x40
        (tmp_path / "bad.clz").write_bytes(bytes(bad))
        with pytest.raises(ValidationError, match="CRC"):
            decompress_path(tmp_path / "bad.clz", tmp_path / "bad.wav")
    assert not (tmp_path / "bad.wav").exists()

    with pytest.raises(ConfigError, match="system folder"):  # the shared output-path check
        compress_path(tmp_path / "a.wav", "/proc/a.clz")
    with pytest.raises(ConfigError, match="resync_frames"):
        compress_path(tmp_path / "a.wav", tmp_path / "r.clz", resync_frames=0)


def test_refusals_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="no \\*.wav"):
        compress_path(tmp_path / "empty", tmp_path / "out")
    src = tmp_path / "in"
    src.mkdir()
    _wav(src / "a.wav", _sparse(500, 1))
    compress_path(src, tmp_path / "out")
    with pytest.raises(ConfigError, match="--overwrite"):
        compress_path(src, tmp_path / "out")
    assert compress_path(src, tmp_path / "out", overwrite=True)["files"] == 1
    (tmp_path / "file.clz").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder"):
        compress_path(src, tmp_path / "file.clz")


def test_refusals_cli(tmp_path):
    p = _cli("compress", tmp_path / "missing.wav", tmp_path / "x.clz")
    _clean(p, "cortexlink: error:", "does not exist")
    assert p.returncode == 2
    _float_wav(tmp_path / "f.wav")
    p = _cli("compress", tmp_path / "f.wav", tmp_path / "x.clz")
    _clean(p, "cortexlink: error:", "16-bit")
    assert p.returncode == 2
    _wav(tmp_path / "a.wav", _random(2000, 4))
    assert _cli("compress", tmp_path / "a.wav", tmp_path / "a.clz").returncode == 0
    p = _cli("compress", tmp_path / "a.wav", tmp_path / "a.clz")
    _clean(p, "cortexlink: error:", "exists", "--overwrite")
    assert p.returncode == 2
    assert _cli("compress", tmp_path / "a.wav", tmp_path / "a.clz", "--overwrite").returncode == 0
    raw = bytearray((tmp_path / "a.clz").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "bad.clz").write_bytes(bytes(raw))
    p = _cli("decompress", tmp_path / "bad.clz", tmp_path / "bad.wav")
    _clean(p, "cortexlink: error:", "CRC")
    assert p.returncode == 2 and not (tmp_path / "bad.wav").exists()
    p = _cli("compress", tmp_path / "a.wav", tmp_path / "z.clz", "--entropy", "huffman")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_a_canonical_wav_head_is_rebuilt_not_stored_and_frames_can_be_longer(tmp_path):
    from cortexlink.codec.files import CLZ_FLAG_STD_HEAD, std_wav_head

    x = _sparse(50_000, 2)
    src = tmp_path / "a.wav"
    _wav(src, x, rate=20000)
    assert src.read_bytes()[:44] == std_wav_head(20000, 2, 50_000)
    compress_file(src, tmp_path / "a.clz")
    clz = (tmp_path / "a.clz").read_bytes()
    assert clz[5] == CLZ_FLAG_STD_HEAD and struct.unpack_from("<I", clz, 24)[0] == 0    # no head stored
    assert struct.unpack_from("<I", clz, 20)[0] == 20000                                 # 1 s frames
    compress_file(src, tmp_path / "b.clz", frame_s=2.0, entropy="lms")
    assert struct.unpack_from("<I", (tmp_path / "b.clz").read_bytes(), 20)[0] == 40000
    for name in ("a", "b"):
        decompress_file(tmp_path / f"{name}.clz", tmp_path / f"{name}.out.wav")
        assert (tmp_path / f"{name}.out.wav").read_bytes() == src.read_bytes()
    # a WAV with another chunk keeps its head verbatim (flag clear)
    odd = bytearray(src.read_bytes())
    odd[16:20] = struct.pack("<I", 18)                     # a fmt chunk of 18 bytes (cbSize 0)
    odd[36:36] = b"\x00\x00"
    struct.pack_into("<I", odd, 4, len(odd) - 8)
    (tmp_path / "c.wav").write_bytes(bytes(odd))
    compress_file(tmp_path / "c.wav", tmp_path / "c.clz")
    assert (tmp_path / "c.clz").read_bytes()[5] == 0
    decompress_file(tmp_path / "c.clz", tmp_path / "c.out.wav")
    assert (tmp_path / "c.out.wav").read_bytes() == bytes(odd)


@pytest.mark.parametrize("frame_s", [0, -1, 61, True, "8"])
def test_bad_frame_length_is_refused(tmp_path, frame_s):
    _wav(tmp_path / "a.wav", _sparse(100, 1))
    with pytest.raises(ConfigError, match="frame_s must be a number of seconds"):
        compress_file(tmp_path / "a.wav", tmp_path / "a.clz", frame_s=frame_s)
