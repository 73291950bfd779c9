"""Benchmark harness: time and peak memory of one case, each in a fresh process."""
