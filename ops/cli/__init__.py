"""The `embedq` command: every subcommand and option (main.py), the catalog, re-embedding and
bench groups, and the settings and logging built at a command's entry point (config.py)."""
