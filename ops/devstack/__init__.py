"""The embedded development stack: Postgres+pgvector and Valkey from pip (stack.py), the API and
worker processes (processes.py), the bundled small model and the demo (`embedq demo`)."""
