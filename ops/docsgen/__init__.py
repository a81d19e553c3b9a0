"""Reference pages of the docs site rendered from the code (settings, CLI, metrics) and the
benchmarks page rendered from the results JSON: one definition drives `--help`, the
environment names and the docs, and a unit test fails when a page drifts."""
