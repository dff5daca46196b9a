"""Benchmarks: ``python -m experiments.benchmarks.throughput``."""
