"""Benchmarks for nurture: pipeline throughput and tick cost. Run ``python -m bench``."""
