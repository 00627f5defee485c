"""The local services scale-out tests talk to (PostgreSQL on 127.0.0.1:5432): a database of its own per test.

Where the server is absent the tests skip, saying why; with COLORIZER_REQUIRE_SERVICES=1 (CI) they fail instead.
"""
from __future__ import annotations

import os
import uuid

import pytest

REQUIRE = "COLORIZER_REQUIRE_SERVICES"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


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
def pg_url():
    """postgresql:// URL of a fresh database, dropped after the test (sessions still connected are ended)."""
    admin = postgres_admin()
    name = f"colorizer_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
