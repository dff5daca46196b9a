"""Benchmarks: ``python -m experiments.benchmarks.all`` runs throughput, suite, scaling, naive and roofline."""
