"""Screening reports: screening.json, screening.csv and report.html (`writers`, `html`)."""

from .writers import HTML_CANDIDATES, Part, PartSummary, Screening, finish, verdict_json, verdict_row

__all__ = ["HTML_CANDIDATES", "Part", "PartSummary", "Screening", "finish", "verdict_json", "verdict_row"]
