"""Benchmarks, runnable as ``python -m blizzard.bench.<name>`` (and ``blizzard bench``)."""
