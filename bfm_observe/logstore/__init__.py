"""The embedded Loki-compatible log and trace store (docs/logstore.md).

- ``logql`` (with ``logql_ast``, ``logql_lexer``, ``logql_parser``) parses the supported
  LogQL subset; ``logql_eval`` evaluates it with Loki's results. Both are pure.
- ``records`` holds what is kept (log lines, spans); ``wire_loki``, ``wire_otlp``,
  ``wire_tempo`` (with ``protowire``, ``otlp_body``, ``wire_errors``) decode and encode
  the wire formats.
- ``store`` (with ``store_schema``, ``store_lines``, ``store_spans``, ``store_plan``,
  ``store_scan``, ``store_query``, ``store_counts``, ``retention``) keeps them in SQLite.
- ``server`` and ``http_api`` serve Loki's and Tempo's HTTP API; ``client`` (with
  ``loki_answers``) reads it, from the embedded store or a real Loki; ``timeline`` makes
  one trace's spans and lines into one timeline (``bfm trace``).
"""
