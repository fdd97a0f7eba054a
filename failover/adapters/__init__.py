"""Adapters: one module per outside system behind a port of failover.ports."""
