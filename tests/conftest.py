"""Shared fixtures: a real FHIR server (sekmet-fhir) on a free 127.0.0.1 port, started once per test run.

- `fhir_server`: the base URL of a server shared by the whole session (in-memory store). Tests share its
  data, so give what you write ids of your own (deterministic ids from your own identifiers do that) and
  count what you wrote by id, not by searching everything.
- `fresh_fhir_server`: the base URL of a server of its own, empty, for one test (about 1.5 s to start).
- `fhir_client`: a `FhirClient` on `fhir_server`.

Integration tests using them are marked `integration` automatically (`pytest -m "not integration"` skips them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_adapter.client import FhirClient
from fhir_adapter.server import LocalServer

SERVER_FIXTURES = {"fhir_server", "fresh_fhir_server", "fhir_client"}


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[str]:
    """Base URL of a sekmet server for the whole test session; stopped at the end."""
    server = LocalServer()
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


@pytest.fixture
def fresh_fhir_server() -> Iterator[str]:
    """Base URL of an empty sekmet server for one test."""
    with LocalServer() as server:
        yield server.base_url


@pytest.fixture
def fhir_client(fhir_server: str) -> Iterator[FhirClient]:
    with FhirClient(fhir_server) as client:
        yield client


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
