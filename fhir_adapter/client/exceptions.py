"""What can go wrong talking to a FHIR server, each error carrying the server's OperationOutcome when it sent one.

>>> outcome = {"resourceType": "OperationOutcome", "issue": [
...     {"severity": "error", "code": "structure", "diagnostics": "bad gender", "expression": ["Patient.gender"]}]}
>>> describe_outcome(outcome)
'error structure: bad gender (at Patient.gender)'
>>> str(FhirHttpError("PUT", "Patient/p1", 400, outcome))
'PUT Patient/p1: HTTP 400: error structure: bad gender (at Patient.gender)'
"""

from __future__ import annotations

from typing import Any


def describe_outcome(outcome: dict[str, Any] | None) -> str:
    """One line per issue of an OperationOutcome: severity, code, text and location."""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    lines = []
    for issue in outcome.get("issue") or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        where = issue.get("expression") or issue.get("location") or []
        line = f"{issue.get('severity', '?')} {issue.get('code', '?')}: {text}".rstrip(": ")
        if where:
            line += f" (at {', '.join(where)})"
        lines.append(line)
    return "\n".join(lines)


class FhirClientError(Exception):
    """Base of every error raised by the FHIR client."""


class ServerUnreachable(FhirClientError):
    """No answer from the server after every retry (connection refused or reset, timeout)."""


class CapabilityError(FhirClientError):
    """The server cannot take what is sent (wrong FHIR version, no transaction support, ...)."""


class AuthError(FhirClientError):
    """Authorisation failed: token endpoint refused the client, or the server answered 401/403."""


class FhirHttpError(FhirClientError):
    """The server answered with an error status; `outcome` is its OperationOutcome, if it sent one."""

    def __init__(self, method: str, url: str, status: int, outcome: dict[str, Any] | None = None,
                 text: str = "") -> None:
        self.method, self.url, self.status, self.outcome, self.text = method, url, status, outcome, text
        detail = describe_outcome(outcome) or text.strip()[:500] or "(no OperationOutcome)"
        super().__init__(f"{method} {url}: HTTP {status}: {detail}")


class ResourceNotFound(FhirHttpError):
    """HTTP 404: no such resource (or type) on the server."""


class ResourceGone(FhirHttpError):
    """HTTP 410: the resource was deleted."""


class AccessDenied(FhirHttpError, AuthError):
    """HTTP 401 or 403 from the FHIR server."""


class UnexpectedAnswer(FhirHttpError):
    """A success status whose body is not what was asked for (an OperationOutcome instead of a Bundle)."""

    def __init__(self, method: str, url: str, status: int, body: Any, expected: str) -> None:
        outcome = body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
        super().__init__(method, url, status, outcome)
        got = body.get("resourceType") if isinstance(body, dict) else None
        said = describe_outcome(outcome)
        Exception.__init__(self, f"{method} {url}: HTTP {status}, but {got or 'no FHIR resource'} instead of "
                                 f"{expected}" + (f": {said}" if said else ""))
