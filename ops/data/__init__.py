"""The corpora that ship with the repo (demo, benchmark, evaluation) and their loaders."""
