"""Command-line options of every verb that talks to a FHIR server, and the `FhirClient` they describe.

    add_arguments(parser)              # --server, auth, --timeout, --retries, --insecure, --ca-bundle
    client = client_from_args(args)    # a FhirClient (raises AuthError for a missing token or key)

Tokens come only from an environment variable or a file, never from the command line (it would show in
`ps` and shell history).
"""

from __future__ import annotations

import argparse
import logging
import os

from .auth import DEFAULT_SCOPE, SmartBackendAuth, bearer_from_env, bearer_from_file
from .client import FhirClient
from .exceptions import AuthError
from .transport import DEFAULT_TIMEOUT, RetryPolicy

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser, *, server_required: bool = True) -> None:
    group = parser.add_argument_group("FHIR server")
    group.add_argument("--server", metavar="URL", required=server_required,
                       help="FHIR base URL, e.g. http://127.0.0.1:8090/fhir")
    auth = group.add_mutually_exclusive_group()
    auth.add_argument("--token-env", metavar="VAR", help="bearer token from this environment variable")
    auth.add_argument("--token-file", metavar="FILE", help="bearer token from the first line of this file")
    auth.add_argument("--smart-client-id", metavar="ID",
                      help="SMART Backend Services client id (with --smart-key): client credentials with a "
                           "signed JWT assertion")
    group.add_argument("--smart-key", metavar="PEM", help="private key (RSA for RS384, EC for ES384) that signs "
                                                          "the assertion; password in FHIR_KEY_PASSWORD if any")
    group.add_argument("--smart-token-url", metavar="URL",
                       help="token endpoint (default: from the server's .well-known/smart-configuration)")
    group.add_argument("--smart-scope", metavar="SCOPES", default=DEFAULT_SCOPE,
                       help=f"scopes to ask for (default {DEFAULT_SCOPE!r})")
    group.add_argument("--smart-kid", metavar="KID", help="key id in the JWT header (default: the key's "
                                                          "RFC 7638 thumbprint)")
    group.add_argument("--timeout", type=float, metavar="SECONDS", default=DEFAULT_TIMEOUT[1],
                       help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT[1]:g})")
    group.add_argument("--retries", type=int, metavar="N", default=RetryPolicy.retries,
                       help=f"retries on connection errors, 429, 502, 503, 504, honouring Retry-After "
                            f"(default {RetryPolicy.retries})")
    tls = group.add_mutually_exclusive_group()
    tls.add_argument("--ca-bundle", metavar="FILE", help="verify the server's TLS certificate with this CA bundle")
    tls.add_argument("--insecure", action="store_true",
                     help="do NOT verify the server's TLS certificate (test servers only)")


def client_from_args(args: argparse.Namespace, *, pool_size: int = 10) -> FhirClient:
    """The client the options describe. TLS verification stays on unless --insecure was given. Options that
    cannot work (a --timeout that is not positive, a --ca-bundle that is not there) raise `ValueError`."""
    if not args.timeout > 0 or args.timeout == float("inf"):
        raise ValueError(f"--timeout must be a number of seconds above 0, not {args.timeout:g}")
    if args.ca_bundle and not os.path.exists(args.ca_bundle):
        raise ValueError(f"--ca-bundle {args.ca_bundle}: no such file")
    auth = None
    if args.token_env:
        auth = bearer_from_env(args.token_env)
    elif args.token_file:
        auth = bearer_from_file(args.token_file)
    elif args.smart_client_id:
        if not args.smart_key:
            raise AuthError("--smart-client-id needs --smart-key (the PEM private key)")
        auth = SmartBackendAuth(args.smart_client_id, args.smart_key, token_url=args.smart_token_url,
                                kid=args.smart_kid, scope=args.smart_scope)
    verify: bool | str = True
    if args.insecure:
        verify = False
        log.warning("TLS certificate verification is OFF (--insecure): use this only with a test server")
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    elif args.ca_bundle:
        verify = args.ca_bundle
    return FhirClient(args.server, auth, timeout=(DEFAULT_TIMEOUT[0], args.timeout), verify=verify,
                      retry=RetryPolicy(retries=max(0, args.retries)), pool_size=pool_size)
