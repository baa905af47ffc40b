"""Reading and writing files in bounded memory for ``cortexlink compress`` / ``decompress``:
inputs through a memory map, outputs written as they are made into a temporary file beside the
target and renamed into place once complete."""

from __future__ import annotations

import mmap
import os
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from cortexlink.core.errors import ConfigError

#: Block size for checksums, copies and streaming compression.
BLOCK = 1 << 24


class MappedFile:
    """A file's bytes as ``buf`` (a memoryview of a read-only memory map; an empty file: of
    ``b""``). ``close()`` when done (no view of ``buf`` may outlive it)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")
        try:
            size = os.fstat(self._f.fileno()).st_size
            self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (OSError, ValueError):
            self._f.close()
            raise
        self.buf = memoryview(self._mm) if self._mm is not None else memoryview(b"")

    def close(self) -> None:
        # a view still held (an exception's traceback keeps arrays of the map alive) makes the
        # map unclosable now: it is then unmapped when the last view goes
        try:
            self.buf.release()
            if self._mm is not None:
                self._mm.close()
        except BufferError:
            pass
        self._f.close()

    def __enter__(self) -> "MappedFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def blocks(buf: memoryview, start: int = 0, end: int | None = None, size: int | None = None) -> Iterator[memoryview]:
    """``buf[start:end]`` in consecutive views of ``size`` bytes (default :data:`BLOCK`)."""
    end = len(buf) if end is None else end
    size = BLOCK if size is None else size
    for a in range(start, end, size):
        yield buf[a:min(a + size, end)]


def crc_of(buf: memoryview, start: int = 0, end: int | None = None, crc: int = 0) -> int:
    """CRC-32 (zlib) of ``buf[start:end]``, continuing ``crc``."""
    for b in blocks(buf, start, end):
        crc = zlib.crc32(b, crc)
    return crc & 0xFFFFFFFF


class Sink:
    """Bytes written to ``f``: their count ``n`` and running CRC-32 ``crc``."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.n, self.crc = f, 0, 0

    def write(self, b: bytes | bytearray | memoryview) -> None:
        if len(b):
            self.f.write(b)
            self.crc = zlib.crc32(b, self.crc)
            self.n += len(b)


class AtomicOutput:
    """``with AtomicOutput(path) as f:`` writes a temporary file beside ``path``, renamed to
    ``path`` when the block ends without an exception and removed otherwise; an ``OSError`` is
    raised as :class:`~cortexlink.core.errors.ConfigError` naming ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.f: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        try:
            self.f = open(self.tmp, "wb")
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path} ({exc.strerror or exc})") from None
        return self.f

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        try:
            if self.f is not None:
                self.f.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        except OSError as err:
            self._remove()
            raise ConfigError(f"cannot write {self.path} ({err.strerror or err})") from None
        if exc_type is not None:
            self._remove()
            if isinstance(exc, OSError):
                raise ConfigError(f"cannot write {self.path} ({exc.strerror or exc})") from None
        return False

    def _remove(self) -> None:
        try:
            self.tmp.unlink()
        except OSError:
            pass


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :class:`AtomicOutput`."""
    with AtomicOutput(path) as f:
        f.write(data)
