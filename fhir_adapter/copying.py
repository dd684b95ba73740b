"""Copying bytes between open files inside the kernel (`copy_file_range`), where the system can.

>>> import tempfile
>>> with tempfile.TemporaryFile() as a, tempfile.TemporaryFile() as b:
...     _ = a.write(b"hello world"); a.flush()
...     copied = kernel_copy(a.fileno(), b.fileno(), 6, 5)
...     _ = b.seek(0); (copied, b.read()) in ((5, b"world"), (0, b""))
True
"""

from __future__ import annotations

import os


def kernel_copy(source: int, target: int, offset: int, length: int) -> int:
    """Copy `length` bytes from `offset` in `source` to the current position of `target` (which moves on);
    returns how many the kernel copied before it refused or ran out (0 without `copy_file_range`). The caller
    copies the rest itself."""
    copied = 0
    if not hasattr(os, "copy_file_range"):
        return 0
    while copied < length:
        try:
            n = os.copy_file_range(source, target, length - copied, offset + copied)
        except OSError:         # a file system or file that cannot: the caller goes on from here
            break
        if not n:
            break
        copied += n
    return copied
