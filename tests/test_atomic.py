"""gcl.atomic: a file or a whole directory is replaced completely or not at all."""

from __future__ import annotations

import pytest

from gcl.atomic import write_atomic, write_directory_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    write_atomic(path, lambda fh: fh.write(b"new"))
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_file_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_write_directory_atomic_swaps_the_whole_directory(tmp_path):
    target = tmp_path / "idx"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    write_directory_atomic(target, lambda d: (d / "new.txt").write_text("y"))
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no .tmp-/.old- siblings left
    write_directory_atomic(tmp_path / "fresh", lambda d: (d / "f").write_text("z"))
    assert (tmp_path / "fresh" / "f").read_text() == "z"


def test_a_failed_directory_write_keeps_the_old_directory(tmp_path):
    target = tmp_path / "idx"
    target.mkdir()
    (target / "kept.txt").write_text("x")

    def fail(d):
        (d / "half.txt").write_text("y")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_directory_atomic(target, fail)
    assert [p.name for p in target.iterdir()] == ["kept.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
