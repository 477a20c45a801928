"""The service as production runs it: `cds-service serve` (gunicorn) in its own process."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.support.hooks import condition
from tests.support.hooks import full_prefetch
from tests.support.hooks import hook_request
from tests.support.hooks import service_request

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, executable: Path, cwd: Path, workers: int = 1, env: dict | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(executable), "serve", "--port", str(self.port), "--workers", str(workers)],
            cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.stop())
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("cds-service did not become ready")

    def stop(self) -> str:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with self.process.stdout:
            return self.process.stdout.read().decode(errors="replace")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A plain (non-editable) `pip install .` into a fresh virtualenv: what production runs."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)], check=True)
    return venv / "bin" / "cds-service"


def test_plain_install_serves_from_an_empty_directory(installed, tmp_path):
    served = Served(installed, cwd=tmp_path)
    try:
        services = requests.get(f"{served.url}/cds-services", timeout=5).json()["services"]
        assert {s["id"] for s in services} == {"order-select-crd", "order-sign-crd"}
        request_file = ROOT / "fhir_fixtures" / "requests" / "sclero-seed-case.order-sign.json"
        response = requests.post(f"{served.url}/cds-services/order-sign-crd", data=request_file.read_bytes(),
                                 headers={"Content-Type": "application/json"}, timeout=10)
        assert response.status_code == 200
        assert response.json()["cards"] and response.json()["systemActions"]
    finally:
        served.stop()
    assert (tmp_path / "data" / "cds-service.sqlite3").is_file(), "SQLite lives in ./data by default"


def test_concurrent_workers_lose_nothing_and_survive_a_restart(tmp_path):
    executable = Path(sys.executable).parent / "cds-service"
    served = Served(executable, cwd=tmp_path, workers=3)
    body = hook_request(service_request("37238", id="a"), service_request("37239", id="b"),
                        prefetch=full_prefetch(condition("I87.1", "c1", text="May-Thurner")))
    try:
        def call(_):
            response = requests.post(f"{served.url}/cds-services/order-sign-crd", json=body, timeout=20)
            assert response.status_code == 200, response.text
            return [next(e["valueString"] for e in a["resource"]["extension"][-1]["extension"]
                         if e["url"] == "coverage-assertion-id") for a in response.json()["systemActions"]]

        with ThreadPoolExecutor(max_workers=12) as pool:
            ids = [i for batch in pool.map(call, range(60)) for i in batch]
    finally:
        log = served.stop()
    assert len(ids) == 120 and len(set(ids)) == 120
    pids = {line.split("pid: ")[1].rstrip(")") for line in log.splitlines() if "Booting worker with pid" in line}
    assert len(pids) == 3, log
    with sqlite3.connect(tmp_path / "data" / "cds-service.sqlite3") as db:
        stored = {row[0] for row in db.execute("select assertion_id from coverage_assertion")}
    assert stored == set(ids)

    restarted = Served(executable, cwd=tmp_path, workers=2)
    try:
        record = requests.get(f"{restarted.url}/coverage-assertions/{ids[0]}", timeout=5).json()
        assert record["assertion_id"] == ids[0] and record["order_code"] in ("37238", "37239")
        assert requests.get(f"{restarted.url}/coverage-assertions/nope", timeout=5).status_code == 404
    finally:
        restarted.stop()
    cli = subprocess.run([str(executable), "assertion", ids[1]], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0 and ids[1] in cli.stdout
