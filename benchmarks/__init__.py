"""Benchmarks run by ``make bench``; results are written to ``docs/benchmarks.md``."""
