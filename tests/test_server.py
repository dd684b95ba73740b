"""The local test server: safe settings, start/stop, `server start|status|stop`, a persistent store."""

from __future__ import annotations

import socket

import pytest
import requests
import yaml

from fhir_adapter import server
from fhir_adapter.cli import main
from fhir_adapter.client import FhirClient
from fhir_adapter.server import LocalServer, ServerError


def test_the_server_starts_with_safe_settings_and_stops(tmp_path):
    local = LocalServer(workdir=tmp_path)
    url = local.start()
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/fhir")
        settings = yaml.safe_load((tmp_path / "settings.yaml").read_text())
        assert settings["host"] == "127.0.0.1"
        assert settings["simulator"] == {"enabled": False}
        assert settings["log_inbound"] is False and settings["db_path"] == ":memory:"
        assert requests.get(f"{url}/metadata", timeout=5).json()["fhirVersion"] == "4.0.1"
    finally:
        local.stop()
    assert not local.running()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/metadata", timeout=2)


def test_overrides_cannot_undo_the_safe_settings():
    settings = LocalServer(port=1234, overrides={"host": "0.0.0.0", "simulator": {"enabled": True},
                                                 "log_inbound": True}).settings()
    assert (settings["host"], settings["simulator"]["enabled"], settings["log_inbound"]) == ("127.0.0.1", False, False)


def test_sekmet_environment_overrides_are_not_passed_on(monkeypatch):
    monkeypatch.setenv("SEKMET_PORT", "1")  # would make sekmet listen elsewhere than its settings say
    monkeypatch.setenv("SEKMET_DB", "/nonexistent/dir/x.db")
    with LocalServer() as local:
        assert requests.get(f"{local.base_url}/metadata", timeout=5).status_code == 200


def test_a_busy_port_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerError, match="exited|did not answer"):
            LocalServer(port=port).start(timeout=20)


def test_cli_start_status_stop_and_a_store_that_outlives_the_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FHIR_ADAPTER_STATE", str(tmp_path / "state"))
    store = tmp_path / "store.sqlite"
    port = server.free_port()
    assert main(["server", "start", "--port", str(port), "--data", str(store)]) == 0
    url = capsys.readouterr().out.strip()
    try:
        assert url == f"http://127.0.0.1:{port}/fhir"
        assert main(["server", "status"]) == 0 and capsys.readouterr().out.strip() == url
        assert main(["server", "start", "--port", str(port)]) == 0  # already running: says so, same URL
        assert capsys.readouterr().out.strip() == url
        with FhirClient(url) as client:
            assert client.push([{"resourceType": "Patient", "id": "kept", "gender": "other"}]).created == 1
    finally:
        assert main(["server", "stop"]) == 0
    assert "stopped" in capsys.readouterr().err
    assert main(["server", "status"]) == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/metadata", timeout=2)

    with LocalServer(data=store) as again, FhirClient(again.base_url) as client:  # same file, new process
        assert client.read("Patient", "kept")["gender"] == "other"


def test_cli_stop_without_a_server_is_harmless(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FHIR_ADAPTER_STATE", str(tmp_path))
    assert main(["server", "stop"]) == 0
    assert "no local FHIR server is running" in capsys.readouterr().err
