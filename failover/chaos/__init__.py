"""Fault injection, deterministic simulation, history checker and reports."""
