"""The local services scale-out tests talk to (PostgreSQL on 127.0.0.1:5432): a database of its own per test.

Where the server is absent the tests skip, saying why; with COLORIZER_REQUIRE_SERVICES=1 (CI) they fail instead.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest

REQUIRE = "COLORIZER_REQUIRE_SERVICES"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def app_page(url: str, height: int = 900):
    """The app's page in Debian's chromium (Playwright, headless), its photo input ready."""
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": height})
        page.goto(url)
        page.wait_for_selector("#photos input[type=file]", state="attached")
        yield page
        browser.close()


def unavailable(reason: str):
    message = f"{reason} (tests that need it skip; set {REQUIRE}=1 to make that a failure)"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but {reason}", pytrace=False)
    pytest.skip(message)


def postgres_admin():
    """A connection to the server's `postgres` database with autocommit (CREATE/DROP DATABASE)."""
    try:
        import psycopg
    except ImportError:
        unavailable('psycopg is not installed: pip install -e ".[postgres]"')
    try:
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3,
                               autocommit=True)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} ({str(exc).strip()})")


@pytest.fixture
def pg_databases():
    """A factory of postgresql:// URLs, each a fresh database dropped after the test (its sessions ended)."""
    admin = postgres_admin()
    names = []

    def create() -> str:
        names.append(f"colorizer_test_{uuid.uuid4().hex[:12]}")
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{names[-1]}"')
        return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{names[-1]}"

    try:
        yield create
    finally:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_url(pg_databases) -> str:
    return pg_databases()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> list[int]:
    """Processes still in a process group."""
    alive = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return alive


def wait_for(url: str, process: subprocess.Popen, what: str, seconds: float = 120) -> None:
    """Poll `url` until it answers; fail when `process` dies or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"{what} did not start within {seconds:.0f} s")
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, then check that nothing of it is left."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not group_alive(process.pid), f"{process.args[:4]} left processes behind"


def start(args: list[str], **env_extra: str) -> subprocess.Popen:
    from tests.repo import env

    return subprocess.Popen(args, env=env() | env_extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path):
    """`mlflow server` on a free loopback port with proxied artifacts; yields its URL."""
    port = free_port()
    server = start([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1", "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)],
                   # its job runner (GenAI jobs: none here) starts four more Python processes with MLflow imported
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server, f"mlflow server on {backend_uri}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, **env_extra: str):
    """`mlflow models serve` of `model_uri` on a free loopback port; yields its base URL."""
    port = free_port()
    server = start([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                    "-h", "127.0.0.1", "-p", str(port)], MLFLOW_TRACKING_URI=tracking_uri, **env_extra)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, f"model server for {model_uri}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


def invoke(base: str, images: list[np.ndarray], timeout: float = 120) -> np.ndarray:
    """POST gray images to a model server's /invocations; its predictions as uint8."""
    body = json.dumps({"inputs": [im.tolist() for im in images]}).encode()
    request = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
    return np.array(json.loads(urllib.request.urlopen(request, timeout=timeout).read())["predictions"], np.uint8)
