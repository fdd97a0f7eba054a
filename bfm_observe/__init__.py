"""Instrumentation any HEMISPHERE component imports. Importing configures nothing."""
