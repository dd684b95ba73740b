"""Hospital EHR extracts (CSV, one file per table) to FHIR Patient, Condition, Observation, MedicationStatement.

- `map_extract(extract_dir, out_dir, ...)`: stream an extract to NDJSON per resource type, with rejects.
- `generate_cohort(patients, seed, out_dir)`: write a synthetic MS cohort extract in the default format.
- `FhirMapper`: facts of a `PatientRecord` to FHIR resources (R4 or R5).
- Column maps (`mappings/ehr/*.yaml`) describe how a hospital's extract names and writes the fields.
"""

from .cohort import generate_cohort
from .columns import ColumnMap, ColumnMapError, load_column_map
from .mapping import FhirMapper
from .model import TABLES, PatientRecord
from .pipeline import MapSummary, Reject, TableCount, map_extract

__all__ = ["TABLES", "ColumnMap", "ColumnMapError", "FhirMapper", "MapSummary", "PatientRecord", "Reject",
           "TableCount", "generate_cohort", "load_column_map", "map_extract"]
