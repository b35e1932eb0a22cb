"""Benchmarks that print figures; run them through `gandist bench ...`."""
