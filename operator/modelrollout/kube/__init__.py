"""Thin adapters over the Kubernetes API: reads, status writes, Events."""
