"""The operator CLI (embedq), the dev stack, model export and benchmarks."""
