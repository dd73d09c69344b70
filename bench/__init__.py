"""Benchmarks: closed-loop EST load against a real estkit server on loopback."""
