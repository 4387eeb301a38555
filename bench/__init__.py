"""Benchmarks: search cost (time per step, peak memory) of every method beside DARTS."""
