"""A FHIR REST client: one `requests.Session` per server, with auth, timeouts and retries mounted on it.

Modules: `transport` (timeouts, retries honouring Retry-After, TLS), `auth` (bearer token, SMART Backend
Services), `capabilities` (what `/metadata` declares), `client` (`FhirClient`: read, search, paging, one
patient's data), `push` (idempotent transaction chunks, counts, failures), `exceptions`, `options` (the
command-line options shared by the verbs that talk to a server).

Use::

    from fhir_adapter.client import FhirClient, bearer_from_env

    with FhirClient("https://ehr.example.org/fhir", auth=bearer_from_env("FHIR_TOKEN")) as client:
        client.capabilities().fhir_version            # '4.0.1'; read once from /metadata
        client.read("ResearchStudy", study_id)        # dict; ResourceNotFound / ResourceGone
        for obs in client.search("Observation", {"code": "http://snomed.info/sct|273554001"},
                                 subject="Patient/123"):   # follows `next` links, page after page
            ...
        client.patient_data("123")                    # Patient + Condition, Observation, Medication*:
                                                      # $everything if declared, else searches by patient
        result = client.push(resources)               # PushResult: created/updated/unchanged/failed
        result.ok, result.summary(), result.failures  # each failure: resource, location, OperationOutcome

- `FhirClient(base_url, auth=None, *, timeout=(10, 120), verify=True, retry=RetryPolicy(), pool_size=10)`;
  `verify` is TLS verification (on by default; a CA bundle path also works).
- auth: `BearerAuth(token)`, `bearer_from_env(VAR)`, `bearer_from_file(PATH)`,
  `SmartBackendAuth(client_id, private_key_pem_path, token_url=None, scope=...)`: token endpoint discovered
  from `.well-known/smart-configuration` when not given; the token is cached until shortly before it
  expires, and refreshed once on a 401.
- `push(resources, chunk_size=200, workers=2, id_strategy="put"|"conditional", compare=True,
  fhir_release="R4", progress=callable(done, total))`: resources are dicts or `(location, dict)` pairs
  (what `fhir_adapter.sources.resources` yields). Writing back R4 ResearchSubject resources is
  `client.push(research_subjects)`; with deterministic ids a re-run changes nothing (see `push`).
- Errors: `FhirClientError` > `ServerUnreachable`, `CapabilityError`, `AuthError`, `FhirHttpError`
  (`.status`, `.outcome`) > `ResourceNotFound`, `ResourceGone`, `AccessDenied`, `UnexpectedAnswer` (a
  search answered 200 with something other than a Bundle).
"""

from .auth import BearerAuth, SmartBackendAuth, bearer_from_env, bearer_from_file, public_jwk
from .capabilities import Capabilities
from .client import SCREENING_TYPES, FhirClient
from .exceptions import (
                         AccessDenied,
                         AuthError,
                         CapabilityError,
                         FhirClientError,
                         FhirHttpError,
                         ResourceGone,
                         ResourceNotFound,
                         ServerUnreachable,
                         UnexpectedAnswer,
                         describe_outcome,
)
from .push import FailedEntry, PushResult
from .transport import RetryPolicy

__all__ = ["SCREENING_TYPES", "AccessDenied", "AuthError", "BearerAuth", "Capabilities", "CapabilityError",
           "FailedEntry", "FhirClient", "FhirClientError", "FhirHttpError", "PushResult", "ResourceGone",
           "ResourceNotFound", "RetryPolicy", "ServerUnreachable", "SmartBackendAuth", "UnexpectedAnswer",
           "bearer_from_env", "bearer_from_file", "describe_outcome", "public_jwk"]
