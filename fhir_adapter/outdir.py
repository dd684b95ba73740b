"""One run at a time per output directory: a second `screen` or `patients map` into a directory another run is
writing stops at once (`OutputInUse`) instead of removing or truncating the first one's files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:                     # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK = ".fhir-adapter.lock"             # held by the run writing into the directory


class OutputInUse(RuntimeError):
    """Another run is writing into the same directory."""


@contextmanager
def exclusive(out: Path, doing: str) -> Iterator[None]:
    """Hold the lock of `out` (an flock on its hidden lock file, released by the system should the run die), the
    file saying what this run is `doing` there ("writing screening reports"), or raise `OutputInUse` saying what
    the run holding it is doing; the file goes when the run ends. Where there is no flock (Windows), runs are
    not guarded."""
    if fcntl is None:
        yield
        return
    path = out / LOCK
    while True:
        lock = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            theirs = lock.read(200).strip() or "writing"
            lock.close()
            raise OutputInUse(f"{out}: another run is {theirs} there; wait until it has finished, or give another "
                              "directory") from None
        try:
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()                # a run that just finished removed the file this one locked: lock the new one
    lock.truncate(0)
    lock.write(doing)
    lock.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.close()
