"""Reading and writing FHIR JSON files: single resources, Bundles, NDJSON, directories of them, stdin.

Every resource comes with its location (`file:line` for NDJSON, `file#entry[i]` for a Bundle), so a
finding can name where it came from. Malformed JSON is an `InputError` naming file, line and column.
Files are read as bulk exports and EHRs write them: `.json`, `.ndjson` or `.jsonl` in any case, each also
gzipped (`.ndjson.gz`), UTF-8 with or without a byte order mark.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

BOM = b"\xef\xbb\xbf"
NDJSON_SUFFIXES = (".ndjson", ".jsonl")


class InputError(ValueError):
    """Input that cannot be read as FHIR JSON; the message names the file, line and column."""


def decode(text: str, where: str, line_offset: int = 0) -> Any:
    """Parse JSON text; malformed JSON is an `InputError` naming `where`, line (after `line_offset`) and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = exc.lineno + line_offset
        raise InputError(f"{where}:{line}:{exc.colno}: malformed JSON: {exc.msg}") from None


def not_utf8(where: str, exc: UnicodeDecodeError) -> InputError:
    """The error for text at `where` (a file, `file:line`) that is not UTF-8."""
    return InputError(f"{where}: not UTF-8 text (byte {exc.start}): {exc.reason}")


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 bytes as text, a leading byte order mark left out; bytes that are not UTF-8 name `name`."""
    try:
        return data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(name, exc) from None


def decode_document(data: bytes, name: str) -> Any:
    """One JSON document from bytes, a leading byte order mark allowed; errors name `name`."""
    return decode(decode_text(data, name), name)


def stdin_text(stream: TextIO) -> str:
    """What a text stream (stdin) holds, a leading byte order mark left out."""
    return stream.read().removeprefix("\ufeff")


def read_json(path: str | Path) -> Any:
    """Parse one JSON file (gzipped too), with file, line and column in the error."""
    return decode_document(read_bytes(Path(path)), str(path))


def read_bytes(path: Path) -> bytes:
    """A file's bytes, uncompressed if its name ends in .gz (a damaged one is an `InputError`)."""
    with open_bytes(path) as stream, gzip_errors(path):
        return stream.read()


def is_ndjson(path: Path) -> bool:
    """Whether a file holds one resource per line: .ndjson or .jsonl (any case), gzipped or not."""
    return path.name.lower().removesuffix(".gz").endswith(NDJSON_SUFFIXES)


def readable(path: Path) -> bool:
    """Whether a file found in a directory is read: .json, .ndjson or .jsonl (any case), gzipped or not."""
    return path.name.lower().removesuffix(".gz").endswith((".json", *NDJSON_SUFFIXES))


def open_bytes(path: Path) -> IO[bytes]:
    """A file opened for reading bytes, uncompressed as it is read if its name ends in .gz."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


@contextmanager
def gzip_errors(path: Path) -> Iterator[None]:
    """A damaged gzip file as an `InputError` naming it."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: not a readable gzip file: {exc}") from None


#: Why a file found in a directory is not read.
NOT_READABLE = "not .json, .ndjson or .jsonl (or one of them gzipped)"


def walk(paths: Iterable[str | Path], skipped: list[tuple[Path, str]] | None = None,
         ) -> Iterator[tuple[Path, bool]]:
    """Each file, and whether it was found by expanding a directory (True) rather than named (False); in a
    directory only the `readable` ones, the others added to `skipped` with why."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and readable(f):
                    yield f, True
                elif f.is_file() and skipped is not None:
                    skipped.append((f, NOT_READABLE))
        elif p.exists() or str(p) == "-":
            yield p, False
        else:
            raise InputError(f"{p}: no such file or directory")


def file_of(location: str) -> str:
    """The file a resource's location names.

    >>> [file_of(x) for x in ("p.ndjson:7", "b.json#entry[2]", "b.json:12#entry[2]", "<stdin>")]
    ['p.ndjson', 'b.json', 'b.json', '<stdin>']
    """
    return re.sub(r":\d+$", "", location.split("#", 1)[0])


def skip_bom(stream: IO[bytes]) -> None:
    """Read past a UTF-8 byte order mark at the start of a stream (rewound where there is none)."""
    if stream.read(len(BOM)) != BOM:
        stream.seek(0)


def is_resource(document: Any) -> bool:
    """Whether a parsed JSON document is a FHIR resource (an object with a resourceType)."""
    return isinstance(document, dict) and "resourceType" in document


def _from_document(document: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not is_resource(document):
        raise InputError(f"{where}: not a FHIR resource (no resourceType)")
    if document["resourceType"] == "Bundle" and isinstance(document.get("entry"), list):
        yield where, document
        for i, item in enumerate(document["entry"]):
            resource = item.get("resource") if isinstance(item, dict) else None
            if isinstance(resource, dict):
                yield f"{where}#entry[{i}]", resource
    else:
        yield where, document


def _text_lines(stream: IO[bytes], where: str) -> Iterator[str]:
    """The lines of a UTF-8 file, a byte order mark before the first allowed; a line that is not UTF-8 is an
    `InputError` naming it."""
    skip_bom(stream)
    for number, line in enumerate(stream, 1):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise not_utf8(f"{where}:{number}", exc) from None


def _ndjson(stream: Iterable[str], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(stream, 1):
        if line.strip():
            resource = decode(line.rstrip("\r\n"), where, number - 1)
            if not is_resource(resource):
                raise InputError(f"{where}:{number}: not a FHIR resource (no resourceType)")
            yield f"{where}:{number}", resource


def file_documents(path: Path, found: bool = False, skipped: list[Path] | None = None,
                   ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each top-level JSON object of one file (or `-`, stdin): a whole Bundle once, each NDJSON line once.

    With `skipped`, a .json file `found` in a directory that is not a FHIR resource (the `summary.json` that
    `patients map` writes beside its NDJSON) is listed there instead of being an error; a file named
    explicitly must always be FHIR.
    """
    if str(path) == "-":
        text = stdin_text(sys.stdin)
        try:  # one JSON document, or else NDJSON
            yield "<stdin>", json.loads(text)
        except json.JSONDecodeError:
            yield from _ndjson(iter(text.splitlines(keepends=True)), "<stdin>")
    elif is_ndjson(path):
        with open_bytes(path) as stream, gzip_errors(path):
            yield from _ndjson(_text_lines(stream, str(path)), str(path))
    else:
        document = read_json(path)
        if found and skipped is not None and not is_resource(document):
            skipped.append(path)
            return
        yield str(path), document


def documents(paths: Iterable[str | Path], skipped: list[Path] | None = None,
              ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each top-level JSON object of every file in the paths; `skipped` as in `file_documents`."""
    for path, found in walk(paths):
        yield from file_documents(path, found, skipped)


def unpack(document: Any, where: str, *, bundles: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """The resources of one document with their locations: a Bundle's entries (and the Bundle if `bundles`)."""
    for location, resource in _from_document(document, where):
        if resource is document and resource.get("resourceType") == "Bundle" and not bundles:
            continue
        yield location, resource


def resources(paths: Iterable[str | Path], *, bundles: bool = False, skipped: list[Path] | None = None,
              ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every resource in the paths with its location; `bundles` as in `unpack`, `skipped` as in
    `file_documents`."""
    for where, document in documents(paths, skipped):
        yield from unpack(document, where, bundles=bundles)


def write_ndjson(path: str | Path, items: Iterable[dict[str, Any]]) -> int:
    """Write resources one per line; returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
            count += 1
    return count


def write_json(path: str | Path, document: Any) -> None:
    """Write one JSON document, indented for people, with a final newline."""
    Path(path).write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
