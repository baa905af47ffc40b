"""The output-path check every writing command shares (cortexlink.core.outpath), on real files."""

import json
import os
import socket
import sys

import pytest

from cortexlink.core.errors import ConfigError
from cortexlink.core.outpath import (
    check_name, check_output_dir, check_output_file, is_json_object_file, new_run_folder, session_folder_of, space_for,
)


def _session(folder):
    """A folder shaped like a recorded session (manifest.json + streams/)."""
    (folder / "streams").mkdir(parents=True)
    (folder / "streams" / "raw.clog").write_bytes(b"CLOG")
    (folder / "manifest.json").write_text(json.dumps({"format": "cortexlink-session"}))
    return folder


def test_a_new_file_in_a_new_folder_is_allowed(tmp_path):
    out = check_output_file(tmp_path / "a" / "b" / "x.nwb")
    assert out == tmp_path / "a" / "b" / "x.nwb" and (tmp_path / "a" / "b").is_dir()
    assert not out.exists()


@pytest.mark.parametrize("target", ["streams/raw.clog", "manifest.json", "export.nwb", "streams/new/x"])
def test_nothing_is_written_in_a_session_folder(tmp_path, target):
    s = _session(tmp_path / "s")
    with pytest.raises(ConfigError, match="inside the recorded session folder"):
        check_output_file(s / target, overwrite=True, ours=lambda p: True)
    assert (s / "streams" / "raw.clog").read_bytes() == b"CLOG"


def test_a_session_folder_is_found_through_a_symbolic_link(tmp_path):
    s = _session(tmp_path / "s")
    link = tmp_path / "link.nwb"
    link.symlink_to(s / "manifest.json")
    assert session_folder_of(link) == s
    with pytest.raises(ConfigError, match="recorded session folder"):
        check_output_file(link, overwrite=True, ours=lambda p: True)
    with pytest.raises(ConfigError, match="is the recorded session folder"):
        check_output_dir(s)


@pytest.mark.skipif(sys.platform != "linux", reason="Linux system folders")
@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/x", "/dev/null", "/sys/x", "/usr/lib/x.nwb", "/boot/x"])
def test_system_locations_are_refused(path):
    with pytest.raises(ConfigError, match="system folder"):
        check_output_file(path, overwrite=True, ours=lambda p: True)
    with pytest.raises(ConfigError, match="system folder"):
        check_output_dir(path)


def test_a_link_into_a_system_folder_is_refused(tmp_path):
    link = tmp_path / "innocent.nwb"
    link.symlink_to("/etc/hostname")
    with pytest.raises(ConfigError, match="system folder /etc"):
        check_output_file(link, overwrite=True, ours=lambda p: True)


def test_only_files_this_command_wrote_are_replaced(tmp_path):
    mine, other = tmp_path / "mine.json", tmp_path / "notes.txt"
    mine.write_text('{"a": 1}')
    other.write_text("precious")
    with pytest.raises(ConfigError, match="exists; choose a new path"):
        check_output_file(mine, ours=is_json_object_file)                # no overwrite asked for
    assert check_output_file(mine, overwrite=True, ours=is_json_object_file) == mine
    with pytest.raises(ConfigError, match="is not a JSON object"):
        check_output_file(other, overwrite=True, ours=is_json_object_file, ours_is="a JSON object")
    with pytest.raises(ConfigError, match="replaces only files it wrote"):
        check_output_file(other, overwrite=True)                          # no way to tell: never
    assert other.read_text() == "precious"


def test_non_regular_files_and_folders_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path, overwrite=True, ours=lambda p: True)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        check_output_file(fifo, overwrite=True, ours=lambda p: True)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s.sock"))
        with pytest.raises(ConfigError, match="not a regular file"):
            check_output_file(tmp_path / "s.sock", overwrite=True, ours=lambda p: True)
    finally:
        sock.close()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_dir(f)
    with pytest.raises(ConfigError, match="not a folder"):
        check_output_file(f / "x.nwb")


def test_a_read_only_folder_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("this user (root) may write into a read-only folder; the fault campaign's "
                        "read_only_output_folder case uses a read-only file system instead")
        with pytest.raises(ConfigError, match="not writable"):
            check_output_file(ro / "x.nwb")
        with pytest.raises(ConfigError, match="cannot create the folder"):
            check_output_dir(ro / "new")
        with pytest.raises(ConfigError, match="not writable"):
            check_output_dir(ro / "new", create=False)
    finally:
        ro.chmod(0o755)


def test_new_folders_must_be_new_or_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", new=True) == tmp_path / "empty"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        check_output_dir(tmp_path / "full", new=True)
    check_output_dir(tmp_path / "later" / "x", create=False)
    assert not (tmp_path / "later").exists()


@pytest.mark.parametrize("name", ["../../../escaped/x", "..", ".", ".hidden", "a/b", "a\\b", "x\x00y", "", " ",
                                  "a" * 129, 7])
def test_names_that_would_leave_the_output_folder_are_refused(name):
    with pytest.raises(ConfigError, match="session.name"):
        check_name(name, what="session.name")


def test_run_folders_stay_inside_out(tmp_path):
    d = new_run_folder(tmp_path / "runs", "20250101-000000-demo")
    assert d.is_dir() and d.parent == tmp_path / "runs"
    with pytest.raises(ConfigError, match="path separators"):
        new_run_folder(tmp_path / "runs", "20250101-000000-../../escaped/x")
    assert not (tmp_path / "escaped").exists()
    (tmp_path / "runs" / "lnk").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="outside"):
        new_run_folder(tmp_path / "runs", "lnk")


def test_space_for_reads_the_free_space_and_the_file_size_limit(tmp_path):
    free, limit = space_for(tmp_path / "not" / "yet")
    assert free > 0 and (limit is None or limit > 0)
