"""What a server says it can do, read from its CapabilityStatement (`GET [base]/metadata`).

The client decides from this, never from a particular server's quirks: which FHIR version it speaks,
whether it takes transactions and batches, which types it can search by which parameters, and where
conditional update on a business identifier is possible.

>>> caps = Capabilities.from_statement({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
...     "rest": [{"mode": "server", "interaction": [{"code": "transaction"}],
...               "resource": [{"type": "Patient", "conditionalUpdate": True,
...                             "interaction": [{"code": "update"}, {"code": "search-type"}],
...                             "searchParam": [{"name": "identifier", "type": "token"}]}]}]})
>>> caps.transaction, caps.batch, caps.conditional_update("Patient"), caps.conditional_update("ResearchStudy")
(True, False, True, False)
>>> caps.accepts("R4"), caps.accepts("R5")
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: FHIR release of the data -> fhirVersion prefixes of servers that take it (R4B-valid JSON is R4-compatible).
COMPATIBLE = {"R4": ("4.0", "4.3"), "R5": ("5.0",)}


@dataclass(frozen=True)
class ResourceSupport:
    """One `rest.resource` entry: interactions, search parameters, conditional operations, operations."""

    type: str
    interactions: frozenset[str] = frozenset()
    search_params: frozenset[str] = frozenset()
    conditional_update: bool = False
    conditional_create: bool = False
    update_create: bool = True
    operations: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Capabilities:
    fhir_version: str
    interactions: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    resources: dict[str, ResourceSupport] = field(default_factory=dict)
    software: str = ""

    @classmethod
    def from_statement(cls, statement: dict[str, Any]) -> Capabilities:
        if not isinstance(statement, dict) or statement.get("resourceType") != "CapabilityStatement":
            raise ValueError("not a CapabilityStatement")
        rest = next((r for r in statement.get("rest") or [] if r.get("mode", "server") == "server"), {})
        resources = {}
        for entry in rest.get("resource") or []:
            rtype = entry.get("type")
            if not rtype:
                continue
            resources[rtype] = ResourceSupport(
                type=rtype,
                interactions=frozenset(i.get("code") for i in entry.get("interaction") or []),
                search_params=frozenset(p.get("name") for p in entry.get("searchParam") or []),
                conditional_update=bool(entry.get("conditionalUpdate")),
                conditional_create=bool(entry.get("conditionalCreate")),
                update_create=entry.get("updateCreate") is not False,
                operations=frozenset(_operation_name(o) for o in entry.get("operation") or []),
            )
        software = statement.get("software") or {}
        return cls(
            fhir_version=str(statement.get("fhirVersion") or ""),
            interactions=frozenset(i.get("code") for i in rest.get("interaction") or []),
            operations=frozenset(_operation_name(o) for o in rest.get("operation") or []),
            resources=resources,
            software=" ".join(filter(None, (software.get("name"), software.get("version")))),
        )

    @property
    def transaction(self) -> bool:
        return "transaction" in self.interactions

    @property
    def batch(self) -> bool:
        return "batch" in self.interactions

    def accepts(self, fhir_release: str) -> bool:
        """Whether data of this release (R4, R5) suits the server's fhirVersion."""
        return self.fhir_version.startswith(COMPATIBLE.get(fhir_release.upper(), (fhir_release,)))

    def searchable(self, rtype: str, param: str) -> bool:
        """Whether `GET [base]/rtype?param=...` is declared (search-type and the parameter)."""
        support = self.resources.get(rtype)
        return bool(support and "search-type" in support.interactions and param in support.search_params)

    def conditional_update(self, rtype: str) -> bool:
        """Whether `PUT rtype?identifier=system|value` can work: declared conditionalUpdate and identifier search."""
        support = self.resources.get(rtype)
        return bool(support and support.conditional_update and self.searchable(rtype, "identifier"))

    def client_ids(self, rtype: str) -> bool:
        """Whether PUT to a new id creates the resource (`updateCreate`; assumed when the type is not listed)."""
        support = self.resources.get(rtype)
        return support is None or support.update_create

    def has_operation(self, rtype: str | None, name: str) -> bool:
        """Whether operation `$name` is declared for the type (or at system level when rtype is None)."""
        name = name.lstrip("$")
        if rtype is None:
            return name in self.operations
        support = self.resources.get(rtype)
        return bool(support and name in support.operations)


def _operation_name(operation: dict[str, Any]) -> str:
    name = str(operation.get("name") or "").lstrip("$")
    # some servers name it after the definition only (".../OperationDefinition/Patient-everything")
    if not name:
        name = str(operation.get("definition") or "").rsplit("/", 1)[-1].split("-")[-1]
    return name
