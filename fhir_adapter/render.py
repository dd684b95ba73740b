"""Jinja2 rendering of FHIR resources: templates hold the shape, filters bring the values in.

A template looks like the JSON it produces; every value passes through the `json` filter, so
text is escaped and a missing value becomes `null`. After rendering, `prune` drops the empty
elements (null, "", [], {}) that FHIR forbids, so templates need no `{% if %}` around optional parts.

>>> prune({"a": None, "b": [], "c": {"d": ""}, "e": [1, {}], "f": 0, "g": False})
{'e': [1], 'f': 0, 'g': False}
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import jinja2

from . import ids, terminology
from .paths import TEMPLATES

FHIR_VERSIONS = ("R4", "R5")


def prune(value: Any) -> Any:
    """Drop empty elements (None, "", [], {}) recursively; keep 0 and False."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                item = prune(item)
                if item:
                    out[key] = item
            elif item is not None and item != "":
                out[key] = item
        return out
    if isinstance(value, list):
        kept = []
        for item in value:
            if isinstance(item, (dict, list)):
                item = prune(item)
                if item:
                    kept.append(item)
            elif item is not None and item != "":
                kept.append(item)
        return kept
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"cannot render {type(value).__name__} as JSON: {value!r}")


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_json_default)  # one encoder: ~10x faster per slot


def to_json(value: Any) -> str:
    """A JSON literal for a template slot; dates become FHIR date / dateTime strings."""
    return _ENCODER.encode(value)


def quantity(value: Any, code: str, unit: str | None = None) -> dict[str, Any] | None:
    """A UCUM Quantity for a template slot, or None (pruned) when there is no value.

    >>> quantity(3.5, "{score}", "score")
    {'value': 3.5, 'unit': 'score', 'system': 'http://unitsofmeasure.org', 'code': '{score}'}
    """
    if value is None:
        return None
    return {"value": value, "unit": unit or code, "system": terminology.system("ucum"), "code": code}


def text_concept(name: str) -> dict[str, str]:
    """A CodeableConcept with the concept's text and no coding: for values whose codes are not in
    ../shared/terminology.md, so that no code is asserted as if verified.

    >>> text_concept("moderate")
    {'text': 'Moderate'}
    """
    return {"text": terminology.concept(name).display}


FILTERS: dict[str, Callable[..., Any]] = {
    "json": to_json,
    "fhir_id": ids.resource_id,
    "ref": ids.reference,
    "codings": terminology.codings,
    "codeable": terminology.codeable_concept,
    "text_concept": text_concept,
    "quantity": quantity,
}


def check_version(fhir_version: str) -> str:
    """The canonical spelling of a supported FHIR version ("R4" or "R5"), or a ValueError."""
    version = fhir_version.upper()
    if version not in FHIR_VERSIONS:
        raise ValueError(f"unsupported FHIR version {fhir_version!r}: use one of {', '.join(FHIR_VERSIONS)}")
    return version


@cache
def environment(fhir_version: str = "R4") -> jinja2.Environment:
    """The Jinja2 environment for one FHIR version's templates (`templates/r4/` or `templates/r5/`)."""
    version = check_version(fhir_version)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([TEMPLATES / version.lower(), TEMPLATES]),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update(FILTERS)
    return env


def render(template: str, fhir_version: str = "R4", **context: Any) -> dict[str, Any]:
    """Render one resource template to a pruned FHIR JSON object."""
    text = environment(fhir_version).get_template(template).render(**context)
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as exc:  # a template bug, not bad input: show where
        line = text.splitlines()[exc.lineno - 1] if text else ""
        raise ValueError(f"template {template} ({fhir_version}) rendered invalid JSON at line {exc.lineno}, "
                         f"column {exc.colno}: {exc.msg}: {line.strip()!r}") from exc
    return prune(resource)
