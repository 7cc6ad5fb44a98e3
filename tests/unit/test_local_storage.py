"""Local-disk storage writes whole files only, makes a batch's directory when it is missing
(its first file, or after the batch was removed) and leaves no temporary files behind."""

from __future__ import annotations

import io
import itertools
import os
import stat
from pathlib import Path

import pytest

from pixelbatch.storage import local
from pixelbatch.storage.local import LocalStorage


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_put_makes_the_directory_it_needs_again_after_the_batch_was_removed(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path / "outputs", "http://127.0.0.1:8000")
    root = storage.root

    stored = storage.put("b1/0000002-01.jpg", b"\xff\xd8first", "image/jpeg")
    assert (stored.key, stored.size) == ("b1/0000002-01.jpg", 7)
    storage.put("b1/0000002-01.jpg", b"\xff\xd8again!", "image/jpeg")  # overwrites
    assert (root / "b1" / "0000002-01.jpg").read_bytes() == b"\xff\xd8again!"

    assert storage.delete_prefix("b1/") == 1
    assert not (root / "b1").exists()
    storage.put("b1/0000003-01.jpg", b"late", "image/jpeg")
    from_file = storage.put_file("b1/deep/output.csv", io.BytesIO(b"a,b\n"), "text/csv")

    assert from_file.size == 4
    assert _files(root) == ["b1/0000003-01.jpg", "b1/deep/output.csv"]


def test_deleting_a_directory_s_last_file_removes_the_directory(tmp_path: Path) -> None:
    """A file written after its batch was removed is deleted by its writer: no empty
    directory of a deleted batch may stay behind."""
    storage = LocalStorage(tmp_path / "outputs", "http://127.0.0.1:8000")
    storage.put("b1/0000002-01.jpg", b"a", "image/jpeg")
    storage.put("b1/0000003-01.jpg", b"b", "image/jpeg")
    storage.put("top.csv", b"c", "text/csv")

    storage.delete("b1/0000002-01.jpg")
    assert _files(storage.root) == ["b1/0000003-01.jpg", "top.csv"]
    storage.delete("b1/0000003-01.jpg")
    assert not (storage.root / "b1").exists()
    storage.delete("top.csv")
    storage.delete("b1/never-was.jpg")
    assert storage.root.is_dir() and _files(storage.root) == []


def test_a_temporary_file_left_by_a_crashed_writer_is_stepped_over_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed process with this pid may have left the next temporary name behind: the
    write takes the name after it, and the stranger's file is neither read nor replaced."""
    storage = LocalStorage(tmp_path / "outputs", "http://127.0.0.1:8000")
    monkeypatch.setattr(local, "_temporary_numbers", itertools.count(7))
    (storage.root / "b1").mkdir()
    stale = storage.root / "b1" / f"{local.TEMPORARY_PREFIX}{os.getpid()}-7"
    stale.write_bytes(b"left by a crash")

    storage.put("b1/0000002-01.jpg", b"\xff\xd8fresh", "image/jpeg")

    written = storage.root / "b1" / "0000002-01.jpg"
    assert written.read_bytes() == b"\xff\xd8fresh"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600  # as mkstemp made them
    assert stale.read_bytes() == b"left by a crash"
    assert _files(storage.root) == [f"b1/{stale.name}", "b1/0000002-01.jpg"]
    assert storage.delete_prefix("b1/") == 1  # the temporary file is removed, uncounted
