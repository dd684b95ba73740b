"""How the client proves who it is: no auth, a bearer token (from an environment variable or a file), or
SMART Backend Services (OAuth 2.0 client credentials with a signed JWT client assertion).

Tokens never appear in logs or in `repr`: an auth object shows only where its token came from.

>>> auth = BearerAuth("s3cr3t", source="env FHIR_TOKEN")
>>> auth
BearerAuth(from env FHIR_TOKEN)
>>> "s3cr3t" in repr(auth)
False
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .exceptions import AuthError

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_SCOPE = "system/*.rs system/*.cud"
#: Refresh a token this many seconds before it expires.
EXPIRY_MARGIN = 30.0
#: SMART asks for an assertion lifetime of at most five minutes.
ASSERTION_LIFETIME = 300


class BearerAuth(requests.auth.AuthBase):
    """A fixed bearer token."""

    def __init__(self, token: str, source: str = "argument") -> None:
        token = token.strip()
        if not token:
            raise AuthError(f"the bearer token from {source} is empty")
        if not (token.isascii() and token.isprintable()):   # an HTTP header carries no other; never show it
            raise AuthError(f"the bearer token from {source} has characters other than printable ASCII (a "
                            "token has none; is it the right file or variable?)")
        self._token = token
        self.source = source

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return f"BearerAuth(from {self.source})"


def bearer_from_env(variable: str) -> BearerAuth:
    """A bearer token read from an environment variable."""
    token = os.environ.get(variable)
    if token is None:
        raise AuthError(f"environment variable {variable} is not set (it should hold the bearer token)")
    return BearerAuth(token, source=f"env {variable}")


def bearer_from_file(path: str | Path) -> BearerAuth:
    """A bearer token read from the first line of a file (keep it readable by you only)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AuthError(f"cannot read the bearer token file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AuthError(f"the bearer token file {path} is not text (UTF-8)") from None
    return BearerAuth(lines[0] if lines else "", source=f"file {path}")


def load_private_key(path: str | Path) -> Any:
    """An RSA or EC private key from a PEM file (unencrypted, or with the password in FHIR_KEY_PASSWORD)."""
    path = Path(path)
    password = os.environ.get("FHIR_KEY_PASSWORD")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password.encode() if password else None)
    except OSError as exc:
        raise AuthError(f"cannot read the private key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise AuthError(f"{path} is not a usable PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise AuthError(f"{path}: SMART Backend Services needs an RSA or EC key")
    return key


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(key: Any) -> dict[str, str]:
    """The public JWK of a private key (to register the client at the EHR), `kid` = RFC 7638 thumbprint."""
    public = key.public_key()
    numbers = public.public_numbers()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = {"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}
    else:
        size = (public.curve.key_size + 7) // 8
        x, y = (base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode() for n in (numbers.x, numbers.y))
        jwk = {"crv": f"P-{public.curve.key_size}", "kty": "EC", "x": x, "y": y}
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    jwk["kid"] = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return jwk


class SmartBackendAuth(requests.auth.AuthBase):
    """SMART Backend Services: an access token got with a signed JWT assertion, cached until it expires.

    The token endpoint is `token_url`, or else discovered from `{base}/.well-known/smart-configuration`
    when the client attaches this auth to its session. A 401 from the server drops the cached token and
    retries the request once with a fresh one.
    """

    def __init__(self, client_id: str, private_key: Any, *, token_url: str | None = None, kid: str | None = None,
                 alg: str | None = None, scope: str = DEFAULT_SCOPE, jku: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not client_id:
            raise AuthError("SMART Backend Services needs a client id")
        self.client_id, self.scope, self.jku, self.token_url = client_id, scope, jku, token_url
        self._key = load_private_key(private_key) if isinstance(private_key, str | Path) else private_key
        self.alg = alg or ("RS384" if isinstance(self._key, rsa.RSAPrivateKey) else "ES384")
        self.kid = kid or public_jwk(self._key)["kid"]
        self.clock = clock
        self._session: requests.Session | None = None
        self._base_url: str | None = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.fetches = 0  # how many tokens were fetched (for tests and diagnostics)

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, token_url={self.token_url!r})"

    def attach(self, session: requests.Session, base_url: str) -> None:
        """Use this session (timeouts, retries, TLS settings) for token requests and discovery."""
        self._session, self._base_url = session, base_url.rstrip("/")

    # -- the token --------------------------------------------------------------------------------------

    def assertion(self, token_url: str) -> str:
        """A fresh signed client assertion for the token endpoint."""
        now = int(self.clock())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": token_url, "iat": now,
                  "exp": now + ASSERTION_LIFETIME, "jti": str(uuid.uuid4())}
        headers = {"kid": self.kid, "typ": "JWT", **({"jku": self.jku} if self.jku else {})}
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)

    def _discover(self) -> str:
        if self.token_url:
            return self.token_url
        if not (self._session and self._base_url):
            raise AuthError("SMART Backend Services: no token URL given and no server to discover it from")
        url = f"{self._base_url}/.well-known/smart-configuration"
        response = self._session.get(url, auth=_no_auth)
        try:
            self.token_url = response.json()["token_endpoint"] if response.ok else None
        except (ValueError, KeyError, TypeError):
            self.token_url = None
        if not self.token_url:
            raise AuthError(f"SMART Backend Services: {url} answered {response.status_code} without a "
                            f"token_endpoint; give the token URL explicitly")
        return self.token_url

    def _fetch(self) -> None:
        token_url = self._discover()
        form = {"grant_type": "client_credentials", "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": self.assertion(token_url)}
        post = self._session.post if self._session else requests.post
        response = post(token_url, data=form, auth=_no_auth, headers={"Accept": "application/json"})
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not response.ok or "access_token" not in body:
            reason = body.get("error_description") or body.get("error") or response.text[:200]
            raise AuthError(f"token endpoint {token_url} refused client {self.client_id!r}: "
                            f"HTTP {response.status_code}: {reason}")
        self._token = body["access_token"]
        self._expires_at = self.clock() + float(body.get("expires_in") or ASSERTION_LIFETIME)
        self.fetches += 1
        log.info("SMART token for %s obtained, valid %s s", self.client_id, body.get("expires_in", "?"))

    def token(self) -> str:
        """The cached access token, fetched anew when missing or about to expire."""
        with self._lock:
            if self._token is None or self.clock() >= self._expires_at - EXPIRY_MARGIN:
                self._fetch()
            return self._token  # type: ignore[return-value]

    def invalidate(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    # -- requests hook ----------------------------------------------------------------------------------

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or getattr(response.request, "fhir_token_retried", False):
            return response
        used = (response.request.headers.get("Authorization") or "").removeprefix("Bearer ")
        self.invalidate(used)
        response.content  # noqa: B018 - read the body so the connection can be reused
        response.close()
        retry = response.request.copy()
        retry.fhir_token_retried = True  # type: ignore[attr-defined]
        if getattr(response.request, "fhir_idempotent", False):
            retry.fhir_idempotent = True  # type: ignore[attr-defined]
        retry.headers["Authorization"] = f"Bearer {self.token()}"
        log.info("HTTP 401 with a cached token: fetched a new one and retried once")
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """No Authorization header (token requests and discovery must not carry the access token)."""
    request.headers.pop("Authorization", None)
    return request
