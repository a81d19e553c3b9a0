"""Apply the Alembic schema migrations from code (the prestart step of every deployment)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from embedq_core.db import sqlalchemy_url

SCRIPT_LOCATION = Path(__file__).resolve().parent / "schema"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at our scripts and the given database; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # Alembic's config is ConfigParser-based: escape % in URLs.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade_head(database_url: str) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    """The newest schema revision this release ships (what the API and workers need)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None, "the schema scripts have no head"
    return head
