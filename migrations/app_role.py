"""The login role the API and workers connect as, created by `embedq db upgrade`.

The migration step runs as a role that owns the schema (in compose, the Postgres superuser);
the API and workers run as this one, which may read and write embedq's tables, create
collection tables and temporary staging tables, and nothing more: no superuser, no CREATEROLE or
CREATEDB, no DDL on the tables the migrations created (it does not own them) and no writes to
alembic_version. Tables the migrating role creates later (new migrations, collections made with
the CLI) are granted to it by default privileges.

The password is hashed (SCRAM) on the client, so the server's log never holds it in clear.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from embedq_core.db import libpq_url

TABLE_PRIVILEGES = sql.SQL("SELECT, INSERT, UPDATE, DELETE")
SEQUENCE_PRIVILEGES = sql.SQL("USAGE, SELECT, UPDATE")


class AppRoleError(RuntimeError):
    """The role cannot be created as asked."""


def ensure_app_role(database_url: str, role: str, password: str) -> None:
    """Create the role, or reset its attributes and password, and grant what the API and
    workers need on the current database and schema. Safe to run on every upgrade."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        me, database, schema = _where(conn)
        if role == me:
            raise AppRoleError(
                f"EMBEDQ_APP_DB_ROLE is {role!r}, the role running the migration: the app must "
                "connect as a role of its own"
            )
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode()).decode()
        name = sql.Identifier(role)
        with conn.transaction():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            conn.execute(
                sql.SQL(
                    "{} ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                    " NOBYPASSRLS PASSWORD {}"
                ).format(sql.SQL("ALTER" if exists else "CREATE"), name, sql.Literal(verifier))
            )
            for statement in _grants(name, sql.Identifier(database), sql.Identifier(schema)):
                conn.execute(statement)
            if _table_exists(conn, schema, "model_manifests"):
                # A collection's vectors table names the model that wrote each row (a foreign
                # key): creating one needs REFERENCES on the key it points at.
                conn.execute(
                    sql.SQL("GRANT REFERENCES (id) ON {} TO {}").format(
                        sql.Identifier(schema, "model_manifests"), name
                    )
                )
            if _table_exists(conn, schema, "alembic_version"):
                conn.execute(
                    sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(
                        sql.Identifier(schema, "alembic_version"), name
                    )
                )


def _where(conn: psycopg.Connection[Any]) -> tuple[str, str, str]:
    row = conn.execute("SELECT current_user, current_database(), current_schema()").fetchone()
    if row is None or row[2] is None:
        raise AppRoleError("no current schema: set search_path for the migrating role")
    return str(row[0]), str(row[1]), str(row[2])


def _grants(role: sql.Identifier, database: sql.Identifier, schema: sql.Identifier) -> list[Any]:
    return [
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, role),
        # CREATE: `POST /v1/collections` creates the collection's vectors table.
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(schema, role),
        sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(TABLE_PRIVILEGES, schema, role),
        sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            SEQUENCE_PRIVILEGES, schema, role
        ),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
            schema, TABLE_PRIVILEGES, role
        ),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON SEQUENCES TO {}").format(
            schema, SEQUENCE_PRIVILEGES, role
        ),
    ]


def _table_exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    qualified = sql.Identifier(schema, table).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
    return bool(row and row[0])
