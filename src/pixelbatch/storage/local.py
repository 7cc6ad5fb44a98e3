"""Local-disk storage; the API serves its files under ``/files/``."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pixelbatch.auth.urls import UrlSigner
from pixelbatch.errors import NotFound, PixelbatchError
from pixelbatch.storage.base import StoredObject, validate_key, validate_prefix

TEMPORARY_PREFIX = ".tmp-"  # a file being written; delete_prefix removes them uncounted
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS |= getattr(os, "O_NOFOLLOW", 0)
_temporary_numbers = itertools.count()


class LocalStorage:
    def __init__(self, root: Path, public_base_url: str, signer: UrlSigner | None = None) -> None:
        self.root = root
        self.public_base_url = public_base_url.rstrip("/")
        self.signer = signer
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        self._write(self._path(key), lambda fd: _write_all(fd, data))
        return StoredObject(key=key, size=len(data), content_type=content_type)

    def put_file(self, key: str, source: IO[bytes], content_type: str) -> StoredObject:
        path = self._path(key)
        self._write(path, lambda fd: _copy_into(fd, source))
        return StoredObject(key=key, size=path.stat().st_size, content_type=content_type)

    @staticmethod
    def _write(path: Path, write: Callable[[int], object]) -> None:
        """Write then rename, so a reader never sees half a file and a re-run overwrites.
        The directory is made when missing (a batch's first file, or after
        ``delete_prefix``), not made sure of before every file: a mkdir and a stat per
        image, for a directory that is nearly always there."""
        try:
            fd, tmp = _temporary_file(path.parent)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = _temporary_file(path.parent)
        try:
            try:
                write(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        """The file, and its directory when that was its last file: an image written after
        ``delete_prefix`` emptied its batch's directory is deleted by its writer (who finds
        its record gone), and must not leave the directory behind."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        if path.parent != self.root:
            with contextlib.suppress(OSError):  # other files (or a write) still in it
                path.parent.rmdir()

    def delete_prefix(self, prefix: str) -> int:
        """Every file under the prefix's directory (temporary files of a write in progress
        too, uncounted), then the emptied directories. A file written meanwhile may stay:
        its writer removes it when it finds its record gone (``jobs.recording.record``)."""
        top = self.root / validate_prefix(prefix).rstrip("/")
        if not top.is_dir():
            return 0
        removed = 0
        for dirpath, dirnames, filenames in os.walk(top, topdown=False):
            for name in filenames:
                try:
                    (Path(dirpath) / name).unlink()
                except FileNotFoundError:
                    continue
                removed += 0 if name.startswith(TEMPORARY_PREFIX) else 1
            for name in dirnames:
                with contextlib.suppress(OSError):  # not empty: a write landed meanwhile
                    (Path(dirpath) / name).rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
        return removed

    def read_into(self, key: str, target: IO[bytes]) -> None:
        path = self.local_path(key)
        assert path is not None
        with path.open("rb") as fh:
            shutil.copyfileobj(fh, target, 1024 * 1024)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        if not path.is_file():
            raise NotFound("file not found")
        return path

    def url(self, key: str, base: str | None = None) -> str:
        if base is not None and base.startswith("file:"):
            # No server (``pixelbatch process``): the file itself, which needs no signature.
            return (self.root / validate_key(key)).resolve().as_uri()
        root = base.rstrip("/") if base else self.public_base_url
        url = f"{root}/files/{validate_key(key)}"
        return f"{url}?{self.signer.query(key)}" if self.signer is not None else url

    def url_lifetime(self, base: str | None = None) -> int | None:
        if self.signer is None or (base is not None and base.startswith("file:")):
            return None
        return self.signer.ttl

    def redirect_url(self, key: str, download_name: str | None = None) -> str | None:
        return None  # the API serves the file itself

    def check(self) -> str:
        probe = self.root / ".pixelbatch-check"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise PixelbatchError(
                f"{self.root} is not writable: {exc.strerror}", code="storage_error"
            ) from exc
        return f"{self.root.resolve()} is writable"


def _temporary_file(directory: Path) -> tuple[int, str]:
    """A new file beside the final one, private to its owner as ``mkstemp`` makes it.

    Named by process and a counter rather than ``mkstemp``'s random letters: on the
    benchmark's small images ``mkstemp`` was 4% of the API process's Python time, and the
    exclusive create refuses a name left behind by a crashed process that had this pid."""
    while True:
        name = f"{directory}/{TEMPORARY_PREFIX}{os.getpid()}-{next(_temporary_numbers)}"
        try:
            return os.open(name, _OPEN_FLAGS, 0o600), name
        except FileExistsError:
            continue


def _write_all(fd: int, data: bytes) -> None:
    """``data`` to the file, on the descriptor: a Python file object would add an isatty,
    an lseek and an fstat per image, each a system call releasing the GIL."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_into(fd: int, source: IO[bytes]) -> None:
    with open(fd, "wb", closefd=False) as target:
        shutil.copyfileobj(source, target, 1024 * 1024)
