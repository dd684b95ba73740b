"""Extract the validation data `fhir-adapter validate` needs from the official FHIR core packages.

Reads an npm-format FHIR core package (`hl7.fhir.r4b.core` 4.3.0 or `hl7.fhir.r5.core` 5.0.0, a .tgz) and
writes `mappings/fhir-spec/<version>.json`: for the resource types the project produces (and Bundle) and every
data type they reach, the elements that matter for validation (their types, invariants, required bindings,
backbone children), the invariants themselves (key, severity, human, expression, best practice), the required
value sets with their codes expanded where the package enumerates them, and the invariants fhirpathpy
cannot evaluate, with the reason.

Usage (downloads to /tmp; the tarball is never committed):

    curl -sSL -o /tmp/r4b.tgz https://registry.npmjs.org/hl7.fhir.r4b.core/-/hl7.fhir.r4b.core-4.3.0.tgz
    curl -sSL -o /tmp/r5.tgz https://registry.npmjs.org/hl7.fhir.r5.core/-/hl7.fhir.r5.core-5.0.0.tgz
    python tools/extract_fhir_spec.py /tmp/r4b.tgz mappings/fhir-spec/R4.json
    python tools/extract_fhir_spec.py /tmp/r5.tgz mappings/fhir-spec/R5.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

#: The resource types the project writes, and Bundle.
RESOURCES = ("Patient", "Condition", "Observation", "MedicationStatement", "ResearchStudy", "ResearchSubject",
             "PlanDefinition", "ActivityDefinition", "EvidenceVariable", "Group", "CodeSystem", "Bundle")
#: Checked natively on every element by the validator (too frequent to run through FHIRPath).
NATIVE = {"ele-1": "every element has a value or children: checked natively on each JSON object and array"}
BEST_PRACTICE = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"
FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
FUNCTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


class Package:
    """The JSON resources of a package tarball, by file name."""

    def __init__(self, tarball: Path) -> None:
        self.tarball = tarball
        self.sha1 = hashlib.sha1(tarball.read_bytes()).hexdigest()
        self.files: dict[str, dict[str, Any]] = {}
        with tarfile.open(tarball) as tar:
            for member in tar:
                name = member.name.removeprefix("package/")
                if "/" in name or not name.endswith(".json"):
                    continue
                if name.startswith(("StructureDefinition-", "ValueSet-", "CodeSystem-")) or name == "package.json":
                    self.files[name] = json.load(tar.extractfile(member))  # type: ignore[arg-type]
        self.manifest = self.files["package.json"]
        self.structures = {d["url"]: d for n, d in self.files.items() if n.startswith("StructureDefinition-")}
        self.valuesets = {d["url"]: d for n, d in self.files.items() if n.startswith("ValueSet-")}
        self.codesystems = {d["url"]: d for n, d in self.files.items() if n.startswith("CodeSystem-")}

    def structure(self, name: str) -> dict[str, Any] | None:
        return self.structures.get(name if "/" in name else f"http://hl7.org/fhir/StructureDefinition/{name}")


def _type_name(package: Package, type_: dict[str, Any]) -> str:
    """An element type's name: a core profile of a data type (SimpleQuantity) if given, else the code."""
    code = type_["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in type_.get("extension", []):
            if ext.get("url") == FHIR_TYPE:
                return ext.get("valueUrl") or ext.get("valueUri") or code
        return code.rsplit(".", 1)[-1].lower()
    for profile in type_.get("profile", []):
        sd = package.structure(profile)
        if sd is not None and sd.get("kind") == "complex-type":
            return sd["id"]
    return code


def _unsupported(expression: str, supported: set[str]) -> str | None:
    """Why fhirpathpy cannot evaluate an expression, or None."""
    import fhirpathpy

    from fhir_adapter.validation.invariants import SUPPLIED

    missing = sorted({f for f in FUNCTION.findall(expression) if f not in supported})
    if missing:
        return "fhirpathpy lacks " + ", ".join(f"{f}()" for f in missing)
    try:
        fhirpathpy.compile(expression, None, {"userInvocationTable": SUPPLIED})
    except Exception as exc:  # noqa: BLE001 - any parse failure means it is skipped, with the reason
        return f"fhirpathpy cannot parse it: {type(exc).__name__}: {exc}"
    return None


def _supported_functions() -> set[str]:
    from fhirpathpy.engine.invocations import invocation_registry

    from fhir_adapter.validation.invariants import SUPPLIED

    # fhirpathpy's functions, those the validator supplies, FHIRPath keywords followed by a parenthesis.
    keywords = {"is", "as", "and", "or", "xor", "implies", "in", "contains", "div", "mod"}
    return set(invocation_registry) | set(SUPPLIED) | keywords


def _codes(concepts: list[dict[str, Any]]) -> list[str]:
    found = []
    for concept in concepts:
        found.append(concept["code"])
        found.extend(_codes(concept.get("concept", [])))
    return found


def _expand(package: Package, url: str, seen: frozenset[str] = frozenset()) -> tuple[dict[str, list[str]] | None, str]:
    """A value set's codes by system, or None and why it is not enumerable here."""
    vs = package.valuesets.get(url.split("|")[0])
    if vs is None:
        return None, "value set not in the package"
    compose = vs.get("compose", {})
    if compose.get("exclude"):
        return None, "value set excludes codes"
    codes: dict[str, list[str]] = {}
    for include in compose.get("include", []):
        if include.get("filter"):
            return None, f"filter on {include.get('system')}"
        for nested in include.get("valueSet", []):
            if nested in seen:
                continue
            found, why = _expand(package, nested, seen | {url})
            if found is None:
                return None, why
            for system, members in found.items():
                codes.setdefault(system, []).extend(members)
        system = include.get("system")
        if not system:
            continue
        if include.get("concept"):
            codes.setdefault(system, []).extend(c["code"] for c in include["concept"])
            continue
        cs = package.codesystems.get(system)
        if cs is None or cs.get("content") != "complete":
            return None, f"code system {system} not enumerated in the package"
        codes.setdefault(system, []).extend(_codes(cs.get("concept", [])))
    if not codes:
        return None, "no codes"
    return {system: sorted(set(members)) for system, members in codes.items()}, ""


class Extraction:
    def __init__(self, package: Package) -> None:
        self.package = package
        self.types: dict[str, dict[str, Any]] = {}
        self.invariants: dict[str, dict[str, Any]] = {}
        self.bindings: dict[str, str] = {}
        self.supported = _supported_functions()

    def _invariant(self, constraint: dict[str, Any], where: str) -> str | None:
        key = constraint["key"]
        expression = constraint.get("expression")
        if key in NATIVE or not expression:
            if key in NATIVE:
                self.invariants.setdefault(key, self._record(constraint, NATIVE[key]))
            return None
        record = self._record(constraint, _unsupported(expression, self.supported))
        known = self.invariants.get(key)
        if known is not None and known["expression"] != expression:
            key = f"{key}@{where}"  # the same key defined differently in two places
            record["key"] = key
        self.invariants.setdefault(key, record)
        return key

    @staticmethod
    def _record(constraint: dict[str, Any], skip: str | None) -> dict[str, Any]:
        record = {"key": constraint["key"], "severity": constraint["severity"], "human": constraint["human"],
                  "expression": constraint.get("expression", "")}
        if any(e.get("url") == BEST_PRACTICE and e.get("valueBoolean") for e in constraint.get("extension", [])):
            record["best_practice"] = True
        if skip:
            record["skip"] = skip
        return record

    def add_type(self, name: str) -> None:
        if name in self.types:
            return
        sd = self.package.structure(name)
        if sd is None or sd.get("kind") not in ("resource", "complex-type"):
            return
        self.types[name] = {}  # reserve before recursing
        elements: dict[str, Any] = {}
        pending: list[str] = []
        root = sd["snapshot"]["element"][0]["path"]
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            relative = path[len(root) + 1:] if path != root else ""
            info: dict[str, Any] = {}
            types = [_type_name(self.package, t) for t in element.get("type", [])]
            # A constraint defined by the element's own type is evaluated with that type, not twice.
            own = {"Element", "Extension", *types} if relative else set()
            invariants = [k for c in element.get("constraint", [])
                          if c.get("source", "").rsplit("/", 1)[-1] not in own
                          and (k := self._invariant(c, path)) is not None]
            if invariants:
                info["invariants"] = invariants
            if "contentReference" in element:
                info["same_as"] = element["contentReference"].split("#", 1)[1][len(root) + 1:]
            if relative and types:
                info["types"] = types
                pending.extend(t for t in types if t not in ("BackboneElement", "Element"))
                if types[0] in ("BackboneElement", "Element"):
                    info["backbone"] = True
            binding = element.get("binding", {})
            if binding.get("strength") == "required" and binding.get("valueSet"):
                url = binding["valueSet"].split("|")[0]
                info["binding"] = url
                self.bindings[url] = binding.get("description", "")
            if relative:
                info["max"] = element.get("max", "1")
            if relative == "" or info.keys() - {"max", "types"} or (
                    "types" in info and any(t[:1].isupper() for t in info["types"])):
                elements[relative] = info
            elif relative and "types" in info and len(info["types"]) > 1:
                elements[relative] = info  # a choice of primitives: needed to map JSON names to elements
        self.types[name] = {"kind": sd["kind"], "base": sd.get("type"), "elements": elements}
        for t in pending:
            self.add_type(t)

    def valuesets(self) -> dict[str, Any]:
        result = {}
        for url in sorted(self.bindings):
            codes, why = _expand(self.package, url)
            result[url] = {"codes": codes} if codes is not None else {"not_enumerable": why}
        return result


def _project_codesystems(package: Package) -> dict[str, list[str]]:
    """The codes of the code systems `mappings/terminology.yaml` uses that the package holds complete."""
    from fhir_adapter import terminology

    found = {}
    for url in sorted(terminology.load().systems.values()):
        cs = package.codesystems.get(url)
        if cs is not None and cs.get("content") == "complete":
            found[url] = sorted(set(_codes(cs.get("concept", []))))
    return found


def extract(tarball: Path) -> dict[str, Any]:
    package = Package(tarball)
    extraction = Extraction(package)
    for name in RESOURCES:
        if package.structure(name) is None:
            raise SystemExit(f"{tarball}: no StructureDefinition for {name}")
        extraction.add_type(name)
    extraction.add_type("Extension")
    used = {k for t in extraction.types.values() for e in t["elements"].values() for k in e.get("invariants", [])}
    invariants = {k: v for k, v in sorted(extraction.invariants.items()) if k in used or k in NATIVE}
    skipped = {k: v["skip"] for k, v in invariants.items() if "skip" in v and k not in NATIVE}
    return {
        "package": f"{package.manifest['name']}#{package.manifest['version']}",
        "fhir_version": package.manifest.get("fhirVersions", [""])[0],
        "tarball_sha1": package.sha1,
        "extracted_by": "tools/extract_fhir_spec.py",
        "native": NATIVE,
        "skipped": skipped,
        "invariants": invariants,
        "types": dict(sorted(extraction.types.items())),
        "valuesets": extraction.valuesets(),
        "codesystems": _project_codesystems(package),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tarball", type=Path, help="an npm FHIR core package (.tgz)")
    parser.add_argument("out", type=Path, help="the JSON data file to write")
    args = parser.parse_args(argv)
    data = extract(args.tarball)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, ensure_ascii=False, indent=0, sort_keys=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {data['package']}: {len(data['types'])} types, {len(data['invariants'])} invariants "
          f"({len(data['skipped'])} skipped), {len(data['valuesets'])} required value sets, "
          f"{len(data['codesystems'])} of the project's code systems", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
