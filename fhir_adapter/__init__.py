"""fhir-adapter: multiple sclerosis stem-cell trials and hospital EHR extracts to FHIR, and back to screening."""

__version__ = "0.1.0"
