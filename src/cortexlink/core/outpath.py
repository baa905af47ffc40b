"""Where cortexlink may write: one check shared by every command that writes.

``export --to``, ``record --out``, the run folders of ``run``, ``session run`` and ``demo``
(``--out``), the recordings the operator UI starts (``serve --record-dir``) and every ``bench
--out`` go through these functions before anything is written. They refuse, with a
:class:`~cortexlink.core.errors.ConfigError` that names the path and what to do:

* system locations — :data:`SYSTEM_DIRS` (``/proc``, ``/sys``, ``/dev``, ``/etc``, ``/bin``,
  ``/usr`` but ``/usr/local``, ``/boot``, ...), checked on the path as given and with its
  symbolic links resolved;
* anything inside a recorded session folder (a folder with ``manifest.json`` and ``streams/``),
  so a session's own ``streams/raw.clog`` or ``manifest.json`` is never written over, and nothing
  lands beside them;
* an existing path that is not a regular file (a folder, a device, a FIFO, a socket);
* an existing file unless the caller says to replace it (``overwrite``) *and* it is one this
  command wrote itself (``ours``: e.g. an NWB file that ``cortexlink export`` wrote); a file
  cortexlink did not make is never replaced;
* a folder that cannot be created or written to (read-only, no permission), as an error rather
  than an ``OSError`` traceback.

:func:`check_name` is the rule for a name that becomes one part of a path (a session's or
graph's ``name``, a recording's name): no path separators, no ``..``.
:func:`space_for` gives the free bytes of a folder's file system and the largest file this
process may write (``RLIMIT_FSIZE``), for the free-space checks made before recording.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable

from cortexlink.core.errors import ConfigError

__all__ = ["SYSTEM_DIRS", "check_output_file", "check_output_dir", "check_name", "new_run_folder",
           "session_folder_of", "space_for", "is_json_object_file"]

#: Folders (and everything under them) that cortexlink never writes into. ``/usr/local`` is the
#: exception under ``/usr`` (site-local data is kept there).
SYSTEM_DIRS: tuple[str, ...] = ("/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/usr", "/boot", "/lib",
                                "/lib32", "/lib64", "/libx32", "/run", "/var/run", "/var/lib", "/var/spool",
                                "/var/cache")
_SYSTEM_EXCEPTIONS: tuple[str, ...] = ("/usr/local",)
_NAME_MAX = 128


def _under(p: str, root: str) -> bool:
    return p == root or p.startswith(root.rstrip("/") + "/")


def _system_dir(p: Path) -> str | None:
    """The entry of :data:`SYSTEM_DIRS` that ``p`` (absolute) lies in, or None."""
    if os.name != "posix":
        return None
    s = str(p)
    if any(_under(s, e) for e in _SYSTEM_EXCEPTIONS):
        return None
    return next((d for d in SYSTEM_DIRS if _under(s, d)), None)


def _forms(path: Path) -> list[Path]:
    """The path made absolute (``..`` folded) and with its symbolic links resolved."""
    absolute = Path(os.path.abspath(path))
    resolved = Path(os.path.realpath(path))
    return [absolute] if absolute == resolved else [absolute, resolved]


def _is_session_dir(d: Path) -> bool:
    if not (d / "manifest.json").is_file():
        return False
    if (d / "streams").is_dir():
        return True
    try:
        with open(d / "manifest.json", "rb") as f:
            head = f.read(1 << 16)
        return bool(json.loads(head).get("format") == "cortexlink-session")
    except (OSError, ValueError, AttributeError):
        return False


def session_folder_of(path: str | os.PathLike[str]) -> Path | None:
    """The recorded session folder that ``path`` is, or lies inside (resolved), or None."""
    for form in _forms(Path(path)):
        for d in (form, *form.parents):
            try:
                if d.is_dir() and _is_session_dir(d):
                    return d
            except OSError:
                continue
    return None


def _refuse_places(path: Path, what: str) -> None:
    for form in _forms(path):
        sysdir = _system_dir(form)
        if sysdir is not None:
            raise ConfigError(f"{what} {path} is in the system folder {sysdir}: cortexlink does not write there; "
                              "choose a path in your own folders")
    sess = session_folder_of(path)
    if sess is not None:
        where = "is the" if sess in _forms(path) else "is inside the"
        raise ConfigError(f"{what} {path} {where} recorded session folder {sess}: cortexlink never writes into a "
                          "session's folder or over its files; choose a path outside it")


def _nearest_existing(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_dir(d: Path, what: str, shown: Path) -> None:
    if not d.is_dir():
        raise ConfigError(f"{what} {shown}: {d} is not a folder; choose another path")
    if not os.access(d, os.W_OK | os.X_OK):
        why = "is read-only" if _read_only_fs(d) else "is not writable by this user"
        raise ConfigError(f"{what} {shown}: the folder {d} {why}; choose a folder you can write to")


def _read_only_fs(d: Path) -> bool:
    try:
        return bool(os.statvfs(d).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _mkdir(d: Path, what: str, shown: Path) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {shown}: {d} exists and is not a folder; choose another path") from None
    except OSError as exc:
        raise ConfigError(f"{what} {shown}: cannot create the folder {d} ({exc.strerror or exc}); choose a folder "
                          "you can write to") from None


def check_output_file(path: str | os.PathLike[str], *, what: str = "output file", overwrite: bool = False,
                      ours: Callable[[Path], bool] | None = None, ours_is: str = "written by cortexlink",
                      create_parent: bool = True) -> Path:
    """Check that ``path`` may be written as one file; return it as a :class:`~pathlib.Path`.

    Parameters
    ----------
    path : path
        The file to write.
    what : str
        How the message names it (``"--to"``, ``"--out"``).
    overwrite : bool
        An existing file may be replaced — only if ``ours`` says this command wrote it.
    ours : callable, optional
        ``ours(path) -> bool``: the existing file is one this command made (e.g. an NWB file
        written by ``cortexlink export``). Without it an existing file is never replaced.
    ours_is : str
        What ``ours`` checks, for the message (``"an NWB file written by cortexlink export"``).
    create_parent : bool
        Create the parent folder when it is missing (it must be writable either way).

    Raises
    ------
    ConfigError
        A system location, a path in a session folder, an existing non-regular file, a file that
        exists and may not be replaced, or a parent folder that cannot be created or written to.
    """
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise ConfigError(f"{what} {str(path)!r} names no file; give the path of the file to write")
    _refuse_places(p, what)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise ConfigError(f"{what} {p}: a part of its folder path is a file, not a folder; choose another "
                          "path") from None
    except OSError as exc:
        raise ConfigError(f"{what} {p}: cannot be examined ({exc.strerror or exc}); choose another path") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{what} {p} is a folder; give the path of the file to write")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what} {p} is not a regular file (a device, FIFO or socket); cortexlink writes "
                              "only regular files: choose another path")
        if not overwrite:
            raise ConfigError(f"{what} {p} exists; choose a new path" + ("" if ours is None else
                              f" (or pass --overwrite to replace it, if it is {ours_is})"))
        if ours is None or not ours(p):
            raise ConfigError(f"{what} {p} exists and is not {ours_is}: cortexlink replaces only files it wrote; "
                              "choose a new path (or remove that file yourself)")
    parent = Path(os.path.abspath(p)).parent
    if create_parent and not parent.exists():
        _mkdir(parent, what, p)
    _check_writable_dir(parent if parent.exists() else _nearest_existing(parent), what, p)
    return p


def check_output_dir(path: str | os.PathLike[str], *, what: str = "output folder", create: bool = True,
                     new: bool = False) -> Path:
    """Check that ``path`` may be written as a folder (a run folder's parent, a recording);
    return it as a :class:`~pathlib.Path`.

    Parameters
    ----------
    create : bool
        Create it (and its parents) now; else only check that it could be.
    new : bool
        It must not exist yet, or be an empty folder (a new session folder is never written
        over an existing folder's files).

    Raises
    ------
    ConfigError
        A system location, a path in a session folder, an existing path that is not a folder
        (or, with ``new``, a folder that is not empty), or a folder that cannot be created or
        written to.
    """
    p = Path(path)
    if str(path) == "":
        raise ConfigError(f"{what} is empty; give a folder")
    _refuse_places(p, what)
    if p.exists() or p.is_symlink():
        if not p.is_dir():
            raise ConfigError(f"{what} {p} exists and is not a folder; choose another path")
        if new:
            try:
                with os.scandir(p) as it:
                    has = next(it, None) is not None
            except OSError as exc:
                raise ConfigError(f"{what} {p}: cannot be read ({exc.strerror or exc}); choose another folder") from None
            if has:
                raise ConfigError(f"{what} {p} exists and is not empty; choose a new folder")
        _check_writable_dir(p, what, p)
        return p
    if create:
        _mkdir(p, what, p)
        _check_writable_dir(p, what, p)
    else:
        _check_writable_dir(_nearest_existing(p), what, p)
    return p


def check_name(name: Any, *, what: str = "name") -> str:
    """A name that becomes one part of a path (a run folder, a recording): a non-empty string of at
    most 128 characters, without ``/``, ``\\``, NUL or control characters, not ``.`` or ``..`` and
    not starting with ``.``; returned as it is, else :class:`ConfigError` naming ``what``."""
    if not isinstance(name, str):
        raise ConfigError(f"{what} must be a string; got {type(name).__name__}")
    shown = name if len(name) <= 60 else name[:57] + "..."
    if not name.strip():
        raise ConfigError(f"{what} must not be empty")
    if len(name) > _NAME_MAX:
        raise ConfigError(f"{what} must be at most {_NAME_MAX} characters; got {len(name)}")
    if "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"{what} must not contain path separators or control characters (it names a folder); "
                          f"got {shown!r}")
    if name.startswith("."):
        raise ConfigError(f"{what} must not start with '.' (it names a folder; '..' would leave the output "
                          f"folder); got {shown!r}")
    return name


def new_run_folder(parent: str | os.PathLike[str], leaf: str, *, what: str = "--out") -> Path:
    """Create the run folder ``parent/leaf`` (e.g. ``runs/20250101-120000-demo``): ``parent`` is
    checked with :func:`check_output_dir`, ``leaf`` with :func:`check_name`, and the folder must
    stay inside ``parent`` once symbolic links are resolved; returns it."""
    base = check_output_dir(parent, what=what, create=True)
    check_name(leaf, what="run folder name")
    d = base / leaf
    if Path(os.path.realpath(d)).parent != Path(os.path.realpath(base)):
        raise ConfigError(f"run folder {d} would lie outside {what} {base}; choose another name")
    _mkdir(d, "run folder", d)
    _check_writable_dir(d, "run folder", d)
    return d


def is_json_object_file(path: Path, limit: int = 256 << 20) -> bool:
    """``path`` holds one JSON object (what ``bench --out`` writes), so it may be replaced."""
    try:
        if path.stat().st_size > limit:
            return False
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def space_for(folder: str | os.PathLike[str]) -> tuple[int, int | None]:
    """``(free_bytes, file_limit_bytes)``: the free space of the file system that ``folder`` (or
    its nearest existing parent) is on, and the largest file this process may write
    (``RLIMIT_FSIZE``, e.g. ``ulimit -f``; None when unlimited)."""
    import shutil

    free = shutil.disk_usage(_nearest_existing(Path(folder))).free
    limit: int | None = None
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY and soft >= 0:
            limit = int(soft)
    except (ImportError, AttributeError, OSError, ValueError):
        pass
    return int(free), limit
