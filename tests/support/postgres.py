"""Throwaway PostgreSQL server for tests, from Debian's ``postgresql`` package.

``postgres_url`` (session scope) runs initdb + pg_ctl in a temporary directory, listening
on 127.0.0.1 only (unix socket inside that directory), and yields a
``postgresql+psycopg://`` URL of a fresh database; the server is stopped and the directory
removed at the end of the session. ``fresh_postgres_url`` gives each test its own empty
database on that server. As root the server runs as the ``postgres`` system user
(initdb refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: "
    "install Debian's postgresql package (apt-get install postgresql)"
)


def _bindir() -> Path:
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda bindir: int(bindir.parent.name) if bindir.parent.name.isdigit() else 0,
    )
    if not found or not (found[-1] / "initdb").exists():
        pytest.fail(_INSTALL_HINT, pytrace=False)
    return found[-1]


def _run_as() -> dict[str, Any]:
    """subprocess arguments that drop root to the postgres user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"running as root but no 'postgres' system user exists; {_INSTALL_HINT}")
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin_connect(port: int) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    )


def _url(port: int, dbname: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{dbname}"


@pytest.fixture(scope="session")
def postgres_server_port() -> Iterator[int]:
    """Port of a running throwaway server (trust auth for user postgres on loopback)."""
    bindir = _bindir()
    run_as = _run_as()
    root = Path(tempfile.mkdtemp(prefix="cds-pg-"))
    datadir, logfile = root / "data", root / "server.log"

    def run(*args: str | Path, timeout: float = 120) -> None:
        try:
            subprocess.run(
                [str(a) for a in args], cwd=root, check=True, capture_output=True,
                text=True, timeout=timeout, env={**os.environ, "LC_ALL": "C"}, **run_as,
            )
        except subprocess.CalledProcessError as exc:
            log = logfile.read_text() if logfile.exists() else ""
            pytest.fail(f"{args[0]} failed:\n{exc.stdout}\n{exc.stderr}\n{log}", pytrace=False)

    try:
        if run_as:
            shutil.chown(root, "postgres", "postgres")
        run(bindir / "initdb", "-D", datadir, "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync")
        port = _free_port()
        with open(datadir / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\n"
                # Throwaway data: durability only costs time here.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        run(bindir / "pg_ctl", "start", "-w", "-t", "60", "-D", datadir, "-l", logfile)
        try:
            yield port
        finally:
            run(bindir / "pg_ctl", "stop", "-m", "fast", "-w", "-t", "60", "-D", datadir)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server_port: int) -> str:
    """URL of a database created on the throwaway server for this test session."""
    with _admin_connect(postgres_server_port) as conn:
        conn.execute("CREATE DATABASE cds_test")
    return _url(postgres_server_port, "cds_test")


@pytest.fixture
def fresh_postgres_url(postgres_server_port: int) -> Iterator[str]:
    """URL of an empty database of its own for one test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    with _admin_connect(postgres_server_port) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _url(postgres_server_port, name)
    with _admin_connect(postgres_server_port) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
