"""A dataset directory that appears whole or not at all.

:func:`staged_dir` builds the dataset under a temporary name beside ``out``
(``.OUT.tmp-PID-RANDOM``, locked with ``flock`` while its run lives) and renames it into place
at the end: a crash never leaves a half dataset, and an old dataset in ``out`` is replaced only
once the new one is done. A run killed outright (SIGKILL, power loss) leaves that directory
behind; the next run into the same ``out`` removes it once its process is gone and nobody
holds its lock (:func:`remove_stale_siblings`). A directory holds a dataset when it has a
``meta.json``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from zhplm.errors import DataError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["check_out_dir", "remove_stale_siblings", "staged_dir"]

_SIBLING = "\\.{name}\\.(tmp|old)-([0-9]+)-[0-9a-f]{{8}}"
"""The names :func:`_sibling_dir` gives (``.OUT.tmp-PID-RANDOM``), as a regex template."""


def _is_dataset(path: Path) -> bool:
    return (path / "meta.json").is_file()


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Raise :class:`DataError` unless ``out`` is absent, empty, or (with ``overwrite``) a
    dataset."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"out_dir {out} exists and is not a directory; choose another out_dir")
    if _is_dataset(out):
        if not overwrite:
            raise DataError(
                f"out_dir {out} already holds a dataset; pass overwrite=True "
                "(`zhplm preprocess --overwrite`) to replace it, or choose another out_dir"
            )
    elif any(out.iterdir()):
        raise DataError(
            f"out_dir {out} exists, is not empty and is not a zhplm dataset; refusing to "
            "replace it: choose another out_dir or empty it"
        )


@contextlib.contextmanager
def staged_dir(out: Path, overwrite: bool) -> Iterator[tuple[Path, int | None]]:
    """Yield a new, locked temporary directory beside ``out`` and the lock's descriptor (None
    where locks are not supported; a forked process must close it). When the block ends
    without an error the directory replaces ``out`` (checked again with :func:`check_out_dir`:
    it may have appeared meanwhile); on an error it is removed."""
    tmp = _sibling_dir(out, "tmp")
    lock = _lock_dir(tmp)
    try:
        yield tmp, lock
        check_out_dir(out, overwrite)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _unlock(lock)


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished dataset ``tmp`` to ``out``, replacing an old dataset or empty dir."""
    old: Path | None = None
    lock: int | None = None
    try:
        if out.exists():
            if _is_dataset(out):
                old = _sibling_dir(out, "old")
                lock = _lock_dir(old)
                os.replace(out, old / out.name)
            else:
                out.rmdir()  # empty (checked before)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        _unlock(lock)


def _sibling_dir(out: Path, tag: str) -> Path:
    """Create a new hidden directory beside ``out`` (mode from the umask, unlike mkdtemp)."""
    for _ in range(100):
        path = out.with_name(f".{out.name}.{tag}-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise DataError(f"cannot create a temporary directory beside {out}; check the directory")


# --------------------------------------------------------------------------- locks


def _lock_dir(path: Path) -> int | None:
    """Hold an exclusive ``flock`` on directory ``path`` until :func:`_unlock`; the kernel
    drops it when the process dies, even by SIGKILL. None where locks are not supported."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _locked_elsewhere(fd: int) -> bool:
    """Whether another process holds the lock of ``fd``; else this one takes it. False where
    there are no locks (then the PID decides)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # a live run holds it
    except OSError:
        return False  # no locks on this file system
    return False


# --------------------------------------------------------------------------- stale directories


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else (or cannot tell): leave it
    return True


def remove_stale_siblings(out: Path) -> list[Path]:
    """Remove the temporary directories beside ``out`` that killed runs left behind.

    A directory is removed only when all of these hold: its name is one :func:`_sibling_dir`
    makes for ``out`` (``.OUT.tmp-PID-RANDOM`` / ``.OUT.old-PID-RANDOM``), it is a real
    directory, the process PID is gone, and nobody holds its lock (a live run holds one on its
    directory from creation to the end, which also covers runs in other PID namespaces). An
    ``.old-`` directory holds the previous dataset while a new one is moved into place; it is
    removed only once ``out`` holds a dataset again. ``out`` itself is never touched.
    """
    if os.name != "posix" or not out.parent.is_dir():
        return []
    pattern = re.compile(_SIBLING.format(name=re.escape(out.name)))
    removed = []
    for path in out.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match is None or path.is_symlink() or not path.is_dir():
            continue
        if _pid_alive(int(match[2])) or (match[1] == "old" and not _is_dataset(out)):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile (its run finished) or not ours to open
        try:
            if _locked_elsewhere(fd):
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
        finally:
            os.close(fd)
    return removed
