"""`FhirClient`: one server, one `requests.Session`; read, search with paging, one patient's data, bundles, push."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from .capabilities import Capabilities
from .exceptions import (
    AccessDenied,
    CapabilityError,
    FhirHttpError,
    ResourceGone,
    ResourceNotFound,
    ServerUnreachable,
    UnexpectedAnswer,
)
from .transport import DEFAULT_TIMEOUT, RetryPolicy, Timeout, mark_idempotent, new_session

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
#: What screening reads about one patient when the server has no `$everything`.
SCREENING_TYPES = ("Condition", "Observation", "MedicationStatement", "MedicationRequest",
                   "MedicationAdministration", "Procedure", "AllergyIntolerance")
#: Page size of the searches by patient (a server's default may be 20: an Observation-rich chart takes pages).
PATIENT_PAGE = 200


class FhirClient:
    """A FHIR REST client for one server.

    `auth`: None, a `BearerAuth` or a `SmartBackendAuth` (see `auth`). `timeout`: seconds, or (connect, read).
    `verify`: TLS verification, on by default (a CA bundle path also works). `retry`: a `RetryPolicy`.
    """

    def __init__(self, base_url: str, auth: requests.auth.AuthBase | None = None, *,
                 timeout: Timeout = DEFAULT_TIMEOUT, verify: bool | str = True, retry: RetryPolicy | None = None,
                 pool_size: int = 10, session: requests.Session | None = None) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.session = session or new_session(auth=auth, timeout=timeout, retry=retry, verify=verify,
                                               pool_size=pool_size)
        if hasattr(auth, "attach"):
            auth.attach(self.session, self.base_url)
        self._capabilities: Capabilities | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r}, auth={self.auth!r})"

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # -- HTTP -------------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL for a path relative to the base (absolute URLs must be on this server)."""
        if path.startswith(("http://", "https://")):
            if not _same_origin(path, self.base_url):
                raise FhirHttpError("GET", path, 0, text="refusing to follow a link to another server "
                                                         f"(base is {self.base_url}); credentials stay here")
            return path
        return f"{self.base_url}/{path.lstrip('/')}" if path.strip("/") else self.base_url

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                headers: Mapping[str, str] | None = None, idempotent: bool = False) -> requests.Response:
        """Send one request; an error status raises `FhirHttpError` with the server's OperationOutcome."""
        url = self.url(path)
        all_headers = {"Content-Type": FHIR_JSON} if json is not None else {}
        all_headers.update(headers or {})
        prepared = self.session.prepare_request(
            requests.Request(method, url, json=json, params=params, headers=all_headers))
        if idempotent:
            mark_idempotent(prepared)
        if json is not None:  # FHIR JSON, not application/json
            prepared.headers["Content-Type"] = all_headers["Content-Type"]
        settings = self.session.merge_environment_settings(prepared.url, {}, None, self.session.verify, None)
        try:
            response = self.session.send(prepared, **settings)
        except requests.ConnectionError as exc:
            raise ServerUnreachable(f"{method} {_short(url)}: cannot reach the server: {_reason(exc)}") from None
        except requests.Timeout:
            raise ServerUnreachable(f"{method} {_short(url)}: no answer within the timeout") from None
        if response.status_code >= 400:
            raise _http_error(method, _short(url, self.base_url), response)
        return response

    def get_json(self, path: str, params: Any = None, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        return _json(self.request("GET", path, params=params, headers=headers))

    def get_bundle(self, path: str, params: Any = None, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A GET that must answer with a Bundle (a search page); anything else, such as an OperationOutcome with
        status 200, raises `UnexpectedAnswer` naming the request and showing the outcome."""
        response = self.request("GET", path, params=params, headers=headers)
        body = _json(response)
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise UnexpectedAnswer("GET", _short(response.url, self.base_url), response.status_code, body, "a Bundle")
        return body

    # -- what the server can do -------------------------------------------------------------------------

    def capabilities(self, refresh: bool = False) -> Capabilities:
        """The server's CapabilityStatement (`/metadata`), read once and cached."""
        with self._lock:
            if self._capabilities is None or refresh:
                statement = self.get_json("metadata")
                try:
                    self._capabilities = Capabilities.from_statement(statement)
                except ValueError:
                    raise CapabilityError(f"{self.base_url}/metadata did not answer with a CapabilityStatement; "
                                          "is this the FHIR base URL?") from None
            return self._capabilities

    def require(self, fhir_release: str) -> Capabilities:
        """The capabilities, or a `CapabilityError` if the server cannot take data of this release."""
        caps = self.capabilities()
        if not caps.accepts(fhir_release):
            raise CapabilityError(f"{self.base_url} speaks FHIR {caps.fhir_version or '(unknown)'}, which cannot "
                                  f"take {fhir_release} resources")
        return caps

    # -- reading ----------------------------------------------------------------------------------------

    def read(self, rtype: str, rid: str) -> dict[str, Any]:
        """`GET [base]/rtype/rid`; raises `ResourceNotFound` or `ResourceGone`."""
        return self.get_json(f"{rtype}/{quote(rid, safe='')}")

    def read_many(self, rtype: str, rids: Iterable[str], chunk: int = 200) -> dict[str, dict[str, Any] | None]:
        """Resources by id, None for those the server does not hold (404, 410): a batch of reads per `chunk`
        ids where the server takes batches, else one read each. Any other error status raises."""
        wanted = list(dict.fromkeys(rids))
        found: dict[str, dict[str, Any] | None] = {}
        if not self.capabilities().batch:
            for rid in wanted:
                try:
                    found[rid] = self.read(rtype, rid)
                except (ResourceNotFound, ResourceGone):
                    found[rid] = None
            return found
        for start in range(0, len(wanted), chunk):
            part = wanted[start:start + chunk]
            urls = [f"{rtype}/{quote(rid, safe='')}" for rid in part]
            reply = self.bundle({"resourceType": "Bundle", "type": "batch",
                                 "entry": [{"request": {"method": "GET", "url": url}} for url in urls]})
            entries = reply.get("entry") or []
            if len(entries) != len(part):
                raise FhirHttpError("POST", "(batch of reads)", 0,
                                    text=f"the server answered {len(entries)} entries for {len(part)} reads")
            for rid, url, entry in zip(part, urls, entries, strict=True):
                answer = entry.get("response") or {}
                code = str(answer.get("status") or "0").split()[0]
                status = int(code) if code.isdigit() else 0
                if 200 <= status < 300:
                    found[rid] = entry.get("resource")
                elif status in (404, 410):
                    found[rid] = None
                else:
                    raise _ERRORS.get(status, FhirHttpError)("GET", url, status, answer.get("outcome"),
                                                             text="(in a batch)")
        return found

    def search_pages(self, rtype: str, params: Mapping[str, Any] | None = None, /,
                     **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Each searchset Bundle page, following `next` links. Sends `Prefer: handling=strict` so that a
        parameter the server does not know fails instead of being ignored. A 404 without an OperationOutcome (not
        a FHIR server's answer) asks whether the base URL is the FHIR one."""
        query = _query({**(params or {}), **kwargs})
        try:
            page: dict[str, Any] | None = self.get_bundle(rtype, params=query, headers={"Prefer": "handling=strict"})
        except ResourceNotFound as exc:
            if exc.outcome is not None:         # a FHIR server's answer: the type is not there
                raise
            raise ResourceNotFound(exc.method, exc.url, exc.status, text=(
                f"{exc.text.strip()[:200]}; is {self.base_url} the FHIR base URL? GET {self.base_url}/metadata "
                "should answer with a CapabilityStatement")) from None
        while page is not None:
            yield page
            following = next((link.get("url") for link in page.get("link") or [] if link.get("relation") == "next"),
                             None)
            page = self.get_bundle(following, headers={"Prefer": "handling=strict"}) if following else None

    def search(self, rtype: str, params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every matching resource, page after page. Parameter names that are not Python names go in `params`:
        `client.search("Observation", {"value-quantity": "gt5"}, subject="Patient/1")`; lists repeat a name."""
        for page in self.search_pages(rtype, params, **kwargs):
            for entry in page.get("entry") or []:
                mode = (entry.get("search") or {}).get("mode", "match")
                resource = entry.get("resource")
                if mode == "match" and resource:
                    yield resource
                elif mode == "outcome" and resource:
                    log.warning("search %s: %s", rtype, resource.get("issue"))

    def patient_data(self, patient_id: str, types: Iterable[str] = SCREENING_TYPES,
                     patient: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The Patient and its resources of the given types: `Patient/[id]/$everything` where the server
        declares it, else a search per type by `patient` (or `subject`), pages of `PATIENT_PAGE`. `patient`: the Patient
        resource when the caller has just read it (not read again)."""
        wanted = {"Patient", *types}
        caps = self.capabilities()
        if caps.has_operation("Patient", "everything"):
            found: list[dict[str, Any]] = []
            page: dict[str, Any] | None = self.get_bundle(f"Patient/{quote(patient_id, safe='')}/$everything")
            while page is not None:
                found += [e["resource"] for e in page.get("entry") or []
                          if e.get("resource", {}).get("resourceType") in wanted]
                following = next((x.get("url") for x in page.get("link") or [] if x.get("relation") == "next"), None)
                page = self.get_bundle(following) if following else None
            return found
        found = [patient if patient is not None else self.read("Patient", patient_id)]
        for rtype in types:
            if caps.searchable(rtype, "patient"):
                found += self.search(rtype, patient=f"Patient/{patient_id}", _count=PATIENT_PAGE)
            elif caps.searchable(rtype, "subject"):
                found += self.search(rtype, subject=f"Patient/{patient_id}", _count=PATIENT_PAGE)
            elif rtype in caps.resources:
                raise CapabilityError(f"{self.base_url} cannot search {rtype} by patient or subject")
        return found

    # -- writing ----------------------------------------------------------------------------------------

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """`POST [base]/Type` (the server assigns the id). Not retried once it may have reached the server."""
        response = self.request("POST", resource["resourceType"], json=resource)
        return _json(response) if response.content else {}

    def update(self, resource: dict[str, Any]) -> dict[str, Any]:
        """`PUT [base]/Type/id`."""
        response = self.request("PUT", f"{resource['resourceType']}/{quote(resource['id'], safe='')}",
                                json=resource, idempotent=True)
        return _json(response) if response.content else {}

    def bundle(self, bundle: dict[str, Any], *, minimal: bool = False, idempotent: bool = True) -> dict[str, Any]:
        """POST a transaction or batch Bundle; returns the response Bundle. `minimal` asks the server not to
        send the resources back (`Prefer: return=minimal`). Idempotent (retried) unless told otherwise."""
        headers = {"Prefer": "return=minimal"} if minimal else None
        return _json(self.request("POST", "", json=bundle, headers=headers, idempotent=idempotent))

    def push(self, resources: Iterable[Any], **options: Any) -> Any:
        """Push resources idempotently in transaction chunks; see `fhir_adapter.client.push.push`."""
        from .push import push

        return push(self, resources, **options)


# -- helpers ----------------------------------------------------------------------------------------------

def _query(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    query = []
    for name, value in params.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None:
                query.append((name, str(item)))
    return query


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        return response.json()
    except ValueError:
        raise FhirHttpError(response.request.method or "GET", _short(response.url), response.status_code,
                            text=f"expected FHIR JSON, got {response.headers.get('Content-Type')!r}") from None


_ERRORS: dict[int, type[FhirHttpError]] = {404: ResourceNotFound, 410: ResourceGone, 401: AccessDenied,
                                           403: AccessDenied}


def _http_error(method: str, where: str, response: requests.Response) -> FhirHttpError:
    outcome = None
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
            outcome = body
    except ValueError:
        pass
    status = response.status_code
    kind = _ERRORS.get(status, FhirHttpError)
    return kind(method, where, status, outcome, text=response.text if outcome is None else "")


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _short(url: str, base: str | None = None) -> str:
    """The URL without its query (queries may carry identifiers), relative to the base when given."""
    path = url.split("?", 1)[0]
    if base and path.startswith(base):
        return path[len(base):].lstrip("/") or base
    return path


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc.args[0] if exc.args else exc)
    for marker in ("Connection refused", "Connection reset", "Name or service not known", "timed out",
                   "CERTIFICATE_VERIFY_FAILED"):
        if marker in text:
            return marker if marker != "CERTIFICATE_VERIFY_FAILED" else \
                "TLS certificate verification failed (use --ca-bundle, or --insecure for a test server)"
    return text[:200]
