"""One output file written by several processes at once, each part in its own region, joined in place.

Where the file system can cut a range out of a file (Linux `fallocate` with FALLOC_FL_COLLAPSE_RANGE: ext4,
XFS), part k is written at offset k x `stride` of the one file, which stays sparse (the gaps take no disk),
and `join` cuts the gaps out: no byte is copied, whatever the parts' size. The cut works in whole blocks,
so the end of each part but the last is padded with spaces to a block boundary: only for formats that allow
whitespace there (JSON between values). Elsewhere `Regions.stride` is 0 and the caller writes parts to files
of their own and copies them (see `writers`).
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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
    """Where each of `parts` writers writes in `path`: part k from `k * stride` (0: one file per part)."""

    path: Path
    parts: int
    stride: int = 0
    block: int = 4096

    @classmethod
    def plan(cls, path: Path, parts: int) -> Regions:
        """Lay out `parts` regions in `path` if its file system can join them in place (tried on a scratch file
        beside it; `path` itself is not touched: it is made when the parts open it)."""
        if parts < 2 or _FALLOCATE is None:
            return cls(path, parts)
        scratch = path.with_name(f".{path.name}.probe")
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

    def open(self, part: int) -> BinaryIO:
        """The shared file opened at part `part`'s region (made if missing; never emptied: `join` cuts it)."""
        stream = open(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+b")  # noqa: SIM115 - the caller closes it
        stream.seek(self.start(part))
        return stream

    def start(self, part: int) -> int:
        return part * self.stride

    def limit(self, part: int) -> int:
        """The first byte part `part` may not write: the next region's start (none for the last part)."""
        return (part + 1) * self.stride if part + 1 < self.parts else 1 << 62

    def join(self, ends: list[int]) -> int:
        """Cut the gaps between the parts (`ends[k]`: where part k stopped writing); returns the joined size.

        Parts missing at the end of `ends` (they never ran) count as empty. Whatever the file held beyond the
        joined size (an earlier run's bytes) is for the caller to truncate after writing its last bytes.
        """
        ends = list(ends) + [self.start(k) for k in range(len(ends), self.parts)]
        with self.path.open("r+b", buffering=0) as stream:
            fd = stream.fileno()
            size = os.fstat(fd).st_size
            for k in reversed(range(1, self.parts)):
                end, start = ends[k - 1], self.start(k)
                if start >= size:                   # nothing from part k on: the file ends with part k - 1
                    size = min(end, size)
                    os.ftruncate(fd, size)
                    continue
                padded = -(-end // self.block) * self.block
                if padded > end:
                    os.pwrite(fd, b" " * (padded - end), end)
                if padded < start:
                    collapse(fd, padded, start - padded)
                    size -= start - padded
            return size
