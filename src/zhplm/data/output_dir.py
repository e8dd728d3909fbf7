"""A dataset directory that appears whole or not at all, and a killed run that resumes.

:func:`staged_dir` builds the dataset under a temporary name beside ``out``
(``.OUT.tmp-PID-RANDOM``, locked with ``flock`` while its run lives) and renames it into place
at the end: a crash never leaves a half dataset, and an old dataset in ``out`` is replaced only
once the new one is done. A directory holds a dataset when it has a ``meta.json``.

A run killed outright (SIGKILL, power loss) or interrupted (Ctrl-C) leaves its temporary
directory behind. The next run into the same ``out`` looks at each such directory whose
process is gone and whose lock nobody holds (:func:`stale_siblings`; a live run's directory is
never touched): if the caller's ``resumable`` test accepts it (for ``preprocess``: a
``progress.json`` written by a run with the same inputs and arguments), the new run takes it
over (renamed to its own PID, locked) and continues it; every other one is removed, with a
log line. A failing run (an exception) removes its own directory; ``out`` itself is only ever
replaced by a finished dataset.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zhplm.errors import DataError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["Staged", "check_out_dir", "staged_dir", "stale_siblings", "write_text_atomically"]

logger = logging.getLogger(__name__)

_SIBLING = "\\.{name}\\.(tmp|old)-([0-9]+)-[0-9a-f]{{8}}"
"""The names :func:`_sibling_dir` gives (``.OUT.tmp-PID-RANDOM``), as a regex template."""


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a temp file beside it (mode from the umask), then
    ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


@dataclass
class Staged:
    """The temporary directory a run builds its dataset in."""

    path: Path
    lock: int | None  # the directory's flock descriptor (None: no locks); a fork must close it
    resumed: bool  # taken over from a killed run (see :func:`staged_dir`)


@contextlib.contextmanager
def staged_dir(out: Path, overwrite: bool,
               resumable: Callable[[Path], bool] | None = None) -> Iterator[Staged]:
    """Yield a locked temporary directory beside ``out``; when the block ends without an
    error it replaces ``out`` (checked again with :func:`check_out_dir`: it may have appeared
    meanwhile).

    First the directories killed runs left beside ``out`` are dealt with: the first one that
    ``resumable`` accepts is taken over (renamed to this run's PID; ``resumed`` is True), the
    others are removed. Without ``resumable`` (or when none is accepted) a new, empty
    directory is made. On an error the directory is removed; on ``KeyboardInterrupt`` it is
    kept for the next run to resume (or remove).
    """
    adopted: tuple[Path, int] | None = None
    for stale, fd in stale_siblings(out):
        if adopted is None and stale.name.startswith(f".{out.name}.tmp-") and (
                resumable is not None and resumable(stale)):
            adopted = (stale, fd)
            continue
        try:
            shutil.rmtree(stale, ignore_errors=True)
        finally:
            os.close(fd)
        if not stale.exists():
            logger.info("removed %s, left behind by a killed run", stale)
    if adopted is None:
        tmp = _sibling_dir(out, "tmp")
        staged = Staged(tmp, _lock_dir(tmp), resumed=False)
    else:
        try:
            staged = Staged(_take_over(out, adopted[0]), adopted[1], resumed=True)
        except BaseException:
            os.close(adopted[1])
            raise
    try:
        yield staged
        check_out_dir(out, overwrite)
        _publish(staged.path, out)
    except KeyboardInterrupt:
        logger.warning("interrupted; kept %s: the same command resumes it", staged.path)
        raise
    except BaseException:
        shutil.rmtree(staged.path, ignore_errors=True)
        raise
    finally:
        _unlock(staged.lock)


def _take_over(out: Path, stale: Path) -> Path:
    """Rename a killed run's directory (locked by this run) to a name with this run's PID,
    so that runs without locks also see it as live."""
    for _ in range(100):
        path = _sibling_name(out, "tmp")
        if not path.exists():
            os.rename(stale, path)
            return path
    raise DataError(f"cannot rename {stale} beside {out}; check the directory")


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


def _sibling_name(out: Path, tag: str) -> Path:
    """A fresh name ``.OUT.TAG-PID-RANDOM`` beside ``out``."""
    return out.with_name(f".{out.name}.{tag}-{os.getpid()}-{os.urandom(4).hex()}")


def _sibling_dir(out: Path, tag: str) -> Path:
    """Create a new hidden directory beside ``out`` (mode from the umask, unlike mkdtemp)."""
    for _ in range(100):
        path = _sibling_name(out, tag)
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


def stale_siblings(out: Path) -> Iterator[tuple[Path, int]]:
    """The temporary directories beside ``out`` that killed runs left behind, each with an
    open descriptor through which this process holds its lock (where there are locks); the
    consumer owns the descriptor: it closes it (:func:`_unlock`) or keeps the directory.

    A directory is yielded only when all of these hold: its name is one :func:`_sibling_dir`
    makes for ``out`` (``.OUT.tmp-PID-RANDOM`` / ``.OUT.old-PID-RANDOM``), it is a real
    directory, the process PID is gone, and nobody holds its lock (a live run holds one on its
    directory from creation to the end, which also covers runs in other PID namespaces). An
    ``.old-`` directory holds the previous dataset while a new one is moved into place; it is
    yielded only once ``out`` holds a dataset again. ``out`` itself is never yielded.
    """
    if os.name != "posix" or not out.parent.is_dir():
        return
    pattern = re.compile(_SIBLING.format(name=re.escape(out.name)))
    for path in sorted(out.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match is None or path.is_symlink() or not path.is_dir():
            continue
        if _pid_alive(int(match[2])) or (match[1] == "old" and not _is_dataset(out)):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile (its run finished) or not ours to open
        if _locked_elsewhere(fd):
            os.close(fd)
            continue
        yield path, fd
