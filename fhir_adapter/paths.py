"""Where the project's declarative data lives: `mappings/`, `templates/` and `examples/`.

They sit beside the package in the source tree (the set-up installs it editable). Set
`FHIR_ADAPTER_HOME` to a directory holding them to use another copy.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME = Path(os.environ.get("FHIR_ADAPTER_HOME") or Path(__file__).resolve().parent.parent)
MAPPINGS = HOME / "mappings"
TEMPLATES = HOME / "templates"
EXAMPLES = HOME / "examples"
