"""Harness for the loopback FHIR R4 test server (``tests/fhir_server/server.cjs``).

The server is Medplum's ``@medplum/fhir-router`` (FhirRouter + MemoryRepository) behind a
small Node HTTP front end. It needs ``npm ci --prefix tests/fhir_server`` once per checkout.

Use the pytest fixtures at the bottom of this module (registered through
``pytest_plugins`` in ``tests/conftest.py``):

* ``fhir_server`` (session): one running server with bearer token ``test-token``.
* ``fresh_fhir_server`` (function): the same server with an empty store, no faults and
  cleared request statistics.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

SERVER_DIR = Path(__file__).resolve().parent.parent / "fhir_server"
READY_PREFIX = "FHIR_SERVER_READY "
DEFAULT_TOKEN = "test-token"
FHIR_JSON = "application/fhir+json"


class FhirServerError(RuntimeError):
    """The test server could not be started, or it rejected a harness request."""


def _node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20, check=True)
    match = re.match(r"v?(\d+)\.", out.stdout.strip())
    if not match:
        raise FhirServerError(f"cannot parse `{node} --version` output: {out.stdout!r}")
    return int(match.group(1))


class FhirTestServer:
    """One ``node server.cjs`` process on an ephemeral loopback port."""

    def __init__(
        self,
        token: str | None = DEFAULT_TOKEN,
        *,
        host: str = "127.0.0.1",
        server_dir: Path | str = SERVER_DIR,
        node: str | None = None,
        startup_timeout: float = 20.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.token = token
        self.host = host
        self.server_dir = Path(server_dir)
        self.node = node or os.environ.get("FHIR_TEST_SERVER_NODE", "node")
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.startup_seconds: float | None = None
        self.returncode: int | None = None  # exit status of the last stopped process
        self.last_stderr = ""  # stderr of the last stopped process
        self._base_url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_file: Any = None
        self._stdout_lines: queue.Queue[str | None] = queue.Queue()
        self._http: requests.Session | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """FHIR base URL, e.g. ``http://127.0.0.1:41234/fhir``."""
        if self._base_url is None:
            raise FhirServerError("FHIR test server is not running")
        return self._base_url

    @property
    def root_url(self) -> str:
        """Server root (``/healthz`` and ``/admin`` live here)."""
        return self.base_url[: -len("/fhir")]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def start(self) -> FhirTestServer:
        if self._proc is not None:
            raise FhirServerError("FHIR test server already started")
        script = self.server_dir / "server.cjs"
        if not (self.server_dir / "node_modules" / "@medplum" / "fhir-router" / "package.json").is_file():
            raise FhirServerError(
                f"{self.server_dir / 'node_modules'} is missing or incomplete: "
                f"run `npm ci --prefix {_display_path(self.server_dir)}` first"
            )
        if not script.is_file():
            raise FhirServerError(f"{script} does not exist")
        node = shutil.which(self.node)
        if node is None:
            raise FhirServerError(f"`{self.node}` (Node.js) is not on PATH; the FHIR test server needs Node >= 20")
        args = [node]
        if _node_major(node) < 22:
            args.append("--experimental-websocket")
        args.append(str(script))

        env = dict(os.environ)
        env.update(
            {
                "FHIR_HOST": self.host,
                "FHIR_PORT": "0",
                "FHIR_TOKEN": self.token or "",
                # The server exits when this pipe closes, so it cannot outlive a killed test run.
                "FHIR_EXIT_ON_STDIN_CLOSE": "1",
            }
        )
        self._stderr_file = tempfile.TemporaryFile(prefix="fhir-test-server-", suffix=".stderr")
        started = time.monotonic()
        self._proc = subprocess.Popen(
            args,
            cwd=self.server_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            start_new_session=True,  # own process group: Ctrl-C in the terminal does not hit it first
        )
        threading.Thread(target=self._pump_stdout, args=(self._proc,), name="fhir-server-stdout", daemon=True).start()
        try:
            self._base_url = self._await_ready(started)
            self._http = requests.Session()
            self._await_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Terminate the server by PID (SIGTERM, then SIGKILL) and reap it. Idempotent."""
        proc, self._proc = self._proc, None
        if self._http is not None:
            self._http.close()
            self._http = None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    try:
                        os.kill(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=10)
            else:
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.returncode = proc.returncode
        if self._stderr_file is not None:
            self.last_stderr = self.stderr_text()
            self._stderr_file.close()
            self._stderr_file = None
        self._base_url = None

    def __enter__(self) -> FhirTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stderr_text(self) -> str:
        if self._stderr_file is None:
            return ""
        self._stderr_file.flush()
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode("utf-8", "replace")

    def _pump_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                self._stdout_lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        finally:
            self._stdout_lines.put(None)

    def _await_ready(self, started: float) -> str:
        deadline = started + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FhirServerError(
                    f"FHIR test server printed no {READY_PREFIX.strip()} line within "
                    f"{self.startup_timeout:.0f} s; stderr:\n{self.stderr_text()}"
                )
            try:
                line = self._stdout_lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            if line is None:
                assert self._proc is not None
                code = self._proc.wait(timeout=5)
                raise FhirServerError(
                    f"FHIR test server exited with code {code} before it was ready; stderr:\n{self.stderr_text()}"
                )
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip().rstrip("/")

    def _await_healthy(self, started: float) -> None:
        assert self._http is not None
        deadline = started + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise FhirServerError(f"FHIR test server died during start-up; stderr:\n{self.stderr_text()}")
            try:
                with self._http.get(f"{self.root_url}/healthz", timeout=2) as resp:
                    if resp.status_code == 200:
                        return
                    last_error = FhirServerError(f"/healthz answered {resp.status_code}")
            except requests.RequestException as exc:
                last_error = exc
            time.sleep(0.05)
        raise FhirServerError(f"FHIR test server not healthy after {self.startup_timeout:.0f} s: {last_error}")

    # -- HTTP helpers ----------------------------------------------------------------

    def _session(self) -> requests.Session:
        if self._http is None:
            raise FhirServerError("FHIR test server is not running")
        return self._http

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        with self._session().request(
            method, f"{self.root_url}{path}", json=payload, timeout=self.request_timeout
        ) as resp:
            if resp.status_code != 200:
                raise FhirServerError(f"{method} {path} answered {resp.status_code}: {resp.text}")
            return resp.json()

    def _fhir(self, method: str, path: str, resource: dict[str, Any]) -> requests.Response:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **self.auth_headers()}
        return self._session().request(
            method, f"{self.base_url}{path}", json=resource, headers=headers, timeout=self.request_timeout
        )

    # -- test control ----------------------------------------------------------------

    def reset(self) -> None:
        """Replace the store with a fresh, empty repository."""
        self._admin("POST", "/admin/reset")

    def stats(self) -> list[dict[str, Any]]:
        """Every /fhir request since the last ``reset_stats()``, oldest first.

        Each is a dict with ``method``, ``path`` (e.g. ``/fhir/Observation``), ``query`` (the
        raw query string as sent), ``params`` (decoded: name -> list of values) and ``status``
        (the HTTP status answered; None while in flight). For ``POST [type]/_search``, query
        and params combine the URL query and the form body. Requests rejected with 401 are
        recorded too; /admin and /healthz calls are not.
        """
        return list(self._admin("GET", "/admin/stats")["requests"])

    def reset_stats(self) -> None:
        self._admin("POST", "/admin/stats/reset")

    def set_faults(self, faults: dict[str, dict[str, Any]]) -> None:
        """Inject faults per resource type (first path segment after /fhir; ``"*"`` for any).

        Each fault may have ``status`` (answer with that status and an OperationOutcome),
        ``delay_ms`` (sleep first), ``body`` (answer this raw text, status 200 unless
        ``status`` is given, content type application/fhir+json) and ``count`` (only the next
        N matching requests). Replaces the previous faults; ``{}`` clears them.
        """
        self._admin("POST", "/admin/faults", faults)

    def clear_faults(self) -> None:
        self.set_faults({})

    @contextmanager
    def faults(self, faults: dict[str, dict[str, Any]]) -> Iterator["FhirTestServer"]:
        """``set_faults`` for the ``with`` block only (for servers shared by several tests)."""
        self.set_faults(faults)
        try:
            yield self
        finally:
            self.clear_faults()

    # -- data loading ----------------------------------------------------------------

    def load(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction or batch Bundle; raise unless the request and every entry succeeded.

        Returns the transaction-response / batch-response Bundle.
        """
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
            raise ValueError("load() needs a Bundle of type transaction or batch")
        with self._fhir("POST", "", bundle) as resp:
            if not 200 <= resp.status_code < 300:
                raise FhirServerError(f"loading bundle failed with {resp.status_code}: {resp.text}")
            result = resp.json()
        failed = [
            (index, entry.get("response", {}))
            for index, entry in enumerate(result.get("entry", []))
            if not str(entry.get("response", {}).get("status", "")).startswith("2")
        ]
        if failed or len(result.get("entry", [])) != len(bundle.get("entry", [])):
            raise FhirServerError(f"bundle entries failed: {failed or 'entry count mismatch'}")
        return result

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        """PUT ``resource`` at ``[type]/[id]`` (create or update) and return the stored resource."""
        resource_type, resource_id = resource.get("resourceType"), resource.get("id")
        if not resource_type or not resource_id:
            raise ValueError("put() needs a resource with resourceType and id")
        with self._fhir("PUT", f"/{resource_type}/{resource_id}", resource) as resp:
            if not 200 <= resp.status_code < 300:
                raise FhirServerError(f"PUT {resource_type}/{resource_id} failed with {resp.status_code}: {resp.text}")
            return resp.json()


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# -- pytest fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirTestServer]:
    server = FhirTestServer(token=DEFAULT_TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_fhir_server(fhir_server: FhirTestServer) -> Iterator[FhirTestServer]:
    fhir_server.reset()
    fhir_server.clear_faults()
    fhir_server.reset_stats()
    yield fhir_server
    if fhir_server.running:
        fhir_server.clear_faults()
