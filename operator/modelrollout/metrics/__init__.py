"""Talking to Prometheus: query templating with escaping, queries, and turning
results into the readings the pure core judges."""
