"""Transport concerns mounted on one `requests.Session`: default timeouts, retries with backoff, TLS verification.

`FhirAdapter` retries connection errors and the statuses in `RetryPolicy.statuses` (429, 502, 503, 504),
waiting as long as the server's `Retry-After` asks (capped) or else an exponential backoff. A request that
may already have reached the server (connection reset, read timeout, 502, 504) is retried only when it is
idempotent: GET, HEAD, PUT, DELETE, OPTIONS, or a request the client marked with `mark_idempotent` (a
transaction of PUTs, a batch of reads, a POST search). Connection refused, connect timeouts, 429 and 503
mean the server did not act, so every request is retried then.

>>> policy = RetryPolicy(retries=3, backoff=0.5, jitter=0)
>>> [policy.delay(attempt) for attempt in range(3)]
[0.5, 1.0, 2.0]
>>> policy.delay(0, retry_after="7")
7.0
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from .. import __version__

log = logging.getLogger(__name__)

USER_AGENT = f"fhir-adapter/{__version__}"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Default (connect, read) timeouts in seconds: a transaction of a few hundred resources can take a while.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 120.0)

Timeout = float | tuple[float, float]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. `retries` is the number of retries after the first attempt."""

    retries: int = 4
    backoff: float = 0.5            # first wait in seconds; doubles each retry
    max_backoff: float = 30.0
    max_retry_after: float = 120.0  # never wait longer than this, whatever Retry-After says
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    jitter: float = 0.1             # up to this fraction added at random, so parallel clients do not align

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.max_retry_after)
        wait = min(self.backoff * (2 ** attempt), self.max_backoff)
        return wait + (random.uniform(0, wait * self.jitter) if self.jitter else 0.0)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date; None if absent or unreadable.

    >>> parse_retry_after("120")
    120.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def mark_idempotent(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Let the adapter retry this request even after it may have reached the server."""
    request.fhir_idempotent = True  # type: ignore[attr-defined]
    return request


def is_idempotent(request: requests.PreparedRequest) -> bool:
    return (request.method or "GET").upper() in IDEMPOTENT_METHODS or getattr(request, "fhir_idempotent", False)


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection was never made (refused, DNS, connect timeout): nothing reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _path(url: str | None) -> str:
    """The URL without its query, for logs (queries may carry identifiers)."""
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class FhirAdapter(HTTPAdapter):
    """An HTTPAdapter with a default timeout and the retry policy above."""

    def __init__(self, policy: RetryPolicy | None = None, timeout: Timeout = DEFAULT_TIMEOUT,
                 sleep: Callable[[float], None] = time.sleep, pool_maxsize: int = 10) -> None:
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.sleep = sleep
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize)

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: bool | str = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        timeout = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            try:
                response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                        proxies=proxies)
            except (requests.ConnectionError, requests.Timeout) as exc:
                retryable = attempt < self.policy.retries and (
                    is_idempotent(request) or (isinstance(exc, requests.ConnectionError) and _never_sent(exc)))
                if not retryable:
                    raise
                wait = self.policy.delay(attempt)
                log.warning("%s %s: %s; retry %d/%d in %.1f s", request.method, _path(request.url),
                            type(exc).__name__, attempt + 1, self.policy.retries, wait)
            else:
                status = response.status_code
                retryable = (attempt < self.policy.retries and status in self.policy.statuses
                             and (status in (429, 503) or is_idempotent(request)))
                if not retryable:
                    return response
                wait = self.policy.delay(attempt, response.headers.get("Retry-After"))
                log.warning("%s %s: HTTP %d; retry %d/%d in %.1f s", request.method, _path(request.url), status,
                            attempt + 1, self.policy.retries, wait)
                response.close()
            self.sleep(wait)
            attempt += 1


def new_session(*, auth: requests.auth.AuthBase | None = None, timeout: Timeout = DEFAULT_TIMEOUT,
                retry: RetryPolicy | None = None, verify: bool | str = True, pool_size: int = 10,
                sleep: Callable[[float], None] = time.sleep) -> requests.Session:
    """One Session for one server: FHIR JSON headers, auth, timeouts, retries, TLS verification (on by default)."""
    session = requests.Session()
    adapter = FhirAdapter(retry, timeout, sleep=sleep, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"Accept": "application/fhir+json", "User-Agent": USER_AGENT})
    session.auth = auth
    session.verify = verify
    return session
