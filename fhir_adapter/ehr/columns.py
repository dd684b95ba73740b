"""Column maps (`mappings/ehr/*.yaml`): how one hospital's extract names and writes the canonical fields.

A column map says, per table, which file holds it and, per canonical field, which source column holds
it and how its values read (aliases, code systems to look up, a scale factor, a default). It also names
the file encoding, delimiter, decimal mark, date formats and the identifier systems of MRNs and row ids.
A new hospital is a new column map, not new code.

>>> cmap = load_column_map("default")
>>> cmap.table("edss").file, cmap.table("edss").column("score").column
('edss.csv', 'score')
>>> cmap.row_system("edss")
'https://w3id.org/fhir-adapter/sid/example-hospital/edss'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from .. import terminology
from ..paths import MAPPINGS
from .model import TABLES

COLUMN_MAPS = MAPPINGS / "ehr"
DEFAULT = "default"


class ColumnMapError(ValueError):
    """A column map that cannot be used; the message names the file and the key."""


def normalise(text: str) -> str:
    """The form in which source values are compared: trimmed, case-folded, inner spaces kept single."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class Column:
    """Where one canonical field comes from and how its values read."""

    column: str
    values: dict[str, str] = field(default_factory=dict)   # normalised source value -> canonical value
    lookup: tuple[str, ...] = ()                           # code system URLs
    scale: float | None = None
    default: str | None = None


@dataclass(frozen=True)
class TableMap:
    file: str
    columns: dict[str, Column]

    def column(self, name: str) -> Column:
        return self.columns[name]


@dataclass(frozen=True)
class ColumnMap:
    """One hospital's extract format."""

    name: str
    source: str
    encoding: str
    delimiter: str
    decimal: str
    dates: tuple[str, ...]
    mrn_system: str
    rows_base: str
    tables: dict[str, TableMap]
    units: dict[str, str]                                  # normalised unit spelling -> accepted spelling

    def table(self, name: str) -> TableMap:
        return self.tables[name]

    def row_system(self, table: str) -> str:
        """The identifier system of a table's row ids."""
        return f"{self.rows_base}/{table}"


def resolve(name_or_path: str | Path | None) -> Path:
    """A column map path: a file, or the name of one in `mappings/ehr/` (`default`, `other-hospital`)."""
    if name_or_path is None:
        name_or_path = DEFAULT
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ColumnMapError(f"{path}: no such column map")
        return path
    candidate = COLUMN_MAPS / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in COLUMN_MAPS.glob("*.yaml"))
        raise ColumnMapError(f"no column map named {name_or_path!r}: give a .yaml file or one of {', '.join(known)}")
    return candidate


def load_column_map(name_or_path: str | Path | None = None) -> ColumnMap:
    """Read and check a column map (by name or path)."""
    return _load(resolve(name_or_path).resolve())


@cache
def _load(path: Path) -> ColumnMap:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ColumnMapError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ColumnMapError(f"{path}: a column map is a mapping with 'tables' and 'identifiers'")
    where = str(path)
    known = {"name", "about", "encoding", "delimiter", "decimal", "dates", "identifiers", "tables", "units"}
    _no_extra(data, known, where)
    encoding = str(data.get("encoding", "utf-8"))
    try:
        "".encode(encoding)
    except LookupError:
        raise ColumnMapError(f"{where}: encoding {encoding!r} is not a known text encoding") from None
    delimiter = str(data.get("delimiter", ","))
    decimal = str(data.get("decimal", "."))
    if len(delimiter) != 1 or decimal not in (".", ","):
        raise ColumnMapError(f"{where}: delimiter is one character and decimal is '.' or ','")
    ids = data.get("identifiers") or {}
    if not isinstance(ids, dict) or not ids.get("mrn") or not ids.get("rows"):
        raise ColumnMapError(f"{where}: identifiers.mrn and identifiers.rows (identifier system URLs) are required")
    tables_data = data.get("tables") or {}
    unknown = set(tables_data) - set(TABLES)
    if unknown:
        raise ColumnMapError(f"{where}: unknown tables {sorted(unknown)}; the tables are {', '.join(TABLES)}")
    tables = {name: _table(name, tables_data.get(name) or {}, f"{where}: tables.{name}") for name in TABLES}
    units = {normalise(str(k)): str(v) for k, v in (data.get("units") or {}).items()}
    return ColumnMap(
        name=str(data.get("name", path.stem)), source=where, encoding=encoding, delimiter=delimiter,
        decimal=decimal, dates=tuple(str(d) for d in data.get("dates", ["%Y-%m-%d"])),
        mrn_system=str(ids["mrn"]), rows_base=str(ids["rows"]).rstrip("/"), tables=tables, units=units,
    )


def _no_extra(data: dict[str, Any], known: set[str], where: str) -> None:
    extra = set(data) - known
    if extra:
        raise ColumnMapError(f"{where}: unknown keys {sorted(extra)}; expected some of {sorted(known)}")


def _table(name: str, data: dict[str, Any], where: str) -> TableMap:
    spec = TABLES[name]
    _no_extra(data, {"file", "columns"}, where)
    columns_data = data.get("columns") or {}
    fields = {f.name for f in spec.fields}
    unknown = set(columns_data) - fields
    if unknown:
        raise ColumnMapError(f"{where}.columns: unknown fields {sorted(unknown)}; {name} has {', '.join(fields)}")
    columns = {f.name: _column(f.name, columns_data.get(f.name), f"{where}.columns.{f.name}") for f in spec.fields}
    return TableMap(file=str(data.get("file", f"{name}.csv")), columns=columns)


def _column(name: str, data: Any, where: str) -> Column:
    if data is None:
        return Column(name)
    if isinstance(data, str):
        return Column(data)
    if not isinstance(data, dict):
        raise ColumnMapError(f"{where}: give a column name or a mapping (column, values, lookup, scale, default)")
    _no_extra(data, {"column", "values", "lookup", "scale", "default"}, where)
    values = {normalise(str(k)): str(v) for k, v in (data.get("values") or {}).items()}
    systems = terminology.load().systems
    lookup = []
    for alias in data.get("lookup") or ():
        if alias not in systems:
            raise ColumnMapError(f"{where}.lookup: unknown code system {alias!r}; use one of {', '.join(systems)}")
        lookup.append(systems[alias])
    scale = data.get("scale")
    if scale is not None and not isinstance(scale, (int, float)):
        raise ColumnMapError(f"{where}.scale: a number, got {scale!r}")
    default = data.get("default")
    return Column(str(data.get("column", name)), values, tuple(lookup),
                  float(scale) if scale is not None else None, str(default) if default is not None else None)
