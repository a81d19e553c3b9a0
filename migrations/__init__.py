"""Schema migrations (Alembic) and, later, the re-embedding migration."""
