"""The local test server: safe settings, start/stop, `server start|status|stop`, a persistent store."""

from __future__ import annotations

import socket

import pytest
import requests
import yaml

from fhir_adapter import server
from fhir_adapter.cli import main
from fhir_adapter.client import FhirClient
from fhir_adapter.server import LocalServer, PortInUseError


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


def test_a_busy_port_is_refused_before_launching(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        local = LocalServer(port=port, workdir=tmp_path)
        with pytest.raises(PortInUseError, match=f"^port {port} on 127.0.0.1 is already in use$"):
            local.start(timeout=20)
        assert local.process is None and not (tmp_path / "server.log").exists()  # nothing was launched
    assert not server.port_in_use(port)  # and free again once the socket is closed


def test_another_server_answering_on_the_port_is_not_taken_for_the_launched_one(fhir_server, monkeypatch):
    """If the port is taken between the check and the launch, the other server's 200 on /metadata must not
    count: the launched server dies on the busy port and its log says why."""
    port = int(fhir_server.rsplit(":", 1)[1].split("/")[0])
    monkeypatch.setattr(server, "port_in_use", lambda port: False)  # the check missed it (a race)
    local = LocalServer(port=port)
    with pytest.raises(PortInUseError, match="(?s)already in use.*exited.*address already in use"):
        local.start(timeout=20)
    assert not local.running()
    assert requests.get(f"{fhir_server}/metadata", timeout=5).status_code == 200  # the other one is untouched


def test_cli_start_refuses_a_port_in_use_with_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FHIR_ADAPTER_STATE", str(tmp_path / "state"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["server", "start", "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"fhir-adapter server: error: port {port} on 127.0.0.1 is already in use" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""  # no URL printed for a script to use
    assert main(["server", "status"]) == 1  # nothing recorded as running


def test_cli_start_refuses_the_port_of_a_running_fhir_server(fhir_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FHIR_ADAPTER_STATE", str(tmp_path / "state"))
    port = fhir_server.rsplit(":", 1)[1].split("/")[0]
    assert main(["server", "start", "--port", port]) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err
    assert main(["server", "stop"]) == 0  # there is nothing of ours to stop ...
    assert requests.get(f"{fhir_server}/metadata", timeout=5).status_code == 200  # ... and the other one runs on


def test_cli_server_help_describes_each_action_and_names_the_port_p(capsys):
    for action in ("start", "stop", "status"):
        with pytest.raises(SystemExit):
            main(["server", action, "--help"])
        usage, _, rest = capsys.readouterr().out.partition("\n\n")
        assert rest.split("\n")[0].strip() and not rest.startswith("options:"), action  # a description line
        if action == "start":
            assert "[--port P]" in usage and "[--data FILE]" in usage


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
