"""The error of the push wire formats (Loki, OTLP, Tempo): a body a receiver rejects."""

from __future__ import annotations


class PushError(ValueError):
    """A push body Loki (or an OTLP receiver) would reject with 400: says what and where."""
