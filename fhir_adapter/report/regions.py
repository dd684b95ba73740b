"""One output file written by several processes at once, each its part, joined at the end.

Where the file system can cut a range out of a file (Linux `fallocate` with FALLOC_FL_COLLAPSE_RANGE: ext4,
XFS), part k is written at offset k x `stride` of the one file, which stays sparse (the gaps take no disk),
and `join` cuts the gaps out: no byte is copied, whatever the parts' size. The cut works in whole blocks,
so the end of each part but the last is padded with spaces to a block boundary: only for formats that allow
whitespace there (JSON between values; `Regions.plan` chooses this layout). Otherwise (`stride` 0) part 0 is
the file itself, part k a file `<name>-k` beside it, and `join` appends them, inside the kernel where it can.
Every file it makes starts with the name of `path` (`<name>-k`, `<name>.probe`), so that a caller can find
them all to remove them; `path` itself, once joined, the caller renames into place.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..copying import kernel_copy

COLLAPSE_RANGE = 0x08                   # FALLOC_FL_COLLAPSE_RANGE, linux/falloc.h
SPAN = 1 << 43                          # 8 TiB shared by the regions: within ext4's 16 TiB files


def _load_fallocate() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError, TypeError):   # not Linux (no fallocate, or no C library by that name)
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function.restype = ctypes.c_int
    return function


_FALLOCATE = _load_fallocate()


def collapse(fd: int, offset: int, length: int) -> None:
    """Cut `length` bytes at `offset` out of a file (both whole blocks); the rest of the file moves down."""
    if _FALLOCATE is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available on this system")
    if _FALLOCATE(fd, COLLAPSE_RANGE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@dataclass(frozen=True)
class Regions:
    """Where each of `parts` writers writes `path`: part k from `k * stride` of it, or (`stride` 0) part 0
    in `path` and part k in a file of its own beside it, `<name>-k`."""

    path: Path
    parts: int
    stride: int = 0
    block: int = 4096

    @classmethod
    def plan(cls, path: Path, parts: int) -> Regions:
        """Lay out `parts` regions in `path` if its file system can join them in place (tried on a scratch file
        beside it first); `path` is made empty, so that nothing of an earlier run is in it."""
        path.open("wb").close()
        if parts < 2 or _FALLOCATE is None:
            return cls(path, parts)
        scratch = path.with_name(f"{path.name}.probe")
        fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            block = os.fstatvfs(fd).f_bsize
            os.pwrite(fd, b" ", 2 * block)      # a small sparse file first: no far write where cutting fails
            collapse(fd, 0, block)
            stride = SPAN // parts // block * block
            os.pwrite(fd, b" ", (parts - 1) * stride)
            if os.fstat(fd).st_blocks * 512 > 1 << 20:       # the gap took disk space: not sparse after all
                return cls(path, parts)
            collapse(fd, 0, (parts - 1) * stride)
            return cls(path, parts, stride, block)
        except OSError:
            return cls(path, parts)
        finally:
            os.close(fd)
            scratch.unlink()

    @property
    def in_place(self) -> bool:
        """Whether the parts share the one file (and `join` cuts the gaps out)."""
        return self.stride > 0

    def location(self, part: int) -> tuple[Path, int]:
        """The file part `part` writes and where in it its first byte goes."""
        if self.in_place or part == 0:
            return self.path, part * self.stride
        return self.path.with_name(f"{self.path.name}-{part}"), 0

    def open(self, part: int) -> BinaryIO:
        """Part `part`'s file, open at its start: in place the shared file (made if missing, never emptied here:
        `join` cuts it), otherwise a file of the part's own, emptied."""
        path, start = self.location(part)
        if not self.in_place:
            return path.open("wb")
        stream = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b")  # noqa: SIM115 - the caller closes it
        stream.seek(start)
        return stream

    def limit(self, part: int) -> int:
        """The first byte part `part` may not write: in place the next region's start (none for the last part)."""
        return (part + 1) * self.stride if self.in_place and part + 1 < self.parts else 1 << 62

    def join(self, ends: list[int], skip: dict[int, int] | None = None) -> int:
        """Make `path` the parts one after the other (`ends[k]`: where part k stopped writing in its file);
        returns the joined size, at which the file ends; the parts' own files are removed. `skip[k]`: bytes
        left out at the start of part k's own file (a part joined in place cannot leave any out)."""
        with self.path.open("r+b", buffering=0) as stream:
            size = self._cut(stream.fileno(), ends) if self.in_place else self._append(stream, ends, skip or {})
            os.ftruncate(stream.fileno(), size)          # an earlier run's bytes beyond it, if any, go
        return size

    def _cut(self, fd: int, ends: list[int]) -> int:
        size = os.fstat(fd).st_size
        for k in reversed(range(1, self.parts)):
            end, start = ends[k - 1], self.location(k)[1]
            if start >= size:                   # nothing from part k on: the file ends with part k - 1
                size = min(end, size)
                continue
            padded = -(-end // self.block) * self.block
            if padded > end:
                os.pwrite(fd, b" " * (padded - end), end)
            if padded < start:
                collapse(fd, padded, start - padded)
                size -= start - padded
        return size

    def _append(self, target: BinaryIO, ends: list[int], skip: dict[int, int]) -> int:
        target.seek(ends[0])
        for k in range(1, self.parts):
            path = self.location(k)[0]
            if ends[k]:
                append(target, path, skip.get(k, 0))
            path.unlink(missing_ok=True)
        return target.tell()


def append(target: BinaryIO, path: Path, start: int = 0) -> None:
    """Copy a file from byte `start` on to the end of `target`, inside the kernel where it can."""
    with path.open("rb") as source:
        size = os.fstat(source.fileno()).st_size - start
        target.flush()
        copied = kernel_copy(source.fileno(), target.fileno(), start, size)
        if copied < size:               # the rest through this process, after what the kernel copied
            target.seek(0, os.SEEK_END)
            source.seek(start + copied)
            shutil.copyfileobj(source, target, 1 << 20)
        target.seek(0, os.SEEK_END)
