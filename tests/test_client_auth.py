"""Auth: bearer token from env or file, SMART Backend Services (signed assertion, cached token, refresh), and
tokens never in logs."""

from __future__ import annotations

import logging
import urllib.parse

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_adapter.client import (
    AccessDenied,
    AuthError,
    FhirClient,
    FhirHttpError,
    RetryPolicy,
    SmartBackendAuth,
    bearer_from_env,
    bearer_from_file,
    public_jwk,
)
from fhir_adapter.client.auth import ASSERTION_TYPE
from fhir_adapter.client.transport import new_session

BASE = "https://ehr.example.org/fhir"
TOKEN_URL = "https://ehr.example.org/auth/token"
PATIENT = {"resourceType": "Patient", "id": "1"}


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path, rsa_key):
    path = tmp_path / "client.pem"
    path.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class TokenEndpoint:
    """A token endpoint that checks each client assertion as a SMART server would, and hands out tok1, tok2..."""

    def __init__(self, public_key, clock: Clock, expires_in: int = 300) -> None:
        self.public_key, self.clock, self.expires_in = public_key, clock, expires_in
        self.assertions: list[tuple[dict, dict]] = []
        self.forms: list[dict] = []

    def __call__(self, request):
        form = dict(urllib.parse.parse_qsl(request.body))
        self.forms.append(form)
        assert "Authorization" not in request.headers
        assert form["grant_type"] == "client_credentials"
        assert form["client_assertion_type"] == ASSERTION_TYPE
        header = jwt.get_unverified_header(form["client_assertion"])
        claims = jwt.decode(form["client_assertion"], self.public_key, algorithms=["RS384", "ES384"],
                            audience=TOKEN_URL, options={"verify_exp": False, "verify_iat": False})
        self.assertions.append((header, claims))
        return 200, {}, (f'{{"access_token": "tok{len(self.assertions)}", "token_type": "bearer", '
                         f'"expires_in": {self.expires_in}, "scope": "{form["scope"]}"}}')


def auth_headers() -> list[str]:
    return [c.request.headers.get("Authorization") for c in responses.calls if c.request.url.startswith(BASE + "/P")]


@responses.activate
def test_bearer_token_is_sent_and_never_shown(monkeypatch, tmp_path):
    monkeypatch.setenv("FHIR_TEST_TOKEN", "env-secret-123")
    responses.get(f"{BASE}/Patient/1", json=PATIENT)
    FhirClient(BASE, auth=bearer_from_env("FHIR_TEST_TOKEN")).read("Patient", "1")
    token_file = tmp_path / "token"
    token_file.write_text("file-secret-456\n")
    client = FhirClient(BASE, auth=bearer_from_file(token_file))
    client.read("Patient", "1")
    assert auth_headers() == ["Bearer env-secret-123", "Bearer file-secret-456"]
    assert "secret" not in repr(client) and "FHIR_TEST_TOKEN" in repr(bearer_from_env("FHIR_TEST_TOKEN"))


def test_missing_or_empty_tokens_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    with pytest.raises(AuthError, match="NO_SUCH_TOKEN_VAR is not set"):
        bearer_from_env("NO_SUCH_TOKEN_VAR")
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(AuthError, match="empty"):
        bearer_from_file(empty)
    with pytest.raises(AuthError, match="cannot read"):
        bearer_from_file(tmp_path / "absent")


@responses.activate
def test_smart_assertion_is_signed_and_the_token_cached_until_it_expires(rsa_key, key_file):
    clock = Clock()
    endpoint = TokenEndpoint(rsa_key.public_key(), clock)
    responses.get(f"{BASE}/.well-known/smart-configuration", json={"token_endpoint": TOKEN_URL})
    responses.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
    responses.get(f"{BASE}/Patient/1", json=PATIENT)
    auth = SmartBackendAuth("adapter-client", key_file, scope="system/Patient.rs", clock=clock)
    client = FhirClient(BASE, auth=auth)

    client.read("Patient", "1")
    client.read("Patient", "1")
    assert auth.fetches == 1 and auth_headers() == ["Bearer tok1", "Bearer tok1"]
    header, claims = endpoint.assertions[0]
    assert header["alg"] == "RS384" and header["typ"] == "JWT" and header["kid"] == public_jwk(rsa_key)["kid"]
    assert claims["iss"] == claims["sub"] == "adapter-client" and claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - clock.now <= 300 and claims["jti"]
    assert endpoint.forms[0]["scope"] == "system/Patient.rs"

    clock.now += 300 - 10  # within the margin before expiry: fetch a fresh one
    client.read("Patient", "1")
    assert auth.fetches == 2 and auth_headers()[-1] == "Bearer tok2"
    assert endpoint.assertions[1][1]["jti"] != claims["jti"]


@responses.activate
def test_a_401_drops_the_cached_token_and_retries_once(rsa_key):
    clock = Clock()
    endpoint = TokenEndpoint(rsa_key.public_key(), clock, expires_in=3600)
    responses.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
    responses.get(f"{BASE}/Patient/1", status=401, json={"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "expired", "diagnostics": "Access token expired"}]})
    responses.get(f"{BASE}/Patient/1", json=PATIENT)
    auth = SmartBackendAuth("adapter-client", rsa_key, token_url=TOKEN_URL, clock=clock)
    assert FhirClient(BASE, auth=auth).read("Patient", "1") == PATIENT
    assert auth.fetches == 2 and auth_headers() == ["Bearer tok1", "Bearer tok2"]

    responses.replace(responses.GET, f"{BASE}/Patient/1", status=403)
    with pytest.raises(AccessDenied):  # no endless loop: a 403 is final, a second 401 too
        FhirClient(BASE, auth=auth).read("Patient", "1")


@responses.activate
def test_ec_keys_sign_with_es384():
    key = ec.generate_private_key(ec.SECP384R1())
    endpoint = TokenEndpoint(key.public_key(), Clock())
    responses.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
    responses.get(f"{BASE}/Patient/1", json=PATIENT)
    FhirClient(BASE, auth=SmartBackendAuth("ec-client", key, token_url=TOKEN_URL)).read("Patient", "1")
    assert endpoint.assertions[0][0]["alg"] == "ES384"


@responses.activate
def test_token_endpoint_refusal_is_an_auth_error(rsa_key):
    responses.post(TOKEN_URL, status=401, json={"error": "invalid_client", "error_description": "unknown kid"})
    client = FhirClient(BASE, auth=SmartBackendAuth("adapter-client", rsa_key, token_url=TOKEN_URL))
    with pytest.raises(AuthError, match="refused client 'adapter-client': HTTP 401: unknown kid"):
        client.read("Patient", "1")


@responses.activate
def test_no_discoverable_token_endpoint_says_what_to_do(rsa_key):
    responses.get(f"{BASE}/.well-known/smart-configuration", status=404)
    client = FhirClient(BASE, auth=SmartBackendAuth("adapter-client", rsa_key))
    with pytest.raises(AuthError, match="give the token URL explicitly"):
        client.read("Patient", "1")


@responses.activate
def test_tokens_never_reach_the_logs(rsa_key, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    endpoint = TokenEndpoint(rsa_key.public_key(), Clock())
    responses.add_callback(responses.POST, TOKEN_URL, callback=endpoint)
    responses.get(f"{BASE}/Patient/1", status=401)
    responses.get(f"{BASE}/Patient/1", status=503)  # retried: logged with a warning
    responses.get(f"{BASE}/Patient/1", json=PATIENT)
    quick = RetryPolicy(retries=1, jitter=0)
    smart = SmartBackendAuth("adapter-client", rsa_key, token_url=TOKEN_URL)
    session = new_session(auth=smart, retry=quick, sleep=lambda s: None)
    FhirClient(BASE, auth=smart, session=session).read("Patient", "1")

    monkeypatch.setenv("LOGGED_TOKEN", "bearer-secret-789")
    bearer = bearer_from_env("LOGGED_TOKEN")
    responses.get(f"{BASE}/Patient/2", status=503)
    with pytest.raises(FhirHttpError):
        FhirClient(BASE, auth=bearer, session=new_session(auth=bearer, retry=quick, sleep=lambda s: None)).read(
            "Patient", "2")
    assert auth_headers()[-1] == "Bearer bearer-secret-789"
    assert "retry 1/1" in caplog.text and "HTTP 401" in caplog.text  # the events were logged...
    for secret in ("tok1", "tok2", "bearer-secret-789", endpoint.forms[0]["client_assertion"][:40]):
        assert secret not in caplog.text                               # ...the secrets were not


@pytest.mark.parametrize("verb", [["screen", "--out", "OUT"], ["push", "IN"]])
def test_server_options_that_cannot_work_are_one_line_usage_errors_that_never_show_the_token(verb, tmp_path,
                                                                                            monkeypatch, capsys):
    """--ca-bundle not there, --timeout 0 or -1, a token with characters no HTTP header carries, a binary token
    file: exit 2 before anything is sent, naming the option, file or variable, never the token."""
    from fhir_adapter.cli import main

    (tmp_path / "euro.tok").write_text("sekret€\n", encoding="utf-8")
    (tmp_path / "latin.tok").write_text("sekreté\n", encoding="utf-8")
    (tmp_path / "bin.tok").write_bytes(b"\xff\xfe\x00sekret")
    monkeypatch.setenv("FHIR_TEST_TOKEN", "sekret\u00e9")
    (tmp_path / "IN").write_text('{"resourceType": "Patient", "id": "p1"}\n')
    verb = [str(tmp_path / a) if a in ("OUT", "IN") else a for a in verb] + ["--retries", "0"]
    cases = [(["--ca-bundle", str(tmp_path / "nope.pem")], f"--ca-bundle {tmp_path / 'nope.pem'}: no such file"),
             (["--timeout", "0"], "--timeout must be a number of seconds above 0, not 0"),
             (["--timeout", "-1"], "--timeout must be a number of seconds above 0, not -1"),
             (["--token-file", str(tmp_path / "euro.tok")], f"bearer token from file {tmp_path / 'euro.tok'} has"),
             (["--token-file", str(tmp_path / "latin.tok")], f"bearer token from file {tmp_path / 'latin.tok'} has"),
             (["--token-env", "FHIR_TEST_TOKEN"], "the bearer token from env FHIR_TEST_TOKEN has characters other"),
             (["--token-file", str(tmp_path / "bin.tok")], f"the bearer token file {tmp_path / 'bin.tok'} is not text")]
    for options, said in cases:
        assert main([*verb, "--server", "https://ehr.example/fhir", *options]) == 2, options
        err = capsys.readouterr().err
        assert err.startswith(f"fhir-adapter {verb[0]}: error: ") and said in err and err.count("\n") == 1, err
        assert "sekret" not in err and "\\xff" not in err
