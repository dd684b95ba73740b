"""`fhir-adapter validate`: offline validation of FHIR resources for people and CI systems.

Exit status: 0 valid, 1 errors (or warnings with `--fail-on warning`), 2 usage or input error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from itertools import chain, islice
from typing import Any, TextIO
from xml.sax.saxutils import escape, quoteattr

from ..sources import file_of
from . import UsageError, add_fhir_version


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "validate", help="validate FHIR resources offline (structure, invariants, codes, bundles)",
        description="Validate FHIR JSON: files, directories (*.json, *.ndjson), NDJSON, Bundles, or - for stdin. "
                    "Checks structure and types (fhir.resources), the core invariants (FHIRPath), required "
                    "bindings, UCUM syntax, the project's codes and rules, and Bundle integrity. "
                    "Exit 0 valid, 1 errors (or warnings with --fail-on warning), 2 usage error.")
    parser.add_argument("inputs", nargs="+", metavar="PATH", help="file, directory, or - for stdin")
    add_fhir_version(parser, help="FHIR version of the input (default R4: checked with the R4B models)")
    parser.add_argument("--format", choices=("text", "json", "junit"), default="text",
                        help="text for people (default), json, or junit (one testcase per resource)")
    parser.add_argument("--fail-on", choices=("error", "warning"), default="error",
                        help="lowest severity that makes the exit status 1 (default error)")
    parser.add_argument("--allow-external", action="store_true",
                        help="references that do not resolve inside a Bundle are allowed (not urn:uuid ones)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the report here (default stdout)")
    parser.add_argument("--workers", type=int, metavar="N", help="processes (default: one per core)")
    parser.add_argument("--best-practice", choices=("ignore", "information", "warning", "error"), default="ignore",
                        help="best-practice invariants (dom-6: narrative): only counted (default), or reported "
                             "at this severity")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..validation.validator import validate

    missing = [p for p in args.inputs if p != "-" and not Path(p).exists()]
    if missing:
        raise UsageError(f"{missing[0]}: no such file or directory")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers takes at least 1")
    if args.inputs.count("-") > 1:
        raise UsageError("stdin (-) can be given once")
    try:
        results, summary = validate(args.inputs, args.fhir_version, allow_external=args.allow_external,
                                    best_practice=args.best_practice, every_resource=args.format == "junit",
                                    workers=args.workers)
        # the first result (when every resource is clean, the whole run) before any output: no report for nothing
        first = list(islice(results, 1))
        if summary.resources == 0:
            raise UsageError(f"no resources in {', '.join(args.inputs)} (files: *.json, *.ndjson, or - for stdin)")
        out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        raise UsageError(str(exc)) from None
    try:
        writer = {"text": _text, "json": _json, "junit": _junit}[args.format]
        writer(chain(first, results), summary, args, out)
    finally:
        if out is not sys.stdout:
            out.close()
    return 1 if summary.failed(args.fail_on) else 0


def _skipped_lines(summary: Any) -> list[str]:
    return [f"  {key}: {count} element(s) not checked: {summary.reasons.get(key, '')}"
            for key, count in sorted(summary.skipped.items())]


def _text(results: Iterator[Any], summary: Any, args: argparse.Namespace, out: TextIO) -> None:
    for result in results:
        for issue in result.issues:
            out.write(f"{issue.source}: {issue}\n")
    counts = summary.severities
    verdict = "FAILED" if summary.failed(args.fail_on) else "valid"
    out.write(f"{summary.resources} resource(s) ({args.fhir_version}): {counts['error']} error(s), "
              f"{counts['warning']} warning(s), {counts['information']} information: {verdict}\n")
    if summary.best_practice:
        counted = ", ".join(f"{k} x{n}" for k, n in sorted(summary.best_practice.items()))
        out.write(f"best practice not followed: {counted} (--best-practice information lists them)\n")
    if summary.skipped:
        out.write(f"{len(summary.skipped)} invariant(s) not evaluated "
                  "(fhirpathpy lacks a function they use, or failed on them):\n")
        out.write("".join(line + "\n" for line in _skipped_lines(summary)))


def _issue_json(issue: Any) -> dict[str, str]:
    return {"source": issue.source, "severity": issue.severity, "location": issue.location,
            "message": issue.message, "rule": issue.rule}


def _json(results: Iterator[Any], summary: Any, args: argparse.Namespace, out: TextIO) -> None:
    issues = [{"resource": r.label, **_issue_json(i)} for r in results for i in r.issues]
    report = {
        "fhir_version": args.fhir_version,
        "valid": not summary.failed(args.fail_on),
        "fail_on": args.fail_on,
        "resources": summary.resources,
        "counts": {s: summary.severities[s] for s in ("error", "warning", "information")},
        "issues": issues,
        "skipped_invariants": {k: {"elements": n, "reason": summary.reasons.get(k, "")}
                               for k, n in sorted(summary.skipped.items())},
        "best_practice_not_followed": dict(sorted(summary.best_practice.items())),
    }
    json.dump(report, out, ensure_ascii=False, indent=2)
    out.write("\n")


def _junit(results: Iterator[Any], summary: Any, args: argparse.Namespace, out: TextIO) -> None:
    from ..validation.validator import failing

    levels = failing(args.fail_on)
    cases: list[str] = []
    failures = 0
    for result in results:
        bad = [i for i in result.issues if i.severity in levels]
        other = [i for i in result.issues if i.severity not in levels]
        name = quoteattr(f"{result.label} ({result.source})")
        classname = quoteattr(file_of(result.source))
        body = ""
        if bad:
            failures += 1
            text = "\n".join(str(i) for i in bad)
            body += f"<failure message={quoteattr(str(bad[0]))} type={quoteattr(bad[0].rule or 'validation')}>" \
                    f"{escape(text)}</failure>"
        if other:
            body += f"<system-out>{escape(chr(10).join(str(i) for i in other))}</system-out>"
        cases.append(f'  <testcase classname={classname} name={name}>{body}</testcase>\n' if body
                     else f'  <testcase classname={classname} name={name}/>\n')
    skipped = "; ".join(line.strip() for line in _skipped_lines(summary))
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(f'<testsuites tests="{len(cases)}" failures="{failures}">\n')
    out.write(f'<testsuite name="fhir-adapter validate ({args.fhir_version})" tests="{len(cases)}" '
              f'failures="{failures}" errors="0">\n')
    if skipped:
        out.write(f'  <properties><property name="skipped-invariants" value={quoteattr(skipped)}/></properties>\n')
    out.write("".join(cases))
    out.write("</testsuite>\n</testsuites>\n")
