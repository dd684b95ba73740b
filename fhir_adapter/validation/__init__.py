"""Validation of FHIR resources, offline: one module per kind of check.

- `structure`: structure and types with fhir.resources (`Issue`, `model_class`, `structure_issues`);
- `spec`: the specification data extracted from the core packages (`mappings/fhir-spec/`);
- `invariants`: the specification's FHIRPath invariants, compiled once, memoized;
- `elements`: the walk of a resource's elements (invariants, required bindings, UCUM, ele-1, codes);
- `rules`: the project's rules and code systems; `bundles`: Bundle integrity; `ucum`: UCUM syntax;
- `validator`: all of them over files, directories, NDJSON, Bundles and stdin, on several processes.
"""

from .structure import Issue, model_class, structure_issues

# `validator` is imported where used (`from fhir_adapter.validation.validator import validate`): it uses
# `fhir_adapter.ehr.checking`, which imports this package.
__all__ = ["Issue", "model_class", "structure_issues"]
