"""report.html: per trial a funnel and a section per candidate, from an autoescaped Jinja2 template.

The page is one file with its styles inline and no scripts or external assets, so it reads offline and can
be mailed or archived. Every text comes from data (criteria, reasons, ids) and is escaped by Jinja2.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from .. import __version__
from ..criteria import Criterion
from ..eligibility.engine import ELIGIBLE, INELIGIBLE, NEEDS_REVIEW, UNKNOWN, CriterionResult
from ..paths import TEMPLATES

if TYPE_CHECKING:
    from .writers import Screening


@cache
def environment() -> jinja2.Environment:
    """The report templates' environment: autoescaping on for every template, undefined names fail."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES / "report"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def percent(part: int, whole: int) -> str:
    """A CSS width for a share of a bar.

    >>> percent(1, 3)
    '33.3%'
    """
    return f"{100 * part / whole:.1f}%" if whole else "0%"


def generated_at() -> str:
    """When a report is made, to the minute, as it says at its foot."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_html(screening: Screening, html_candidates: int) -> str:
    trials = []
    for trial in screening.trials:
        funnel = screening.funnels[trial.id]
        rows = []
        remaining = funnel.total
        for criterion in trial.criteria:
            counts = funnel.criteria.get(criterion.link_id, {"keeps": 0, "loses": 0, "unknown": 0})
            rows.append({"criterion": criterion, "counts": counts, "manual": not _computable(criterion)})
        candidates = screening.candidates[trial.id]
        shown = {v: sum(1 for c in candidates if c.verdict == v) for v in (ELIGIBLE, NEEDS_REVIEW)}
        trials.append({"trial": trial, "funnel": funnel, "rows": rows, "candidates": candidates, "shown": shown,
                       "remaining": remaining})
    return environment().get_template("report.html.j2").render(
        screening=screening, trials=trials, percent=percent, version=__version__,
        generated=generated_at(),
        ELIGIBLE=ELIGIBLE, NEEDS_REVIEW=NEEDS_REVIEW, INELIGIBLE=INELIGIBLE, UNKNOWN=UNKNOWN, effect=effect,
        html_candidates=html_candidates)


def effect(result: CriterionResult) -> str:
    """What a result does to the patient: keeps, loses (excludes), unknown or manual; colours the result."""
    if result.manual:
        return "manual"
    if result.result == UNKNOWN:
        return "unknown"
    return "loses" if result.excludes else "keeps"


def _computable(criterion: Criterion) -> bool:
    if criterion.children:
        return any(_computable(c) for c in criterion.children)
    return criterion.rule is not None


def write_html(path: Path, screening: Screening, html_candidates: int) -> None:
    path.write_text(render_html(screening, html_candidates), encoding="utf-8")
