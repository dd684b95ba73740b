"""Validation of FHIR resources: structure and types first, more checks in sibling modules."""

from .structure import Issue, model_class, structure_issues

__all__ = ["Issue", "model_class", "structure_issues"]
