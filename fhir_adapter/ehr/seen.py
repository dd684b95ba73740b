"""The keys already seen in an extract (MRNs, row ids), in bounded memory.

`patients map` refuses a row whose row id an earlier row has, and a row whose MRN is not a patient's. Both
need every key seen so far; `SeenKeys` keeps the latest `limit` keys in memory and moves older ones to a
temporary SQLite file, so the memory of a run does not grow with the extract. Lookups come a block of rows
at a time.

>>> seen = SeenKeys(limit=2)
>>> for key in ("a", "b", "c"):
...     seen.add(key)
>>> sorted(seen.known(["a", "c", "x"])), len(seen)
(['a', 'c'], 3)
>>> seen.close()
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path

LIMIT = 100_000      # keys kept in memory (about 9 MB); older ones are on disk
_QUERY_KEYS = 500    # keys per lookup query (SQLite allows at least 999 parameters)
_FILTER_BITS = 1 << 24   # a 2 MB bitmap of the stored keys' hashes: most new keys need no query


class SeenKeys:
    """A growing set of text keys: `add`, `known` (which of some keys were added), `close`."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit or LIMIT
        self._recent: set[str] = set()
        self._stored = 0
        self._dir: Path | None = None
        self._db: sqlite3.Connection | None = None
        self._filter: bytearray | None = None

    def __len__(self) -> int:
        return len(self._recent) + self._stored

    def add(self, key: str) -> None:
        self.update((key,))

    def update(self, keys: Iterable[str]) -> None:
        """Add several keys."""
        self._recent.update(keys)
        if len(self._recent) >= self.limit:
            self._spill()

    def known(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` that were added."""
        keys = set(keys)
        found = keys & self._recent
        rest = keys - found
        if self._db is not None and rest:
            bits, mask = self._filter, _FILTER_BITS - 1
            rest = [k for k in rest if bits[(h := hash(k) & mask) >> 3] >> (h & 7) & 1]   # type: ignore[index]
            for start in range(0, len(rest), _QUERY_KEYS):
                part = rest[start:start + _QUERY_KEYS]
                marks = ",".join("?" * len(part))
                found.update(row[0] for row in self._db.execute(f"SELECT key FROM seen WHERE key IN ({marks})", part))
        return found

    def _spill(self) -> None:
        if self._db is None:
            self._dir = Path(tempfile.mkdtemp(prefix="fhir-adapter-seen-"))
            self._db = sqlite3.connect(self._dir / "seen.sqlite")
            self._db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                                   "CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID;")
            self._filter = bytearray(_FILTER_BITS >> 3)
        bits, mask = self._filter, _FILTER_BITS - 1
        for key in self._recent:
            h = hash(key) & mask
            bits[h >> 3] |= 1 << (h & 7)
        with self._db:      # in key order: appending to SQLite's B-tree is cheaper than inserting at random
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", ((key,) for key in sorted(self._recent)))
        self._stored += len(self._recent)
        self._recent.clear()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._filter = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._recent.clear()
        self._stored = 0
