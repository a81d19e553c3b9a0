"""`embedq db upgrade` creates the application's own login role: it may do what the API and
workers do, and nothing a superuser or the schema's owner may."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from embedq_core.settings import Settings
from ops.devstack.processes import process_env
from ops.devstack.stack import EmbeddedStack

ROLE = "embedq_app_cli"


def _as(database_url: str, role: str, password: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.netloc.rpartition('@')[2]}"))


def _upgrade(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli.main", "db", "upgrade"],
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_upgrade_creates_a_login_role_without_superuser_or_ddl(stack: EmbeddedStack) -> None:
    admin = stack.settings()
    missing = _upgrade(admin.model_copy(update={"app_db_role": ROLE}))
    assert missing.returncode != 0 and "EMBEDQ_APP_DB_PASSWORD" in missing.stderr

    for password in ("first-password", "rotated-password"):  # runs again: the password changes
        settings = admin.model_copy(update={"app_db_role": ROLE, "app_db_password": password})
        done = _upgrade(settings)
        assert done.returncode == 0, done.stderr
        assert f"role {ROLE} may use the schema" in done.stdout

    url = admin.require_database_url()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin,"
            " starts_with(rolpassword, 'SCRAM-SHA-256$') FROM pg_authid WHERE rolname = %s",
            (ROLE,),
        ).fetchone()
        assert row == (False, False, False, True, True)  # hashed by the client, never in clear
        # A table the migrating role creates later is the app's to use (default privileges).
        conn.execute("CREATE TABLE vectors_app_role_later (id text PRIMARY KEY)")
    try:
        with psycopg.connect(_as(url, ROLE, "rotated-password"), autocommit=True) as app:
            app.execute("SELECT count(*) FROM jobs").fetchone()
            app.execute("INSERT INTO vectors_app_role_later VALUES ('a')")
            # A collection's table, as create_collection makes it: its rows name their model.
            app.execute(
                "CREATE TABLE vectors_app_role_own"
                " (id text, manifest_id text REFERENCES model_manifests (id))"
            )
            app.execute("CREATE TEMP TABLE staging (id text)")  # the writer's COPY stage
            app.execute("DROP TABLE vectors_app_role_own")
            for refused in (
                "DROP TABLE jobs",
                "ALTER TABLE jobs ADD COLUMN x int",
                "UPDATE alembic_version SET version_num = version_num",
                "CREATE ROLE intruder",
                "ALTER ROLE CURRENT_USER SUPERUSER",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute(refused)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS vectors_app_role_later")
