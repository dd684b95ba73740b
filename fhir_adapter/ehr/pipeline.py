"""`map_extract`: an extract directory to NDJSON per resource type, streamed, on every core.

The main process reads each table in blocks of rows (never a whole file), hands the blocks to worker
processes, and writes what comes back in order. A worker decodes and parses its block, converts each row
to a fact (`convert`), writes its resources as JSON text through the compiled templates (`mapping`,
`compiled`), validates them (`checking`), appends the block's NDJSON per resource type to its spool file and
returns where it put it; the main process copies it into the output inside the kernel. The main process
keeps only the MRNs of the patients converted (to refuse orphan rows) and the row ids of the table being
read (to refuse duplicates), the older ones on disk (`seen`); everything else flows through.

Every row ends up converted or rejected: a rejected row is written to `rejects.csv` with its file, line,
column, reason and the original text, and counted. Per table, read = converted + rejected.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

from .. import bundle, sources
from ..copying import kernel_copy
from ..outdir import exclusive
from ..render import check_version
from ..sources import InputError
from .checking import FilledCheck
from .columns import ColumnMap, load_column_map
from .convert import RowConverter, RowError
from .mapping import RESOURCE_TYPES, FhirMapper
from .model import TABLES
from .seen import SeenKeys

BLOCK_BYTES = 256 * 1024      # a block of rows sent to a worker: about 5,000 rows of a typical extract
SMALL_EXTRACT = 2_000_000          # bytes: below this, one process is faster than starting workers
REJECTS = "rejects.csv"
SUMMARY = "summary.json"


@dataclass
class TableCount:
    """Rows of one table: read = converted + rejected. `file` is None when the extract has no such table."""

    file: str | None
    read: int = 0
    converted: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class Reject:
    table: str
    file: str
    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        column = f"column {self.column!r}: " if self.column else ""
        return f"{self.file}:{self.line}: {column}{self.reason}"


@dataclass
class MapSummary:
    """What `map_extract` did: counts per table and per resource type, where the output is, how fast."""

    extract_dir: str
    out_dir: str
    fhir_version: str
    column_map: str
    validated: bool
    extracted_on: str
    tables: dict[str, TableCount] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)
    rejects_file: str = ""
    bundles: list[str] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1
    first_rejects: list[Reject] = field(default_factory=list)

    @property
    def read(self) -> int:
        return sum(t.read for t in self.tables.values())

    @property
    def converted(self) -> int:
        return sum(t.converted for t in self.tables.values())

    @property
    def rejected(self) -> int:
        return sum(t.rejected for t in self.tables.values())

    @property
    def resource_count(self) -> int:
        return sum(self.resources.values())

    @property
    def resources_per_second(self) -> float:
        return self.resource_count / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["first_rejects"] = [str(r) for r in self.first_rejects]
        data.update(read=self.read, converted=self.converted, rejected=self.rejected)
        return data


# --- the work of one block (in a worker, or inline) ---------------------------------------------------

#: What a worker returns for a block: the outcome of each row, and per resource type the NDJSON made (UTF-8),
#: or from a pool worker where it spooled it (`Spooled`).
Block = tuple[list[tuple[Any, ...]], dict[str, Any]]


@dataclass(frozen=True)
class Job:
    """What a worker needs, picklable: the column map, the headers, the version and the checks."""

    cmap: ColumnMap
    headers: dict[str, list[str]]
    fhir_version: str
    validate: bool
    extracted_on: str


class _Worker:
    def __init__(self, job: Job) -> None:
        self.job = job
        encoding = _encoding(job.cmap)          # rows: the header took any byte-order mark
        self.block_encoding = "utf-8" if encoding == "utf-8-sig" else encoding
        self.converters = {t: RowConverter(t, job.cmap, h, job.extracted_on) for t, h in job.headers.items()}
        self.mapper = FhirMapper.for_map(job.fhir_version, job.cmap)
        self.check = FilledCheck(job.fhir_version) if job.validate else None
        self.headers = job.headers

    def block(self, table: str, first_line: int, text: bytes) -> Block:
        """Outcomes in row order: (line, n_lines, key, mrn, (resource type, ...)) or (line, n_lines, column,
        reason); and per resource type the NDJSON text of the converted rows' resources, in row order."""
        bad: dict[int, UnicodeDecodeError] = {}
        try:     # the whole block at once; line by line where it fails, to find the rows with bad bytes
            texts = _lines(text.decode(self.block_encoding), "\n")
        except UnicodeDecodeError:
            texts = []
            for i, raw in enumerate(_lines(text, b"\n")):
                try:
                    texts.append(raw.decode(self.block_encoding))
                except UnicodeDecodeError as exc:
                    texts.append(raw.decode(self.block_encoding, "replace"))
                    bad[i] = exc
        reader = csv.reader(texts, delimiter=self.job.cmap.delimiter)
        converter, mapper, check = self.converters[table], self.mapper, self.check
        out: list[tuple[Any, ...]] = []
        made: dict[str, list[str]] = defaultdict(list)
        is_patients = table == "patients"
        start = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                end = reader.line_num
                out.append((first_line + start, end - start, None, f"unreadable CSV: {exc}"))
                start = end
                continue
            end = reader.line_num
            line, count, first = first_line + start, end - start, start
            start = end
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line is not a row
            if bad and any(i in bad for i in range(first, end)):
                out.append((line, count, *self._encoding_error(table, cells, bad[next(i for i in range(first, end)
                                                                                  if i in bad)])))
                continue
            try:
                fact = converter.convert(cells)
            except RowError as exc:
                out.append((line, count, exc.column, exc.reason))
                continue
            written = mapper.texts(table, fact, check)
            if check is not None:
                refused = self._refused(written)
                if refused:
                    out.append((line, count, None, refused))
                    continue
            if len(written) == 1:                   # most rows make one resource
                rtype = written[0][0]
                made[rtype].append(written[0][1])
                kinds: tuple[str, ...] = (rtype,)
            else:
                for rtype, resource, _ in written:
                    made[rtype].append(resource)
                kinds = tuple([w[0] for w in written])
            out.append((line, count, fact.mrn if is_patients else fact.row_id, fact.mrn, kinds))
        return out, {rtype: ("\n".join(resources) + "\n").encode() for rtype, resources in made.items()}

    def _refused(self, written: list[tuple[str, str, list[Any]]]) -> str | None:
        """Why a row is refused: the first of its resources that is not valid, or None."""
        for rtype, _, issues in written:
            if issues:
                shown = "; ".join(f"{i.location}: {i.message}" for i in issues[:3])
                return f"the {rtype} it makes is not valid FHIR {self.job.fhir_version}: {shown}"
        return None

    def _encoding_error(self, table: str, cells: list[str], exc: UnicodeDecodeError) -> tuple[str | None, str]:
        header = self.headers[table]
        column = next((header[i] for i, cell in enumerate(cells) if "\ufffd" in cell and i < len(header)), None)
        byte = exc.object[exc.start:exc.start + 1].hex()
        return column, (f"not {self.job.cmap.encoding} text (byte 0x{byte}); if the file is in another encoding, "
                        f"set 'encoding' in the column map")


_WORKER: _Worker | None = None
_SPOOL: Any = None      # a pool worker's spool file: the NDJSON it makes, read back by the main process


def _init_worker(job: Job, spool_dir: str | None = None) -> None:
    global _WORKER, _SPOOL
    _WORKER = _Worker(job)
    if spool_dir is not None:
        # not .ndjson: a spool left by a killed run is never read as input by push, validate or screen
        _SPOOL = (Path(spool_dir) / f"worker-{os.getpid()}.spool").open("wb")


def _lines(text: Any, end: Any) -> list[Any]:
    """The lines of a block with their line ends, cut at `end` only (a CR or U+2028 stays inside its line)."""
    lines = text.split(end)
    last = lines.pop()
    lines = [line + end for line in lines]
    if last:
        lines.append(last)
    return lines


def _run_block(table: str, first_line: int, text: bytes) -> Block:
    """A block, sent as one bytes object (cheaper through the pipe than its lines)."""
    assert _WORKER is not None
    return _WORKER.block(table, first_line, text)


#: Where a pool worker put a block's NDJSON of one resource type: (spool file, offset, length).
Spooled = tuple[str, int, int]


def _run_spooled(table: str, first_line: int, text: bytes) -> tuple[list[tuple[Any, ...]], dict[str, Spooled]]:
    """`_run_block` in a pool worker: the NDJSON goes to the worker's spool file, only where it is comes back
    (the main process copies it to the output inside the kernel instead of receiving it through a pipe)."""
    outcomes, made = _run_block(table, first_line, text)
    spooled = {}
    for rtype, ndjson in made.items():
        spooled[rtype] = (_SPOOL.name, _SPOOL.tell(), len(ndjson))
        _SPOOL.write(ndjson)
    _SPOOL.flush()
    return outcomes, spooled


# --- reading ------------------------------------------------------------------------------------------

def _encoding(cmap: ColumnMap) -> str:
    return "utf-8-sig" if cmap.encoding.replace("_", "-").lower() in ("utf-8", "utf8") else cmap.encoding


def read_header(path: Path, cmap: ColumnMap) -> list[str]:
    """The column names of a table file (first line); an InputError names the file when it has none."""
    with path.open("rb") as stream:
        first = stream.readline()
    if not first.strip():
        raise InputError(f"{path}: empty file: the first line must name the columns")
    try:
        text = first.decode(_encoding(cmap))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}:1: the header is not {cmap.encoding} text (byte {exc.start}); "
                         f"set 'encoding' in the column map") from None
    return [name.strip() for name in next(csv.reader([text], delimiter=cmap.delimiter))]


def blocks(path: Path, size: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(first line number, text) of about `size` bytes after the header, cut only between rows: at a line
    end with an even number of quotes before it in the block (a quoted newline stays in its row)."""
    with path.open("rb") as stream:
        stream.readline()
        number, carry = 2, b""
        while chunk := stream.read(size):
            data = carry + chunk if carry else chunk
            cut = data.rfind(b"\n") + 1
            while cut and data.count(b'"', 0, cut) & 1:
                cut = data.rfind(b"\n", 0, cut - 1) + 1
            block, carry = data[:cut], data[cut:]
            if block:
                yield number, block
                number += block.count(b"\n")
        if carry:
            yield number, carry


# --- running blocks -----------------------------------------------------------------------------------

class _Runner:
    """Runs blocks inline or on a pool, yielding results in order with a bounded number in flight."""

    def __init__(self, job: Job, workers: int, out_dir: Path) -> None:
        self.workers = workers
        self.pool = None
        self.spool: str | None = None
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.spool = tempfile.mkdtemp(prefix=".spool-", dir=out_dir)
            self.pool = context.Pool(workers, initializer=_init_worker, initargs=(job, self.spool))
        else:
            _init_worker(job)

    def run(self, table: str, items: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes, Block]]:
        if self.pool is None:
            for first, text in items:
                yield first, text, _run_block(table, first, text)
            return
        pending: deque[tuple[int, bytes, Any]] = deque()
        for first, text in items:
            pending.append((first, text, self.pool.apply_async(_run_spooled, (table, first, text))))
            if len(pending) > 2 * self.workers + 2:
                first_, text_, result = pending.popleft()
                yield first_, text_, result.get()
        while pending:
            first_, text_, result = pending.popleft()
            yield first_, text_, result.get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
        self._remove_spool()

    def terminate(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        self._remove_spool()

    def _remove_spool(self) -> None:
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None


# --- writing ------------------------------------------------------------------------------------------

class _Output:
    """NDJSON per resource type, the rejects file, and optional transaction bundles."""

    def __init__(self, out_dir: Path, bundle_size: int | None) -> None:
        self.out_dir = out_dir
        for stale in [*(out_dir / f"{t}.ndjson" for t in RESOURCE_TYPES), out_dir / REJECTS, out_dir / SUMMARY,
                      *sorted((out_dir / "bundles").glob("bundle-*.json"))]:
            stale.unlink(missing_ok=True)
        for spool in out_dir.glob(".spool-*"):     # left by a run that was killed
            shutil.rmtree(spool, ignore_errors=True)
        # UTF-8 from the workers, written in blocks: unbuffered, so that spooled blocks can be copied in too
        self.files = {t: (out_dir / f"{t}.ndjson").open("wb", buffering=0) for t in RESOURCE_TYPES}
        self._spools: dict[str, Any] = {}      # spool files being read, by path
        self.counts = dict.fromkeys(RESOURCE_TYPES, 0)
        self._rejects_stream = (out_dir / REJECTS).open("w", encoding="utf-8", newline="")
        self.rejects = csv.writer(self._rejects_stream)
        self.rejects.writerow(["table", "file", "line", "column", "reason", "row"])
        self.bundle_size = bundle_size
        self.bundles: list[str] = []
        self._pending: list[str] = []
        if bundle_size:
            if bundle_size < 1:
                raise ValueError(f"bundle size must be at least 1, got {bundle_size}")
            (out_dir / "bundles").mkdir(exist_ok=True)

    def write(self, rtype: str, text: bytes, count: int) -> None:
        """Append `count` resources of one type (NDJSON in UTF-8, one per line)."""
        if not count:
            return
        _write_all(self.files[rtype], text)
        self.counts[rtype] += count
        if self.bundle_size:
            self._pending.extend(text.decode().split("\n")[:-1])   # not splitlines: U+2028 may be in a resource
            while len(self._pending) >= self.bundle_size:
                self._flush_bundle(self._pending[:self.bundle_size])
                del self._pending[:self.bundle_size]

    def read(self, spooled: Spooled) -> bytes:
        """A spooled block's NDJSON."""
        path, offset, length = spooled
        stream = self._spool(path)
        stream.seek(offset)
        data = stream.read(length)
        if len(data) != length:
            raise OSError(f"{path}: the spool file ends before byte {offset + length}")
        return data

    def copy(self, rtype: str, spooled: Spooled, count: int) -> None:
        """Append a spooled block of `count` resources, copied inside the kernel where it can be."""
        path, offset, length = spooled
        if not self.bundle_size:
            done = kernel_copy(self._spool(path).fileno(), self.files[rtype].fileno(), offset, length)
            if done == length:
                self.counts[rtype] += count
                return
            offset, length = offset + done, length - done
        # bundles need the text; elsewhere a system or file system that cannot copy: through this process
        self.write(rtype, self.read((path, offset, length)), count)

    def _spool(self, path: str) -> Any:
        if path not in self._spools:
            self._spools[path] = open(path, "rb", buffering=0)  # noqa: SIM115 - open for the run, closed in close()
        return self._spools[path]

    def _flush_bundle(self, lines: list[str]) -> None:
        path = self.out_dir / "bundles" / f"bundle-{len(self.bundles) + 1:05d}.json"
        sources.write_json(path, bundle.transaction(json.loads(line) for line in lines))
        self.bundles.append(str(path))

    def close(self) -> None:
        if self._pending:
            self._flush_bundle(self._pending)
            self._pending = []
        for stream in self.files.values():
            stream.close()
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()
        self._rejects_stream.close()


def _write_all(stream: Any, data: bytes) -> None:
    """Write all of `data` to an unbuffered file (whose `write` may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[stream.write(view):]


# --- the whole run ------------------------------------------------------------------------------------

def map_extract(extract_dir: Path, out_dir: Path, fhir_version: str = "R4", *, validate: bool = True,
                bundle_size: int | None = None, column_map: Path | str | None = None, workers: int | None = None,
                extracted_on: dt.date | str | None = None, keep_rejects: int = 100) -> MapSummary:
    """Map an extract directory (one CSV per table) to `Patient.ndjson`, `Condition.ndjson`, ... in `out_dir`.

    `column_map`: a column map file or name (default: the project's format); `extracted_on`: the date the
    extract was taken (default today): later dates are rejected as future; `workers`: processes (default:
    one per core, one for a small extract); `bundle_size`: also write transaction bundles of that many
    resources to `out_dir/bundles/` (Patients first, so a server can take them in order).
    """
    started = time.perf_counter()
    version = check_version(fhir_version)
    cmap = load_column_map(column_map)
    extract_dir, out_dir = Path(extract_dir), Path(out_dir)
    if not extract_dir.is_dir():
        raise InputError(f"{extract_dir}: not a directory (an extract is a directory of CSV files, one per table)")
    on = extracted_on.isoformat() if isinstance(extracted_on, dt.date) else extracted_on
    on = on or dt.date.today().isoformat()
    summary = MapSummary(str(extract_dir), str(out_dir), version, cmap.source, validate, on)
    paths: dict[str, Path] = {}
    for name in TABLES:
        path = extract_dir / cmap.table(name).file
        if path.is_file():
            paths[name] = path
            summary.tables[name] = TableCount(path.name)
        else:
            summary.tables[name] = TableCount(None)
    if "patients" not in paths:
        raise InputError(f"{extract_dir / cmap.table('patients').file}: no patients table; every other row "
                         f"refers to a patient in it")
    headers = {name: read_header(path, cmap) for name, path in paths.items()}
    job = Job(cmap, headers, version, validate, on)
    _Worker(job)  # a missing column or a bad column map fails here, before any output
    if workers is None:
        size = sum(p.stat().st_size for p in paths.values())
        workers = 1 if size < SMALL_EXTRACT else (os.cpu_count() or 1)
    summary.workers = max(1, workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir, "writing mapped resources"):
        output = _Output(out_dir, bundle_size)
        runner = _Runner(job, summary.workers, out_dir)
        patients = SeenKeys()
        try:
            for name, path in paths.items():
                _map_table(name, path, cmap, runner, output, summary, patients, keep_rejects)
            runner.close()
        except BaseException:
            runner.terminate()
            raise
        finally:
            output.close()
            patients.close()
        summary.resources = dict(output.counts)
        summary.rejects_file = str(out_dir / REJECTS)
        summary.bundles = output.bundles
        summary.seconds = time.perf_counter() - started
        sources.write_json(out_dir / SUMMARY, summary.to_dict())
    return summary


def _map_table(name: str, path: Path, cmap: ColumnMap, runner: _Runner, output: _Output, summary: MapSummary,
               patients: SeenKeys, keep: int) -> None:
    is_patients = name == "patients"
    seen = patients if is_patients else SeenKeys()    # the row ids (MRNs) of this table so far
    try:
        _map_rows(name, path, cmap, runner, output, summary, patients, seen, keep)
    finally:
        if not is_patients:
            seen.close()


def _map_rows(name: str, path: Path, cmap: ColumnMap, runner: _Runner, output: _Output, summary: MapSummary,
              patients: SeenKeys, seen: SeenKeys, keep: int) -> None:
    count = summary.tables[name]
    key_column = cmap.table(name).column(TABLES[name].key).column
    mrn_column = cmap.table(name).column("mrn").column
    encoding = _encoding(cmap)
    is_patients = name == "patients"
    for first, text, (outcomes, made) in runner.run(name, blocks(path)):
        lines: list[bytes] | None = None      # the block's lines, cut when a row of it is rejected
        count.read += len(outcomes)
        converted = [o for o in outcomes if len(o) == 5]
        keys = [o[2] for o in converted]
        earlier = seen.known(keys)                                      # keys of earlier blocks
        mrns = set() if is_patients else {o[3] for o in converted}
        known_mrns = patients.known(mrns) if mrns else set()
        if len(converted) == len(outcomes) and not earlier and len(known_mrns) == len(mrns) \
                and len(set(keys)) == len(keys):
            # the usual block: every row converted in the worker, and none refused here
            count.converted += len(keys)
            seen.update(keys)
            _write(output, made, Counter(chain.from_iterable(map(itemgetter(4), converted))))
            continue
        made_count = dict.fromkeys(made, 0)
        dropped: dict[str, set[int]] = {}     # per type, positions of resources whose row is refused here
        added: list[str] = []
        for outcome in outcomes:
            if len(outcome) == 5:
                line, n, key, mrn, kinds = outcome
                if key in earlier:
                    what = "MRN" if is_patients else "row id"
                    outcome = (line, n, key_column, f"duplicate {what} {key!r}: an earlier row of {path.name} has it")
                elif not is_patients and mrn not in known_mrns:
                    outcome = (line, n, mrn_column, f"orphan row: no patient with MRN {mrn!r} in "
                                                    f"{cmap.table('patients').file}")
                else:
                    outcome = None
                    earlier.add(key)       # a later row of this block with the key is a duplicate too
                    added.append(key)
                    count.converted += 1
                for rtype in kinds:
                    if outcome is not None:
                        dropped.setdefault(rtype, set()).add(made_count[rtype])
                    made_count[rtype] += 1
                if outcome is None:
                    continue
            line, n, column, reason = outcome
            if lines is None:
                lines = text.split(b"\n")
            original = b"\n".join(lines[line - first:line - first + n]).decode(encoding, "backslashreplace")
            reject = Reject(name, path.name, line, column, reason)
            output.rejects.writerow([name, path.name, line, column or "", reason, original.rstrip("\r\n")])
            count.rejected += 1
            if len(summary.first_rejects) < keep:
                summary.first_rejects.append(reject)
        seen.update(added)
        _write(output, made, made_count, dropped)


def _write(output: _Output, made: dict[str, Any], counts: dict[str, int],
           dropped: dict[str, set[int]] | None = None) -> None:
    """A block's resources to the output, but for those at the `dropped` positions of their type."""
    for rtype, ndjson in made.items():
        if dropped and rtype in dropped:
            whole = ndjson if isinstance(ndjson, bytes) else output.read(ndjson)
            kept = [t for i, t in enumerate(whole.split(b"\n")[:-1]) if i not in dropped[rtype]]
            output.write(rtype, b"".join(t + b"\n" for t in kept), len(kept))
        elif isinstance(ndjson, bytes):
            output.write(rtype, ndjson, counts[rtype])
        else:
            output.copy(rtype, ndjson, counts[rtype])
