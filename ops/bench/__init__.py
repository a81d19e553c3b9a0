"""Benchmarks: commands that compare variants in one run, print a table and write JSON."""
