"""Crash-safe, append-only session log: everything a session saw and did, in one folder.

A session folder holds::

    manifest.json            what was recorded: provenance (package version, git hash, python,
                             host), seeds, resolved configuration, channel map, sampling rate,
                             the pseudonymous participant id, the streams and, once closed or
                             recovered, per-stream counts, dropped items and SHA-256 checksums
    streams/<name>.clog      one append-only file per stream (raw, features, cursor, decoder,
                             intent, events, ...)
    decoders/*.npz           decoders as they were when they went live (for replay); the SHA-256
                             of each is recorded as it goes live (manifest ``decoders``)
    .lock                    held (``flock``) by the live writer; ``recover`` refuses while it is

Stream file format (little-endian), designed so that a crash can only damage the tail:

* file header: ``b"CLOG"``, ``uint16`` format version (2), ``uint32`` header length, then that
  many bytes of UTF-8 JSON (stream name, ``kind`` = ``"array"`` or ``"json"``, ``dtype``,
  ``columns``, ``rate_hz`` of the sample clock, the session and participant ids; the raw
  stream's also its ``channel_map``), then the ``uint32`` CRC-32 of everything before it in the
  header. The manifest keeps a copy of each header, from which :func:`recover` rebuilds a
  damaged one. Format 1 (the same without the CRC) is still read;
* then records, each a 36-byte header ``b"REC0"``, ``uint32`` payload length, ``int64`` seq,
  ``int64`` sample (source sample index of the first row), ``int64`` host monotonic time (ns),
  ``uint32`` CRC-32 of the 32 preceding header bytes and the payload; then the payload: the
  rows of an array stream as raw bytes (C order, ``n_rows x n_columns``) or one UTF-8 JSON
  object;
* a raw stream recorded with ``raw_codec="rice"`` or ``"range"`` has a format-3 header (the
  same as format 2, plus a ``codec`` field) and each record's payload is one frame of the
  lossless codec (:mod:`cortexlink.codec`), with a resynchronisation point every
  ``resync_records`` records; readers, ``verify`` and ``recover`` decode it transparently (see
  :mod:`~cortexlink.io.session_log.rawcodec` for the crash-safety argument).

Writing never blocks the caller: :class:`SessionRecorder` puts items on a bounded queue (a byte
budget) drained by one writer thread, which appends, flushes each batch to the operating system
at once and ``fsync``\\ s at least every ``fsync_interval_s``. When the queue is full the
``on_full`` policy applies (``"drop"``: the new item is dropped; ``"block"``: wait up to
``block_timeout_s`` then drop; ``"fail"``: raise :class:`RecorderOverflow`); every dropped item
is counted per stream and written to the manifest and the events stream with its sample range.

A process killed at any moment (even ``SIGKILL``) leaves every record that reached the writer's
``write`` call intact; at worst a torn last record, which :func:`recover` cuts off. Damage
anywhere else is found (:func:`verify_session`: header and record checksums, SHA-256 of every
file) and :func:`recover` keeps every intact record, never recomputing a checksum over damage it
did not repair. Free space
is checked against the expected size before recording; a low-disk alarm event is raised while
recording; a full disk stops the recording cleanly with everything written before it intact.
"""

# names outside __all__ are importable from here as before
from cortexlink.io._common import check_participant_id, sha256_file  # noqa: F401
from cortexlink.io.session_log.format import (  # noqa: F401
    FILE_MAGIC, FORMAT_VERSION, MAX_PAYLOAD, READABLE_VERSIONS, REC_HEADER_BYTES, REC_MAGIC, STREAM_COLUMNS,
    CorruptSessionError, DamagedHeaderError, InsufficientDiskSpace, Record, RecorderOverflow, SessionBusy,
    inspect_header, read_file_header, scan_stream,
)
from cortexlink.io.session_log.lock import SessionLock, lock_holder  # noqa: F401
from cortexlink.io.session_log.manifest import check_manifest, read_manifest  # noqa: F401
from cortexlink.io.session_log.reader import SessionReader
from cortexlink.io.session_log.repair import finalize, recover  # noqa: F401
from cortexlink.io.session_log.verify import require_verified, verify, verify_session  # noqa: F401
from cortexlink.io.session_log.provenance import provenance  # noqa: F401
from cortexlink.io.session_log.writer import ON_FULL, SessionRecorder, estimate_bytes  # noqa: F401

__all__ = ["SessionRecorder", "SessionReader", "Record", "recover", "verify", "verify_session", "require_verified",
           "read_manifest", "RecorderOverflow", "InsufficientDiskSpace", "CorruptSessionError", "DamagedHeaderError",
           "SessionBusy", "estimate_bytes", "FORMAT_VERSION"]
